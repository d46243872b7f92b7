//! FindNearDuplicates: MinHash/LSH candidates, exact verification and
//! clustering (`docs/compute-spec.md` §8).
//!
//! Cost grows with the batch plus the candidate pairs: signatures are one
//! pass over the documents, each band is one sort, and only pairs that
//! share a band are ever compared exactly. Every stage runs on the current
//! rayon pool and checks the [`Cancellation`] between chunks.
//!
//! Candidates grow with the square of the number of mutually similar
//! documents (a batch of identical texts pairs every document with every
//! other), so their number is capped: past
//! [`CANDIDATE_PAIRS_MAX`] band matches or [`PAIRS_MAX`] verified pairs
//! the batch is refused instead of exhausting memory on an answer that
//! could not be sent anyway.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::minhash::{K, Signature, signature};
use super::shingles::{ShingleSet, jaccard};
use crate::cancel::{Cancellation, Interrupted};
use crate::limits::{CANDIDATE_PAIRS_MAX, PAIRS_MAX};

/// Rows-per-band values to try, largest (fewest candidates) first.
const ROWS_PER_BAND: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// The probability with which a pair exactly at the threshold must become a
/// candidate.
const TARGET_RECALL: f64 = 0.99;

/// Pairs verified between two cancellation checks.
const VERIFY_CHUNK: usize = 4096;

/// One document of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The caller's id, unique within the batch.
    pub id: String,
    /// The raw text.
    pub text: String,
}

/// A verified pair; `a < b` by code points.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The smaller id.
    pub a: String,
    /// The larger id.
    pub b: String,
    /// Exact Jaccard similarity of the two shingle sets.
    pub jaccard: f64,
}

/// The answer for one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NearDuplicates {
    /// Connected components of `pairs`, ids sorted, ordered by first id.
    pub clusters: Vec<Vec<String>>,
    /// Every verified pair, ordered by `(a, b)`.
    pub pairs: Vec<Pair>,
}

/// Why a batch got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearDuplicatesError {
    /// The caller cancelled or its deadline passed.
    Interrupted(Interrupted),
    /// The batch makes more candidate or verified pairs than one call may.
    TooManyPairs,
}

impl From<Interrupted> for NearDuplicatesError {
    fn from(interrupted: Interrupted) -> Self {
        Self::Interrupted(interrupted)
    }
}

/// Caps on the work one batch may make; see the module documentation.
#[derive(Debug, Clone, Copy)]
struct Caps {
    /// Band matches, counted before duplicates across bands are removed.
    candidates: usize,
    /// Verified pairs.
    pairs: usize,
}

/// What is kept per document that has shingles.
struct Sketch {
    /// Index of the document in the batch.
    doc: u32,
    shingles: ShingleSet,
    signature: Signature,
}

/// Every pair of `documents` whose shingle Jaccard similarity is at least
/// `threshold` among the LSH candidates, and the clusters they form.
/// `threshold` must be in (0, 1] and ids unique; callers validate both.
pub fn find_near_duplicates(
    documents: &[Document],
    threshold: f64,
    cancel: &Cancellation,
) -> Result<NearDuplicates, NearDuplicatesError> {
    let caps = Caps {
        candidates: CANDIDATE_PAIRS_MAX,
        pairs: PAIRS_MAX,
    };
    find_within(documents, threshold, caps, cancel)
}

fn find_within(
    documents: &[Document],
    threshold: f64,
    caps: Caps,
    cancel: &Cancellation,
) -> Result<NearDuplicates, NearDuplicatesError> {
    let sketches = sketch(documents, cancel)?;
    let candidates = candidate_pairs(&sketches, rows_per_band(threshold), caps, cancel)?;
    let verified = verify(&sketches, &candidates, threshold, cancel)?;
    if verified.len() > caps.pairs {
        return Err(NearDuplicatesError::TooManyPairs);
    }
    Ok(assemble(documents, &verified))
}

