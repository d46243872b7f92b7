//! What a search index needs of a text (`docs/compute-spec.md` §12–§14):
//! tokens with search positions, MinHash band keys, and exact Jaccard of
//! one text against many.
//!
//! Positions grow by one within a run and by two across a run boundary, so
//! a phrase query never matches across punctuation between two CJK runs
//! ("東京・京都" does not contain "東京京都"), while words of one Latin run
//! stay adjacent whatever separates them.

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};

use super::minhash::{K, signature};
use super::normalize::{is_cjk, normalise};
use super::shingles::{ShingleSet, jaccard};
use super::tokens::tokenize;
use crate::cancel::{Cancellation, Interrupted};

/// Signature values per band of the stored band keys.
pub const BAND_ROWS: usize = 3;

/// Bands, hence band keys per text: 42 × 3 = the first 126 signature
/// values. A pair at Jaccard 0.5 shares a band with probability
/// 1 − (1 − 0.5³)⁴² ≈ 0.996; at 0.2, 0.29; at 0.1, 0.04.
pub const BANDS: usize = K / BAND_ROWS;

/// Where a token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A word segment of a non-CJK run.
    Word,
    /// A bigram of a CJK run of two or more code points.
    CjkBigram,
    /// A CJK run of one code point.
    CjkSingle,
}

/// A token with its search position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchToken {
    /// The normalised token.
    pub term: String,
    /// From 1; +1 within a run, +2 across a run boundary.
    pub position: u32,
    /// The kind of run it comes from.
    pub kind: Kind,
}

/// One text as an index stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokenized {
    /// Every token in text order.
    pub tokens: Vec<SearchToken>,
    /// The [`BANDS`] band keys when asked for and the text has shingles.
    pub band_keys: Vec<u64>,
}

fn kind_of(term: &str) -> Kind {
    let mut chars = term.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if is_cjk(c) => Kind::CjkSingle,
        (Some(c), Some(_)) if is_cjk(c) => Kind::CjkBigram,
        _ => Kind::Word,
    }
}

/// The tokens of a raw text with their search positions.
pub fn search_tokens(text: &str) -> Vec<SearchToken> {
    let normalised = normalise(text);
    let terms = tokenize(&normalised).terms;
    let base = normalised.as_ptr() as usize;
    let mut out: Vec<SearchToken> = Vec::with_capacity(terms.len());
    // (kind, byte start, byte end) of the previous token.
    let mut previous: Option<(Kind, usize, usize)> = None;
    for term in terms {
        // Every term borrows from `normalised`: its offset locates it.
        let start = term.as_ptr() as usize - base;
        let end = start + term.len();
        let kind = kind_of(term);
        let position = match previous {
            None => 1,
            Some((before, before_start, before_end)) => {
                let last = out.last().map_or(0, |token| token.position);
                let same_run = match (before, kind) {
                    // Consecutive word tokens always share a run: a CJK run
                    // between them would have yielded a token.
                    (Kind::Word, Kind::Word) => true,
                    // Bigrams of one run overlap by one code point.
                    (Kind::CjkBigram, Kind::CjkBigram) => {
                        start < before_end && start > before_start
                    }
                    _ => false,
                };
                last.saturating_add(if same_run { 1 } else { 2 })
            }
        };
        previous = Some((kind, start, end));
        out.push(SearchToken {
            term: term.to_owned(),
            position,
            kind,
        });
    }
    out
}

/// `h64` over raw bytes: BLAKE2b with an 8-byte digest, little-endian.
fn h64_bytes(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(Blake2b::<U8>::digest(bytes).into())
}

