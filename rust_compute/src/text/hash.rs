//! `h64`, the one hash the spec uses (`docs/compute-spec.md` §5), one
//! string at a time ([`h64`]) or many at once ([`Lanes`]).

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use pulp::{Arch, Simd, WithSimd};

/// BLAKE2b with an 8-byte digest (no key, salt or personalisation) over the
/// UTF-8 bytes of `s`, read as a little-endian `u64`.
///
/// The digest size is part of BLAKE2b's parameter block, so this is not the
/// first 8 bytes of BLAKE2b-512.
pub fn h64(s: &str) -> u64 {
    let digest = Blake2b::<U8>::digest(s.as_bytes());
    u64::from_le_bytes(digest.into())
}

/// Messages hashed side by side, one per SIMD lane: 8 × 64 bits fill an
/// AVX-512 register, two AVX2 registers.
const LANES: usize = 8;

/// BLAKE2b's block: a message up to this long is one compression.
const BLOCK: usize = 128;

/// BLAKE2b's initialisation vector.
const IV: [u64; 8] = [
    0x6A09_E667_F3BC_C908,
    0xBB67_AE85_84CA_A73B,
    0x3C6E_F372_FE94_F82B,
    0xA54F_F53A_5F1D_36F1,
    0x510E_527F_ADE6_82D1,
    0x9B05_688C_2B3E_6C1F,
    0x1F83_D9AB_FB41_BD6B,
    0x5BE0_CD19_137E_2179,
];

/// The first state word for an 8-byte digest without key: the parameter
/// block's first word (digest length 8, key length 0, fanout 1, depth 1)
/// mixed into IV[0]. The other seven state words are the IV itself.
const H0: u64 = IV[0] ^ 0x0101_0008;

/// BLAKE2b's message schedule (rounds 10 and 11 repeat rounds 0 and 1).
const SIGMA: [[usize; 16]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

type Words = [u64; LANES];

/// [`h64`] of many strings, [`LANES`] at a time: each string is copied
/// into its own lane's block, and a full set of lanes is compressed by one
/// pass of BLAKE2b over lane-wide words, which the compiler turns into
/// SIMD instructions (AVX-512 or AVX2, chosen at run time by `pulp`).
///
/// Every string of at most 128 bytes is one BLAKE2b block, and so one
/// compression with the final flag set; a longer one (rare for shingles)
/// is hashed at once by [`h64`]. The results are the same as [`h64`]'s.
pub struct Lanes {
    arch: Arch,
    blocks: [[u8; BLOCK]; LANES],
    lengths: [u64; LANES],
    /// Where each lane's result goes in `out`.
    slots: [usize; LANES],
    filled: usize,
    /// Results, in the order the strings were pushed.
    pub out: Vec<u64>,
}

impl Default for Lanes {
    fn default() -> Self {
        Self::new()
    }
}

impl Lanes {
    /// An empty hasher for the machine's best SIMD instructions.
    pub fn new() -> Self {
        Self {
            arch: Arch::new(),
            blocks: [[0; BLOCK]; LANES],
            lengths: [0; LANES],
            slots: [0; LANES],
            filled: 0,
            out: Vec::new(),
        }
    }

    /// Queues the string made of `parts` joined by single spaces; its
    /// hash lands in `out` at the index `out.len()` had before the call
    /// once [`flush`](Self::flush) has run.
    pub fn push_joined(&mut self, parts: &[&str]) {
        let slot = self.out.len();
        self.out.push(0);
        let len =
            parts.iter().map(|part| part.len()).sum::<usize>() + parts.len().saturating_sub(1);
        if len > BLOCK {
            self.out[slot] = h64(&parts.join(" "));
            return;
        }
        let block = &mut self.blocks[self.filled];
        let mut at = 0;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                block[at] = b' ';
                at += 1;
            }
            block[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        block[at..].fill(0);
        self.lengths[self.filled] = len as u64;
        self.slots[self.filled] = slot;
        self.filled += 1;
        if self.filled == LANES {
            self.flush();
        }
    }

    /// Hashes whatever is queued.
    pub fn flush(&mut self) {
        if self.filled == 0 {
            return;
        }
        let mut message = [[0u64; LANES]; 16];
        for (lane, block) in self.blocks[..self.filled].iter().enumerate() {
            for (word, bytes) in message.iter_mut().zip(block.chunks_exact(8)) {
                let mut le = [0; 8];
                le.copy_from_slice(bytes);
                word[lane] = u64::from_le_bytes(le);
            }
        }
        let digests = self.arch.dispatch(Compress {
            message: &message,
            lengths: &self.lengths,
        });
        for (&slot, &digest) in self.slots[..self.filled].iter().zip(&digests) {
            self.out[slot] = digest;
        }
        self.filled = 0;
    }
}

/// [`compress`] as a job for [`Arch::dispatch`], which compiles it once per
/// instruction set.
struct Compress<'a> {
    message: &'a [Words; 16],
    lengths: &'a Words,
}

