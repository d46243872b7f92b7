//! `h64`, the one hash the spec uses (`docs/compute-spec.md` §5).

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};

/// BLAKE2b with an 8-byte digest (no key, salt or personalisation) over the
/// UTF-8 bytes of `s`, read as a little-endian `u64`.
///
/// The digest size is part of BLAKE2b's parameter block, so this is not the
/// first 8 bytes of BLAKE2b-512.
pub fn h64(s: &str) -> u64 {
    let digest = Blake2b::<U8>::digest(s.as_bytes());
    u64::from_le_bytes(digest.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_digests() {
        // int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")
        assert_eq!(h64("abc"), 6_455_300_059_550_759_896);
        assert_eq!(h64(""), 13_020_603_013_274_838_756);
        assert_eq!(h64("hello"), 9_022_087_748_821_825_191);
        assert_eq!(h64("東京"), 17_306_041_243_353_289_198);
        assert_eq!(h64("the quick brown"), 17_160_376_331_719_151_963);
    }
}
