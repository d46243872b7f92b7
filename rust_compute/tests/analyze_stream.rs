//! AnalyzeStream on a running server: one response per request, same id,
//! request order; an invalid request ends the stream after the responses
//! to every earlier request.

mod common;

use common::Server;
use rust_compute::proto::v1::{AnalyzeRequest, AnalyzeStreamRequest, AnalyzeStreamResponse};
use tonic::Code;
use tonic_types::StatusExt;

fn request(id: &str, text: &str, top_k: u32) -> AnalyzeStreamRequest {
    AnalyzeStreamRequest {
        id: id.to_owned(),
        text: text.to_owned(),
        top_k,
    }
}

#[tokio::test]
async fn answers_every_request_in_order_with_its_id() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    let texts = [
        "The first text.",
        "東京都に住む。",
        "",
        "Mixed 日本語 and English 🎉",
        "same id twice is fine",
    ];
    let ids = ["b", "a", "", "z", "a"];
    let requests: Vec<_> = ids
        .iter()
        .zip(texts)
        .map(|(id, text)| request(id, text, 3))
        .collect();

    let mut stream = client
        .analyze_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    let mut responses: Vec<AnalyzeStreamResponse> = Vec::new();
    while let Some(response) = stream.message().await.expect("no error") {
        responses.push(response);
    }

    let got_ids: Vec<&str> = responses.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got_ids, ids);
    // Each analysis is what Analyze says about the same text.
    for (response, text) in responses.iter().zip(texts) {
        let single = client
            .analyze(AnalyzeRequest {
                text: text.to_owned(),
                top_k: 3,
            })
            .await
            .expect("Analyze succeeds")
            .into_inner();
        assert_eq!(response.analysis, single.analysis, "{text:?}");
    }
}

#[tokio::test]
async fn an_empty_stream_ends_cleanly() {
    let server = Server::start(&[]).await;
    let mut stream = server
        .compute()
        .await
        .analyze_stream(tokio_stream::iter(Vec::<AnalyzeStreamRequest>::new()))
        .await
        .expect("stream opens")
        .into_inner();
    assert!(stream.message().await.expect("no error").is_none());
}

#[tokio::test]
async fn an_invalid_request_ends_the_stream_naming_its_id() {
    let server = Server::start(&[]).await;
    let requests = vec![
        request("first", "fine", 0),
        request("second", "also fine", 0),
        request("bad", "too many terms asked", 101),
        request("never", "not reached", 0),
    ];
    let mut stream = server
        .compute()
        .await
        .analyze_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();

    let mut ids = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(response)) => ids.push(response.id),
            Ok(None) => panic!("the stream must end with an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(ids, ["first", "second"]);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"bad\""), "{}", status.message());
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("id").map(String::as_str), Some("bad"));
    let violation = &details.bad_request().expect("BadRequest").field_violations[0];
    assert_eq!(
        (violation.field.as_str(), violation.reason.as_str()),
        ("top_k", "uint32.lte")
    );
}

#[tokio::test]
async fn an_oversized_streamed_text_ends_the_stream() {
    let server = Server::start(&[]).await;
    let requests = vec![
        request("ok", "fine", 0),
        request("huge", &"a".repeat((1 << 20) + 1), 0),
    ];
    let mut stream = server
        .compute()
        .await
        .analyze_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    let first = stream.message().await.expect("first answer").expect("some");
    assert_eq!(first.id, "ok");
    let status = stream.message().await.expect_err("second is invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let violation = &details.bad_request().expect("BadRequest").field_violations[0];
    assert_eq!(
        (violation.field.as_str(), violation.reason.as_str()),
        ("text", "string.max_bytes")
    );
}
