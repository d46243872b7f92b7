//! Random bytes sent to every method of a running server, as gRPC
//! messages (framed, through tonic's client with a raw codec) and as
//! whole HTTP/2 request bodies (unframed, through a bare HTTP/2 client).
//!
//! Every call must end with a proper gRPC status, never a dropped
//! connection or a panic, and the server must serve normally afterwards.
//! Bytes that happen to decode get the ordinary answer (OK or
//! INVALID_ARGUMENT); bytes that do not decode get INVALID_ARGUMENT with
//! reason MALFORMED_REQUEST (tonic's own INTERNAL, rewritten: the
//! caller's mistake is never INTERNAL). Broken gRPC framing (a bad
//! compressed-flag, a truncated frame) stays tonic's INTERNAL without
//! details, as gRPC's compression spec requires.

mod common;

use common::Server;
use http_body_util::{BodyExt, Full};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use rust_compute::proto::v1::{
    AnalyzeRequest, AnalyzeStreamRequest, CompareRequest, Document, FindNearDuplicatesRequest,
};
use tokio::runtime::Runtime;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Bytes;
use tonic::codegen::http::{self, uri::PathAndQuery};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const METHODS: [&str; 4] = [
    "/nuell.compute.v1.ComputeService/Analyze",
    "/nuell.compute.v1.ComputeService/Compare",
    "/nuell.compute.v1.ComputeService/FindNearDuplicates",
    "/nuell.compute.v1.ComputeService/AnalyzeStream",
];

const CASES: u32 = 256;

/// Sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Valid encodings of every request type, for mutation.
fn valid_encodings() -> Vec<Vec<u8>> {
    vec![
        AnalyzeRequest {
            text: "hello wide world".to_owned(),
            top_k: 5,
        }
        .encode_to_vec(),
        CompareRequest {
            a: "one two three".to_owned(),
            b: "東京都".to_owned(),
        }
        .encode_to_vec(),
        FindNearDuplicatesRequest {
            documents: vec![
                Document {
                    id: "a".to_owned(),
                    text: "same words here".to_owned(),
                },
                Document {
                    id: "b".to_owned(),
                    text: "same words here".to_owned(),
                },
            ],
            threshold: 0.5,
        }
        .encode_to_vec(),
        AnalyzeStreamRequest {
            id: "7".to_owned(),
            text: "streamed".to_owned(),
            top_k: 0,
        }
        .encode_to_vec(),
    ]
}

/// Well-formed requests of every type with random field values; sent to
/// a method of another type, they may still decode, or fail on a wire
/// type.
fn encoded_request() -> impl Strategy<Value = Vec<u8>> {
    let text = || any::<String>();
    prop_oneof![
        (text(), any::<u32>())
            .prop_map(|(text, top_k)| AnalyzeRequest { text, top_k }.encode_to_vec()),
        (text(), text()).prop_map(|(a, b)| CompareRequest { a, b }.encode_to_vec()),
        (vec((text(), text()), 0..4), any::<f64>()).prop_map(|(documents, threshold)| {
            FindNearDuplicatesRequest {
                documents: documents
                    .into_iter()
                    .map(|(id, text)| Document { id, text })
                    .collect(),
                threshold,
            }
            .encode_to_vec()
        }),
        (text(), text(), any::<u32>()).prop_map(|(id, text, top_k)| {
            AnalyzeStreamRequest { id, text, top_k }.encode_to_vec()
        }),
    ]
}

/// Random bytes; a valid message with bytes changed, cut or added, which
/// reaches deeper into the decoder (bad lengths, bad UTF-8, wrong wire
/// types); or a well-formed message of any type.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        proptest::sample::select(valid_encodings()),
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        any::<prop::sample::Index>(),
        vec(any::<u8>(), 0..8),
    )
        .prop_map(|(mut bytes, changes, cut, tail)| {
            for (at, byte) in changes {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes.extend(tail);
            bytes
        });
    prop_oneof![vec(any::<u8>(), 0..256), mutated, encoded_request()]
}

/// `payload` in a gRPC frame: compression flag, big-endian length, bytes.
/// The flag and the length are usually right and sometimes lie.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let flag = prop_oneof![4 => Just(0_u8), 1 => any::<u8>()];
    let length_error =
        prop_oneof![4 => Just(0_i64), 1 => -3..=3_i64, 1 => any::<u32>().prop_map(i64::from)];
    (flag, length_error, payload()).prop_map(|(flag, error, payload)| {
        let length = u32::try_from(payload.len() as i64 + error).unwrap_or(u32::MAX);
        let mut frame = vec![flag];
        frame.extend(length.to_be_bytes());
        frame.extend(payload);
        frame
    })
}

