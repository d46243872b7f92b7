//! FindNearDuplicates: MinHash/LSH candidates, exact verification and
//! clustering (`docs/compute-spec.md` §8).
//!
//! Cost grows with the batch plus the candidate pairs, in three passes:
//!
//! 1. **Sketch**, one pass over the documents in chunks on every thread:
//!    each document is normalised and tokenised into reused buffers, its
//!    shingles hashed eight at a time ([`Lanes`]), its signature folded
//!    with SIMD ([`fold_into`]) and only a 64-bit key per band kept (256
//!    bytes a document at 32 bands, not the 1 KiB signature): the band's
//!    digest in the high bits, the document's index in the low ones.
//! 2. **Bands**: per band one sort of those keys; documents that share a
//!    digest in some band are *tentative* candidates.
//! 3. **Exact**: only the documents in tentative pairs (a few percent of a
//!    typical batch) are shingled again with their strings and their full
//!    signatures; a tentative pair is a candidate when one of its bands is
//!    equal value for value (so a digest collision never makes one), and a
//!    candidate is reported when its exact Jaccard reaches the threshold.
//!
//! Every stage runs on the current rayon pool and checks the
//! [`Cancellation`] between chunks.
//!
//! Candidates grow with the square of the number of mutually similar
//! documents (a batch of identical texts pairs every document with every
//! other), so their number is capped: past
//! [`CANDIDATE_PAIRS_MAX`] band matches or [`PAIRS_MAX`] verified pairs
//! the batch is refused instead of exhausting memory on an answer that
//! could not be sent anyway.

use std::sync::atomic::{AtomicUsize, Ordering};

use pulp::Arch;
use rayon::prelude::*;

use super::hash::Lanes;
use super::minhash::{K, Signature, fold_into};
use super::normalize::normalise_into;
use super::shingles::{ShingleSet, jaccard};
use super::tokens::{Tokens, tokenize_into};
use crate::cancel::{Cancellation, Interrupted};
use crate::limits::{CANDIDATE_PAIRS_MAX, PAIRS_MAX};

/// Rows-per-band values to try, largest (fewest candidates) first.
const ROWS_PER_BAND: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// The probability with which a pair exactly at the threshold must become a
/// candidate.
const TARGET_RECALL: f64 = 0.99;

/// Documents sketched as one piece of work: enough shingles to keep the
/// hash lanes full, few enough to spread over the threads.
const SKETCH_CHUNK: usize = 256;

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

/// The banding of one batch: `bands` bands of `rows` signature values.
#[derive(Debug, Clone, Copy)]
struct Banding {
    rows: usize,
    bands: usize,
}

impl Banding {
    fn of(threshold: f64) -> Self {
        let rows = rows_per_band(threshold);
        Self {
            rows,
            bands: K / rows,
        }
    }

    fn band<'a>(&self, signature: &'a Signature, band: usize) -> &'a [u64] {
        &signature[band * self.rows..(band + 1) * self.rows]
    }
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
    let banding = Banding::of(threshold);
    let mask = index_mask(documents.len());
    let keys = sketch(documents, banding, mask, cancel)?;
    let tentative = tentative_pairs(&keys, banding, mask, caps, cancel)?;
    let verified = verify(documents, &tentative, banding, threshold, cancel)?;
    if verified.len() > caps.pairs {
        return Err(NearDuplicatesError::TooManyPairs);
    }
    Ok(assemble(documents, &verified))
}

/// The band keys of one chunk of documents, band by band: the keys of
/// band `b` are `keys[b * present..(b + 1) * present]`, one for each
/// document of the chunk that has shingles (the others take no part).
struct ChunkKeys {
    keys: Vec<u64>,
    present: usize,
}

/// Where a key keeps the document's index: the low bits, as many as the
/// batch's size needs; the band's digest fills the rest.
fn index_mask(documents: usize) -> u64 {
    let bits = usize::BITS - documents.leading_zeros();
    (1u64 << bits) - 1
}

/// Band keys of every document, chunk by chunk in document order.
fn sketch(
    documents: &[Document],
    banding: Banding,
    mask: u64,
    cancel: &Cancellation,
) -> Result<Vec<ChunkKeys>, Interrupted> {
    documents
        .par_chunks(SKETCH_CHUNK)
        .enumerate()
        .map_init(Sketcher::default, |sketcher, (chunk, documents)| {
            cancel.check()?;
            Ok(sketcher.sketch(documents, chunk * SKETCH_CHUNK, banding, mask))
        })
        .collect()
}

/// The buffers one thread reuses from document to document.
#[derive(Default)]
struct Sketcher {
    arch: Arch,
    normalised: String,
    /// Token boundaries in `normalised`.
    spans: Vec<(usize, usize)>,
    lanes: Lanes,
    /// Where each document's hashes end in `lanes.out`.
    ends: Vec<usize>,
}

impl Sketcher {
    fn sketch(
        &mut self,
        documents: &[Document],
        first: usize,
        banding: Banding,
        mask: u64,
    ) -> ChunkKeys {
        self.lanes.out.clear();
        self.ends.clear();
        for document in documents {
            self.queue_shingles(&document.text);
            self.ends.push(self.lanes.out.len());
        }
        self.lanes.flush();
        let mut start = 0;
        let present = self
            .ends
            .iter()
            .filter(|&&end| std::mem::replace(&mut start, end) < end)
            .count();
        let mut keys = vec![0; present * banding.bands];
        let (mut start, mut at) = (0, 0);
        for (doc, &end) in (first..).zip(&self.ends) {
            let hashes = &self.lanes.out[start..end];
            start = end;
            if hashes.is_empty() {
                continue;
            }
            let mut signature = [u64::MAX; K];
            fold_into(&self.arch, hashes, &mut signature);
            for band in 0..banding.bands {
                let digest = digest(banding.band(&signature, band));
                keys[band * present + at] = (digest & !mask) | doc as u64;
            }
            at += 1;
        }
        ChunkKeys { keys, present }
    }

