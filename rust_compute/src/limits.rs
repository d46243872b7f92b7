//! Every limit the service enforces, in one place. The request limits
//! mirror the `buf.validate` rules of the contract
//! (`proto/nuell/compute/v1/compute_service.proto`) and §10 of
//! `docs/compute-spec.md`; change them there first.

/// Longest text of Analyze, Compare and AnalyzeStream, in UTF-8 bytes.
pub const TEXT_MAX_BYTES: usize = 1 << 20;

/// Most top terms a request may ask for.
pub const TOP_K_MAX: u32 = 100;

/// Fewest documents in a FindNearDuplicates batch.
pub const DOCUMENTS_MIN: usize = 1;

/// Most documents in a FindNearDuplicates batch.
pub const DOCUMENTS_MAX: usize = 100_000;

/// Shortest document id, in characters (code points).
pub const DOCUMENT_ID_MIN_CHARS: usize = 1;

/// Longest document id, and longest AnalyzeStream id, in characters.
pub const ID_MAX_CHARS: usize = 128;

/// Longest text of one document, in UTF-8 bytes.
pub const DOCUMENT_TEXT_MAX_BYTES: usize = 64 << 10;

/// Most document text one batch may hold, in UTF-8 bytes; beyond it the
/// call is RESOURCE_EXHAUSTED (`BATCH_TOO_LARGE`), not invalid.
pub const BATCH_TEXT_MAX_BYTES: usize = 128 << 20;

/// Largest gRPC message accepted or sent. Above the batch limit, so that a
/// batch of 128 MiB of text with its ids and framing still decodes and gets
/// the precise `BATCH_TOO_LARGE` answer.
pub const MESSAGE_MAX_BYTES: usize = 192 << 20;

/// Most field violations listed in one INVALID_ARGUMENT answer. A batch of
/// 100,000 bad documents must not produce megabytes of trailers.
pub const VIOLATIONS_REPORTED_MAX: usize = 100;

/// Most band matches (candidate pairs before duplicates across bands are
/// removed) one FindNearDuplicates call may make: 1 GiB of pair indices.
/// Ordinary batches make far fewer; thousands of identical texts make
/// more, and are refused (RESOURCE_EXHAUSTED, `TOO_MANY_PAIRS`) instead of
/// exhausting memory. Not in the spec: a safety limit of this service.
pub const CANDIDATE_PAIRS_MAX: usize = 1 << 27;

/// Most verified pairs one FindNearDuplicates answer may hold: a pair takes
/// at least 17 bytes on the wire (two one-character ids, a double, tags and
/// lengths), so more could never fit in [`MESSAGE_MAX_BYTES`].
pub const PAIRS_MAX: usize = MESSAGE_MAX_BYTES / 17;
