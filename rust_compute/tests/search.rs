//! Tokenize and CompareMany on a running server: the search vectors
//! (`proto/testdata/compute/v1/search/`, written by the Python reference)
//! reproduced exactly, and the request limits.

mod common;

use std::fs;

use common::Server;
use rust_compute::proto::v1::{CompareManyRequest, TokenKind, TokenizeRequest};
use serde_json::{Value, json};
use tonic::Code;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../proto/testdata/compute/v1/search"
);

fn cases(file: &str) -> Vec<Value> {
    let path = format!("{VECTORS}/{file}");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let root: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(root["spec_version"], 1, "{path}");
    let cases = root["cases"].as_array().expect("a list of cases").clone();
    assert!(!cases.is_empty(), "{path}: no cases");
    cases
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("a list of strings")
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

fn kind_name(kind: i32) -> &'static str {
    match TokenKind::try_from(kind) {
        Ok(TokenKind::Word) => "WORD",
        Ok(TokenKind::CjkBigram) => "CJK_BIGRAM",
        Ok(TokenKind::CjkSingle) => "CJK_SINGLE",
        _ => "UNSPECIFIED",
    }
}

#[tokio::test]
async fn tokenize_reproduces_the_vectors() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    for case in cases("tokenize.json") {
        let reply = client
            .tokenize(TokenizeRequest {
                texts: strings(&case["input"]["texts"]),
                band_keys: case["input"]["band_keys"].as_bool().expect("a bool"),
            })
            .await
            .expect("Tokenize succeeds")
            .into_inner();
        let got: Vec<Value> = reply
            .texts
            .iter()
            .map(|text| {
                json!({
                    "tokens": text.tokens.iter().map(|token| json!({
                        "term": token.term,
                        "position": token.position,
                        "kind": kind_name(token.kind),
                    })).collect::<Vec<_>>(),
                    "band_keys": text.band_keys.iter().map(u64::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        assert_eq!(
            Value::from(got),
            case["expected"]["texts"],
            "{}",
            case["name"]
        );
    }
}

#[tokio::test]
async fn compare_many_reproduces_the_vectors() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    for case in cases("compare_many.json") {
        let reply = client
            .compare_many(CompareManyRequest {
                text: case["input"]["text"].as_str().expect("a text").to_owned(),
                others: strings(&case["input"]["others"]),
            })
            .await
            .expect("CompareMany succeeds")
            .into_inner();
        let want: Vec<f64> = case["expected"]["jaccards"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|value| value.as_f64().expect("a number"))
            .collect();
        assert_eq!(reply.jaccards, want, "{}", case["name"]);
    }
}

#[tokio::test]
async fn limits_are_invalid_argument_naming_the_field() {
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;
    let too_long = "x".repeat(64 * 1024 + 1);
    for (request, field) in [
        (TokenizeRequest::default(), "texts"),
        (
            TokenizeRequest {
                texts: vec!["a".to_owned(); 1001],
                band_keys: false,
            },
            "texts",
        ),
        (
            TokenizeRequest {
                texts: vec!["ok".to_owned(), too_long.clone()],
                band_keys: true,
            },
            "texts[1]",
        ),
    ] {
        let status = client.tokenize(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        // The field's name travels in the BadRequest detail.
        let details = String::from_utf8_lossy(status.details()).into_owned();
        assert!(details.contains(field), "{field}: {details}");
    }
    let status = client
        .compare_many(CompareManyRequest {
            text: too_long,
            others: vec![],
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
}