/// Whether `status` is an acceptable answer to bytes that may not decode.
fn acceptable(status: &Status) -> bool {
    match status.code() {
        Code::Ok | Code::InvalidArgument => true,
        // Framing tonic refuses (a bad compressed-flag, a truncated frame):
        // INTERNAL without details, as gRPC's compression spec requires. A
        // message that does not decode is INVALID_ARGUMENT, never this.
        Code::Internal => {
            status.details().is_empty()
                && !status
                    .message()
                    .starts_with("failed to decode Protobuf message")
        }
        _ => false,
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Sends `messages` to `method` as gRPC messages; the final status.
async fn call(channel: Channel, method: &'static str, messages: Vec<Vec<u8>>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = PathAndQuery::from_static(method);
    if method.ends_with("AnalyzeStream") {
        let request = tonic::Request::new(tokio_stream::iter(messages));
        let mut responses = match grpc.streaming(request, path, RawCodec).await {
            Ok(response) => response.into_inner(),
            Err(status) => return status,
        };
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Status::ok(""),
                Err(status) => return status,
            }
        }
    }
    let message = messages.into_iter().next().unwrap_or_default();
    match grpc
        .unary(tonic::Request::new(message), path, RawCodec)
        .await
    {
        Ok(_) => Status::ok(""),
        Err(status) => status,
    }
}

/// The server is up, healthy and computing.
async fn assert_healthy(server: &Server) {
    let mut health = HealthClient::new(server.channel().await);
    let status = health
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    server
        .compute()
        .await
        .analyze(AnalyzeRequest {
            text: "still fine".to_owned(),
            top_k: 0,
        })
        .await
        .expect("still computing");
    assert!(
        !server.stderr_so_far().contains("\"message\":\"panic\""),
        "a panic was logged"
    );
}

#[test]
fn random_messages_get_a_clean_status() {
    let runtime = runtime();
    let server = runtime.block_on(Server::start(&["--workers", "2"]));
    let channel = runtime.block_on(server.channel());
    let strategy = (
        proptest::sample::select(METHODS.to_vec()),
        vec(payload(), 1..4),
    );
    runner()
        .run(&strategy, |(method, messages)| {
            let status = runtime.block_on(async {
                tokio::time::timeout(common::PATIENCE, call(channel.clone(), method, messages))
                    .await
                    .expect("answered in time")
            });
            prop_assert!(acceptable(&status), "{}: {:?}", method, status);
            Ok(())
        })
        .expect("every answer is clean");
    runtime.block_on(assert_healthy(&server));
}

#[test]
fn random_request_bodies_get_a_clean_status() {
    let runtime = runtime();
    let server = runtime.block_on(Server::start(&["--workers", "2"]));
    let client = runtime.block_on(async { common::plain_http2() });
    let strategy = (
        proptest::sample::select(METHODS.to_vec()),
        prop_oneof![
            1 => vec(any::<u8>(), 0..512),
            3 => vec(frame(), 1..4).prop_map(|frames| frames.concat()),
        ],
    );
    let addr = server.addr;
    runner()
        .run(&strategy, |(method, body)| {
            let (http_status, status) = runtime.block_on(async {
                let request = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://{addr}{method}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
                    .expect("request");
                let response = tokio::time::timeout(common::PATIENCE, client.request(request))
                    .await
                    .expect("answered in time")
                    .expect("the connection holds");
                let http_status = response.status();
                let headers = response.headers().clone();
                let collected = response
                    .into_body()
                    .collect()
                    .await
                    .expect("the body arrives whole");
                let status = Status::from_header_map(&headers)
                    .or_else(|| collected.trailers().and_then(Status::from_header_map));
                (http_status, status)
            });
            prop_assert_eq!(http_status, http::StatusCode::OK);
            let status = status.ok_or_else(|| TestCaseError::fail("no grpc-status"))?;
            prop_assert!(
                acceptable(&status) || status.code() == Code::ResourceExhausted,
                "{}: {:?}",
                method,
                status
            );
            Ok(())
        })
        .expect("every answer is clean");
    runtime.block_on(assert_healthy(&server));
}
