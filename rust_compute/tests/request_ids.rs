//! Request ids and W3C trace context on a running server: `x-request-id`
//! kept or generated and returned on success and on errors, `traceparent`
//! continued with the caller's trace id, and both in the call's log lines.

mod common;

use common::Server;
use rust_compute::proto::v1::{AnalyzeRequest, AnalyzeStreamRequest};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn analyze(text: &str, top_k: u32, metadata: &[(&'static str, &str)]) -> Request<AnalyzeRequest> {
    let mut request = Request::new(AnalyzeRequest {
        text: text.to_owned(),
        top_k,
    });
    for (key, value) in metadata {
        request
            .metadata_mut()
            .insert(*key, value.parse().expect("ascii metadata"));
    }
    request
}

fn get<'a>(metadata: &'a MetadataMap, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .map(|value| value.to_str().expect("ascii"))
}

/// `(trace id, parent id, flags)` of a `traceparent`, checked for shape.
fn traceparent(metadata: &MetadataMap) -> (String, String, String) {
    let value = get(metadata, "traceparent").expect("traceparent returned");
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    let hex = |part: &str, len| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(
        hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2),
        "{value}"
    );
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

fn is_uuid_v4(id: &str) -> bool {
    let bytes = id.as_bytes();
    id.len() == 36
        && [8, 13, 18, 23].iter().all(|&at| bytes[at] == b'-')
        && bytes[14] == b'4'
        && matches!(bytes[19], b'8' | b'9' | b'a' | b'b')
        && id
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn a_given_request_id_comes_back_on_success_and_on_errors() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;

    let response = client
        .analyze(analyze("hello", 0, &[("x-request-id", "req-ok-1")]))
        .await
        .expect("ok");
    assert_eq!(get(response.metadata(), "x-request-id"), Some("req-ok-1"));

    let status = client
        .analyze(analyze("hello", 101, &[("x-request-id", "req-bad-1")]))
        .await
        .expect_err("top_k too big");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(get(status.metadata(), "x-request-id"), Some("req-bad-1"));
    traceparent(status.metadata());

    // Spaces and the longest accepted id are kept too.
    let longest = "r".repeat(128);
    for id in ["with a space", longest.as_str()] {
        let response = client
            .analyze(analyze("hello", 0, &[("x-request-id", id)]))
            .await
            .expect("ok");
        assert_eq!(get(response.metadata(), "x-request-id"), Some(id));
    }
}

#[tokio::test]
async fn a_missing_or_malformed_request_id_is_replaced_by_a_uuid_v4() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    let too_long = "r".repeat(129);

    let mut seen = Vec::new();
    for metadata in [
        &[][..],
        &[("x-request-id", too_long.as_str())],
        &[("x-request-id", "tab\there")],
    ] {
        let response = client
            .analyze(analyze("hello", 0, metadata))
            .await
            .expect("ok");
        let id = get(response.metadata(), "x-request-id")
            .expect("an id is returned")
            .to_owned();
        assert!(is_uuid_v4(&id), "{metadata:?}: {id}");
        seen.push(id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "every call gets its own id");

    // On an error as well.
    let status = client
        .analyze(analyze("hello", 101, &[]))
        .await
        .expect_err("top_k too big");
    assert!(is_uuid_v4(
        get(status.metadata(), "x-request-id").expect("id")
    ));
}

#[tokio::test]
async fn a_stream_that_fails_after_answering_names_the_call_in_its_status() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    let requests = [("1", "fine", 0), ("2", "too many terms", 101)].map(|(id, text, top_k)| {
        AnalyzeStreamRequest {
            id: id.to_owned(),
            text: text.to_owned(),
            top_k,
        }
    });
    let mut request = Request::new(tokio_stream::iter(requests));
    request
        .metadata_mut()
        .insert("x-request-id", "req-stream-1".parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().expect("ascii"));

    let response = client.analyze_stream(request).await.expect("stream opens");
    assert_eq!(
        get(response.metadata(), "x-request-id"),
        Some("req-stream-1")
    );
    let mut stream = response.into_inner();
    assert_eq!(
        stream.message().await.expect("answered").expect("one").id,
        "1"
    );
    let status = stream.message().await.expect_err("the second is invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(get(status.metadata(), "x-request-id"), Some("req-stream-1"));
    assert_eq!(traceparent(status.metadata()).0, TRACE_ID);
}

#[tokio::test]
async fn traceparent_continues_the_callers_trace() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;

    let response = client
        .analyze(analyze(
            "hello",
            0,
            &[
                ("traceparent", TRACEPARENT),
                ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ],
        ))
        .await
        .expect("ok");
    let (trace_id, parent_id, flags) = traceparent(response.metadata());
    assert_eq!(trace_id, TRACE_ID);
    assert_ne!(
        parent_id, "00f067aa0ba902b7",
        "our own span, not the caller's"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        get(response.metadata(), "tracestate"),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );

    // Without one, or with a broken one, a new trace starts.
    for metadata in [
        &[][..],
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
        &[
            ("traceparent", "garbage"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    ] {
        let response = client
            .analyze(analyze("hello", 0, metadata))
            .await
            .expect("ok");
        let (trace_id, _, flags) = traceparent(response.metadata());
        assert_ne!(trace_id, TRACE_ID);
        assert_ne!(trace_id, "0".repeat(32));
        assert_eq!(flags, "00");
        assert_eq!(get(response.metadata(), "tracestate"), None, "{metadata:?}");
    }
}

#[tokio::test]
async fn every_log_line_about_a_call_names_it() {
    let server = Server::start(&["--log-level", "debug"]).await;
    let mut client = server.compute().await;
    let ids = [("log-ok-1", 0), ("log-bad-1", 101)];
    for (id, top_k) in ids {
        let _ = client
            .analyze(analyze(
                "some text",
                top_k,
                &[("x-request-id", id), ("traceparent", TRACEPARENT)],
            ))
            .await;
    }
    server
        .log_line_where(|line| {
            line["message"] == "rpc finished" && line["span"]["request_id"] == "log-bad-1"
        })
        .await;

    let stderr = server.stderr_so_far();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    for (id, _) in ids {
        let about: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|line| line["span"]["request_id"] == id)
            .collect();
        let messages: Vec<&str> = about
            .iter()
            .map(|line| line["message"].as_str().expect("message"))
            .collect();
        assert!(messages.contains(&"rpc started"), "{id}: {messages:?}");
        assert!(messages.contains(&"rpc finished"), "{id}: {messages:?}");
        for line in &about {
            assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");
            assert_eq!(
                line["span"]["method"],
                "/nuell.compute.v1.ComputeService/Analyze"
            );
        }
    }
    // The valid call's text size is logged from the worker thread, inside
    // the call's span.
    let accepted = lines
        .iter()
        .find(|line| {
            line["message"] == "request accepted" && line["span"]["request_id"] == "log-ok-1"
        })
        .expect("the accepted request is logged");
    assert_eq!(accepted["text_bytes"], 9);
    let finished = lines
        .iter()
        .find(|line| line["message"] == "rpc finished" && line["span"]["request_id"] == "log-bad-1")
        .expect("the failed call is logged");
    assert_eq!(finished["code"], "INVALID_ARGUMENT");
    assert_eq!(finished["level"], "INFO");
}
