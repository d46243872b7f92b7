//! The shared test vectors (`proto/testdata/compute/v1/`, format in its
//! README) against a running server: every case of every file must come
//! back exactly as expected, through Analyze, Compare, FindNearDuplicates
//! and, for the Analyze cases, AnalyzeStream too.
//!
//! A missing or empty vector directory, or a file this test cannot run,
//! fails the test: vectors that silently do not run prove nothing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Server;
use rust_compute::proto::v1::compute_service_client::ComputeServiceClient;
use rust_compute::proto::v1::{
    AnalyzeRequest, AnalyzeStreamRequest, CompareRequest, CompareResponse, Document,
    FindNearDuplicatesRequest, FindNearDuplicatesResponse, TextAnalysis,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/testdata/compute/v1");

/// One case of a vector file.
struct Case {
    file: String,
    name: String,
    input: Value,
    expected: Value,
}

/// Every `.json` file of the vector directory, by name.
fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(VECTORS);
    let entries = fs::read_dir(dir).unwrap_or_else(|error| {
        panic!(
            "no shared test vectors at {}: {error}; they are part of the contract \
             (docs/compute-spec.md) and must be present",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read vector directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "the vector directory {} holds no .json files; nothing would be checked",
        dir.display()
    );
    files
}

fn load(path: &Path) -> Vec<Case> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let root: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(root["spec_version"], 1, "{}: spec_version", path.display());
    let file = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cases = root["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: no \"cases\" list"));
    assert!(!cases.is_empty(), "{file}: no cases");
    cases
        .iter()
        .map(|case| Case {
            file: file.clone(),
            name: case["name"].as_str().expect("case name").to_owned(),
            input: case["input"].clone(),
            expected: case["expected"].clone(),
        })
        .collect()
}

/// A text field: a string, or `{"repeat": s, "times": n}` for `s` n times.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Object(generator) => {
            assert_eq!(generator.len(), 2, "unknown generator {generator:?}");
            let repeat = generator["repeat"].as_str().expect("repeat is a string");
            let times = generator["times"].as_u64().expect("times is a count");
            repeat.repeat(usize::try_from(times).expect("times fits"))
        }
        other => panic!("not a text: {other}"),
    }
}

fn top_k(input: &Value) -> u32 {
    u32::try_from(input["top_k"].as_u64().expect("top_k")).expect("top_k fits")
}

fn analysis_json(analysis: &TextAnalysis) -> Value {
    json!({
        "byte_count": analysis.byte_count,
        "char_count": analysis.char_count,
        "word_count": analysis.word_count,
        "sentence_count": analysis.sentence_count,
        "line_count": analysis.line_count,
        "reading_time_seconds": analysis.reading_time_seconds,
        "top_terms": analysis.top_terms.iter()
            .map(|t| json!({"term": t.term, "count": t.count}))
            .collect::<Vec<_>>(),
        "simhash": analysis.simhash.to_string(),
    })
}

fn compare_json(response: &CompareResponse) -> Value {
    json!({
        "jaccard": response.jaccard,
        "simhash_distance": response.simhash_distance,
    })
}

fn near_duplicates_json(response: &FindNearDuplicatesResponse) -> Value {
    json!({
        "clusters": response.clusters.iter()
            .map(|c| json!({"document_ids": c.document_ids}))
            .collect::<Vec<_>>(),
        "pairs": response.pairs.iter()
            .map(|p| json!({"a": p.a, "b": p.b, "jaccard": p.jaccard}))
            .collect::<Vec<_>>(),
    })
}

/// What the server answers for `case`, in the vectors' JSON shape.
async fn answer(client: &mut ComputeServiceClient<Channel>, case: &Case) -> Value {
    let input = &case.input;
    let result = match case.file.as_str() {
        "analyze.json" => client
            .analyze(AnalyzeRequest {
                text: text(&input["text"]),
                top_k: top_k(input),
            })
            .await
            .map(|r| analysis_json(&r.into_inner().analysis.unwrap_or_default())),
        "compare.json" => client
            .compare(CompareRequest {
                a: text(&input["a"]),
                b: text(&input["b"]),
            })
            .await
            .map(|r| compare_json(&r.into_inner())),
        "find_near_duplicates.json" => client
            .find_near_duplicates(FindNearDuplicatesRequest {
                documents: input["documents"]
                    .as_array()
                    .expect("documents")
                    .iter()
                    .map(|d| Document {
                        id: d["id"].as_str().expect("id").to_owned(),
                        text: text(&d["text"]),
                    })
                    .collect(),
                threshold: input["threshold"].as_f64().expect("threshold"),
            })
            .await
            .map(|r| near_duplicates_json(&r.into_inner())),
        other => panic!("no runner for vector file {other}; teach tests/vectors.rs its RPC"),
    };
    result.unwrap_or_else(
        |status| json!({ "error": status.code().to_string(), "message": status.message() }),
    )
}

/// Input text for a failure report, cut short so 1 MiB inputs stay readable.
fn short(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[tokio::test]
async fn every_shared_vector_is_reproduced_exactly() {
    let cases: Vec<Case> = vector_files().iter().flat_map(|path| load(path)).collect();
    let server = Server::start(&[]).await;
    let mut client = server.compute().await;

    let mut failures = Vec::new();
    for case in &cases {
        let got = answer(&mut client, case).await;
        if got != case.expected {
            failures.push(format!(
                "{}/{}\n  input:    {}\n  expected: {}\n  got:      {}",
                case.file,
                case.name,
                short(&case.input),
                case.expected,
                got
            ));
        }
    }

    // The Analyze cases once more, all over one AnalyzeStream.
    let analyze: Vec<&Case> = cases.iter().filter(|c| c.file == "analyze.json").collect();
    let requests: Vec<AnalyzeStreamRequest> = analyze
        .iter()
        .map(|case| AnalyzeStreamRequest {
            id: case.name.clone(),
            text: text(&case.input["text"]),
            top_k: top_k(&case.input),
        })
        .collect();
    let mut stream = client
        .analyze_stream(tokio_stream::iter(requests))
        .await
        .expect("stream opens")
        .into_inner();
    for case in &analyze {
        let response = stream
            .message()
            .await
            .expect("stream answers")
            .expect("one response per request");
        assert_eq!(response.id, case.name, "responses come in request order");
        let got = analysis_json(&response.analysis.unwrap_or_default());
        if got != case.expected {
            failures.push(format!(
                "AnalyzeStream {}\n  expected: {}\n  got:      {}",
                case.name, case.expected, got
            ));
        }
    }
    assert!(stream.message().await.expect("clean end").is_none());

    assert!(
        failures.is_empty(),
        "{} of {} vector checks differ:\n\n{}",
        failures.len(),
        cases.len() + analyze.len(),
        failures.join("\n\n")
    );
    eprintln!("{} vector cases reproduced exactly", cases.len());
}
