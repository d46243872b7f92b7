//! Prints how the text analytics perform, in-process on the pure modules
//! (no gRPC):
//!
//! - FindNearDuplicates on 1k, 10k and 100k documents of 300 characters,
//!   about 5 % of them planted near-duplicates, at threshold 0.8: time,
//!   time per document (flat when growth is linear), pairs reported
//!   (copies of one original may pair with each other too) and the share
//!   of planted pairs found;
//! - Analyze throughput in MB/s on 1 MiB texts (ASCII, Japanese, mixed),
//!   one text at a time, as one request runs.
//!
//! Run with `cargo run --release --example bench_near_duplicates`.
//! FindNearDuplicates uses rayon's global pool: one thread per core.

// Printing figures is what this program is for.
#![allow(clippy::print_stdout)]

#[path = "../tests/common/corpus.rs"]
mod corpus;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rust_compute::cancel::Cancellation;
use rust_compute::text::{Document, analyze, find_near_duplicates};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const CHARS: usize = 300;
/// One document in 20 (5 %) is a planted near-duplicate.
const DUPLICATE_EVERY: usize = 20;
const THRESHOLD: f64 = 0.8;
/// Runs per measurement; the fastest is reported, as the least disturbed.
const RUNS: usize = 3;

fn main() {
    let never = Cancellation::never();
    println!(
        "FindNearDuplicates: {CHARS}-character documents, 1 in {DUPLICATE_EVERY} planted, \
         threshold {THRESHOLD}, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "{:>9} {:>10} {:>10} {:>8} {:>8} {:>7}",
        "documents", "time", "µs/doc", "planted", "pairs", "recall"
    );
    for size in SIZES {
        let corpus = corpus::corpus(size, CHARS, DUPLICATE_EVERY, 42);
        let documents: Vec<Document> = corpus
            .documents
            .into_iter()
            .map(|(id, text)| Document { id, text })
            .collect();
        let mut result = None;
        let time = fastest(|| {
            result =
                Some(find_near_duplicates(&documents, THRESHOLD, &never).expect("not cancelled"));
        });
        let pairs = result.map(|r| r.pairs).unwrap_or_default();
        let found: HashSet<(&str, &str)> =
            pairs.iter().map(|p| (p.a.as_str(), p.b.as_str())).collect();
        let recalled = corpus
            .planted
            .iter()
            .filter(|(a, b)| found.contains(&(a.as_str(), b.as_str())))
            .count();
        println!(
            "{size:>9} {:>10} {:>10.1} {:>8} {:>8} {:>6.1}%",
            format!("{:.1} ms", time.as_secs_f64() * 1e3),
            time.as_secs_f64() * 1e6 / size as f64,
            corpus.planted.len(),
            pairs.len(),
            100.0 * recalled as f64 / corpus.planted.len().max(1) as f64,
        );
    }

    println!();
    println!("Analyze: 1 MiB texts, one at a time (one request's speed)");
    println!("{:>10} {:>10} {:>10}", "text", "time", "MB/s");
    for (name, unit) in [
        ("ascii", "The quick brown fox jumps over the lazy dog. "),
        ("japanese", "今日は良い天気なので、公園を散歩しました。"),
        (
            "mixed",
            "Rustで書いた gRPC サーバー is fast! 🚀 Ça marche très bien.\n",
        ),
    ] {
        let text = unit.repeat((1 << 20) / unit.len());
        let time = fastest(|| {
            analyze(&text, 10, &never).expect("not cancelled");
        });
        println!(
            "{name:>10} {:>10} {:>10.1}",
            format!("{:.1} ms", time.as_secs_f64() * 1e3),
            text.len() as f64 / 1e6 / time.as_secs_f64()
        );
    }
}

/// The fastest of [`RUNS`] runs of `work`.
fn fastest(mut work: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}
