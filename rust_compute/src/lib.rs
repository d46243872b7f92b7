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
//! | [`server`] | assembly and lifecycle: worker pool, bind, health, reflection, graceful shutdown |
//! | [`compute_service`] | the gRPC handlers: decode → call → encode, run on the worker pool |
//! | [`conversions`] | proto requests validated into domain inputs (`TryFrom`), results back into proto (`From`) |
//! | [`limits`] | every size and count limit, in one place |
//! | [`transport`] | the caller's deadline from `grpc-timeout`; RESOURCE_EXHAUSTED for oversized messages |
//! | [`workers`] | the rayon pool and the one async bridge to it: deadlines, cancellation, panic isolation |
//! | [`cancel`] | the cooperative stop signal the algorithms check between chunks |
//! | [`text`] | the algorithms of the spec as pure functions: no `tonic`, no `prost`, no async |
//! | [`error`] | [`error::ComputeError`] and its one mapping onto `tonic::Status` with rich details |
//! | [`proto`] | the generated types, service traits and the reflection descriptor set |
//!
//! Tests: unit tests sit beside the code; `tests/` starts the real binary
//! on port 0, one file per concern, and `tests/vectors.rs` replays the
//! shared vectors in `proto/testdata/compute/v1/`. Figures:
//! `cargo run --release --example bench_near_duplicates`.
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
pub mod proto;
pub mod server;
pub mod text;
pub mod transport;
pub mod workers;
