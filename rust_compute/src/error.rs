//! The service's domain error and its single mapping onto gRPC.
//!
//! Handlers and the text modules return [`ComputeError`]; the one
//! `impl From<ComputeError> for Status` below decides the gRPC code, the
//! message a caller may see and the `google.rpc` details (`ErrorInfo` always,
//! `BadRequest` for invalid input) carried in `grpc-status-details-bin`.
//! Keeping it in one place is what makes the codes consistent across RPCs.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error this service raises: names the service
/// that produced the error, so a client of the gateway can tell it apart
/// from the gateway's own errors.
pub const ERROR_DOMAIN: &str = "compute.nuell.dev";

/// One rule a request field breaks, named the way `BadRequest` expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path to the field in the request, e.g. `documents[3].id`.
    pub field: String,
    /// Human-readable statement of the rule that was broken.
    pub description: String,
}

/// Everything that can go wrong while serving a compute request.
///
/// Variants carry only what a caller may see, because their `Display` text
/// becomes the status message: no internal detail belongs in them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComputeError {
    /// The RPC is part of the contract but this build does not serve it yet.
    #[error("{method} is not implemented yet by rust_compute")]
    NotImplemented {
        /// Full gRPC method path, e.g. `/nuell.compute.v1.ComputeService/Analyze`.
        method: &'static str,
    },
    /// The request breaks rules declared on its fields; every broken rule is
    /// reported at once so a client can fix them in one round trip.
    #[error("the request has {} invalid field(s)", .0.len())]
    InvalidArgument(Vec<FieldViolation>),
}

impl ComputeError {
    /// Stable `ErrorInfo.reason`: clients branch on this, never on messages.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotImplemented { .. } => "NOT_IMPLEMENTED",
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::NotImplemented { .. } => Code::Unimplemented,
            Self::InvalidArgument(_) => Code::InvalidArgument,
        }
    }
}

impl From<ComputeError> for Status {
    fn from(error: ComputeError) -> Self {
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        match &error {
            ComputeError::NotImplemented { method } => {
                metadata.insert("method".to_owned(), (*method).to_owned());
            }
            ComputeError::InvalidArgument(violations) => {
                for violation in violations {
                    details.add_bad_request_violation(
                        violation.field.clone(),
                        violation.description.clone(),
                    );
                }
            }
        }
        details.set_error_info(error.reason(), ERROR_DOMAIN, metadata);
        Status::with_error_details(error.code(), error.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_implemented_maps_to_unimplemented_with_error_info() {
        let status = Status::from(ComputeError::NotImplemented {
            method: "/nuell.compute.v1.ComputeService/Analyze",
        });

        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("Analyze"), "{}", status.message());
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo attached");
        assert_eq!(info.reason, "NOT_IMPLEMENTED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("method").map(String::as_str),
            Some("/nuell.compute.v1.ComputeService/Analyze")
        );
        assert!(details.bad_request().is_none());
    }

    #[test]
    fn invalid_argument_lists_every_violation() {
        let status = Status::from(ComputeError::InvalidArgument(vec![
            FieldViolation {
                field: "top_k".to_owned(),
                description: "must be at most 100".to_owned(),
            },
            FieldViolation {
                field: "text".to_owned(),
                description: "must be at most 1048576 bytes".to_owned(),
            },
        ]));

        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("INVALID_ARGUMENT")
        );
        let fields: Vec<_> = details
            .bad_request()
            .expect("BadRequest attached")
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["top_k", "text"]);
    }
}