impl WithSimd for Compress<'_> {
    type Output = Words;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> Words {
        compress(self.message, self.lengths)
    }
}

/// One final BLAKE2b compression per lane from the initial state, with
/// message length `lengths[lane]`; returns each lane's first state word,
/// which is the whole 8-byte digest.
///
/// Written as one scalar compression inside a loop over the lanes, with
/// the rounds spelled out: the compiler vectorises that loop, each lane
/// of a register one message.
#[inline(always)]
fn compress(message: &[Words; 16], lengths: &Words) -> Words {
    let mut out = [0; LANES];
    for lane in 0..LANES {
        let m: [u64; 16] = std::array::from_fn(|word| message[word][lane]);
        let mut v = [
            H0,
            IV[1],
            IV[2],
            IV[3],
            IV[4],
            IV[5],
            IV[6],
            IV[7],
            IV[0],
            IV[1],
            IV[2],
            IV[3],
            IV[4] ^ lengths[lane],
            IV[5],
            !IV[6],
            IV[7],
        ];
        round(&mut v, &m, &SIGMA[0]);
        round(&mut v, &m, &SIGMA[1]);
        round(&mut v, &m, &SIGMA[2]);
        round(&mut v, &m, &SIGMA[3]);
        round(&mut v, &m, &SIGMA[4]);
        round(&mut v, &m, &SIGMA[5]);
        round(&mut v, &m, &SIGMA[6]);
        round(&mut v, &m, &SIGMA[7]);
        round(&mut v, &m, &SIGMA[8]);
        round(&mut v, &m, &SIGMA[9]);
        round(&mut v, &m, &SIGMA[0]);
        round(&mut v, &m, &SIGMA[1]);
        out[lane] = H0 ^ v[0] ^ v[8];
    }
    out
}

/// One BLAKE2b round: G on the columns, then on the diagonals.
#[inline(always)]
fn round(v: &mut [u64; 16], m: &[u64; 16], s: &[usize; 16]) {
    g(v, [0, 4, 8, 12], m[s[0]], m[s[1]]);
    g(v, [1, 5, 9, 13], m[s[2]], m[s[3]]);
    g(v, [2, 6, 10, 14], m[s[4]], m[s[5]]);
    g(v, [3, 7, 11, 15], m[s[6]], m[s[7]]);
    g(v, [0, 5, 10, 15], m[s[8]], m[s[9]]);
    g(v, [1, 6, 11, 12], m[s[10]], m[s[11]]);
    g(v, [2, 7, 8, 13], m[s[12]], m[s[13]]);
    g(v, [3, 4, 9, 14], m[s[14]], m[s[15]]);
}

/// BLAKE2b's mixing function G.
#[inline(always)]
fn g(v: &mut [u64; 16], [a, b, c, d]: [usize; 4], x: u64, y: u64) {
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
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

    #[test]
    fn lanes_equal_h64_at_every_length() {
        // Every length up to two blocks, in batches that leave lanes empty.
        let text: String = "abcdefghijklmnopqrstuvwxyz東京都"
            .chars()
            .cycle()
            .take(300)
            .collect();
        let mut strings: Vec<String> = (0..=260).map(|n| text.chars().take(n).collect()).collect();
        strings.push("a b".into());
        let mut lanes = Lanes::new();
        for s in &strings {
            lanes.push_joined(&[s]);
        }
        lanes.push_joined(&["the", "quick", "brown"]);
        lanes.push_joined(&[]);
        lanes.flush();
        let want: Vec<u64> = strings
            .iter()
            .map(|s| h64(s))
            .chain([h64("the quick brown"), h64("")])
            .collect();
        assert_eq!(lanes.out, want);
    }
}
