//! The service's domain error and its single mapping onto gRPC.
//!
//! Request conversion, the worker pool and the handlers return
//! [`ComputeError`]; the one `impl From<ComputeError> for Status` below
//! decides the gRPC code, the message a caller may see and the
//! `google.rpc` details (`ErrorInfo` always, `BadRequest` for invalid
//! input) carried in `grpc-status-details-bin`. Keeping it in one place is
//! what makes the codes consistent across RPCs.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::cancel::Interrupted;
use crate::text::NearDuplicatesError;

/// `ErrorInfo.domain` of every error this service raises: names the service
/// that produced the error, so a client of the gateway can tell it apart
/// from the gateway's own errors.
pub const ERROR_DOMAIN: &str = "compute.nuell.dev";

/// One rule a request field breaks, named the way `BadRequest` expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path to the field in the request, e.g. `documents[3].id`.
    pub field: String,
    /// The protovalidate rule id, e.g. `string.max_bytes`, so callers and
    /// the gateway (which checks the same rules) name violations alike.
    pub rule: &'static str,
    /// Human-readable statement of the rule that was broken.
    pub description: String,
}

/// Everything that can go wrong while serving a compute request.
///
/// Variants carry only what a caller may see, because their `Display` text
/// becomes the status message: no internal detail belongs in them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComputeError {
    /// The request breaks rules declared on its fields; every broken rule is
    /// reported at once (up to a cap) so a client can fix them in one round
    /// trip.
    #[error("{}", invalid_message(.request_id.as_deref(), *.total))]
    InvalidArgument {
        /// The first violations found, at most
        /// [`VIOLATIONS_REPORTED_MAX`](crate::limits::VIOLATIONS_REPORTED_MAX).
        violations: Vec<FieldViolation>,
        /// How many violations there are in all.
        total: usize,
        /// The `id` of the offending AnalyzeStream request, which the stream's
        /// final status must name.
        request_id: Option<String>,
    },
    /// The batch is well formed but holds more text than one call may.
    #[error("the batch holds {bytes} bytes of document text; the limit is {limit}")]
    BatchTooLarge {
        /// Document text in the batch, in bytes.
        bytes: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The batch's documents are so alike that the pairs to check or to
    /// report exceed what one call may hold.
    #[error(
        "the batch makes too many similar pairs to answer in one call; \
         split it or raise the threshold"
    )]
    TooManyPairs,
    /// A request message that does not decode as its type (random bytes,
    /// another message, a truncated one).
    #[error("the request is not a valid message of the request type")]
    MalformedMessage,
    /// One gRPC message is larger than the transport accepts.
    #[error("the message is larger than the limit of {limit} bytes")]
    MessageTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The caller's deadline passed before the answer was ready.
    #[error("the deadline passed before the computation finished")]
    DeadlineExceeded,
    /// The call was cancelled before the answer was ready.
    #[error("the call was cancelled")]
    Cancelled,
    /// A bug: the computation failed unexpectedly. Logged where it happens;
    /// the caller learns nothing more.
    #[error("internal error")]
    Internal,
}

fn invalid_message(request_id: Option<&str>, total: usize) -> String {
    let rules = format!("{total} field rule(s)");
    match request_id {
        Some(id) => format!("request {id:?} breaks {rules}"),
        None => format!("the request breaks {rules}"),
    }
}

impl ComputeError {
    /// Stable `ErrorInfo.reason`: clients branch on this, never on messages.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::BatchTooLarge { .. } => "BATCH_TOO_LARGE",
            Self::TooManyPairs => "TOO_MANY_PAIRS",
            Self::MalformedMessage => "MALFORMED_REQUEST",
            Self::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Cancelled => "CANCELLED",
            Self::Internal => "INTERNAL",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } | Self::MalformedMessage => Code::InvalidArgument,
            Self::BatchTooLarge { .. } | Self::TooManyPairs | Self::MessageTooLarge { .. } => {
                Code::ResourceExhausted
            }
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Cancelled => Code::Cancelled,
            Self::Internal => Code::Internal,
        }
    }

    fn metadata(&self) -> HashMap<String, String> {
        let pairs: Vec<(&str, String)> = match self {
            Self::InvalidArgument {
                request_id: Some(id),
                ..
            } => vec![("id", id.clone())],
            Self::BatchTooLarge { bytes, limit } => {
                vec![("bytes", bytes.to_string()), ("limit", limit.to_string())]
            }
            Self::MessageTooLarge { limit } => vec![("limit", limit.to_string())],
            _ => vec![],
        };
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }
}

