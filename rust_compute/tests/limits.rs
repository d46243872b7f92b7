//! The contract's limits on a running server: INVALID_ARGUMENT with a
//! BadRequest violation (field path and protovalidate rule id) for each
//! field rule, RESOURCE_EXHAUSTED for a batch or a message that is too big.

mod common;

use common::Server;
use rust_compute::limits::{
    BATCH_TEXT_MAX_BYTES, DOCUMENT_TEXT_MAX_BYTES, MESSAGE_MAX_BYTES, TEXT_MAX_BYTES,
};
use rust_compute::proto::v1::{
    AnalyzeRequest, CompareRequest, Document, FindNearDuplicatesRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Asserts INVALID_ARGUMENT listing exactly `want` as (field, rule) pairs.
fn assert_violations<T: std::fmt::Debug>(result: Result<T, Status>, want: &[(&str, &str)]) {
    let status = result.expect_err("the request is invalid");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "INVALID_ARGUMENT");
    assert_eq!(info.domain, "compute.nuell.dev");
    let got: Vec<(&str, &str)> = details
        .bad_request()
        .expect("BadRequest")
        .field_violations
        .iter()
        .map(|v| (v.field.as_str(), v.reason.as_str()))
        .collect();
    assert_eq!(got, want);
}

fn document(id: &str, text: &str) -> Document {
    Document {
        id: id.to_owned(),
        text: text.to_owned(),
    }
}

fn batch(documents: Vec<Document>, threshold: f64) -> FindNearDuplicatesRequest {
    FindNearDuplicatesRequest {
        documents,
        threshold,
    }
}

#[tokio::test]
async fn analyze_and_compare_limits() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    let over = "a".repeat(TEXT_MAX_BYTES + 1);

    let result = client
        .analyze(AnalyzeRequest {
            text: over.clone(),
            top_k: 0,
        })
        .await;
    assert_violations(result, &[("text", "string.max_bytes")]);

    let result = client
        .analyze(AnalyzeRequest {
            text: "fine".to_owned(),
            top_k: 101,
        })
        .await;
    assert_violations(result, &[("top_k", "uint32.lte")]);

    let result = client
        .compare(CompareRequest {
            a: over.clone(),
            b: over,
        })
        .await;
    assert_violations(
        result,
        &[("a", "string.max_bytes"), ("b", "string.max_bytes")],
    );

    // At the limits everything is accepted.
    client
        .analyze(AnalyzeRequest {
            text: "a".repeat(TEXT_MAX_BYTES),
            top_k: 100,
        })
        .await
        .expect("at the limits");
}

#[tokio::test]
async fn batch_field_limits() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;

    let result = client.find_near_duplicates(batch(vec![], 0.5)).await;
    assert_violations(result, &[("documents", "repeated.min_items")]);

    let too_many: Vec<Document> = (0..100_001).map(|i| document(&i.to_string(), "")).collect();
    let result = client.find_near_duplicates(batch(too_many, 0.5)).await;
    assert_violations(result, &[("documents", "repeated.max_items")]);

    let result = client
        .find_near_duplicates(batch(
            vec![
                document("ok", "text"),
                document("", "no id"),
                document(&"x".repeat(129), "long id"),
                document("ok", "same id again"),
                document("big", &"x".repeat(DOCUMENT_TEXT_MAX_BYTES + 1)),
            ],
            0.5,
        ))
        .await;
    assert_violations(
        result,
        &[
            ("documents[1].id", "string.min_len"),
            ("documents[2].id", "string.max_len"),
            ("documents[3].id", "documents.unique_ids"),
            ("documents[4].text", "string.max_bytes"),
        ],
    );

    for threshold in [0.0, -1.0, 1.5, f64::NAN] {
        let result = client
            .find_near_duplicates(batch(vec![document("a", "text")], threshold))
            .await;
        assert_violations(result, &[("threshold", "double.gt_lte")]);
    }

    // 128 characters is fine however many bytes they take.
    client
        .find_near_duplicates(batch(vec![document(&"語".repeat(128), "text")], 1.0))
        .await
        .expect("at the limits");
}

#[tokio::test]
async fn many_violations_are_listed_up_to_a_cap() {
    let server = Server::start(&[]).await;
    let documents: Vec<Document> = (0..5_000).map(|_| document("", "")).collect();
    let status = server
        .compute()
        .await
        .find_near_duplicates(batch(documents, 0.5))
        .await
        .expect_err("every id is empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    // 5,000 empty ids, 4,999 of them repeats of the first.
    assert!(status.message().contains("9999"), "{}", status.message());
    let details = status.get_error_details();
    assert_eq!(
        details
            .bad_request()
            .expect("BadRequest")
            .field_violations
            .len(),
        100
    );
}

#[tokio::test]
async fn a_batch_over_128_mib_of_text_is_resource_exhausted() {
    let server = Server::start(&[]).await;
    // One shared 64 KiB text, cloned: 2,049 of them are 64 KiB over the limit.
    let text = "x".repeat(DOCUMENT_TEXT_MAX_BYTES);
    let count = BATCH_TEXT_MAX_BYTES / DOCUMENT_TEXT_MAX_BYTES + 1;
    let documents: Vec<Document> = (0..count)
        .map(|i| Document {
            id: i.to_string(),
            text: text.clone(),
        })
        .collect();

    let status = server
        .compute()
        .await
        .find_near_duplicates(batch(documents, 0.5))
        .await
        .expect_err("too much text");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "BATCH_TOO_LARGE");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("134217728")
    );
    assert_eq!(
        info.metadata.get("bytes"),
        Some(&(count * DOCUMENT_TEXT_MAX_BYTES).to_string())
    );
}

#[tokio::test]
async fn a_message_over_192_mib_is_resource_exhausted() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    let status = client
        .analyze(AnalyzeRequest {
            text: "a".repeat(MESSAGE_MAX_BYTES),
            top_k: 0,
        })
        .await
        .expect_err("too big for the transport");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("MESSAGE_TOO_LARGE")
    );

    // The connection and the server are still fine.
    client
        .analyze(AnalyzeRequest {
            text: "still serving".to_owned(),
            top_k: 0,
        })
        .await
        .expect("served after the refusal");
}
