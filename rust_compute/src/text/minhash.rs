//! MinHash signatures over shingle sets (`docs/compute-spec.md` §8, step 1).

use pulp::{Arch, Simd, WithSimd};

use super::shingles::ShingleSet;

/// Hash functions per signature.
pub const K: usize = 128;

/// The Mersenne prime 2⁶¹ − 1 that the hash functions work modulo.
pub const PRIME: u64 = (1 << 61) - 1;

/// Seed of the parameter generator: "NUELL-MH" in ASCII.
const SEED: u64 = 0x4E55_454C_4C2D_4D48;

/// One document's signature: for each hash function, the least value it
/// takes over the document's shingles.
pub type Signature = [u64; K];

/// `(aᵢ, bᵢ)` of the hash functions `hᵢ(x) = (aᵢ·x + bᵢ) mod p`, drawn in
/// order from splitmix64 at compile time, so every process has the same.
pub const PARAMS: [(u64, u64); K] = {
    let mut state = SEED;
    let mut params = [(0, 0); K];
    let mut i = 0;
    while i < K {
        let a = 1 + splitmix64(&mut state) % (PRIME - 1);
        let b = splitmix64(&mut state) % PRIME;
        params[i] = (a, b);
        i += 1;
    }
    params
};

/// The splitmix64 generator step, all arithmetic modulo 2⁶⁴.
pub const fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `v mod (2⁶¹ − 1)` for `v < 2¹²⁴`, exactly (the tests' reference for
/// [`fold_into`]): since 2⁶¹ ≡ 1, the high and
/// low 61-bit halves can be added, which is much cheaper than a 128-bit
/// division and gives the same value.
#[cfg(test)]
fn mod_prime(v: u128) -> u64 {
    let prime = u128::from(PRIME);
    // < 2⁶¹ + 2⁶³, so it fits in a u64.
    let folded = ((v & prime) + (v >> 61)) as u64;
    // < 2⁶¹ + 4: at most one subtraction is left.
    let folded = (folded & PRIME) + (folded >> 61);
    if folded >= PRIME {
        folded - PRIME
    } else {
        folded
    }
}

/// `hᵢ(x)` for the shingle hash already reduced modulo p, with 128-bit
/// arithmetic as the spec writes it (the tests' reference).
#[cfg(test)]
fn hash_function(i: usize, x: u64) -> u64 {
    let (a, b) = PARAMS[i];
    mod_prime(u128::from(a) * u128::from(x) + u128::from(b))
}

/// The MinHash signature of a non-empty set. (An empty set has none; it
/// would come out as all `u64::MAX`.)
pub fn signature(shingles: &ShingleSet) -> Signature {
    let hashes: Vec<u64> = shingles.hashes().collect();
    let mut signature = [u64::MAX; K];
    fold_into(&Arch::new(), &hashes, &mut signature);
    signature
}

/// The low and high 32 bits of every `aᵢ` (the high ones are below 2²⁹),
/// and the `bᵢ`, as lane-wide arrays for [`fold_into`].
const A_LOW: [u64; K] = split(0, 0xFFFF_FFFF);
const A_HIGH: [u64; K] = split(32, u64::MAX);
const B: [u64; K] = {
    let mut b = [0; K];
    let mut i = 0;
    while i < K {
        b[i] = PARAMS[i].1;
        i += 1;
    }
    b
};

const fn split(shift: u32, mask: u64) -> [u64; K] {
    let mut part = [0; K];
    let mut i = 0;
    while i < K {
        part[i] = (PARAMS[i].0 >> shift) & mask;
        i += 1;
    }
    part
}

/// Lowers `signature` to the minimum of itself and every `hᵢ` of the
/// shingles whose `h64` are `hashes`: what [`signature`] computes, by
/// arithmetic the compiler vectorises over the 128 functions.
///
/// `hᵢ(x) = (aᵢ·x + bᵢ) mod p` without 128-bit products: with
/// `a = a₁·2³² + a₀` and `x = x₁·2³² + x₀` (a₁, x₁ < 2²⁹),
/// `a·x = a₁x₁·2⁶⁴ + (a₁x₀ + a₀x₁)·2³² + a₀x₀`, and since 2⁶¹ ≡ 1 (mod p):
/// 2⁶⁴ ≡ 8; the middle term m < 2⁶² is `(m >> 29)·2⁶¹ + (m mod 2²⁹)·2³²`
/// ≡ `(m >> 29) + (m mod 2²⁹)·2³²`; a₀x₀ ≡ `(a₀x₀ mod 2⁶¹) + (a₀x₀ >> 61)`.
/// The six terms plus b add up to less than 2⁶³, and one fold of that sum
/// leaves at most one subtraction of p. Each product is of two 32-bit
/// values: one `vpmuludq` per lane.
pub fn fold_into(arch: &Arch, hashes: &[u64], signature: &mut Signature) {
    arch.dispatch(Fold { hashes, signature });
}

/// [`fold_into`] as a job for [`Arch::dispatch`], which compiles it once
/// per instruction set.
struct Fold<'a> {
    hashes: &'a [u64],
    signature: &'a mut Signature,
}

