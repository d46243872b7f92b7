//! The service's Prometheus metrics: every family, its labels and buckets,
//! in one place. [`telemetry`](crate::telemetry) records each call,
//! [`compute_service`](crate::compute_service) the work a call brings, the
//! [`workers`](crate::workers) bridge the pool's load;
//! [`metrics_endpoint`](crate::metrics_endpoint) serves them.
//!
//! Every name starts with `nuell_compute_` (the gateway's start with
//! `nuell_gateway_`), and the `method` label is the full gRPC method path,
//! as the gateway labels it, so one dashboard query covers both services.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `nuell_compute_rpc_requests_total` | counter | `method`, `code` | calls answered, by gRPC status code name (`OK`, `INVALID_ARGUMENT`, ...) |
//! | `nuell_compute_rpc_duration_seconds` | histogram | `method` | arrival to final status (a stream: its whole life) |
//! | `nuell_compute_text_analysed_bytes_total` | counter | `method` | UTF-8 bytes of text in requests that passed validation |
//! | `nuell_compute_find_near_duplicates_batch_documents` | histogram | | documents per FindNearDuplicates batch that passed validation |
//! | `nuell_compute_worker_pool_queue_depth` | gauge | | jobs waiting for a worker thread |
//! | `nuell_compute_worker_pool_busy_workers` | gauge | | jobs running (each holds a worker thread; a batch may borrow idle ones too) |
//! | `nuell_compute_worker_pool_threads` | gauge | | size of the worker pool |
//!
//! `method` takes only the paths this server serves (compute, health,
//! reflection) and `unknown`, so a caller probing random paths cannot
//! grow the label set.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

use crate::workers::Workers;

/// Prefix of every metric name.
pub const PREFIX: &str = "nuell_compute";

/// `Content-Type` of the exposition: Prometheus text format 0.0.4, which
/// every Prometheus-compatible scraper reads.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `nuell.compute.v1.ComputeService/Analyze`.
pub const ANALYZE: &str = "/nuell.compute.v1.ComputeService/Analyze";
/// `nuell.compute.v1.ComputeService/Compare`.
pub const COMPARE: &str = "/nuell.compute.v1.ComputeService/Compare";
/// `nuell.compute.v1.ComputeService/FindNearDuplicates`.
pub const FIND_NEAR_DUPLICATES: &str = "/nuell.compute.v1.ComputeService/FindNearDuplicates";
/// `nuell.compute.v1.ComputeService/AnalyzeStream`.
pub const ANALYZE_STREAM: &str = "/nuell.compute.v1.ComputeService/AnalyzeStream";
/// `nuell.compute.v1.ComputeService/Tokenize`.
pub const TOKENIZE: &str = "/nuell.compute.v1.ComputeService/Tokenize";
/// `nuell.compute.v1.ComputeService/CompareMany`.
pub const COMPARE_MANY: &str = "/nuell.compute.v1.ComputeService/CompareMany";

/// The `method` label of every path that is not one of [`KNOWN_METHODS`].
pub const UNKNOWN_METHOD: &str = "unknown";

/// Every method this server serves, as its `method` label.
pub const KNOWN_METHODS: [&str; 10] = [
    ANALYZE,
    COMPARE,
    FIND_NEAR_DUPLICATES,
    ANALYZE_STREAM,
    TOKENIZE,
    COMPARE_MANY,
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Upper bounds of the call duration buckets, in seconds: the gateway's,
/// plus 30 s and 60 s for the largest batches and long streams.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upper bounds of the batch size buckets, up to the contract's 100,000
/// documents.
const BATCH_BUCKETS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    20_000.0, 50_000.0, 100_000.0,
];

/// Labels of the per-call counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

/// Labels of the per-method families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The metrics of one process. Cheap to clone: every clone records into
/// the same series.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Everything below, registered for encoding.
    registry: Arc<Registry>,
    calls: Family<CallLabels, Counter>,
    durations: HistogramFamily,
    text_bytes: Family<MethodLabels, Counter>,
    batch_documents: Histogram,
}

