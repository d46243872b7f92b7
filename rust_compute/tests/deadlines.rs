//! Deadlines and cancellation on a running server: long work stops when
//! the caller's deadline passes (DEADLINE_EXCEEDED) or the caller goes
//! away, and the worker it held is free again at once.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::corpus::corpus;
use rust_compute::proto::v1::compute_service_client::ComputeServiceClient;
use rust_compute::proto::v1::{
    AnalyzeRequest, AnalyzeStreamRequest, Document, FindNearDuplicatesRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

/// A batch that takes one worker several seconds.
fn big_batch() -> FindNearDuplicatesRequest {
    FindNearDuplicatesRequest {
        documents: corpus(100_000, 300, 20, 11)
            .documents
            .into_iter()
            .map(|(id, text)| Document { id, text })
            .collect(),
        threshold: 0.5,
    }
}

/// Asserts that a small call is answered quickly: with one worker, that
/// means no abandoned job is still holding it.
async fn assert_worker_is_free(client: &mut ComputeServiceClient<Channel>) {
    let started = Instant::now();
    client
        .analyze(AnalyzeRequest {
            text: "are you free".to_owned(),
            top_k: 0,
        })
        .await
        .expect("Analyze succeeds");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the worker was busy for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_short_deadline_on_a_big_batch_is_deadline_exceeded() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut client = server.compute().await;

    let mut request = Request::new(big_batch());
    request.set_timeout(Duration::from_millis(800));
    let started = Instant::now();
    let status = server
        .compute_without_local_deadlines()
        .find_near_duplicates(request)
        .await
        .expect_err("cannot finish in time");
    let elapsed = started.elapsed();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("DEADLINE_EXCEEDED")
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    assert_worker_is_free(&mut client).await;
}

#[tokio::test]
async fn a_cancelled_call_frees_its_worker() {
    let server = Server::start(&["--workers", "1"]).await;
    let mut client = server.compute().await;

    // Give up on the call after the server has started on it; dropping
    // the call resets the HTTP/2 stream.
    let mut busy = client.clone();
    let call = busy.find_near_duplicates(big_batch());
    let abandoned = tokio::time::timeout(Duration::from_millis(1000), call).await;
    assert!(abandoned.is_err(), "the batch finished too soon to test");

    assert_worker_is_free(&mut client).await;
}

#[tokio::test]
async fn a_stream_past_its_deadline_ends_with_deadline_exceeded() {
    let server = Server::start(&[]).await;
    let mut client = server.compute_without_local_deadlines();

    // One request, then the caller keeps the stream open and silent.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .send(AnalyzeStreamRequest {
            id: "1".to_owned(),
            text: "before the deadline".to_owned(),
            top_k: 0,
        })
        .await
        .expect("queue the request");
    let mut request = Request::new(ReceiverStream::new(receiver));
    request.set_timeout(Duration::from_millis(300));

    let mut stream = client
        .analyze_stream(request)
        .await
        .expect("stream opens")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("answered")
        .expect("a response");
    assert_eq!(first.id, "1");
    let status = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the server ends the stream itself")
        .expect_err("the deadline passed");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    drop(sender);
}
