//! Headers the service echoes, sent with bytes it must not echo: non-ASCII
//! (HTTP/2 carries them as opaque octets), controls, padding, malformed
//! trace context. Every call still succeeds (or fails for its own reason),
//! with a fresh request id and trace instead of the value sent, and the
//! value sent appears nowhere in the response metadata.

mod common;

use common::Server;
use rust_compute::proto::v1::AnalyzeRequest;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Code, Request};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Request ids that are not 1 to 128 printable ASCII characters without a
/// space at either end, as raw header bytes.
const BAD_REQUEST_IDS: &[&[u8]] = &[
    "caf\u{e9}".as_bytes(),
    b"caf\xe9",
    "\u{3042}\u{3044}\u{3046}".as_bytes(),
    "req-\u{202e}1".as_bytes(),
    b"\xff\xfe",
    b" padded",
    b"padded ",
];

/// Trace parents that are not W3C Trace Context.
const BAD_TRACEPARENTS: &[&[u8]] = &[
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}".as_bytes(),
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\xe9",
    b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
];

fn analyze(top_k: u32, headers: &[(&'static str, &[u8])]) -> Request<AnalyzeRequest> {
    let mut request = Request::new(AnalyzeRequest {
        text: "こんにちは、世界".to_owned(),
        top_k,
    });
    for (key, bytes) in headers {
        let value = AsciiMetadataValue::try_from(*bytes).expect("a header value HTTP/2 can carry");
        request.metadata_mut().insert(*key, value);
    }
    request
}

fn ascii<'a>(metadata: &'a MetadataMap, key: &str) -> &'a str {
    metadata
        .get(key)
        .unwrap_or_else(|| panic!("{key} returned"))
        .to_str()
        .expect("printable ASCII")
}

fn assert_fresh_ids(metadata: &MetadataMap, sent: &[u8]) {
    let id = ascii(metadata, "x-request-id");
    assert_eq!(id.len(), 36, "a generated UUID, not {sent:?}: {id}");
    assert_ne!(id.as_bytes(), sent);
    let traceparent = ascii(metadata, "traceparent");
    assert!(traceparent.starts_with("00-"), "{traceparent}");
    for (_, value) in metadata.clone().into_headers().iter() {
        assert_ne!(value.as_bytes(), sent, "the value sent was echoed");
    }
}

#[tokio::test]
async fn a_request_id_that_cannot_be_echoed_is_replaced_and_the_call_succeeds() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    for &bad in BAD_REQUEST_IDS {
        let response = client
            .analyze(analyze(0, &[("x-request-id", bad)]))
            .await
            .unwrap_or_else(|status| panic!("{bad:?}: {status:?}"));
        assert_fresh_ids(response.metadata(), bad);

        // Its own error, with a fresh id, when the request is wrong too.
        let status = client
            .analyze(analyze(101, &[("x-request-id", bad)]))
            .await
            .expect_err("top_k too big");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert_fresh_ids(status.metadata(), bad);
    }
}

#[tokio::test]
async fn a_traceparent_that_is_not_w3c_starts_a_new_trace() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    for &bad in BAD_TRACEPARENTS {
        let response = client
            .analyze(analyze(
                0,
                &[("traceparent", bad), ("tracestate", b"congo=t61rcWkgMzE")],
            ))
            .await
            .unwrap_or_else(|status| panic!("{bad:?}: {status:?}"));
        let metadata = response.metadata();
        assert!(
            !ascii(metadata, "traceparent").contains(TRACE_ID),
            "{bad:?}"
        );
        assert!(metadata.get("tracestate").is_none(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_tracestate_that_cannot_be_echoed_is_dropped_and_the_trace_continues() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    for bad in [
        "congo=caf\u{e9}".as_bytes(),
        b"congo=caf\xe9",
        b"Congo=1",
        b"congo",
    ] {
        let response = client
            .analyze(analyze(
                0,
                &[("traceparent", TRACEPARENT.as_bytes()), ("tracestate", bad)],
            ))
            .await
            .unwrap_or_else(|status| panic!("{bad:?}: {status:?}"));
        let metadata = response.metadata();
        assert!(ascii(metadata, "traceparent").contains(TRACE_ID), "{bad:?}");
        assert!(metadata.get("tracestate").is_none(), "{bad:?}");
    }
}
