//! The tower layer every call passes through, mounted once around the
//! whole server (compute, health and reflection alike): it gives the call
//! its identity, its log span and its place in the metrics, so no handler
//! does any of that itself.
//!
//! Per call, [`Telemetry`]:
//!
//! 1. reads the [`RequestContext`] (request id, W3C trace context) from
//!    the request metadata;
//! 2. runs the call inside an `rpc` span with `method`, `request_id`,
//!    `trace_id` and `span_id` fields, so every log line about the call
//!    names it (the worker pool carries the span onto its threads);
//! 3. returns `x-request-id`, `traceparent` and `tracestate` in the
//!    response headers (a call that fails before answering gets a
//!    trailers-only response, so they are in its status metadata too), and
//!    in the trailers of a stream that fails after its headers went out;
//! 4. when the final status is known, counts the call by method and code,
//!    records its duration, and logs `rpc finished` (DEBUG for OK, INFO for
//!    other codes, ERROR for INTERNAL, UNKNOWN and DATA_LOSS, which mean a
//!    bug);
//! 5. when spans are exported ([`trace_export`](crate::trace_export)),
//!    starts the call's SERVER span before anything else, so the ids of
//!    steps 2 and 3 are the span's, and ends it with the final status.
//!
//! The final status is in the response headers for a call that fails
//! before answering, else in the trailers at the end of the body, so the
//! body is watched for them. A call whose response is dropped before its
//! status (the caller cancelled or went away, or tonic's own deadline
//! fired) counts as CANCELLED, the code the caller sees.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Frame, SizeHint};
use opentelemetry_sdk::trace::SdkTracer;
use tonic::Code;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderMap};
use tonic::codegen::{BoxFuture, Bytes, Service};
use tower_layer::Layer;
use tracing::{Instrument, Level, Span};

use crate::metrics::{self, Metrics};
use crate::request_context::RequestContext;
use crate::trace_export;

/// Puts [`Telemetry`] around a service.
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    metrics: Metrics,
    tracer: Option<SdkTracer>,
}

impl TelemetryLayer {
    /// A layer that records into `metrics`, and exports a span per call to
    /// `tracer` when there is one.
    pub fn new(metrics: Metrics, tracer: Option<SdkTracer>) -> Self {
        Self { metrics, tracer }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            metrics: self.metrics.clone(),
            tracer: self.tracer.clone(),
        }
    }
}

/// A service with request ids, trace context, a log span and metrics for
/// every call (see the module documentation).
#[derive(Debug, Clone)]
pub struct Telemetry<S> {
    inner: S,
    metrics: Metrics,
    tracer: Option<SdkTracer>,
}

impl<S> Service<http::Request<Body>> for Telemetry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = metrics::method_label(request.uri().path());
        let mut context = RequestContext::from_headers(request.headers());
        let exported = self
            .tracer
            .as_ref()
            .and_then(|tracer| trace_export::start_server_span(tracer, method, &mut context));
        let span = tracing::info_span!(
            "rpc",
            method,
            request_id = %context.request_id,
            trace_id = %context.trace.trace_id_hex(),
            span_id = %context.trace.span_id_hex(),
        );
        let mut call = Call {
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
            span: span.clone(),
            context,
            exported,
            finished: false,
        };
        let response = span.in_scope(|| {
            tracing::debug!(
                request_id_generated = call.context.request_id_generated,
                trace_continued = call.context.trace.continued,
                "rpc started"
            );
            self.inner.call(request)
        });
        Box::pin(
            async move {
                let response = match response.await {
                    Ok(response) => response,
                    Err(error) => {
                        call.finish(Code::Unknown);
                        return Err(error);
                    }
                };
                let (mut parts, body) = response.into_parts();
                call.context.write_to(&mut parts.headers);
                let body = match grpc_status(&parts.headers) {
                    // Trailers-only: the status is already here and the
                    // body is empty.
                    Some(code) => {
                        call.finish(code);
                        body
                    }
                    // Not a gRPC answer at all; nothing will follow.
                    None if http_body::Body::is_end_stream(&body) => {
                        call.finish(Code::Unknown);
                        body
                    }
                    None => Body::new(WatchedBody { inner: body, call }),
                };
                Ok(http::Response::from_parts(parts, body))
            }
            .instrument(span),
        )
    }
}

/// One call being served: finished once, with its final code; dropping it
/// unfinished means the caller will never see a status from us.
struct Call {
    metrics: Metrics,
    method: &'static str,
    started: Instant,
    span: Span,
    context: RequestContext,
    /// The exported span, when spans are exported.
    exported: Option<opentelemetry_sdk::trace::Span>,
    finished: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if self.finished {
            return;
        }
        self.finished = true;
        let duration = self.started.elapsed();
        self.metrics.record_call(self.method, code, duration);
        // Whole microseconds: enough precision, and short log lines.
        let duration_ms = duration.as_micros() as f64 / 1e3;
        let code_name = metrics::code_name(code);
        self.span.in_scope(|| match level(code) {
            Level::ERROR => tracing::error!(code = code_name, duration_ms, "rpc finished"),
            Level::INFO => tracing::info!(code = code_name, duration_ms, "rpc finished"),
            _ => tracing::debug!(code = code_name, duration_ms, "rpc finished"),
        });
        if let Some(exported) = self.exported.take() {
            trace_export::end_server_span(exported, code);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// How loudly a call that ended with `code` is logged.
fn level(code: Code) -> Level {
    match code {
        Code::Ok => Level::DEBUG,
        Code::Internal | Code::Unknown | Code::DataLoss => Level::ERROR,
        _ => Level::INFO,
    }
}

/// The `grpc-status` in `metadata`, if there is one; an unreadable value
/// counts as UNKNOWN, as a gRPC client would read it.
fn grpc_status(metadata: &HeaderMap) -> Option<Code> {
    metadata
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// A response body that finishes its [`Call`] when the trailers pass by,
/// and adds the call's ids to the trailers of a failed call.
struct WatchedBody {
    inner: Body,
    call: Call,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let mut frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &mut frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_mut() {
                    let code = grpc_status(trailers).unwrap_or(Code::Unknown);
                    if code != Code::Ok {
                        this.call.context.write_to(trailers);
                    }
                    this.call.finish(code);
                }
            }
            Some(Err(status)) => this.call.finish(status.code()),
            // The end: after the trailers this changes nothing; without
            // them the caller gets no status.
            None => this.call.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_code() {
        let mut metadata = HeaderMap::new();
        assert_eq!(grpc_status(&metadata), None);
        metadata.insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(grpc_status(&metadata), Some(Code::InvalidArgument));
        metadata.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&metadata), Some(Code::Unknown));
    }

    #[test]
    fn bugs_are_errors_and_success_is_quiet() {
        assert_eq!(level(Code::Ok), Level::DEBUG);
        assert_eq!(level(Code::InvalidArgument), Level::INFO);
        assert_eq!(level(Code::Cancelled), Level::INFO);
        assert_eq!(level(Code::Internal), Level::ERROR);
    }
}