impl Metrics {
    /// The metrics of a process that computes on `workers`, whose load
    /// gauges are registered as they are.
    pub fn new(workers: &Workers) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "Calls answered, by method and gRPC status code",
            calls.clone(),
        );
        let durations: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "rpc_duration",
            "Time from a call's arrival to its final status, by method",
            Unit::Seconds,
            durations.clone(),
        );
        let text_bytes = Family::<MethodLabels, Counter>::default();
        registry.register_with_unit(
            "text_analysed",
            "UTF-8 bytes of text in requests that passed validation, by method",
            Unit::Bytes,
            text_bytes.clone(),
        );
        let batch_documents = Histogram::new(BATCH_BUCKETS);
        registry.register(
            "find_near_duplicates_batch_documents",
            "Documents per FindNearDuplicates batch that passed validation",
            batch_documents.clone(),
        );
        let load = workers.load();
        registry.register(
            "worker_pool_queue_depth",
            "Computations waiting for a worker thread",
            load.queued.clone(),
        );
        registry.register(
            "worker_pool_busy_workers",
            "Computations running, each on its own worker thread",
            load.running.clone(),
        );
        let threads = Gauge::<i64>::default();
        threads.set(i64::try_from(workers.threads()).unwrap_or(i64::MAX));
        registry.register("worker_pool_threads", "Threads in the worker pool", threads);
        Self {
            registry: Arc::new(registry),
            calls,
            durations,
            text_bytes,
            batch_documents,
        }
    }

    /// Counts one answered call of `method` (a [`method_label`]) and its
    /// duration.
    pub fn record_call(&self, method: &'static str, code: Code, duration: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.durations
            .get_or_create(&MethodLabels { method })
            .observe(duration.as_secs_f64());
    }

    /// Counts `bytes` of text accepted for analysis by `method`.
    pub fn record_text(&self, method: &'static str, bytes: usize) {
        self.text_bytes
            .get_or_create(&MethodLabels { method })
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Records the size of one accepted FindNearDuplicates batch.
    pub fn record_batch(&self, documents: usize) {
        // Exact: batches hold at most 100,000 documents.
        self.batch_documents.observe(documents as f64);
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The `method` label of a request path: the path itself for a method
/// this server serves, else [`UNKNOWN_METHOD`].
pub fn method_label(path: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| **known == path)
        .copied()
        .unwrap_or(UNKNOWN_METHOD)
}

/// The canonical name of a gRPC status code, as the `code` label and the
/// logs spell it (and as gRPC's other implementations print it).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::COMPUTE_SERVICE_NAME;

    #[test]
    fn method_paths_match_the_generated_services() {
        for (path, method) in [
            (ANALYZE, "Analyze"),
            (COMPARE, "Compare"),
            (FIND_NEAR_DUPLICATES, "FindNearDuplicates"),
            (ANALYZE_STREAM, "AnalyzeStream"),
        ] {
            assert_eq!(path, format!("/{COMPUTE_SERVICE_NAME}/{method}"));
        }
        let health = tonic_health::pb::health_server::SERVICE_NAME;
        assert!(KNOWN_METHODS.contains(&format!("/{health}/Check").as_str()));
        assert!(KNOWN_METHODS.contains(&format!("/{health}/Watch").as_str()));
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(method_label(ANALYZE), ANALYZE);
        assert_eq!(method_label("/x.Y/Z"), UNKNOWN_METHOD);
        assert_eq!(method_label(""), UNKNOWN_METHOD);
        assert_eq!(method_label(&format!("{ANALYZE}/")), UNKNOWN_METHOD);
    }

    #[test]
    fn encodes_every_family() {
        let workers = Workers::new(3).expect("pool");
        let metrics = Metrics::new(&workers);
        metrics.record_call(ANALYZE, Code::InvalidArgument, Duration::from_millis(3));
        metrics.record_text(COMPARE, 12);
        metrics.record_batch(7);
        let text = metrics.encode().expect("encodes");
        for line in [
            "nuell_compute_rpc_requests_total{method=\"/nuell.compute.v1.ComputeService/Analyze\",code=\"INVALID_ARGUMENT\"} 1",
            "nuell_compute_rpc_duration_seconds_bucket{method=\"/nuell.compute.v1.ComputeService/Analyze\",le=\"0.005\"} 1",
            "nuell_compute_rpc_duration_seconds_count{method=\"/nuell.compute.v1.ComputeService/Analyze\"} 1",
            "nuell_compute_text_analysed_bytes_total{method=\"/nuell.compute.v1.ComputeService/Compare\"} 12",
            "nuell_compute_find_near_duplicates_batch_documents_bucket{le=\"5\"} 0",
            "nuell_compute_find_near_duplicates_batch_documents_bucket{le=\"10\"} 1",
            "nuell_compute_find_near_duplicates_batch_documents_sum 7.0",
            "nuell_compute_worker_pool_queue_depth 0",
            "nuell_compute_worker_pool_busy_workers 0",
            "nuell_compute_worker_pool_threads 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\nnot in\n{text}");
        }
    }
}
