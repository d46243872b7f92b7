//! The Prometheus endpoint of a running server: calls counted by method
//! and code, their durations, batch sizes, text bytes and the worker
//! pool's load, scraped over plain HTTP the way Prometheus does.

mod common;

use std::time::Duration;

use common::Server;
use common::corpus::corpus;
use common::scrape::{self, Samples};
use nix::sys::signal::Signal;
use rust_compute::proto::v1::{
    AnalyzeRequest, AnalyzeResponse, AnalyzeStreamRequest, CompareRequest, Document,
    FindNearDuplicatesRequest,
};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const ANALYZE: &str = "/nuell.compute.v1.ComputeService/Analyze";
const COMPARE: &str = "/nuell.compute.v1.ComputeService/Compare";
const FIND: &str = "/nuell.compute.v1.ComputeService/FindNearDuplicates";
const STREAM: &str = "/nuell.compute.v1.ComputeService/AnalyzeStream";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

const REQUESTS: &str = "nuell_compute_rpc_requests_total";
const DURATION: &str = "nuell_compute_rpc_duration_seconds";
const TEXT_BYTES: &str = "nuell_compute_text_analysed_bytes_total";
const BATCH: &str = "nuell_compute_find_near_duplicates_batch_documents";
const QUEUE_DEPTH: &str = "nuell_compute_worker_pool_queue_depth";
const BUSY: &str = "nuell_compute_worker_pool_busy_workers";
const THREADS: &str = "nuell_compute_worker_pool_threads";

async fn samples(server: &Server) -> Samples {
    let response = scrape::get(server.metrics_addr().await, "/metrics").await;
    assert_eq!(response.status, 200, "{}", response.body);
    Samples::parse(&response.body)
}

fn document(id: &str, text: &str) -> Document {
    Document {
        id: id.to_owned(),
        text: text.to_owned(),
    }
}

fn analyze(text: &str, top_k: u32) -> AnalyzeRequest {
    AnalyzeRequest {
        text: text.to_owned(),
        top_k,
    }
}