/// The band keys of a text: empty when it has no shingles; else for band
/// j = 0 … 41 the `h64` of the 24 bytes `LE64(sig[3j]) ‖ LE64(sig[3j+1]) ‖
/// LE64(sig[3j+2])`.
pub fn band_keys(text: &str) -> Vec<u64> {
    let shingles = ShingleSet::of_text(text);
    if shingles.is_empty() {
        return Vec::new();
    }
    let signature = signature(&shingles);
    signature
        .chunks_exact(BAND_ROWS)
        .take(BANDS)
        .map(|band| {
            let mut bytes = [0_u8; 8 * BAND_ROWS];
            for (slot, value) in bytes.chunks_exact_mut(8).zip(band) {
                slot.copy_from_slice(&value.to_le_bytes());
            }
            h64_bytes(&bytes)
        })
        .collect()
}

/// Tokens (and band keys when `with_band_keys`) of every text, in order.
pub fn tokenize_batch(
    texts: &[String],
    with_band_keys: bool,
    cancel: &Cancellation,
) -> Result<Vec<Tokenized>, Interrupted> {
    texts
        .iter()
        .map(|text| {
            cancel.check()?;
            Ok(Tokenized {
                tokens: search_tokens(text),
                band_keys: if with_band_keys {
                    band_keys(text)
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

/// `jaccard(shingles(text), shingles(other))` for every other, in order.
pub fn compare_many(
    text: &str,
    others: &[String],
    cancel: &Cancellation,
) -> Result<Vec<f64>, Interrupted> {
    let mine = ShingleSet::of_text(text);
    others
        .iter()
        .map(|other| {
            cancel.check()?;
            Ok(jaccard(&mine, &ShingleSet::of_text(other)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(text: &str) -> Vec<(String, u32)> {
        search_tokens(text)
            .into_iter()
            .map(|token| (token.term, token.position))
            .collect()
    }

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    #[test]
    fn positions_step_by_one_within_a_run() {
        assert_eq!(
            positions("東京都に住む"),
            pairs(&[
                ("東京", 1),
                ("京都", 2),
                ("都に", 3),
                ("に住", 4),
                ("住む", 5)
            ])
        );
        assert_eq!(
            positions("Hello, e-mail world"),
            pairs(&[("hello", 1), ("e", 2), ("mail", 3), ("world", 4)])
        );
    }

    #[test]
    fn positions_step_by_two_across_runs() {
        assert_eq!(positions("東京・京都"), pairs(&[("東京", 1), ("京都", 3)]));
        assert_eq!(
            positions("rust言語とpython・go"),
            pairs(&[
                ("rust", 1),
                ("言語", 3),
                ("語と", 4),
                ("python", 6),
                ("go", 7)
            ])
        );
        assert_eq!(
            positions("a 字 b 字本"),
            pairs(&[("a", 1), ("字", 3), ("b", 5), ("字本", 7)])
        );
    }

    #[test]
    fn kinds() {
        let kinds: Vec<Kind> = search_tokens("字 ab 東京")
            .into_iter()
            .map(|token| token.kind)
            .collect();
        assert_eq!(kinds, [Kind::CjkSingle, Kind::Word, Kind::CjkBigram]);
    }

    #[test]
    fn nfkc_and_case_apply_before_tokens() {
        assert_eq!(
            positions("ＡＢＣ　ﾗｰﾒﾝ"),
            pairs(&[("abc", 1), ("ラー", 3), ("ーメ", 4), ("メン", 5)])
        );
    }

    #[test]
    fn band_keys_are_42_and_follow_the_signature() {
        assert!(band_keys("?!").is_empty());
        let keys = band_keys("the quick brown fox jumps over the lazy dog");
        assert_eq!(keys.len(), BANDS);
        assert_eq!(
            keys,
            band_keys("The quick, brown fox jumps over the lazy dog!")
        );
        assert_ne!(keys, band_keys("a completely different sentence here"));
    }

    #[test]
    fn compare_many_is_jaccard_per_text() {
        let others = vec![
            "a b c d x".to_owned(),
            "a b c d e".to_owned(),
            String::new(),
        ];
        let got =
            compare_many("a b c d e", &others, &Cancellation::never()).expect("never cancelled");
        assert_eq!(got, [0.5, 1.0, 0.0]);
    }
}
