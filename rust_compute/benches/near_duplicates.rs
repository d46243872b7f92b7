//! FindNearDuplicates in process on a corpus file (one text a line), for
//! profiling: `cargo bench --bench near_duplicates -- FILE [THRESHOLD [RUNS]]`,
//! or the built binary under `perf record`. Prints the fastest of RUNS
//! (3) runs and the pairs found. bench/README.md shows how to write the
//! benchmark's corpus to a file.

// Printing figures is what this program is for.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use rust_compute::cancel::Cancellation;
use rust_compute::text::{Document, find_near_duplicates};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let path = args.next().expect("a corpus file: one text a line");
    let threshold: f64 = args.next().and_then(|t| t.parse().ok()).unwrap_or(0.7);
    let runs: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(3);
    let text = std::fs::read_to_string(&path).expect("a readable corpus file");
    let documents: Vec<Document> = text
        .lines()
        .enumerate()
        .map(|(i, line)| Document {
            id: format!("{i:07}"),
            text: line.to_owned(),
        })
        .collect();
    let never = Cancellation::never();
    let mut best = f64::INFINITY;
    let mut pairs = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let result = find_near_duplicates(&documents, threshold, &never).expect("an answer");
        best = best.min(started.elapsed().as_secs_f64());
        pairs = result.pairs.len();
    }
    println!(
        "{} documents, threshold {threshold}, {} threads: {best:.3} s, {pairs} pairs",
        documents.len(),
        rayon::current_num_threads()
    );
}
