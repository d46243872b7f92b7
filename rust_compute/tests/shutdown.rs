//! Graceful shutdown of the real binary: on SIGTERM or SIGINT health turns
//! NOT_SERVING, in-flight calls may finish within the grace period, and the
//! process exits 0.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use nix::sys::signal::Signal;
use tonic::Streaming;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const COMPUTE: &str = "nuell.compute.v1.ComputeService";

/// Opens a health Watch (a long-lived, in-flight call) and checks that it
/// starts out SERVING.
async fn watch(channel: Channel, service: &str) -> Streaming<HealthCheckResponse> {
    let mut stream = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("open health watch")
        .into_inner();
    assert_eq!(
        next_status(&mut stream).await,
        ServingStatus::Serving,
        "{service:?}"
    );
    stream
}

async fn next_status(stream: &mut Streaming<HealthCheckResponse>) -> ServingStatus {
    tokio::time::timeout(common::PATIENCE, stream.message())
        .await
        .expect("health update within the deadline")
        .expect("health watch stays open")
        .expect("a health update")
        .status()
}

fn log_has(stderr: &str, message: &str) -> bool {
    stderr
        .lines()
        .any(|line| line.contains(&format!("\"message\":\"{message}\"")))
}

#[tokio::test]
async fn sigterm_reports_not_serving_then_exits_0_once_calls_finish() {
    // A grace period far longer than the test may take: the exit must come
    // from the drained calls, not from the grace period running out.
    let server = Server::start(&["--shutdown-grace-seconds", "60"]).await;
    let channel = server.channel().await;
    let mut overall = watch(channel.clone(), "").await;
    let mut compute = watch(channel.clone(), COMPUTE).await;

    server.signal(Signal::SIGTERM);
    assert_eq!(next_status(&mut overall).await, ServingStatus::NotServing);
    assert_eq!(next_status(&mut compute).await, ServingStatus::NotServing);

    // The watches are still in flight; ending them lets the drain complete.
    drop((overall, compute, channel));
    let started = Instant::now();
    let (status, stderr) = server.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        log_has(&stderr, "shutdown requested") && stderr.contains("SIGTERM"),
        "{stderr}"
    );
    assert!(log_has(&stderr, "stopped"), "{stderr}");
    assert!(
        !log_has(
            &stderr,
            "grace period over; cutting off calls still in flight"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn grace_period_bounds_a_call_that_never_ends() {
    let server = Server::start(&["--shutdown-grace-seconds", "1"]).await;
    let mut stuck = watch(server.channel().await, COMPUTE).await;

    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(next_status(&mut stuck).await, ServingStatus::NotServing);
    let (status, stderr) = server.wait(Duration::from_secs(10)).await;
    let elapsed = started.elapsed();

    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    // It waited for the in-flight call, but not beyond the grace period.
    assert!(
        elapsed >= Duration::from_millis(900),
        "left after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(6), "left after {elapsed:?}");
    assert!(
        log_has(
            &stderr,
            "grace period over; cutting off calls still in flight"
        ),
        "{stderr}"
    );
    drop(stuck);
}

#[tokio::test]
async fn sigint_with_only_idle_connections_exits_0_promptly() {
    let server = Server::start(&["--shutdown-grace-seconds", "60"]).await;
    // A finished call leaves an idle connection open, as a pooled client does.
    let mut client = HealthClient::new(server.channel().await);
    client
        .check(HealthCheckRequest::default())
        .await
        .expect("health check before shutdown");

    let started = Instant::now();
    server.signal(Signal::SIGINT);
    let (status, stderr) = server.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("SIGINT"), "{stderr}");
}
