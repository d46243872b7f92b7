//! Shingle sets and their exact Jaccard similarity (`docs/compute-spec.md`
//! §4).

use std::cmp::Ordering;

use super::hash::Lanes;
use super::normalize::normalise;
use super::tokens::tokenize;

/// Tokens per shingle.
const WIDTH: usize = 3;

/// The set of shingles of one text, each kept with its `h64`.
///
/// Shingles are stored back to back in one string and ordered by
/// `(h64, shingle)`: MinHash needs the hashes, and two sets intersect by
/// one merge in which the hash decides almost every comparison while the
/// string keeps the result exact when two shingles share a hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShingleSet {
    /// Every distinct shingle, concatenated without separators.
    text: String,
    /// One entry per distinct shingle, sorted by `(hash, shingle)`.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    hash: u64,
    start: usize,
    end: usize,
}

impl ShingleSet {
    /// The shingles of a raw text: normalised, tokenised, windowed.
    pub fn of_text(text: &str) -> Self {
        Self::of_tokens(&tokenize(&normalise(text)).terms)
    }

    /// The shingles of a token sequence: windows of three tokens joined by
    /// a space, or the tokens themselves when there are fewer than three.
    pub fn of_tokens(terms: &[&str]) -> Self {
        let mut set = Self::default();
        let mut lanes = Lanes::new();
        if terms.len() < WIDTH {
            for term in terms {
                set.push(&mut lanes, &[term]);
            }
        } else {
            for window in terms.windows(WIDTH) {
                set.push(&mut lanes, window);
            }
        }
        lanes.flush();
        for (entry, hash) in set.entries.iter_mut().zip(lanes.out) {
            entry.hash = hash;
        }
        let text = &set.text;
        set.entries.sort_unstable_by(|a, b| order(text, a, text, b));
        // A duplicate's bytes stay in `text`; only the entries define the set.
        set.entries
            .dedup_by(|a, b| order(text, a, text, b) == Ordering::Equal);
        set
    }

    /// Appends the shingle `parts` joined by spaces; its hash comes from
    /// `lanes` once they are flushed.
    fn push(&mut self, lanes: &mut Lanes, parts: &[&str]) {
        let start = self.text.len();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                self.text.push(' ');
            }
            self.text.push_str(part);
        }
        lanes.push_joined(parts);
        self.entries.push(Entry {
            hash: 0,
            start,
            end: self.text.len(),
        });
    }

    /// Number of distinct shingles.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the text has no shingles (it has no tokens).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `h64` of every shingle, in set order.
    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.iter().map(|entry| entry.hash)
    }

    /// Every shingle, in set order (by hash, then string).
    pub fn shingles(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|entry| self.shingle(entry))
    }

    fn shingle(&self, entry: &Entry) -> &str {
        entry.of(&self.text)
    }

    /// `|self ∩ other|`, by one merge of the two sorted entry lists.
    pub fn intersection_len(&self, other: &Self) -> usize {
        let (mut i, mut j, mut common) = (0, 0, 0);
        while let (Some(mine), Some(theirs)) = (self.entries.get(i), other.entries.get(j)) {
            match order(&self.text, mine, &other.text, theirs) {
                Ordering::Less => i += 1,
                Ordering::Greater => j += 1,
                Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        common
    }
}

impl Entry {
    fn of<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// The set order: by hash, then by the shingle itself.
fn order(text_a: &str, a: &Entry, text_b: &str, b: &Entry) -> Ordering {
    a.hash
        .cmp(&b.hash)
        .then_with(|| a.of(text_a).cmp(b.of(text_b)))
}

/// `|A ∩ B| / |A ∪ B|` as one division of exact counts; 1.0 when both sets
/// are empty.
pub fn jaccard(a: &ShingleSet, b: &ShingleSet) -> f64 {
    let common = a.intersection_len(b);
    let union = a.len() + b.len() - common;
    if union == 0 {
        return 1.0;
    }
    common as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn sorted(set: &ShingleSet) -> BTreeSet<&str> {
        set.shingles().collect()
    }

    #[test]
    fn windows_of_three_tokens() {
        let set = ShingleSet::of_text("The quick, brown fox jumps.");
        assert_eq!(
            sorted(&set),
            BTreeSet::from(["the quick brown", "quick brown fox", "brown fox jumps"])
        );
    }

    #[test]
    fn short_texts_use_their_tokens() {
        assert_eq!(
            sorted(&ShingleSet::of_text("Hello, hello")),
            BTreeSet::from(["hello"])
        );
        assert_eq!(
            sorted(&ShingleSet::of_text("a b")),
            BTreeSet::from(["a", "b"])
        );
        assert!(ShingleSet::of_text("?!").is_empty());
    }

    #[test]
    fn hashes_are_h64_of_the_shingles() {
        let set = ShingleSet::of_text("Tokyo 東京都 and a few more words than eight, nine, ten");
        assert!(set.len() > 8);
        for entry in &set.entries {
            assert_eq!(entry.hash, crate::text::hash::h64(set.shingle(entry)));
        }
    }

    #[test]
    fn repeated_windows_count_once() {
        let set = ShingleSet::of_text("a b c a b c a b c");
        assert_eq!(set.len(), 3);
        assert_eq!(set.hashes().count(), 3);
    }

    #[test]
    fn cjk_bigrams_are_tokens_of_shingles() {
        let set = ShingleSet::of_text("東京都");
        assert_eq!(sorted(&set), BTreeSet::from(["東京", "京都"]));
    }

    #[test]
    fn jaccard_of_exact_counts() {
        let a = ShingleSet::of_text("a b c d e");
        let b = ShingleSet::of_text("a b c d x");
        // {abc, bcd, cde} vs {abc, bcd, cdx}: 2 / 4.
        assert_eq!(jaccard(&a, &b), 0.5);
        assert_eq!(jaccard(&a, &a), 1.0);
        assert_eq!(jaccard(&a, &ShingleSet::default()), 0.0);
        assert_eq!(jaccard(&ShingleSet::default(), &ShingleSet::default()), 1.0);
        let c = ShingleSet::of_text("one two three four");
        let d = ShingleSet::of_text("two three four five six");
        // {one two three, two three four} vs {two three four, three four five, four five six}
        assert_eq!(jaccard(&c, &d), 1.0 / 4.0);
    }

    #[test]
    fn jaccard_is_symmetric() {
        let a = ShingleSet::of_text("the cat sat on the mat with the hat");
        let b = ShingleSet::of_text("the cat sat on a mat with a hat");
        assert_eq!(jaccard(&a, &b), jaccard(&b, &a));
        assert_eq!(jaccard(&a, &b), 2.0 / 12.0);
    }
}