#[tokio::test]
async fn counts_calls_by_method_and_code() {
    let server = Server::start(&["--workers", "2"]).await;
    let mut client = server.compute().await;

    // Analyze: two OK (13 + 4 bytes of text), one INVALID_ARGUMENT.
    client
        .analyze(analyze("one two three", 0))
        .await
        .expect("ok");
    client.analyze(analyze("four", 3)).await.expect("ok");
    let status = client
        .analyze(analyze("not counted", 101))
        .await
        .expect_err("top_k too big");
    assert_eq!(status.code(), Code::InvalidArgument);
    // Compare: 3 + 3 bytes.
    client
        .compare(CompareRequest {
            a: "a b".to_owned(),
            b: "a c".to_owned(),
        })
        .await
        .expect("ok");
    // FindNearDuplicates: a batch of three (5 + 5 + 4 bytes), and an empty one.
    client
        .find_near_duplicates(FindNearDuplicatesRequest {
            documents: vec![
                document("1", "alpha"),
                document("2", "alpha"),
                document("3", "beta"),
            ],
            threshold: 0.5,
        })
        .await
        .expect("ok");
    let status = client
        .find_near_duplicates(FindNearDuplicatesRequest {
            documents: vec![],
            threshold: 0.5,
        })
        .await
        .expect_err("no documents");
    assert_eq!(status.code(), Code::InvalidArgument);
    // AnalyzeStream: one call of two requests (2 + 3 bytes).
    let mut stream = client
        .analyze_stream(tokio_stream::iter(["hi", "you"].map(|text| {
            AnalyzeStreamRequest {
                id: text.to_owned(),
                text: text.to_owned(),
                top_k: 0,
            }
        })))
        .await
        .expect("stream opens")
        .into_inner();
    while stream.message().await.expect("no error").is_some() {}
    // Health, and a method nobody serves.
    HealthClient::new(server.channel().await)
        .check(HealthCheckRequest::default())
        .await
        .expect("serving");
    let mut raw = tonic::client::Grpc::new(server.channel().await);
    raw.ready().await.expect("ready");
    let status = raw
        .unary::<_, AnalyzeResponse, _>(
            tonic::Request::new(analyze("x", 0)),
            PathAndQuery::from_static("/nuell.compute.v1.ComputeService/NoSuchMethod"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented);

    let metrics = samples(&server).await;
    for (method, code, count) in [
        (ANALYZE, "OK", 2.0),
        (ANALYZE, "INVALID_ARGUMENT", 1.0),
        (COMPARE, "OK", 1.0),
        (FIND, "OK", 1.0),
        (FIND, "INVALID_ARGUMENT", 1.0),
        (STREAM, "OK", 1.0),
        (HEALTH_CHECK, "OK", 1.0),
        ("unknown", "UNIMPLEMENTED", 1.0),
    ] {
        assert_eq!(
            metrics.value(REQUESTS, &[("method", method), ("code", code)]),
            count,
            "{method} {code}"
        );
    }
    assert_eq!(
        metrics.get(
            REQUESTS,
            &[("method", COMPARE), ("code", "INVALID_ARGUMENT")]
        ),
        None
    );

    // Every call is timed once, whatever its code.
    for (method, count) in [(ANALYZE, 3.0), (FIND, 2.0), (STREAM, 1.0)] {
        let method = [("method", method)];
        assert_eq!(metrics.value(&format!("{DURATION}_count"), &method), count);
        let all = [("method", method[0].1), ("le", "+Inf")];
        assert_eq!(metrics.value(&format!("{DURATION}_bucket"), &all), count);
        assert!(metrics.value(&format!("{DURATION}_sum"), &method) > 0.0);
    }

    // Only valid requests bring text and batches.
    for (method, bytes) in [(ANALYZE, 17.0), (COMPARE, 6.0), (FIND, 14.0), (STREAM, 5.0)] {
        assert_eq!(
            metrics.value(TEXT_BYTES, &[("method", method)]),
            bytes,
            "{method}"
        );
    }
    assert_eq!(metrics.value(&format!("{BATCH}_count"), &[]), 1.0);
    assert_eq!(metrics.value(&format!("{BATCH}_sum"), &[]), 3.0);
    assert_eq!(
        metrics.value(&format!("{BATCH}_bucket"), &[("le", "2")]),
        0.0
    );
    assert_eq!(
        metrics.value(&format!("{BATCH}_bucket"), &[("le", "5")]),
        1.0
    );

    // Nothing is left running.
    assert_eq!(metrics.value(QUEUE_DEPTH, &[]), 0.0);
    assert_eq!(metrics.value(BUSY, &[]), 0.0);
    assert_eq!(metrics.value(THREADS, &[]), 2.0);
}

#[tokio::test]
async fn serves_the_prometheus_text_format_on_metrics_only() {
    let server = Server::start(&[]).await;
    let addr = server.metrics_addr().await;

    let response = scrape::get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // A family shows once it has a sample; the pool's gauges always do.
    assert!(
        response
            .body
            .lines()
            .any(|line| line == "# TYPE nuell_compute_worker_pool_threads gauge"),
        "{}",
        response.body
    );
    assert_eq!(scrape::get(addr, "/").await.status, 404);
    assert_eq!(scrape::get(addr, "/metrics/x").await.status, 404);
}

#[tokio::test]
async fn worker_gauges_follow_queued_and_running_jobs() {
    let server = Server::start(&["--workers", "1"]).await;
    let client = server.compute().await;
    let batch = FindNearDuplicatesRequest {
        documents: corpus(100_000, 300, 20, 3)
            .documents
            .into_iter()
            .map(|(id, text)| Document { id, text })
            .collect(),
        threshold: 0.5,
    };

    // A batch that keeps the only worker busy for seconds, and a small
    // call queued behind it.
    let mut busy = client.clone();
    let big = tokio::spawn(async move { busy.find_near_duplicates(batch).await });
    wait_for(&server, |m| m.value(BUSY, &[]) == 1.0).await;
    let mut queued = client.clone();
    let small = tokio::spawn(async move { queued.analyze(analyze("waiting", 0)).await });
    let metrics = wait_for(&server, |m| m.value(QUEUE_DEPTH, &[]) == 1.0).await;
    assert_eq!(metrics.value(BUSY, &[]), 1.0);

    // Both callers give up: the jobs stop, the gauges go back to zero, and
    // the calls count as CANCELLED.
    big.abort();
    small.abort();
    wait_for(&server, |m| {
        let cancelled = |method| m.get(REQUESTS, &[("method", method), ("code", "CANCELLED")]);
        m.value(BUSY, &[]) == 0.0
            && m.value(QUEUE_DEPTH, &[]) == 0.0
            && cancelled(FIND) == Some(1.0)
            && cancelled(ANALYZE) == Some(1.0)
    })
    .await;
}

/// Scrapes until `ready` holds, failing the test after [`common::PATIENCE`].
async fn wait_for(server: &Server, ready: impl Fn(&Samples) -> bool) -> Samples {
    let give_up = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let metrics = samples(server).await;
        if ready(&metrics) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the metrics never got there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_metrics_address_is_logged_and_stdout_keeps_one_line() {
    let server = Server::start(&[]).await;
    let listening = server.log_line("listening").await;
    let metrics_addr = server.metrics_addr().await;
    assert!(metrics_addr.ip().is_loopback());
    assert_ne!(metrics_addr.port(), 0);
    assert_eq!(listening["addr"], server.addr.to_string());
    // Up before the announcement.
    assert_eq!(scrape::get(metrics_addr, "/metrics").await.status, 200);

    server.signal(Signal::SIGTERM);
    let exited = server.wait_all(Duration::from_secs(10)).await;
    assert!(exited.status.success(), "{}", exited.stderr);
    assert_eq!(exited.stdout_rest, "", "stdout after the listening line");
}
