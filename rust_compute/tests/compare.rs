//! Compare on a running server.

mod common;

use common::Server;
use rust_compute::proto::v1::{CompareRequest, CompareResponse};

async fn compare(server: &Server, a: &str, b: &str) -> CompareResponse {
    server
        .compute()
        .await
        .compare(CompareRequest {
            a: a.to_owned(),
            b: b.to_owned(),
        })
        .await
        .expect("Compare succeeds")
        .into_inner()
}

#[tokio::test]
async fn compares_texts() {
    let server = Server::start(&[]).await;

    let same = compare(&server, "One two three four.", "ONE, two; three — four!").await;
    assert_eq!((same.jaccard, same.simhash_distance), (1.0, 0));

    // {one two three, two three four} vs {one two three, two three five}.
    let near = compare(&server, "one two three four", "one two three five").await;
    assert_eq!(near.jaccard, 1.0 / 3.0);
    assert!(near.simhash_distance > 0 && near.simhash_distance <= 64);

    let japanese = compare(&server, "東京都に住む", "東京都に住んだ").await;
    // Three shingles of bigrams against four; the first two are shared.
    assert_eq!(japanese.jaccard, 2.0 / 5.0);

    let emoji_only = compare(&server, "🎉🎉", "👍🏽").await;
    assert_eq!((emoji_only.jaccard, emoji_only.simhash_distance), (1.0, 0));

    let empty_and_text = compare(&server, "", "some words here").await;
    assert_eq!(empty_and_text.jaccard, 0.0);
}