impl WithSimd for Fold<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Fold { hashes, signature } = self;
        for &hash in hashes {
            let x = reduce(hash);
            let (x_low, x_high) = (x & 0xFFFF_FFFF, x >> 32);
            // The compiler vectorises this loop over the functions: the
            // minima are loaded and stored once per shingle and register.
            for i in 0..K {
                let (a_low, a_high) = (A_LOW[i] & 0xFFFF_FFFF, A_HIGH[i] & 0xFFFF_FFFF);
                let low = a_low * x_low;
                let middle = a_low * x_high + a_high * x_low;
                let high = a_high * x_high;
                let sum = (high << 3)
                    + (middle >> 29)
                    + ((middle & 0x1FFF_FFFF) << 32)
                    + (low & PRIME)
                    + (low >> 61)
                    + B[i];
                // < 2⁶¹ + 4; subtracting p wraps around unless it is at
                // least p, so the smaller of the two is the remainder.
                let folded = (sum & PRIME) + (sum >> 61);
                signature[i] = signature[i].min(folded.min(folded.wrapping_sub(PRIME)));
            }
        }
    }
}

/// `v mod p` for any 64-bit `v`.
#[inline(always)]
fn reduce(v: u64) -> u64 {
    // < 2⁶¹ + 8: at most one subtraction is left.
    let folded = (v & PRIME) + (v >> 61);
    if folded >= PRIME {
        folded - PRIME
    } else {
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_follow_splitmix64_from_the_seed() {
        let mut state = SEED;
        let first = splitmix64(&mut state);
        let second = splitmix64(&mut state);
        assert_eq!(PARAMS[0], (1 + first % (PRIME - 1), second % PRIME));
        // Reference values of splitmix64 seeded with 0 (Vigna's generator).
        let mut zero = 0;
        assert_eq!(splitmix64(&mut zero), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut zero), 0x6E78_9E6A_A1B9_65F4);
        for (a, b) in PARAMS {
            assert!((1..PRIME).contains(&a) && b < PRIME);
        }
    }

    #[test]
    fn mod_prime_equals_the_remainder() {
        let prime = u128::from(PRIME);
        let mut state = 12_345;
        let mut values = vec![0, 1, prime - 1, prime, prime + 1, 2 * prime, prime * prime];
        values.push((prime - 1) * (prime - 1) + (prime - 1));
        for _ in 0..10_000 {
            let a = u128::from(splitmix64(&mut state) % PRIME);
            let x = u128::from(splitmix64(&mut state) % PRIME);
            let b = u128::from(splitmix64(&mut state) % PRIME);
            values.push(a * x + b);
        }
        for v in values {
            assert_eq!(u128::from(mod_prime(v)), v % prime, "{v}");
        }
    }

    #[test]
    fn fold_into_equals_the_exact_formula() {
        // Shingle hashes near the edges of the arithmetic, then random ones.
        let prime = PRIME;
        let mut hashes = vec![
            0,
            1,
            prime - 1,
            prime,
            prime + 1,
            u64::MAX,
            u64::MAX - 7,
            1 << 61,
        ];
        let mut state = 99;
        hashes.extend((0..2000).map(|_| splitmix64(&mut state)));
        for hash in hashes {
            let mut fast = [u64::MAX; K];
            fold_into(&Arch::new(), &[hash], &mut fast);
            for (i, slot) in fast.iter().enumerate() {
                assert_eq!(*slot, hash_function(i, hash % PRIME), "{hash} function {i}");
            }
        }
    }

    #[test]
    fn signature_is_the_minimum_per_function() {
        let set = ShingleSet::of_text("one two three four five");
        let signature = signature(&set);
        for (i, slot) in signature.iter().enumerate() {
            let want = set
                .hashes()
                .map(|h| {
                    let (a, b) = PARAMS[i];
                    let x = u128::from(h % PRIME);
                    ((u128::from(a) * x + u128::from(b)) % u128::from(PRIME)) as u64
                })
                .min();
            assert_eq!(Some(*slot), want, "function {i}");
        }
    }

    #[test]
    fn equal_sets_have_equal_signatures() {
        assert_eq!(
            signature(&ShingleSet::of_text("Same words, here!")),
            signature(&ShingleSet::of_text("same  words here"))
        );
    }
}
