# syntax=docker/dockerfile:1
# rust_compute. Build context: the repository root (see deploy/docker/README.md):
#   docker build -f deploy/docker/compute.Dockerfile -t nuell/compute:0.1.0 .

# ---- build: protoc comes from the protoc-bin-vendored crate, nothing to install
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY proto/nuell proto/nuell
COPY proto/third_party proto/third_party
COPY rust_compute rust_compute
RUN cargo build --release --locked --manifest-path rust_compute/Cargo.toml \
    && install -m 0755 rust_compute/target/release/rust_compute /rust_compute

# ---- runtime: glibc and the binary; bash stays for compose's port check
FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 nuell \
    && useradd --system --uid 10001 --gid nuell --no-create-home --shell /usr/sbin/nologin nuell
COPY --from=build /rust_compute /usr/local/bin/rust_compute
ENV NUELL_COMPUTE_ADDR=0.0.0.0:50052
USER 10001:10001
EXPOSE 50052
# No gRPC client in the image and no health subcommand in the binary: the
# orchestrator checks gRPC health itself (Kubernetes `grpc:` probes); compose
# checks that the port accepts connections.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/rust_compute"]