/// Shingles and signatures of every document that has shingles; the
/// others take no part.
fn sketch(documents: &[Document], cancel: &Cancellation) -> Result<Vec<Sketch>, Interrupted> {
    let sketches: Vec<Option<Sketch>> = documents
        .par_iter()
        .enumerate()
        .map(|(doc, document)| {
            cancel.check()?;
            let shingles = ShingleSet::of_text(&document.text);
            if shingles.is_empty() {
                return Ok(None);
            }
            Ok(Some(Sketch {
                // Batches hold at most 100,000 documents; the pair packing
                // below relies on indices fitting in 32 bits.
                doc: u32::try_from(doc).unwrap_or(u32::MAX),
                signature: signature(&shingles),
                shingles,
            }))
        })
        .collect::<Result<_, Interrupted>>()?;
    Ok(sketches.into_iter().flatten().collect())
}

/// The largest rows-per-band r for which a pair exactly at `threshold`
/// becomes a candidate with probability at least 99 %: `1 − (1 − tʳ)^(K/r)`.
/// `powf` is the C library's `pow`, as Python's `**` on floats is.
pub fn rows_per_band(threshold: f64) -> usize {
    ROWS_PER_BAND
        .into_iter()
        .find(|&rows| {
            let bands = (K / rows) as f64;
            1.0 - (1.0 - threshold.powf(rows as f64)).powf(bands) >= TARGET_RECALL
        })
        .unwrap_or(1)
}

/// Pairs of sketch indices `(i, j)`, `i < j`, packed as `i << 32 | j`, that
/// agree on at least one whole band; sorted and without repeats.
fn candidate_pairs(
    sketches: &[Sketch],
    rows: usize,
    caps: Caps,
    cancel: &Cancellation,
) -> Result<Vec<u64>, NearDuplicatesError> {
    let budget = Budget {
        used: AtomicUsize::new(0),
        limit: caps.candidates,
    };
    let per_band: Vec<Vec<u64>> = (0..K / rows)
        .into_par_iter()
        .map(|band| band_candidates(sketches, band * rows..(band + 1) * rows, &budget, cancel))
        .collect::<Result<_, NearDuplicatesError>>()?;
    let mut pairs: Vec<u64> = per_band.into_iter().flatten().collect();
    cancel.check()?;
    pairs.par_sort_unstable();
    pairs.dedup();
    Ok(pairs)
}

/// Candidates from one band: sketches are grouped by a 64-bit digest of the
/// band, then split by the band's exact values, so a digest collision can
/// never make a pair a candidate.
fn band_candidates(
    sketches: &[Sketch],
    rows: std::ops::Range<usize>,
    budget: &Budget,
    cancel: &Cancellation,
) -> Result<Vec<u64>, NearDuplicatesError> {
    let band = |i: u32| &sketches[i as usize].signature[rows.clone()];
    let mut keyed: Vec<(u64, u32)> = (0..sketches.len() as u32)
        .map(|i| (digest(band(i)), i))
        .collect();
    keyed.sort_unstable();
    cancel.check()?;

    let mut pairs = Vec::new();
    let mut charged = 0;
    let mut group: Vec<u32> = Vec::new();
    for same_digest in keyed.chunk_by(|x, y| x.0 == y.0) {
        if same_digest.len() < 2 {
            continue;
        }
        group.clear();
        group.extend(same_digest.iter().map(|&(_, i)| i));
        group.sort_unstable_by(|&x, &y| band(x).cmp(band(y)).then(x.cmp(&y)));
        for equal in group.chunk_by(|&x, &y| band(x) == band(y)) {
            for (n, &i) in equal.iter().enumerate() {
                for &j in &equal[n + 1..] {
                    pairs.push(u64::from(i) << 32 | u64::from(j));
                }
                // Big groups (many near-identical texts) make many pairs.
                if n % 256 == 255 {
                    cancel.check()?;
                    budget.charge(pairs.len() - charged)?;
                    charged = pairs.len();
                }
            }
        }
    }
    budget.charge(pairs.len() - charged)?;
    Ok(pairs)
}

