//! Request text never reaches the logs, not even at the most verbose level
//! with every library's tracing on: only sizes are logged. Checked with a
//! recognisable marker sent through every method, valid and invalid.

mod common;

use std::time::Duration;

use common::Server;
use nix::sys::signal::Signal;
use rust_compute::proto::v1::{
    AnalyzeRequest, AnalyzeStreamRequest, CompareRequest, Document, FindNearDuplicatesRequest,
};
use tonic::Request;

/// A word no log line has any other reason to contain; lowercase, so it is
/// also the token (and top term) the analysis makes of it.
const MARKER: &str = "zqxjvmarker";

fn with_id<T>(message: T, id: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn request_text_is_never_logged() {
    let server = Server::start(&["--log-level", "trace"]).await;
    let mut client = server.compute().await;
    let text = format!("Confidential: {MARKER} {MARKER} appears in this post.");

    client
        .analyze(with_id(
            AnalyzeRequest {
                text: text.clone(),
                top_k: 5,
            },
            "secret-analyze",
        ))
        .await
        .expect("ok");
    client
        .analyze(with_id(
            AnalyzeRequest {
                text: text.clone(),
                top_k: 101,
            },
            "secret-invalid",
        ))
        .await
        .expect_err("top_k too big");
    client
        .compare(with_id(
            CompareRequest {
                a: text.clone(),
                b: MARKER.to_owned(),
            },
            "secret-compare",
        ))
        .await
        .expect("ok");
    let documents = vec![
        Document {
            id: "1".to_owned(),
            text: text.clone(),
        },
        Document {
            id: "2".to_owned(),
            text: text.clone(),
        },
    ];
    client
        .find_near_duplicates(with_id(
            FindNearDuplicatesRequest {
                documents: documents.clone(),
                threshold: 0.9,
            },
            "secret-batch",
        ))
        .await
        .expect("ok");
    client
        .find_near_duplicates(with_id(
            FindNearDuplicatesRequest {
                documents,
                threshold: f64::NAN,
            },
            "secret-bad-batch",
        ))
        .await
        .expect_err("NaN threshold");
    let requests = [0, 101].map(|top_k| AnalyzeStreamRequest {
        id: "s".to_owned(),
        text: text.clone(),
        top_k,
    });
    let mut stream = client
        .analyze_stream(with_id(tokio_stream::iter(requests), "secret-stream"))
        .await
        .expect("stream opens")
        .into_inner();
    stream.message().await.expect("first answered");
    stream.message().await.expect_err("second invalid");

    server.signal(Signal::SIGTERM);
    let (status, stderr) = server.wait(Duration::from_secs(10)).await;
    assert!(status.success());

    // The calls were logged, in detail...
    for id in [
        "secret-analyze",
        "secret-invalid",
        "secret-compare",
        "secret-batch",
        "secret-bad-batch",
        "secret-stream",
    ] {
        assert!(
            stderr.contains(&format!("\"request_id\":\"{id}\"")),
            "no log line names {id}"
        );
    }
    assert!(stderr.contains("\"text_bytes\":"), "sizes are logged");
    // ...and the text never was, in any form.
    for form in [MARKER, &MARKER.to_uppercase(), "Confidential"] {
        let leaks: Vec<&str> = stderr.lines().filter(|line| line.contains(form)).collect();
        assert!(
            leaks.is_empty(),
            "{form:?} leaked into the logs: {leaks:#?}"
        );
    }
}
