//! 64-bit SimHash of a token multiset (`docs/compute-spec.md` §6).

use super::hash::h64;

/// SimHash of the distinct tokens of a text with their counts: every token
/// votes with its count on each bit of its `h64`; a bit is set when the
/// votes for it outweigh those against. No tokens gives 0.
pub fn simhash<'a>(counts: impl IntoIterator<Item = (&'a str, u32)>) -> u64 {
    let mut votes = [0_i64; 64];
    for (token, count) in counts {
        let hash = h64(token);
        let count = i64::from(count);
        for (bit, vote) in votes.iter_mut().enumerate() {
            if hash >> bit & 1 == 1 {
                *vote += count;
            } else {
                *vote -= count;
            }
        }
    }
    votes
        .iter()
        .enumerate()
        .filter(|(_, vote)| **vote > 0)
        .fold(0, |fingerprint, (bit, _)| fingerprint | 1 << bit)
}

/// Hamming distance between two fingerprints, in `0..=64`.
pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tokens_is_zero() {
        assert_eq!(simhash([]), 0);
    }

    #[test]
    fn one_token_is_its_hash() {
        assert_eq!(simhash([("abc", 1)]), h64("abc"));
        assert_eq!(simhash([("abc", 7)]), h64("abc"));
    }

    #[test]
    fn ties_clear_the_bit() {
        // Two tokens of equal weight: only bits both hashes set survive.
        let (a, b) = (h64("a"), h64("b"));
        assert_eq!(simhash([("a", 2), ("b", 2)]), a & b);
        // A heavier token wins every bit it disagrees on.
        assert_eq!(simhash([("a", 3), ("b", 2)]), a);
    }

    #[test]
    fn distance_counts_differing_bits() {
        assert_eq!(distance(0, u64::MAX), 64);
        assert_eq!(distance(0b1010, 0b0110), 2);
        assert_eq!(distance(42, 42), 0);
    }
}
