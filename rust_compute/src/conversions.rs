//! Between the wire and the text modules: proto requests are validated
//! into domain inputs by `TryFrom` (every `buf.validate` rule of the
//! contract, reported with its protovalidate rule id), and domain results
//! become proto responses by `From`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::error::{ComputeError, FieldViolation};
use crate::limits::{
    BATCH_TEXT_MAX_BYTES, DOCUMENT_ID_MIN_CHARS, DOCUMENT_TEXT_MAX_BYTES, DOCUMENTS_MAX,
    DOCUMENTS_MIN, ID_MAX_CHARS, TEXT_MAX_BYTES, TOP_K_MAX, VIOLATIONS_REPORTED_MAX,
};
use crate::proto::v1 as pb;
use crate::text;

/// A valid Analyze request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzeInput {
    /// The text, at most [`TEXT_MAX_BYTES`].
    pub text: String,
    /// Top terms wanted; 0 means the default.
    pub top_k: usize,
}

/// A valid Compare request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareInput {
    /// The first text.
    pub a: String,
    /// The second text.
    pub b: String,
}

/// A valid FindNearDuplicates request.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInput {
    /// 1 to 100,000 documents with unique ids.
    pub documents: Vec<text::Document>,
    /// In (0, 1].
    pub threshold: f64,
    /// UTF-8 bytes of document text in the batch, at most
    /// [`BATCH_TEXT_MAX_BYTES`].
    pub text_bytes: usize,
}

/// A valid request read from an AnalyzeStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInput {
    /// The caller's correlation id, echoed on the response.
    pub id: String,
    /// What to analyse.
    pub analyze: AnalyzeInput,
}

impl TryFrom<pb::AnalyzeRequest> for AnalyzeInput {
    type Error = ComputeError;

    fn try_from(request: pb::AnalyzeRequest) -> Result<Self, Self::Error> {
        let mut violations = Violations::default();
        violations.text_max_bytes("text", &request.text, TEXT_MAX_BYTES);
        violations.top_k("top_k", request.top_k);
        violations.finish(None)?;
        Ok(Self {
            text: request.text,
            top_k: request.top_k as usize,
        })
    }
}

impl TryFrom<pb::CompareRequest> for CompareInput {
    type Error = ComputeError;

    fn try_from(request: pb::CompareRequest) -> Result<Self, Self::Error> {
        let mut violations = Violations::default();
        violations.text_max_bytes("a", &request.a, TEXT_MAX_BYTES);
        violations.text_max_bytes("b", &request.b, TEXT_MAX_BYTES);
        violations.finish(None)?;
        Ok(Self {
            a: request.a,
            b: request.b,
        })
    }
}

impl TryFrom<pb::AnalyzeStreamRequest> for StreamInput {
    type Error = ComputeError;

    fn try_from(request: pb::AnalyzeStreamRequest) -> Result<Self, Self::Error> {
        let mut violations = Violations::default();
        violations.max_chars("id", &request.id, ID_MAX_CHARS);
        violations.text_max_bytes("text", &request.text, TEXT_MAX_BYTES);
        violations.top_k("top_k", request.top_k);
        // The status names the request; an over-long id is cut to the
        // longest valid one so the status stays small.
        violations.finish(Some(truncate_chars(&request.id, ID_MAX_CHARS)))?;
        Ok(Self {
            id: request.id,
            analyze: AnalyzeInput {
                text: request.text,
                top_k: request.top_k as usize,
            },
        })
    }
}

impl TryFrom<pb::FindNearDuplicatesRequest> for BatchInput {
    type Error = ComputeError;

    /// Field rules first (INVALID_ARGUMENT), then the batch's total text
    /// (RESOURCE_EXHAUSTED): a well-formed batch that is merely too big to
    /// take at once is a different problem for the caller than a broken one.
    fn try_from(request: pb::FindNearDuplicatesRequest) -> Result<Self, Self::Error> {
        let mut violations = Violations::default();
        let count = request.documents.len();
        if count < DOCUMENTS_MIN {
            violations.add(
                "documents",
                "repeated.min_items",
                format!("value must contain at least {DOCUMENTS_MIN} item(s)"),
            );
        }
        if count > DOCUMENTS_MAX {
            violations.add(
                "documents",
                "repeated.max_items",
                format!("value must contain no more than {DOCUMENTS_MAX} item(s)"),
            );
        }
        let mut first_with_id: HashMap<&str, usize> = HashMap::with_capacity(count);
        for (index, document) in request.documents.iter().enumerate() {
            let id_field = || format!("documents[{index}].id");
            let id_chars = document.id.chars().count();
            if id_chars < DOCUMENT_ID_MIN_CHARS {
                violations.add(
                    id_field(),
                    "string.min_len",
                    format!("value length must be at least {DOCUMENT_ID_MIN_CHARS} characters"),
                );
            }
            if id_chars > ID_MAX_CHARS {
                violations.add(
                    id_field(),
                    "string.max_len",
                    format!("value length must be at most {ID_MAX_CHARS} characters"),
                );
            }
            violations.text_max_bytes(
                format!("documents[{index}].text"),
                &document.text,
                DOCUMENT_TEXT_MAX_BYTES,
            );
            match first_with_id.entry(&document.id) {
                Entry::Occupied(first) => violations.add(
                    id_field(),
                    "documents.unique_ids",
                    format!(
                        "document ids must be unique within the batch; documents[{}] has the same id",
                        first.get()
                    ),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(index);
                }
            }
        }
        let threshold = request.threshold;
        // Written so that NaN fails too.
        if !(threshold > 0.0 && threshold <= 1.0) {
            violations.add(
                "threshold",
                "double.gt_lte",
                "value must be greater than 0 and less than or equal to 1",
            );
        }
        violations.finish(None)?;

        let bytes: usize = request.documents.iter().map(|d| d.text.len()).sum();
        if bytes > BATCH_TEXT_MAX_BYTES {
            return Err(ComputeError::BatchTooLarge {
                bytes,
                limit: BATCH_TEXT_MAX_BYTES,
            });
        }
        Ok(Self {
            documents: request
                .documents
                .into_iter()
                .map(|document| text::Document {
                    id: document.id,
                    text: document.text,
                })
                .collect(),
            threshold,
            text_bytes: bytes,
        })
    }
}