    /// Queues the `h64` of every shingle of `text` (spec §4; repeats too,
    /// which leave a minimum unchanged).
    fn queue_shingles(&mut self, text: &str) {
        normalise_into(text, &mut self.normalised);
        let mut tokens = Tokens::default();
        tokenize_into(&self.normalised, &mut tokens);
        let base = self.normalised.as_ptr() as usize;
        self.spans.clear();
        self.spans.extend(tokens.terms.iter().map(|term| {
            let start = term.as_ptr() as usize - base;
            (start, start + term.len())
        }));
        drop(tokens);
        let term = |&(start, end): &(usize, usize)| &self.normalised[start..end];
        if self.spans.len() < 3 {
            for span in &self.spans {
                self.lanes.push_joined(&[term(span)]);
            }
        } else {
            for window in self.spans.windows(3) {
                self.lanes
                    .push_joined(&[term(&window[0]), term(&window[1]), term(&window[2])]);
            }
        }
    }
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

/// Pairs of document indices `(i, j)`, `i < j`, packed as `i << 32 | j`,
/// that share the digest of at least one band; sorted and without repeats.
fn tentative_pairs(
    chunks: &[ChunkKeys],
    banding: Banding,
    mask: u64,
    caps: Caps,
    cancel: &Cancellation,
) -> Result<Vec<u64>, NearDuplicatesError> {
    let budget = Budget {
        used: AtomicUsize::new(0),
        limit: caps.candidates,
    };
    let per_band: Vec<Vec<u64>> = (0..banding.bands)
        .into_par_iter()
        .map(|band| band_pairs(chunks, band, mask, &budget, cancel))
        .collect::<Result<_, NearDuplicatesError>>()?;
    let mut pairs: Vec<u64> = per_band.into_iter().flatten().collect();
    cancel.check()?;
    pairs.par_sort_unstable();
    pairs.dedup();
    Ok(pairs)
}

/// Pairs from one band: its keys in one sort, so documents with the same
/// digest end up side by side. A key keeps only the digest's high bits,
/// which can only put more documents in a group, never fewer, and every
/// pair is checked value for value later.
fn band_pairs(
    chunks: &[ChunkKeys],
    band: usize,
    index_mask: u64,
    budget: &Budget,
    cancel: &Cancellation,
) -> Result<Vec<u64>, NearDuplicatesError> {
    let mut keyed: Vec<u64> = chunks
        .iter()
        .flat_map(|chunk| &chunk.keys[band * chunk.present..(band + 1) * chunk.present])
        .copied()
        .collect();
    keyed.sort_unstable();
    cancel.check()?;

    let mut pairs = Vec::new();
    let mut charged = 0;
    for group in keyed.chunk_by(|x, y| (x ^ y) & !index_mask == 0) {
        for (n, &i) in group.iter().enumerate() {
            for &j in &group[n + 1..] {
                pairs.push((i & index_mask) << 32 | (j & index_mask));
            }
            // Big groups (many near-identical texts) make many pairs.
            if n % 256 == 255 {
                cancel.check()?;
                budget.charge(pairs.len() - charged)?;
                charged = pairs.len();
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

/// What the exact pass keeps for a document of some tentative pair.
struct Exact {
    shingles: ShingleSet,
    signature: Signature,
}

/// The tentative pairs that are candidates (a band equal value for value)
/// and whose exact Jaccard is at least `threshold`, with it.
fn verify(
    documents: &[Document],
    tentative: &[u64],
    banding: Banding,
    threshold: f64,
    cancel: &Cancellation,
) -> Result<Vec<(u32, u32, f64)>, Interrupted> {
    // Every document of some pair, once, and where its sketch is.
    let mut involved: Vec<u32> = tentative
        .iter()
        .flat_map(|&packed| [(packed >> 32) as u32, packed as u32])
        .collect();
    involved.par_sort_unstable();
    involved.dedup();
    let mut position = vec![u32::MAX; documents.len()];
    for (at, &doc) in involved.iter().enumerate() {
        position[doc as usize] = at as u32;
    }
    let exact: Vec<Exact> = involved
        .par_chunks(SKETCH_CHUNK)
        .map(|docs| {
            cancel.check()?;
            let arch = Arch::new();
            Ok(docs
                .iter()
                .map(|&doc| {
                    let shingles = ShingleSet::of_text(&documents[doc as usize].text);
                    let hashes: Vec<u64> = shingles.hashes().collect();
                    let mut signature = [u64::MAX; K];
                    fold_into(&arch, &hashes, &mut signature);
                    Exact {
                        shingles,
                        signature,
                    }
                })
                .collect::<Vec<_>>())
        })
        .collect::<Result<Vec<_>, Interrupted>>()?
        .into_iter()
        .flatten()
        .collect();

    let chunks: Vec<Vec<(u32, u32, f64)>> = tentative
        .par_chunks(VERIFY_CHUNK)
        .map(|chunk| {
            cancel.check()?;
            Ok(chunk
                .iter()
                .filter_map(|&packed| {
                    let (i, j) = ((packed >> 32) as u32, packed as u32);
                    let x = &exact[position[i as usize] as usize];
                    let y = &exact[position[j as usize] as usize];
                    (0..banding.bands)
                        .any(|band| {
                            banding.band(&x.signature, band) == banding.band(&y.signature, band)
                        })
                        .then(|| jaccard(&x.shingles, &y.shingles))
                        .filter(|&similarity| similarity >= threshold)
                        .map(|similarity| (i, j, similarity))
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
