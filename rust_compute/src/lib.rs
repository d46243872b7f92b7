//! `rust_compute`: Nuell's text analytics gRPC service.
//!
//! It serves `nuell.compute.v1.ComputeService` (contract:
//! `proto/nuell/compute/v1/compute_service.proto`, algorithms:
//! `docs/compute-spec.md`) on an internal port, called only by py_gateway,
//! together with `grpc.health.v1.Health` and server reflection
//! (`grpc.reflection.v1` and `v1alpha`).
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | `main.rs` | the binary: parse [`config`], start [`logging`], run [`server`], turn failures into one line and an exit code |
//! | [`config`] | flags with `NUELL_COMPUTE_*` environment fallbacks, validated once |
//! | [`logging`] | JSON log lines on stderr, panic reports included |
//! | [`server`] | assembly and lifecycle: worker pool, bind, telemetry layer, health, reflection, metrics endpoint, graceful shutdown |
//! | [`telemetry`] | the one tower layer around every call: request id, trace context, log span, per-call metrics |
//! | [`request_context`] | `x-request-id` and W3C `traceparent`/`tracestate`: read, validated, generated, written back |
//! | [`trace_export`] | OpenTelemetry SERVER spans over OTLP/gRPC, only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set |
//! | [`metrics`] | every Prometheus family, its labels and buckets |
//! | [`metrics_endpoint`] | `GET /metrics` over plain HTTP on `--metrics-addr` |
//! | [`compute_service`] | the gRPC handlers: decode → call → encode, run on the worker pool |
//! | [`conversions`] | proto requests validated into domain inputs (`TryFrom`), results back into proto (`From`) |
//! | [`limits`] | every size and count limit, in one place |
//! | [`transport`] | the caller's deadline from `grpc-timeout`; RESOURCE_EXHAUSTED for oversized messages |
//! | [`workers`] | the rayon pool and the one async bridge to it: deadlines, cancellation, panic isolation, load gauges |
//! | [`cancel`] | the cooperative stop signal the algorithms check between chunks |
//! | [`text`] | the algorithms of the spec as pure functions: no `tonic`, no `prost`, no async |
//! | [`error`] | [`error::ComputeError`] and its one mapping onto `tonic::Status` with rich details |
//! | [`proto`] | the generated types, service traits and the reflection descriptor set |
//!
//! Tests: unit tests sit beside the code; `tests/` starts the real binary
//! on port 0, one file per concern, and `tests/vectors.rs` replays the
//! shared vectors in `proto/testdata/compute/v1/`. `tests/properties.rs`
//! checks the algorithms and the request decoders on generated input
//! (proptest, bounded case counts) and `tests/malformed_messages.rs` sends
//! random bytes to every method of a running server. Figures:
//! `cargo run --release --example bench_near_duplicates`.
//!
//! # Running it
//!
//! Every flag has an environment fallback; flags win. `--help` lists them.
//!
//! | flag | environment | default |
//! |---|---|---|
//! | `--addr` | `NUELL_COMPUTE_ADDR` | `127.0.0.1:50052` (gRPC) |
//! | `--metrics-addr` | `NUELL_COMPUTE_METRICS_ADDR` | `127.0.0.1:9465` (Prometheus, plain HTTP) |
//! | `--workers` | `NUELL_COMPUTE_WORKERS` | one per available core |
//! | `--shutdown-grace-seconds` | `NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS` | `10` |
//! | `--log-level` | `NUELL_COMPUTE_LOG_LEVEL` | `info` (`RUST_LOG` syntax) |
//!
//! Both addresses accept port 0 (the OS picks). stdout carries exactly one
//! line, `rust_compute listening on <ip:port>` (the gRPC address), once
//! both ports are bound; everything else is JSON lines on stderr. The
//! `listening` log line has `addr` and `metrics_addr`, so the metrics port
//! picked for port 0 is `jq -r 'select(.message == "listening").metrics_addr'`
//! away. Either port already taken ends the process at start-up with one
//! line naming the address and the flag to change, exit code 1.
//!
//! # Observability
//!
//! **Metrics** ([`metrics`] lists them): `nuell_compute_rpc_requests_total`
//! by `method` and `code`, `nuell_compute_rpc_duration_seconds` by
//! `method`, text bytes analysed, FindNearDuplicates batch sizes, and the
//! worker pool's queue depth, busy workers and size. Calls are counted in
//! one place, [`telemetry`], for every method the server serves.
//!
//! **Request ids and traces** ([`request_context`]): a caller's
//! `x-request-id` (1 to 128 printable ASCII characters, no space at either
//! end) is kept, else a UUID v4 is made; it comes back in the response
//! headers, and in the status metadata of a failed call. A W3C
//! `traceparent` is continued: the response's `traceparent` has the same
//! trace id and this service's span id, and a valid `tracestate` comes
//! back; without one (or with a malformed one) a new trace id is made.
//! Nothing that could not be echoed is ever echoed. Every log line about a call carries a `span` object with
//! `method`, `request_id`, `trace_id` and `span_id`; `rpc finished` gives
//! the code and duration (DEBUG when OK, INFO otherwise, ERROR for codes
//! that mean a bug).
//!
//! **OpenTelemetry** ([`trace_export`]): with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set to an `http://` collector
//! address, each ComputeService call is exported as one SERVER span
//! (`service.name` `rust_compute` unless `OTEL_SERVICE_NAME` says
//! otherwise), child of the caller's `traceparent`, only for sampled
//! traces; its span id is the `span_id` of the call's log lines and of the
//! returned `traceparent`. Health and reflection calls get no span.
//! Unset, nothing is built and no call touches OpenTelemetry. Queued spans
//! are flushed (at most 5 s) after the drain on shutdown.
//!
//! **No request text in logs**: texts and document ids are never logged,
//! only sizes (`text_bytes`, `documents`, at DEBUG); panic reports keep
//! their location but withhold any formatted message, which could quote
//! the text being processed. `tests/logs.rs` checks it at TRACE level.
//!
//! # Limits
//!
//! The request limits are the contract's `buf.validate` rules (spec §10),
//! all defined in [`limits`] and checked in [`conversions`]. A broken rule
//! is INVALID_ARGUMENT with one `BadRequest` violation per rule (field path
//! such as `documents[3].id`, reason the protovalidate rule id such as
//! `string.max_bytes` or `documents.unique_ids`; at most 100 listed). The
//! pair caps in the last row are a safety limit of this service that the
//! spec does not name, enforced in [`text::near_duplicates`].
//!
//! | what | limit |
//! |---|---|
//! | Analyze / Compare / AnalyzeStream text | 1 MiB of UTF-8 |
//! | `top_k` | 100 (0 means 10) |
//! | documents per batch | 1 to 100,000, ids unique |
//! | document id, AnalyzeStream id | 1 to 128 characters (stream id: 0 to 128) |
//! | document text | 64 KiB of UTF-8 |
//! | `threshold` | in (0, 1] |
//! | all document text of a batch | 128 MiB, else RESOURCE_EXHAUSTED `BATCH_TOO_LARGE` |
//! | one gRPC message, either way | 192 MiB, else RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE` |
//! | candidate / verified pairs of one batch | 2²⁷ band matches / as many pairs as fit in 192 MiB, else RESOURCE_EXHAUSTED `TOO_MANY_PAIRS` |
//!
//! **Message size.** tonic's default of 4 MiB is raised to 192 MiB for
//! decoding and encoding ([`limits::MESSAGE_MAX_BYTES`]): one
//! FindNearDuplicates call carries up to 100,000 documents (30 MB at 300
//! characters each, and up to 128 MiB of text), and the limit sits above
//! the batch limit so that an over-full batch still decodes and gets the
//! precise `BATCH_TOO_LARGE`. Clients must raise their own limits to
//! match; the gateway's 4 MiB is smaller, so batches through it are
//! smaller too.
//!
//! # Workers, deadlines and cancellation
//!
//! Every computation, request validation included, runs on a dedicated
//! rayon pool of `--workers` / `NUELL_COMPUTE_WORKERS` threads (default:
//! one per available core), reached through [`workers::Workers::run`] and a
//! oneshot channel, so tokio's threads only move bytes and health checks
//! stay prompt under load. A job stops between chunks of work when the
//! caller's deadline (`grpc-timeout`) passes, answered DEADLINE_EXCEEDED,
//! or when the caller cancels or disconnects (the handler's future is
//! dropped and a drop guard fires the job's cancellation). A panic inside
//! a job is caught and answered INTERNAL for that call alone; the pool and
//! the process live on. AnalyzeStream answers one request at a time in
//! order, bounded by the same deadline.

pub mod cancel;
pub mod compute_service;
pub mod config;
pub mod conversions;
pub mod error;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod metrics_endpoint;
pub mod proto;
pub mod request_context;
pub mod server;
pub mod telemetry;
pub mod text;
pub mod trace_export;
pub mod transport;
pub mod workers;