impl From<Interrupted> for ComputeError {
    fn from(interrupted: Interrupted) -> Self {
        match interrupted {
            Interrupted::Cancelled => Self::Cancelled,
            Interrupted::DeadlineExceeded => Self::DeadlineExceeded,
        }
    }
}

impl From<NearDuplicatesError> for ComputeError {
    fn from(error: NearDuplicatesError) -> Self {
        match error {
            NearDuplicatesError::Interrupted(interrupted) => interrupted.into(),
            NearDuplicatesError::TooManyPairs => Self::TooManyPairs,
        }
    }
}

impl From<ComputeError> for Status {
    fn from(error: ComputeError) -> Self {
        let mut details = ErrorDetails::new();
        if let ComputeError::InvalidArgument { violations, .. } = &error {
            details.set_bad_request(
                violations
                    .iter()
                    .map(|violation| tonic_types::FieldViolation {
                        field: violation.field.clone(),
                        description: violation.description.clone(),
                        reason: violation.rule.to_owned(),
                        localized_message: None,
                    })
                    .collect::<Vec<_>>(),
            );
        }
        details.set_error_info(error.reason(), ERROR_DOMAIN, error.metadata());
        Status::with_error_details(error.code(), error.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(field: &str, rule: &'static str) -> FieldViolation {
        FieldViolation {
            field: field.to_owned(),
            rule,
            description: format!("breaks {rule}"),
        }
    }

    #[test]
    fn invalid_argument_lists_every_violation() {
        let status = Status::from(ComputeError::InvalidArgument {
            violations: vec![
                violation("top_k", "uint32.lte"),
                violation("text", "string.max_bytes"),
            ],
            total: 2,
            request_id: None,
        });

        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "the request breaks 2 field rule(s)");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo attached");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, ERROR_DOMAIN);
        let violations: Vec<_> = details
            .bad_request()
            .expect("BadRequest attached")
            .field_violations
            .iter()
            .map(|v| (v.field.as_str(), v.reason.as_str()))
            .collect();
        assert_eq!(
            violations,
            [("top_k", "uint32.lte"), ("text", "string.max_bytes")]
        );
    }

    #[test]
    fn invalid_stream_request_is_named() {
        let status = Status::from(ComputeError::InvalidArgument {
            violations: vec![violation("text", "string.max_bytes")],
            total: 1,
            request_id: Some("req-7".to_owned()),
        });
        assert_eq!(status.message(), "request \"req-7\" breaks 1 field rule(s)");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo attached");
        assert_eq!(info.metadata.get("id").map(String::as_str), Some("req-7"));
    }

    #[test]
    fn each_error_has_its_code_and_reason() {
        for (error, code, reason) in [
            (
                ComputeError::BatchTooLarge { bytes: 2, limit: 1 },
                Code::ResourceExhausted,
                "BATCH_TOO_LARGE",
            ),
            (
                ComputeError::TooManyPairs,
                Code::ResourceExhausted,
                "TOO_MANY_PAIRS",
            ),
            (
                ComputeError::MessageTooLarge { limit: 1 },
                Code::ResourceExhausted,
                "MESSAGE_TOO_LARGE",
            ),
            (
                ComputeError::MalformedMessage,
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
            ),
            (
                ComputeError::DeadlineExceeded,
                Code::DeadlineExceeded,
                "DEADLINE_EXCEEDED",
            ),
            (ComputeError::Cancelled, Code::Cancelled, "CANCELLED"),
            (ComputeError::Internal, Code::Internal, "INTERNAL"),
        ] {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            let details = status.get_error_details();
            assert_eq!(
                details.error_info().map(|i| i.reason.as_str()),
                Some(reason)
            );
            assert!(details.bad_request().is_none());
        }
    }

    #[test]
    fn batch_too_large_carries_the_sizes() {
        let status = Status::from(ComputeError::BatchTooLarge {
            bytes: 200,
            limit: 100,
        });
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo attached");
        assert_eq!(info.metadata.get("bytes").map(String::as_str), Some("200"));
        assert_eq!(info.metadata.get("limit").map(String::as_str), Some("100"));
    }
}