/// Collects the rules a request breaks, keeping the first
/// [`VIOLATIONS_REPORTED_MAX`] and counting the rest.
#[derive(Debug, Default)]
struct Violations {
    listed: Vec<FieldViolation>,
    total: usize,
}

impl Violations {
    fn add(
        &mut self,
        field: impl Into<String>,
        rule: &'static str,
        description: impl Into<String>,
    ) {
        self.total += 1;
        if self.listed.len() < VIOLATIONS_REPORTED_MAX {
            self.listed.push(FieldViolation {
                field: field.into(),
                rule,
                description: description.into(),
            });
        }
    }

    fn text_max_bytes(&mut self, field: impl Into<String>, text: &str, max: usize) {
        if text.len() > max {
            self.add(
                field,
                "string.max_bytes",
                format!("value length must be at most {max} bytes"),
            );
        }
    }

    fn max_chars(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.add(
                field,
                "string.max_len",
                format!("value length must be at most {max} characters"),
            );
        }
    }

    fn top_k(&mut self, field: &str, top_k: u32) {
        if top_k > TOP_K_MAX {
            self.add(
                field,
                "uint32.lte",
                format!("value must be less than or equal to {TOP_K_MAX}"),
            );
        }
    }

    /// `Ok` when nothing was broken; else INVALID_ARGUMENT, naming
    /// `request_id` for a streamed request.
    fn finish(self, request_id: Option<&str>) -> Result<(), ComputeError> {
        if self.total == 0 {
            return Ok(());
        }
        Err(ComputeError::InvalidArgument {
            violations: self.listed,
            total: self.total,
            request_id: request_id.map(str::to_owned),
        })
    }
}

/// The first `max` characters of `value`.
fn truncate_chars(value: &str, max: usize) -> &str {
    match value.char_indices().nth(max) {
        Some((end, _)) => &value[..end],
        None => value,
    }
}

