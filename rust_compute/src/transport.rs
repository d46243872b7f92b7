//! What the compute service needs from the gRPC transport that tonic does
//! not give it: the caller's deadline as an [`Instant`], and the contract's
//! status for a refused message.
//!
//! **Deadlines.** tonic enforces `grpc-timeout` by dropping the handler
//! future at the deadline and answering CANCELLED; it never tells the
//! handler the deadline, and it stops watching a server stream once its
//! headers are sent. [`Transport`] therefore stamps each request with a
//! [`Deadline`] as it reaches the service, and the worker pool answers
//! DEADLINE_EXCEEDED at that instant; server streams are bounded too.
//! tonic's timer started a moment earlier (it starts as the request enters
//! the server, we start when the router first polls it), so the stamp is
//! [`DEADLINE_HEADROOM`] early: that is what makes ours fire first. The
//! caller's own clock started earlier still, so nobody loses by it.
//!
//! **Refused messages.** tonic answers a message above the decoding
//! limit with OUT_OF_RANGE; the contract (spec §10) says
//! RESOURCE_EXHAUSTED, which is also what gRPC's other implementations
//! send. It answers a message that does not decode with INTERNAL and
//! prost's error text; that is the caller's mistake, not a bug, so the
//! contract says INVALID_ARGUMENT with reason MALFORMED_REQUEST (as the
//! gateway answers). [`Transport`] rewrites both for unary calls, and
//! [`inbound_status`] for messages read from a request stream. Our own
//! INTERNAL always carries ErrorInfo; tonic's never does, which is how
//! the two are told apart. Broken framing (a bad compressed-flag, a
//! truncated frame) stays INTERNAL, as gRPC's compression spec requires.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use crate::error::ComputeError;
use crate::limits::MESSAGE_MAX_BYTES;

/// How much earlier than `grpc-timeout` says the work is stopped; covers
/// the delay between tonic starting its timer and the router polling us.
pub const DEADLINE_HEADROOM: Duration = Duration::from_millis(5);

/// The instant after which the caller no longer wants an answer, from its
/// `grpc-timeout`; absent when the caller set no deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline stamped on `request`, if any.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Instant> {
        request
            .extensions()
            .get::<Self>()
            .map(|deadline| deadline.0)
    }
}

/// A gRPC service wrapped with deadline stamping and the contract's status
/// for refused messages. Mount it instead of the service itself.
#[derive(Debug, Clone)]
pub struct Transport<S> {
    inner: S,
}

impl<S> Transport<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for Transport<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Transport<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(deadline) = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .and_then(|timeout| {
                Instant::now().checked_add(timeout.saturating_sub(DEADLINE_HEADROOM))
            })
        {
            request.extensions_mut().insert(Deadline(deadline));
        }
        let response = self.inner.call(request);
        Box::pin(async move { Ok(rewrite_refusal(response.await?)) })
    }
}

/// A trailers-only answer carrying tonic's refusal of a request message
/// becomes the contract's status for it.
fn rewrite_refusal(response: http::Response<Body>) -> http::Response<Body> {
    match Status::from_header_map(response.headers()).and_then(|status| refusal(&status)) {
        Some(error) => Status::from(error).into_http(),
        None => response,
    }
}

/// The status to end a stream with when reading its next message failed.
pub fn inbound_status(status: Status) -> Status {
    refusal(&status).map_or(status, Status::from)
}

/// What tonic's refusal of a request message means in the contract.
fn refusal(status: &Status) -> Option<ComputeError> {
    if is_oversized(status) {
        Some(ComputeError::MessageTooLarge {
            limit: MESSAGE_MAX_BYTES,
        })
    } else if is_undecodable(status) {
        Some(ComputeError::MalformedMessage)
    } else {
        None
    }
}

/// Whether `status` is tonic's answer to a message that does not decode:
/// prost's error text, and none of the details our own statuses carry.
fn is_undecodable(status: &Status) -> bool {
    status.code() == tonic::Code::Internal
        && status.details().is_empty()
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
}

/// Whether `status` is tonic's refusal of a message above the decoding
/// limit. tonic marks it only by code and message text; a test in
/// `tests/limits.rs` notices if that text ever changes.
fn is_oversized(status: &Status) -> bool {
    status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .starts_with("Error, decoded message length too large")
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit
/// (`H`ours, `M`inutes, `S`econds, `m`illi-, `u` micro-, `n` nanoseconds).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        for (value, want) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("0n", Duration::ZERO),
        ] {
            assert_eq!(parse_grpc_timeout(value), Some(want), "{value}");
        }
    }

    #[test]
    fn rejects_malformed_values() {
        for value in [
            "",
            "S",
            "100",
            "123456789S",
            "1.5S",
            "-1S",
            "10s",
            "10ms",
            "１S",
        ] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn oversized_messages_become_resource_exhausted() {
        let tonic_says = Status::out_of_range(
            "Error, decoded message length too large: found 300 bytes, the limit is: 200 bytes",
        );
        assert_eq!(
            inbound_status(tonic_says).code(),
            tonic::Code::ResourceExhausted
        );
        let other = Status::out_of_range("something else");
        assert_eq!(inbound_status(other).code(), tonic::Code::OutOfRange);

        let response = Status::out_of_range(
            "Error, decoded message length too large: found 300 bytes, the limit is: 200 bytes",
        )
        .into_http::<Body>();
        let rewritten = rewrite_refusal(response);
        let status = Status::from_header_map(rewritten.headers()).expect("status in headers");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn undecodable_messages_become_invalid_argument() {
        let tonic_says = Status::internal("failed to decode Protobuf message: invalid varint");
        let status = inbound_status(tonic_says);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            !status.details().is_empty(),
            "ErrorInfo says MALFORMED_REQUEST"
        );

        let response = Status::internal("failed to decode Protobuf message: invalid wire type")
            .into_http::<Body>();
        let rewritten = rewrite_refusal(response);
        let status = Status::from_header_map(rewritten.headers()).expect("status in headers");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        // Our own INTERNAL (a bug) stays INTERNAL, whatever its text.
        let ours = Status::from(ComputeError::Internal);
        assert_eq!(inbound_status(ours).code(), tonic::Code::Internal);
    }
}
