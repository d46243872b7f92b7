//! The text analytics of `docs/compute-spec.md`, as pure functions over
//! plain Rust types: no gRPC, no async. [`crate::compute_service`] adapts
//! them to the wire; tests, the shared vectors and the benchmarks call them
//! directly.
//!
//! | module | spec | what |
//! |---|---|---|
//! | [`normalize`] | §2, §3 | NFKC + lowercase, CJK ranges, letter/number classes |
//! | [`tokens`] | §3 | runs, CJK bigrams, UAX #29 word tokens |
//! | [`hash`] | §5 | `h64`: BLAKE2b with an 8-byte digest, one string or eight at once (SIMD) |
//! | [`analysis`] | §6 | counts, sentences, reading time, top terms |
//! | [`simhash`] | §6 | SimHash and Hamming distance |
//! | [`shingles`] | §4 | shingle sets and exact Jaccard |
//! | [`compare`](mod@compare) | §7 | Compare |
//! | [`minhash`] | §8.1 | splitmix64 parameters and MinHash signatures (SIMD) |
//! | [`near_duplicates`] | §8 | LSH banding, exact verification, clusters |
//!
//! Long computations take a [`Cancellation`](crate::cancel::Cancellation)
//! and stop between chunks of work once it fires. Integers are exact; the
//! only floating-point results are Jaccard similarities, each one division.

pub mod analysis;
pub mod compare;
pub mod hash;
pub mod minhash;
pub mod near_duplicates;
pub mod normalize;
pub mod search;
pub mod shingles;
pub mod simhash;
pub mod tokens;

pub use analysis::{Analysis, DEFAULT_TOP_K, TermCount, analyze};
pub use compare::{Comparison, compare};
pub use near_duplicates::{
    Document, NearDuplicates, NearDuplicatesError, Pair, find_near_duplicates,
};
pub use normalize::normalise;
pub use shingles::{ShingleSet, jaccard};
pub use tokens::{Tokens, tokenize};
