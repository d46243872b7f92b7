//! OpenTelemetry export on a running server, observed by a small OTLP/gRPC
//! receiver: one SERVER span per ComputeService call, child of the
//! caller's `traceparent`, with the span id the call's response and logs
//! carry; nothing for unsampled traces, health or reflection; queued spans
//! flushed on SIGTERM; nothing at all without an endpoint.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PATIENCE, Server};
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use rust_compute::proto::v1::AnalyzeRequest;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

/// Export soon after a span ends, so the tests wait little.
const FAST_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "50");

/// A received span, flattened: ids as lowercase hex (`""` for no parent).
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
    status: i32,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// The collector side of OTLP/gRPC: records every span it is sent.
#[derive(Debug, Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

fn text(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|pair| {
            let value = match pair.value.as_ref().and_then(|value| value.value.as_ref()) {
                Some(Value::StringValue(text)) => text.clone(),
                Some(Value::IntValue(number)) => number.to_string(),
                Some(Value::BoolValue(flag)) => flag.to_string(),
                other => format!("{other:?}"),
            };
            (pair.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = text(
                &resource_spans
                    .resource
                    .map(|resource| resource.attributes)
                    .unwrap_or_default(),
            );
            let service = resource
                .iter()
                .find(|(key, _)| key == "service.name")
                .map(|(_, value)| value.clone())
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: text(&span.attributes),
                    status: span.status.map_or(0, |status| status.code),
                });
            }
        }
        self.spans.lock().expect("not poisoned").extend(received);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// A receiver serving on a free loopback port, and its `http://` endpoint.
    async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("bound");
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (receiver, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("not poisoned").clone()
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans()
            .into_iter()
            .filter(|span| span.trace_id == trace_id)
            .collect()
    }

    /// The one span of `trace_id`, waiting for it to arrive.
    async fn one_of(&self, trace_id: &str) -> Received {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let spans = self.of_trace(trace_id);
            assert!(spans.len() <= 1, "{spans:?}");
            if let Some(span) = spans.into_iter().next() {
                return span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span of trace {trace_id} within {PATIENCE:?}; got {:?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn analyze(top_k: u32, metadata: &[(&'static str, String)]) -> Request<AnalyzeRequest> {
    let mut request = Request::new(AnalyzeRequest {
        text: "trace this call".to_owned(),
        top_k,
    });
    for (key, value) in metadata {
        request
            .metadata_mut()
            .insert(*key, value.parse().expect("ascii metadata"));
    }
    request
}

/// 16 random bytes as a trace id: fresh per call, so traces never mix.
fn new_trace_id() -> String {
    hex(uuid::Uuid::new_v4().as_bytes())
}

/// `(trace id, span id, flags)` of the returned `traceparent`.
fn returned(metadata: &MetadataMap) -> (String, String, String) {
    let value = metadata
        .get("traceparent")
        .expect("traceparent returned")
        .to_str()
        .expect("ascii");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

#[tokio::test]
async fn each_call_is_one_server_span_under_the_callers() {
    let (receiver, endpoint) = Receiver::start().await;
    let server = Server::start_with_env(
        &["--log-level", "info,rust_compute=debug"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT],
    )
    .await;
    let mut client = server.compute().await;

    let trace_id = new_trace_id();
    let caller_span = "00f067aa0ba902b7";
    let response = client
        .analyze(analyze(
            0,
            &[
                ("x-request-id", "span-ok-1".to_owned()),
                ("traceparent", format!("00-{trace_id}-{caller_span}-01")),
            ],
        ))
        .await
        .expect("ok");
    let (returned_trace, our_span, flags) = returned(response.metadata());

    let span = receiver.one_of(&trace_id).await;
    assert_eq!(
        (returned_trace.as_str(), flags.as_str()),
        (trace_id.as_str(), "01")
    );
    assert_eq!(span.service, "rust_compute");
    assert_eq!(span.name, "nuell.compute.v1.ComputeService/Analyze");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.parent_span_id, caller_span);
    assert_eq!(span.span_id, our_span, "the span id the response carries");
    assert_eq!(span.status, StatusCode::Unset as i32);
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "nuell.compute.v1.ComputeService"),
        ("rpc.method", "Analyze"),
        ("rpc.grpc.status_code", "0"),
        ("nuell.request_id", "span-ok-1"),
    ] {
        assert_eq!(span.attribute(key), Some(value), "{key}");
    }
    // The call's log lines carry the same span id.
    let finished = server
        .log_line_where(|line| {
            line["message"] == "rpc finished" && line["span"]["request_id"] == "span-ok-1"
        })
        .await;
    assert_eq!(finished["span"]["span_id"], span.span_id.as_str());
    assert_eq!(finished["span"]["trace_id"], trace_id.as_str());

    // A refused call: its code, and no error status (the caller's doing).
    let trace_id = new_trace_id();
    let status = client
        .analyze(analyze(
            101,
            &[("traceparent", format!("00-{trace_id}-{caller_span}-01"))],
        ))
        .await
        .expect_err("top_k too big");
    assert_eq!(status.code(), Code::InvalidArgument);
    let span = receiver.one_of(&trace_id).await;
    assert_eq!(span.span_id, returned(status.metadata()).1);
    assert_eq!(span.attribute("rpc.grpc.status_code"), Some("3"));
    assert_eq!(span.status, StatusCode::Unset as i32);
}

#[tokio::test]
async fn sampling_follows_the_trace_flags() {
    let (receiver, endpoint) = Receiver::start().await;
    let server = Server::start_with_env(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), FAST_EXPORT],
    )
    .await;
    let mut client = server.compute().await;

    // Not sampled upstream: no span, and the flag comes back unchanged.
    let unsampled = new_trace_id();
    let response = client
        .analyze(analyze(
            0,
            &[("traceparent", format!("00-{unsampled}-00f067aa0ba902b7-00"))],
        ))
        .await
        .expect("ok");
    assert_eq!(returned(response.metadata()).2, "00");

    // No traceparent: a new trace, sampled here, rooted at this span.
    let response = client.analyze(analyze(0, &[])).await.expect("ok");
    let (trace_id, span_id, flags) = returned(response.metadata());
    assert_eq!(flags, "01", "the returned flag says the span is recorded");
    let root = receiver.one_of(&trace_id).await;
    assert_eq!(root.span_id, span_id);
    assert_eq!(root.parent_span_id, "");

    // Health checks and reflection are no calls of the contract.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers");
    // Exported in order: once a later span is in, earlier ones would be.
    let last = new_trace_id();
    client
        .analyze(analyze(
            0,
            &[("traceparent", format!("00-{last}-00f067aa0ba902b7-01"))],
        ))
        .await
        .expect("ok");
    receiver.one_of(&last).await;
    assert!(receiver.of_trace(&unsampled).is_empty());
    let names: Vec<String> = receiver.spans().into_iter().map(|span| span.name).collect();
    assert!(
        names
            .iter()
            .all(|name| name == "nuell.compute.v1.ComputeService/Analyze"),
        "{names:?}"
    );
}

#[tokio::test]
async fn queued_spans_are_flushed_on_sigterm() {
    let (receiver, endpoint) = Receiver::start().await;
    // Nothing is sent before shutdown: what arrives, the flush sent.
    let server = Server::start_with_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    )
    .await;
    let mut client = server.compute().await;
    let trace_id = new_trace_id();
    client
        .analyze(analyze(
            0,
            &[("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))],
        ))
        .await
        .expect("ok");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());

    server.signal(Signal::SIGTERM);
    let (status, stderr) = server.wait(PATIENCE).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(receiver.of_trace(&trace_id).len(), 1, "{stderr}");
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported() {
    let (receiver, endpoint) = Receiver::start().await;
    // Everything an export would need but the endpoint itself, or with
    // the SDK switched off.
    let cases: [&[(&str, &str)]; 2] = [
        &[FAST_EXPORT, ("OTEL_SERVICE_NAME", "should-not-appear")],
        &[
            FAST_EXPORT,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    ];
    for env in cases {
        let server = Server::start_with_env(&[], env).await;
        let listening = server.log_line("listening").await;
        assert_eq!(listening["exporting_traces"], false, "{env:?}");
        let mut client = server.compute().await;
        let response = client
            .analyze(analyze(
                0,
                &[(
                    "traceparent",
                    format!("00-{}-00f067aa0ba902b7-01", new_trace_id()),
                )],
            ))
            .await
            .expect("ok");
        assert_eq!(returned(response.metadata()).2, "01");
        let response = client.analyze(analyze(0, &[])).await.expect("ok");
        // A new trace is not marked sampled when nothing records it.
        assert_eq!(returned(response.metadata()).2, "00");
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.signal(Signal::SIGTERM);
        let (status, _) = server.wait(PATIENCE).await;
        assert!(status.success());
    }
    assert!(receiver.spans().is_empty(), "{:?}", receiver.spans());
}

#[tokio::test]
async fn an_https_endpoint_is_refused_in_one_line() {
    let output = tokio::time::timeout(
        PATIENCE,
        common::command()
            .args(["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example:4317",
            )
            .output(),
    )
    .await
    .expect("exits on its own")
    .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("rust_compute: cannot export traces: OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{stderr}"
    );
}