/// Counts on the wire are `uint32`; a text within the limits never comes
/// near, but saturating keeps an impossible overflow from wrapping.
fn wire_count(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

impl From<text::Analysis> for pb::TextAnalysis {
    fn from(analysis: text::Analysis) -> Self {
        Self {
            byte_count: wire_count(analysis.byte_count),
            char_count: wire_count(analysis.char_count),
            word_count: wire_count(analysis.word_count),
            sentence_count: wire_count(analysis.sentence_count),
            line_count: wire_count(analysis.line_count),
            reading_time_seconds: u32::try_from(analysis.reading_time_seconds).unwrap_or(u32::MAX),
            top_terms: analysis
                .top_terms
                .into_iter()
                .map(|term| pb::TermCount {
                    term: term.term,
                    count: term.count,
                })
                .collect(),
            simhash: analysis.simhash,
        }
    }
}

impl From<text::Comparison> for pb::CompareResponse {
    fn from(comparison: text::Comparison) -> Self {
        Self {
            jaccard: comparison.jaccard,
            simhash_distance: comparison.simhash_distance,
        }
    }
}

impl From<text::NearDuplicates> for pb::FindNearDuplicatesResponse {
    fn from(result: text::NearDuplicates) -> Self {
        Self {
            clusters: result
                .clusters
                .into_iter()
                .map(|document_ids| pb::Cluster { document_ids })
                .collect(),
            pairs: result
                .pairs
                .into_iter()
                .map(|pair| pb::DocumentPair {
                    a: pair.a,
                    b: pair.b,
                    jaccard: pair.jaccard,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(error: ComputeError) -> Vec<(String, &'static str)> {
        match error {
            ComputeError::InvalidArgument { violations, .. } => {
                violations.into_iter().map(|v| (v.field, v.rule)).collect()
            }
            other => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    fn document(id: &str, text: &str) -> pb::Document {
        pb::Document {
            id: id.to_owned(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn analyze_limits_are_inclusive() {
        let at_limit = pb::AnalyzeRequest {
            text: "a".repeat(TEXT_MAX_BYTES),
            top_k: TOP_K_MAX,
        };
        assert!(AnalyzeInput::try_from(at_limit).is_ok());
        let over = pb::AnalyzeRequest {
            text: "a".repeat(TEXT_MAX_BYTES + 1),
            top_k: TOP_K_MAX + 1,
        };
        let error = AnalyzeInput::try_from(over).expect_err("both fields too big");
        assert_eq!(
            violations(error),
            [
                ("text".to_owned(), "string.max_bytes"),
                ("top_k".to_owned(), "uint32.lte")
            ]
        );
    }

    #[test]
    fn text_limit_counts_bytes_not_characters() {
        // 349,526 three-byte characters: fewer than 1 Mi characters, more than 1 MiB.
        let request = pb::CompareRequest {
            a: "語".repeat(TEXT_MAX_BYTES / 3 + 1),
            b: String::new(),
        };
        let error = CompareInput::try_from(request).expect_err("too many bytes");
        assert_eq!(violations(error), [("a".to_owned(), "string.max_bytes")]);
    }

    #[test]
    fn batch_rules() {
        let empty = pb::FindNearDuplicatesRequest {
            documents: vec![],
            threshold: 0.5,
        };
        assert_eq!(
            violations(BatchInput::try_from(empty).expect_err("empty")),
            [("documents".to_owned(), "repeated.min_items")]
        );

        let request = pb::FindNearDuplicatesRequest {
            documents: vec![
                document("a", "fine"),
                document("", "no id"),
                document(&"é".repeat(129), "long id"),
                document("a", "duplicate id"),
                document("ok", &"x".repeat(DOCUMENT_TEXT_MAX_BYTES + 1)),
                document(&"é".repeat(128), &"x".repeat(DOCUMENT_TEXT_MAX_BYTES)),
            ],
            threshold: 0.0,
        };
        assert_eq!(
            violations(BatchInput::try_from(request).expect_err("many problems")),
            [
                ("documents[1].id".to_owned(), "string.min_len"),
                ("documents[2].id".to_owned(), "string.max_len"),
                ("documents[3].id".to_owned(), "documents.unique_ids"),
                ("documents[4].text".to_owned(), "string.max_bytes"),
                ("threshold".to_owned(), "double.gt_lte"),
            ]
        );
    }

    #[test]
    fn threshold_must_be_in_zero_to_one() {
        for (threshold, valid) in [
            (0.0, false),
            (-0.1, false),
            (f64::NAN, false),
            (1.0 + f64::EPSILON, false),
            (f64::MIN_POSITIVE, true),
            (0.5, true),
            (1.0, true),
        ] {
            let request = pb::FindNearDuplicatesRequest {
                documents: vec![document("a", "text")],
                threshold,
            };
            assert_eq!(BatchInput::try_from(request).is_ok(), valid, "{threshold}");
        }
    }

    #[test]
    fn violations_are_capped_but_counted() {
        let request = pb::FindNearDuplicatesRequest {
            documents: (0..1000).map(|_| document("", "")).collect(),
            threshold: 0.5,
        };
        match BatchInput::try_from(request) {
            Err(ComputeError::InvalidArgument {
                violations, total, ..
            }) => {
                assert_eq!(violations.len(), VIOLATIONS_REPORTED_MAX);
                // 1000 empty ids, and 999 of them repeat the first.
                assert_eq!(total, 1999);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_batch_is_resource_exhausted_not_invalid() {
        let text = "x".repeat(DOCUMENT_TEXT_MAX_BYTES);
        let count = BATCH_TEXT_MAX_BYTES / DOCUMENT_TEXT_MAX_BYTES + 1;
        let request = pb::FindNearDuplicatesRequest {
            documents: (0..count)
                .map(|i| pb::Document {
                    id: i.to_string(),
                    text: text.clone(),
                })
                .collect(),
            threshold: 0.5,
        };
        assert_eq!(
            BatchInput::try_from(request),
            Err(ComputeError::BatchTooLarge {
                bytes: count * DOCUMENT_TEXT_MAX_BYTES,
                limit: BATCH_TEXT_MAX_BYTES
            })
        );
    }

    #[test]
    fn stream_errors_name_the_request() {
        let request = pb::AnalyzeStreamRequest {
            id: "x".repeat(200),
            text: String::new(),
            top_k: 0,
        };
        match StreamInput::try_from(request) {
            Err(ComputeError::InvalidArgument {
                violations,
                request_id,
                ..
            }) => {
                assert_eq!(request_id, Some("x".repeat(ID_MAX_CHARS)));
                assert_eq!(violations[0].field, "id");
                assert_eq!(violations[0].rule, "string.max_len");
            }
            other => panic!("{other:?}"),
        }
    }
}