/// Band matches made so far by all bands together, against the cap.
struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    fn charge(&self, pairs: usize) -> Result<(), NearDuplicatesError> {
        let used = self.used.fetch_add(pairs, Ordering::Relaxed) + pairs;
        if used > self.limit {
            return Err(NearDuplicatesError::TooManyPairs);
        }
        Ok(())
    }
}

/// A fast digest of a band's values; only groups candidates, never decides.
fn digest(values: &[u64]) -> u64 {
    values.iter().fold(0x243F_6A88_85A3_08D3, |acc, &v| {
        (acc ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29)
    })
}

/// The candidate pairs whose exact Jaccard is at least `threshold`, with it.
fn verify(
    sketches: &[Sketch],
    candidates: &[u64],
    threshold: f64,
    cancel: &Cancellation,
) -> Result<Vec<(u32, u32, f64)>, Interrupted> {
    let chunks: Vec<Vec<(u32, u32, f64)>> = candidates
        .par_chunks(VERIFY_CHUNK)
        .map(|chunk| {
            cancel.check()?;
            Ok(chunk
                .iter()
                .filter_map(|&packed| {
                    let (x, y) = (
                        &sketches[(packed >> 32) as usize],
                        &sketches[packed as u32 as usize],
                    );
                    let similarity = jaccard(&x.shingles, &y.shingles);
                    (similarity >= threshold).then_some((x.doc, y.doc, similarity))
                })
                .collect())
        })
        .collect::<Result<_, Interrupted>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// Pairs named and ordered by id, and the clusters they form.
fn assemble(documents: &[Document], verified: &[(u32, u32, f64)]) -> NearDuplicates {
    let id = |doc: u32| documents[doc as usize].id.as_str();
    let mut pairs: Vec<Pair> = verified
        .iter()
        .map(|&(x, y, jaccard)| {
            let (a, b) = if id(x) < id(y) { (x, y) } else { (y, x) };
            Pair {
                a: id(a).to_owned(),
                b: id(b).to_owned(),
                jaccard,
            }
        })
        .collect();
    pairs.sort_unstable_by(|p, q| (&p.a, &p.b).cmp(&(&q.a, &q.b)));

    let mut components = UnionFind::new(documents.len());
    for &(x, y, _) in verified {
        components.union(x, y);
    }
    let mut members: Vec<(u32, &str)> = verified
        .iter()
        .flat_map(|&(x, y, _)| [x, y])
        .map(|doc| (components.find(doc), id(doc)))
        .collect();
    members.sort_unstable();
    members.dedup();
    let mut clusters: Vec<Vec<String>> = members
        .chunk_by(|p, q| p.0 == q.0)
        .map(|component| {
            let mut ids: Vec<String> = component.iter().map(|&(_, id)| id.to_owned()).collect();
            ids.sort_unstable();
            ids
        })
        .collect();
    clusters.sort_unstable();
    NearDuplicates { clusters, pairs }
}

/// Disjoint sets over document indices, with path halving and union by
/// size, so clustering is near-linear in the number of pairs.
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(len: usize) -> Self {
        Self {
            parent: (0..len as u32).collect(),
            size: vec![1; len],
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x
    }

    fn union(&mut self, x: u32, y: u32) {
        let (mut x, mut y) = (self.find(x), self.find(y));
        if x == y {
            return;
        }
        if self.size[x as usize] < self.size[y as usize] {
            std::mem::swap(&mut x, &mut y);
        }
        self.parent[y as usize] = x;
        self.size[x as usize] += self.size[y as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(items: &[(&str, &str)]) -> Vec<Document> {
        items
            .iter()
            .map(|(id, text)| Document {
                id: (*id).to_owned(),
                text: (*text).to_owned(),
            })
            .collect()
    }

    fn run(items: &[(&str, &str)], threshold: f64) -> NearDuplicates {
        find_near_duplicates(&docs(items), threshold, &Cancellation::never())
            .expect("never cancelled")
    }

    #[test]
    fn rows_per_band_follows_the_threshold() {
        assert_eq!(rows_per_band(1.0), 32);
        assert_eq!(rows_per_band(0.9), 8);
        assert_eq!(rows_per_band(0.8), 4);
        assert_eq!(rows_per_band(0.5), 2);
        assert_eq!(rows_per_band(0.2), 1);
        assert_eq!(rows_per_band(0.01), 1);
    }

    #[test]
    fn identical_and_near_identical_texts_pair_up() {
        let result = run(
            &[
                ("c", "the quick brown fox jumps over the lazy dog"),
                ("a", "The quick brown fox jumps over the lazy dog!"),
                ("b", "an entirely different sentence about something else"),
                ("d", "the quick brown fox jumps over the lazy cat"),
            ],
            0.7,
        );
        assert_eq!(
            result.pairs,
            [
                Pair {
                    a: "a".into(),
                    b: "c".into(),
                    jaccard: 1.0
                },
                Pair {
                    a: "a".into(),
                    b: "d".into(),
                    jaccard: 6.0 / 8.0
                },
                Pair {
                    a: "c".into(),
                    b: "d".into(),
                    jaccard: 6.0 / 8.0
                },
            ]
        );
        assert_eq!(result.clusters, [vec!["a", "c", "d"]]);
    }

    #[test]
    fn pairs_below_the_threshold_are_dropped() {
        let items = [
            ("x", "the quick brown fox jumps over the lazy dog"),
            ("y", "the quick brown fox jumps over the lazy cat"),
        ];
        assert_eq!(run(&items, 0.76), NearDuplicates::default());
        assert_eq!(run(&items, 0.75).pairs.len(), 1);
    }

    #[test]
    fn texts_without_shingles_take_no_part() {
        let result = run(&[("a", ""), ("b", "?!"), ("c", "😀"), ("d", "")], 1.0);
        assert_eq!(result, NearDuplicates::default());
    }

    #[test]
    fn clusters_are_components_ordered_by_first_id() {
        let result = run(
            &[
                ("z1", "alpha beta gamma delta"),
                ("m", "one two three four five"),
                ("z2", "alpha beta gamma delta"),
                ("b", "one two three four five"),
                ("n", "one two three four five"),
                ("solo", "nothing like the others at all"),
            ],
            1.0,
        );
        assert_eq!(result.clusters, [vec!["b", "m", "n"], vec!["z1", "z2"]]);
        let pairs: Vec<(&str, &str)> = result
            .pairs
            .iter()
            .map(|p| (p.a.as_str(), p.b.as_str()))
            .collect();
        assert_eq!(pairs, [("b", "m"), ("b", "n"), ("m", "n"), ("z1", "z2")]);
    }

    #[test]
    fn ids_order_by_code_points() {
        let result = run(
            &[
                ("é", "same text here"),
                ("z", "same text here"),
                ("Z", "same text here"),
            ],
            1.0,
        );
        assert_eq!(result.clusters, [vec!["Z", "z", "é"]]);
    }

    #[test]
    fn stops_when_cancelled() {
        let cancel = Cancellation::never();
        cancel.cancel();
        let result = find_near_duplicates(&docs(&[("a", "text")]), 0.5, &cancel);
        assert_eq!(
            result,
            Err(NearDuplicatesError::Interrupted(Interrupted::Cancelled))
        );
    }

    #[test]
    fn too_many_pairs_are_refused() {
        // 30 identical texts: 435 pairs, each matching in all 4 bands at t = 1.
        let items: Vec<(String, &str)> =
            (0..30).map(|i| (format!("{i:02}"), "same words")).collect();
        let items: Vec<(&str, &str)> = items
            .iter()
            .map(|(id, text)| (id.as_str(), *text))
            .collect();
        let documents = docs(&items);
        let never = Cancellation::never();
        let run =
            |candidates, pairs| find_within(&documents, 1.0, Caps { candidates, pairs }, &never);

        assert_eq!(run(435 * 4, 435).map(|r| r.pairs.len()), Ok(435));
        assert_eq!(
            run(435 * 4 - 1, 435),
            Err(NearDuplicatesError::TooManyPairs)
        );
        assert_eq!(run(435 * 4, 434), Err(NearDuplicatesError::TooManyPairs));
    }
}
