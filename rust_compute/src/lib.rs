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
//! | [`logging`] | JSON log lines on stderr |
//! | [`server`] | assembly and lifecycle: bind, health, reflection, graceful shutdown |
//! | [`compute_service`] | the gRPC handlers: decode the request, call the text modules, encode the result |
//! | [`error`] | [`error::ComputeError`] and its one mapping onto `tonic::Status` with rich details |
//! | [`proto`] | the generated types, service traits and the reflection descriptor set |
//!
//! # Where the text algorithms go
//!
//! Normalisation, tokenisation, shingles, counts, SimHash, MinHash/LSH and
//! clustering belong in their own modules beside these (for example a
//! `text` module tree), written as pure functions over plain Rust types:
//! no `tonic`, no `prost`, no async. That keeps them testable against the
//! shared vectors in `proto/testdata/` and benchmarkable on their own, and
//! [`compute_service`] stays a thin adapter. Until they exist, every
//! compute RPC answers UNIMPLEMENTED with `ErrorInfo.reason`
//! `NOT_IMPLEMENTED`.

pub mod compute_service;
pub mod config;
pub mod error;
pub mod logging;
pub mod proto;
pub mod server;
