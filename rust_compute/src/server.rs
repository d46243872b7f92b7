//! Assembly and lifecycle: binds the gRPC and metrics ports, mounts the
//! compute service with health and reflection behind the
//! [`TelemetryLayer`], announces the bound address, and shuts down
//! gracefully on SIGTERM or SIGINT.
//!
//! Shutdown order: health turns NOT_SERVING (so balancers and the gateway
//! stop routing here), the listener stops accepting, in-flight calls get
//! the grace period to finish, and whatever is still running after it is
//! cut off so a stuck stream cannot hold the process. The metrics endpoint
//! serves through the drain, so a scrape can watch it, and stops after it;
//! queued spans, when exported, are flushed last.

use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::compute_service::ComputeService;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics_endpoint;
use crate::proto::{COMPUTE_SERVICE_NAME, FILE_DESCRIPTOR_SET};
use crate::telemetry::TelemetryLayer;
use crate::trace_export::{ExportSetupError, TraceExport};
use crate::workers::Workers;

/// How long scrapes in progress may take once the gRPC server has stopped.
const METRICS_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the server could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process holds the port; the message says what to do about it.
    #[error(
        "address {addr} is already in use: stop the process listening there, \
         or pass a free address with --addr / NUELL_COMPUTE_ADDR (port 0 picks one)"
    )]
    AddrInUse {
        /// The address that was asked for.
        addr: SocketAddr,
    },
    /// Any other reason the address cannot be bound (not a local IP, a
    /// privileged port, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// Another process holds the metrics port.
    #[error(
        "metrics address {addr} is already in use: stop the process listening there, \
         or pass a free address with --metrics-addr / NUELL_COMPUTE_METRICS_ADDR (port 0 picks one)"
    )]
    MetricsAddrInUse {
        /// The address that was asked for.
        addr: SocketAddr,
    },
    /// Any other reason the metrics address cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsBind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// SIGTERM/SIGINT handlers could not be installed, so shutdown could not
    /// be graceful; refusing to start is safer than ignoring signals.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// The worker pool could not be created (threads refused by the OS).
    #[error("cannot start {threads} worker threads: {source}")]
    Workers {
        /// The pool size that was asked for.
        threads: usize,
        /// What rayon said.
        source: rayon::ThreadPoolBuildError,
    },
    /// The embedded descriptor sets are unusable (a build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed while serving.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// `OTEL_EXPORTER_OTLP_*` asks for trace export that cannot be set up.
    #[error(transparent)]
    TraceExport(#[from] ExportSetupError),
}

/// Runs the process until SIGTERM or SIGINT: binds `config.addr` and
/// `config.metrics_addr`, prints `rust_compute listening on <ip:port>` on
/// stdout, serves, drains.
pub async fn run(config: &Config) -> Result<(), ServeError> {
    let threads = config.workers();
    let workers =
        Workers::new(threads).map_err(|source| ServeError::Workers { threads, source })?;
    let metrics = Metrics::new(&workers);
    let listener = bind(config.addr).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.addr,
        source,
    })?;
    let metrics_listener = bind_metrics(config.metrics_addr).await?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|source| ServeError::MetricsBind {
            addr: config.metrics_addr,
            source,
        })?;
    // Handlers go in before the announcement: a supervisor may signal as
    // soon as it reads the line, and an unhandled SIGTERM kills abruptly.
    let shutdown = shutdown_signal().map_err(ServeError::Signals)?;
    let trace_export = TraceExport::from_env()?;

    info!(
        addr = %addr,
        metrics_addr = %metrics_addr,
        version = env!("CARGO_PKG_VERSION"),
        shutdown_grace_seconds = config.shutdown_grace_seconds,
        workers = workers.threads(),
        exporting_traces = trace_export.is_some(),
        "listening"
    );
    announce(addr);

    let (stop_metrics, stop_metrics_rx) = oneshot::channel::<()>();
    let mut endpoint = tokio::spawn(metrics_endpoint::serve(
        metrics_listener,
        metrics.clone(),
        async {
            // Err: the sender is gone, which means stop too.
            let _ = stop_metrics_rx.await;
        },
    ));
    let served = serve(
        listener,
        ComputeService::new(workers, metrics.clone()),
        metrics,
        trace_export.as_ref().map(TraceExport::tracer),
        config.shutdown_grace(),
        shutdown,
    )
    .await;

    let _ = stop_metrics.send(());
    match tokio::time::timeout(METRICS_STOP_TIMEOUT, &mut endpoint).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(error = %error, "the metrics endpoint failed"),
        Ok(Err(error)) => warn!(error = %error, "the metrics endpoint stopped abnormally"),
        Err(_) => endpoint.abort(),
    }
    if let Some(trace_export) = trace_export {
        // Spans of calls cut off at the end of the grace period are queued
        // by now; flushing blocks, so off the async threads.
        match tokio::task::spawn_blocking(move || trace_export.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(error = %error, "queued spans were not all exported"),
            Err(error) => warn!(error = %error, "flushing spans stopped abnormally"),
        }
    }
    served
}

