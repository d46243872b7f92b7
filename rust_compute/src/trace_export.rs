//! OpenTelemetry spans over OTLP/gRPC, only when an endpoint is configured.
//!
//! With `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set (and `OTEL_SDK_DISABLED` not `true`), every ComputeService call is
//! one SERVER span, batched and sent to that collector. Without one nothing
//! is built and the [`telemetry`](crate::telemetry) layer makes no
//! OpenTelemetry call at all.
//!
//! The span's ids are the call's ids: [`start_server_span`] starts the span
//! first and the call's [`TraceContext`](crate::request_context::TraceContext)
//! takes its span id (and its trace id when the trace starts here), so the
//! ids in the log lines and in the returned `traceparent` are the exported
//! span's. Its parent is the caller's `traceparent`.
//!
//! Sampling follows the caller's sampled flag (parent-based); a trace that
//! starts here is sampled, and the returned `traceparent` says so. The
//! other standard variables (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, `OTEL_BSP_*`)
//! are read by the SDK. Only `http://` endpoints: no TLS stack is built in,
//! as the collector is expected next to the service (an agent or sidecar).

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, Key, KeyValue};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use tonic::Code;

use crate::request_context::RequestContext;

/// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// name the service.
pub const SERVICE_NAME: &str = "rust_compute";

/// How long shutdown waits for queued spans to reach the collector.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Only calls of the contract get spans: health probes and reflection
/// would be noise.
const TRACED_PREFIX: &str = "/nuell.";

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces: {0}")]
pub struct ExportSetupError(String);

/// The process's exporter: a tracer for the calls, flushed on shutdown.
#[derive(Debug)]
pub struct TraceExport {
    provider: SdkTracerProvider,
}

/// Whether `var` (an environment lookup) asks for trace export.
pub fn configured(var: impl Fn(&str) -> Option<String>) -> bool {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|value| value.trim() == "true");
    !disabled
        && ENDPOINT_VARS
            .iter()
            .any(|name| var(name).is_some_and(|value| !value.trim().is_empty()))
}

impl TraceExport {
    /// The exporter the environment asks for, or `None`. Must run inside
    /// the Tokio runtime: the gRPC channel to the collector lives on it.
    pub fn from_env() -> Result<Option<Self>, ExportSetupError> {
        let var = |name: &str| std::env::var(name).ok();
        if !configured(var) {
            return Ok(None);
        }
        // The SDK's own refusal talks about crate features.
        if let Some(name) = ENDPOINT_VARS
            .into_iter()
            .find(|name| var(name).is_some_and(|value| !value.trim().is_empty()))
            .filter(|name| var(name).is_some_and(|value| value.trim().starts_with("https:")))
        {
            return Err(ExportSetupError(format!(
                "{name}: only http:// collector addresses are supported \
                 (run a collector agent next to the service)"
            )));
        }
        let exporter = SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|error| ExportSetupError(error.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // Not OTEL_TRACES_SAMPLER: the flag decided where the trace
            // began (normally Envoy) holds on every hop.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource())
            .build();
        Ok(Some(Self { provider }))
    }

    /// The tracer for the calls' spans.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("rust_compute")
    }

    /// Sends what is queued, waiting at most [`FLUSH_TIMEOUT`], and stops.
    /// Blocks: call it off the async threads.
    pub fn shutdown(&self) -> Result<(), ExportSetupError> {
        self.provider
            .shutdown_with_timeout(FLUSH_TIMEOUT)
            .map_err(|error| ExportSetupError(error.to_string()))
    }
}

/// The SDK's resource (including the environment's), named
/// [`SERVICE_NAME`] unless the environment names it.
fn resource() -> Resource {
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.is_empty())
        || EnvResourceDetector::new()
            .detect()
            .get(&Key::new("service.name"))
            .is_some();
    let builder = Resource::builder();
    if named_by_env {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// Starts the SERVER span of a call to `method` (its gRPC path), child of
/// the caller's `traceparent`, and makes `context` carry the span's ids.
/// `None` for methods outside the contract (health, reflection).
pub fn start_server_span(
    tracer: &SdkTracer,
    method: &'static str,
    context: &mut RequestContext,
) -> Option<Span> {
    let name = method
        .strip_prefix('/')
        .filter(|_| method.starts_with(TRACED_PREFIX))?;
    let (service, rpc) = name.split_once('/').unwrap_or((name, ""));
    let trace = &mut context.trace;
    let parent = match trace.parent_id {
        Some(parent_id) => {
            let state = trace
                .state
                .as_ref()
                .and_then(|state| state.to_str().ok())
                .and_then(|state| TraceState::from_str(state).ok())
                .unwrap_or_default();
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(trace.trace_id),
                SpanId::from_bytes(parent_id),
                TraceFlags::new(trace.flags),
                true,
                state,
            ))
        }
        None => Context::new(),
    };
    let span = tracer
        .span_builder(Cow::Borrowed(name))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service),
            KeyValue::new("rpc.method", rpc),
            KeyValue::new("nuell.request_id", context.request_id.clone()),
        ])
        .start_with_context(tracer, &parent);
    let ids = span.span_context();
    trace.trace_id = ids.trace_id().to_bytes();
    trace.span_id = ids.span_id().to_bytes();
    if ids.is_sampled() {
        trace.flags |= TraceFlags::SAMPLED.to_u8();
    }
    Some(span)
}

/// Ends `span` with the call's final `code`.
pub fn end_server_span(mut span: Span, code: Code) {
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
    if is_server_error(code) {
        span.set_status(Status::error(crate::metrics::code_name(code)));
    }
    span.end();
}

/// Codes that mark a server span as failed, per the semantic conventions
/// for gRPC; the others are the caller's doing.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn an_endpoint_turns_export_on() {
        assert!(!configured(env(&[])));
        assert!(!configured(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(configured(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(configured(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(!configured(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ])));
    }

    #[test]
    fn server_errors_follow_the_conventions() {
        assert!(is_server_error(Code::Internal));
        assert!(is_server_error(Code::Unavailable));
        assert!(!is_server_error(Code::Ok));
        assert!(!is_server_error(Code::InvalidArgument));
        assert!(!is_server_error(Code::Cancelled));
    }
}
