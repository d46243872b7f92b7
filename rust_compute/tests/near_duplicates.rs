//! FindNearDuplicates on a running server, from a handful of documents to
//! the largest batch the contract allows.

mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::Server;
use common::corpus::corpus;
use rust_compute::proto::v1::{
    Cluster, Document, DocumentPair, FindNearDuplicatesRequest, FindNearDuplicatesResponse,
};

fn documents(items: &[(&str, &str)]) -> Vec<Document> {
    items
        .iter()
        .map(|(id, text)| Document {
            id: (*id).to_owned(),
            text: (*text).to_owned(),
        })
        .collect()
}

async fn find(
    server: &Server,
    documents: Vec<Document>,
    threshold: f64,
) -> FindNearDuplicatesResponse {
    server
        .compute()
        .await
        .find_near_duplicates(FindNearDuplicatesRequest {
            documents,
            threshold,
        })
        .await
        .expect("FindNearDuplicates succeeds")
        .into_inner()
}

#[tokio::test]
async fn pairs_and_clusters_across_scripts() {
    let server = Server::start(&[]).await;
    let response = find(
        &server,
        documents(&[
            ("en-2", "The quick brown fox jumps over the lazy dog!"),
            ("ja-1", "今日は良い天気ですね。散歩に行きましょう。"),
            ("en-1", "the quick brown fox jumps over the lazy dog"),
            ("ja-2", "今日は良い天気ですね。散歩に行きましょう！"),
            ("emoji", "🎉🎉🎉"),
            ("empty", ""),
            ("other", "a completely unrelated sentence about databases"),
        ]),
        0.9,
    )
    .await;
    assert_eq!(
        response.pairs,
        [
            DocumentPair {
                a: "en-1".into(),
                b: "en-2".into(),
                jaccard: 1.0
            },
            DocumentPair {
                a: "ja-1".into(),
                b: "ja-2".into(),
                jaccard: 1.0
            },
        ]
    );
    assert_eq!(
        response.clusters,
        [
            Cluster {
                document_ids: vec!["en-1".into(), "en-2".into()]
            },
            Cluster {
                document_ids: vec!["ja-1".into(), "ja-2".into()]
            },
        ]
    );
}

#[tokio::test]
async fn a_single_document_has_no_pairs() {
    let server = Server::start(&[]).await;
    let response = find(&server, documents(&[("only", "just one text")]), 1.0).await;
    assert_eq!(response, FindNearDuplicatesResponse::default());
}

/// The contract's largest batch in one call: 100,000 documents of 300
/// characters (30 MB, above the default 4 MiB gRPC message limit).
#[tokio::test]
async fn one_hundred_thousand_documents_in_one_call() {
    let server = Server::start(&[]).await;
    let corpus = corpus(100_000, 300, 20, 7);
    let documents: Vec<Document> = corpus
        .documents
        .iter()
        .map(|(id, text)| Document {
            id: id.clone(),
            text: text.clone(),
        })
        .collect();

    let started = Instant::now();
    let response = find(&server, documents, 0.8).await;
    let elapsed = started.elapsed();
    eprintln!(
        "100,000 documents: {} pairs, {} clusters in {elapsed:?}",
        response.pairs.len(),
        response.clusters.len()
    );

    // Every planted near-duplicate (about 0.87 similar) is found, give or
    // take the 1 % that LSH may miss by design.
    let found: HashSet<(&str, &str)> = response
        .pairs
        .iter()
        .map(|p| (p.a.as_str(), p.b.as_str()))
        .collect();
    let recalled = corpus
        .planted
        .iter()
        .filter(|(a, b)| found.contains(&(a.as_str(), b.as_str())))
        .count();
    assert!(
        recalled * 100 >= corpus.planted.len() * 99,
        "found {recalled} of {} planted near-duplicates",
        corpus.planted.len()
    );
    for pair in &response.pairs {
        assert!(pair.a < pair.b && pair.jaccard >= 0.8, "{pair:?}");
    }
    assert!(
        response
            .pairs
            .is_sorted_by(|p, q| (&p.a, &p.b) <= (&q.a, &q.b))
    );
}