/// Binds `addr`. Separate from [`serve`] so the caller learns the real
/// address (port 0) before serving starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServeError::AddrInUse { addr }
        } else {
            ServeError::Bind { addr, source }
        }
    })
}

/// Binds the metrics endpoint's `addr`.
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServeError::MetricsAddrInUse { addr }
        } else {
            ServeError::MetricsBind { addr, source }
        }
    })
}

/// The accepted connections with TCP_NODELAY set, as `Server::tcp_nodelay`
/// would for a listener of its own. With Nagle's algorithm on, a reply of a
/// few hundred bytes (a Tokenize with band keys) waited for the client's
/// delayed ACK: 40 ms on every post write.
fn without_nagle(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(error) = stream.set_nodelay(true) {
            warn!(%error, "could not set TCP_NODELAY on a connection");
        }
        Ok(stream)
    })
}

/// Serves `compute` with health and reflection on `listener`, every call
/// recorded in `metrics` (and a span per contract call sent to `tracer`,
/// if any), until `shutdown` resolves, then shuts down gracefully, giving
/// in-flight calls at most `grace` to finish.
///
/// Connections that arrive before this is polled wait in the listen
/// backlog, and health already says SERVING when they are accepted.
pub async fn serve(
    listener: TcpListener,
    compute: ComputeService,
    metrics: Metrics,
    tracer: Option<SdkTracer>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The reporter starts with "" SERVING; the named service is added here.
    health
        .set_service_status(COMPUTE_SERVICE_NAME, ServingStatus::Serving)
        .await;

    let (stop_accepting, stop_accepting_rx) = oneshot::channel::<()>();
    let server = Server::builder()
        // One layer around every route: ids, span, metrics for each call.
        .layer(TelemetryLayer::new(metrics, tracer))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(compute.into_server())
        .serve_with_incoming_shutdown(without_nagle(listener), async {
            // Err means the sender is gone, which only happens when this
            // function is; stopping is right either way.
            let _ = stop_accepting_rx.await;
        });
    let mut server = pin!(server);

    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown => {}
    }

    report_not_serving(&health).await;
    info!(grace_seconds = grace.as_secs(), "draining in-flight calls");
    let _ = stop_accepting.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result?,
        Err(_) => warn!(
            grace_seconds = grace.as_secs(),
            "grace period over; cutting off calls still in flight"
        ),
    }
    info!("stopped");
    Ok(())
}

/// A reflection builder that knows every service this server mounts and
/// the `google.rpc` types its error details use.
///
/// Both reflection versions register both reflection descriptors, so a
/// `list` over either protocol shows the same complete set of services.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details, so grpcurl can render ErrorInfo/BadRequest.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

async fn report_not_serving(health: &HealthReporter) {
    for service in ["", COMPUTE_SERVICE_NAME] {
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
}

/// Prints the one stdout line that tools parse to find the real port.
fn announce(addr: SocketAddr) {
    let mut stdout = io::stdout().lock();
    // A closed stdout (the reader went away) must not stop the service.
    let _ = writeln!(stdout, "rust_compute listening on {addr}").and_then(|()| stdout.flush());
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), logging which one.
#[cfg(unix)]
fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        info!(signal = name, "shutdown requested");
    })
}

/// Resolves on Ctrl-C, the only shutdown signal outside Unix.
#[cfg(not(unix))]
fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!(signal = "ctrl_c", "shutdown requested");
        }
    })
}
