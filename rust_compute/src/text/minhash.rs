//! MinHash signatures over shingle sets (`docs/compute-spec.md` §8, step 1).

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

/// `v mod (2⁶¹ − 1)` for `v < 2¹²⁴`, exactly: since 2⁶¹ ≡ 1, the high and
/// low 61-bit halves can be added, which is much cheaper than a 128-bit
/// division and gives the same value.
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

/// `hᵢ(x)` for the shingle hash already reduced modulo p.
fn hash_function(i: usize, x: u64) -> u64 {
    let (a, b) = PARAMS[i];
    mod_prime(u128::from(a) * u128::from(x) + u128::from(b))
}

/// The MinHash signature of a non-empty set. (An empty set has none; it
/// would come out as all `u64::MAX`.)
pub fn signature(shingles: &ShingleSet) -> Signature {
    let mut signature = [u64::MAX; K];
    for hash in shingles.hashes() {
        let x = hash % PRIME;
        for (i, slot) in signature.iter_mut().enumerate() {
            *slot = (*slot).min(hash_function(i, x));
        }
    }
    signature
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
