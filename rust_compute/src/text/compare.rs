//! Compare: how similar two texts are (`docs/compute-spec.md` §7).

use std::collections::HashMap;

use super::normalize::normalise;
use super::shingles::{ShingleSet, jaccard};
use super::simhash::{distance, simhash};
use super::tokens::tokenize;
use crate::cancel::{Cancellation, Interrupted};

/// The similarity of two texts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Exact Jaccard similarity of the shingle sets; 1.0 when neither text
    /// has a token.
    pub jaccard: f64,
    /// Hamming distance between the SimHashes, in `0..=64`.
    pub simhash_distance: u32,
}

/// Compares `a` with `b`, checking `cancel` between the two texts.
pub fn compare(a: &str, b: &str, cancel: &Cancellation) -> Result<Comparison, Interrupted> {
    let (shingles_a, simhash_a) = fingerprint(a);
    cancel.check()?;
    let (shingles_b, simhash_b) = fingerprint(b);
    cancel.check()?;
    Ok(Comparison {
        jaccard: jaccard(&shingles_a, &shingles_b),
        simhash_distance: distance(simhash_a, simhash_b),
    })
}

/// The shingle set and SimHash of one text, from a single tokenisation.
fn fingerprint(text: &str) -> (ShingleSet, u64) {
    let normalised = normalise(text);
    let terms = tokenize(&normalised).terms;
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for term in &terms {
        *counts.entry(*term).or_insert(0) += 1;
    }
    (ShingleSet::of_tokens(&terms), simhash(counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::analyze;

    fn run(a: &str, b: &str) -> Comparison {
        compare(a, b, &Cancellation::never()).expect("never cancelled")
    }

    #[test]
    fn identical_texts() {
        let text = "The same words, in the same order.";
        assert_eq!(
            run(text, &text.to_uppercase()),
            Comparison {
                jaccard: 1.0,
                simhash_distance: 0
            }
        );
    }

    #[test]
    fn empty_texts_are_identical() {
        assert_eq!(
            run("", "!!"),
            Comparison {
                jaccard: 1.0,
                simhash_distance: 0
            }
        );
        assert_eq!(run("", "word").jaccard, 0.0);
    }

    #[test]
    fn distance_is_between_the_analyze_simhashes() {
        let (a, b) = ("one two three four", "one two three five");
        let never = Cancellation::never();
        let simhash = |text| analyze(text, 0, &never).expect("never cancelled").simhash;
        assert_eq!(
            run(a, b).simhash_distance,
            (simhash(a) ^ simhash(b)).count_ones()
        );
        assert_eq!(run(a, b).jaccard, 1.0 / 3.0);
    }
}
