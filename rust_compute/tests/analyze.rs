//! Analyze on a running server: ASCII, Japanese, mixed scripts, emoji and
//! empty text.

mod common;

use common::Server;
use rust_compute::proto::v1::{AnalyzeRequest, TermCount, TextAnalysis};

async fn analyze(server: &Server, text: &str, top_k: u32) -> TextAnalysis {
    server
        .compute()
        .await
        .analyze(AnalyzeRequest {
            text: text.to_owned(),
            top_k,
        })
        .await
        .expect("Analyze succeeds")
        .into_inner()
        .analysis
        .expect("analysis is set")
}

fn terms(analysis: &TextAnalysis) -> Vec<(&str, u32)> {
    analysis
        .top_terms
        .iter()
        .map(|TermCount { term, count }| (term.as_str(), *count))
        .collect()
}

#[tokio::test]
async fn analyzes_texts_in_every_script() {
    let server = Server::start(&[]).await;

    let ascii = analyze(&server, "The cat sat. The cat ran!\nA dog? Yes", 2).await;
    assert_eq!(
        (
            ascii.byte_count,
            ascii.char_count,
            ascii.word_count,
            ascii.sentence_count,
            ascii.line_count,
            ascii.reading_time_seconds
        ),
        (36, 36, 9, 4, 2, 3)
    );
    assert_eq!(terms(&ascii), [("cat", 2), ("the", 2)]);
    assert_ne!(ascii.simhash, 0);

    let japanese = analyze(&server, "東京都に住む。東京は大きい。", 3).await;
    assert_eq!(japanese.byte_count, 42);
    assert_eq!(japanese.char_count, 14);
    // Runs 東京都に住む (5 bigrams) and 東京は大きい (5 bigrams).
    assert_eq!(japanese.word_count, 10);
    assert_eq!(japanese.sentence_count, 2);
    assert_eq!(japanese.line_count, 1);
    // 12 CJK code points at 500 a minute: 1.44 s.
    assert_eq!(japanese.reading_time_seconds, 2);
    assert_eq!(terms(&japanese), [("東京", 2), ("きい", 1), ("に住", 1)]);

    let mixed = analyze(&server, "Rustで書いた gRPC サーバー", 0).await;
    assert_eq!(
        terms(&mixed),
        [
            ("grpc", 1),
            ("rust", 1),
            ("いた", 1),
            ("で書", 1),
            ("サー", 1),
            ("バー", 1),
            ("ーバ", 1),
            ("書い", 1)
        ]
    );
    assert_eq!(mixed.word_count, 8);

    let emoji = analyze(&server, "Ship it 🚀🚀 👍🏽 👨‍👩‍👧", 0).await;
    assert_eq!(emoji.char_count, 14);
    assert_eq!(emoji.word_count, 2);
    assert_eq!(terms(&emoji), [("it", 1), ("ship", 1)]);

    let empty = analyze(&server, "", 0).await;
    assert_eq!(empty, TextAnalysis::default());
}

#[tokio::test]
async fn top_k_zero_means_ten_and_at_most_top_k_are_returned() {
    let server = Server::start(&[]).await;
    let text = "a b c d e f g h i j k l m n o p q r s t u v w x y z";
    assert_eq!(analyze(&server, text, 0).await.top_terms.len(), 10);
    assert_eq!(analyze(&server, text, 1).await.top_terms.len(), 1);
    assert_eq!(analyze(&server, text, 100).await.top_terms.len(), 26);
}

#[tokio::test]
async fn a_one_mib_text_is_accepted() {
    let server = Server::start(&[]).await;
    let line = "日本語と English のテキスト。\n";
    let text: String = line.repeat((1 << 20) / line.len());
    let analysis = analyze(&server, &text, 5).await;
    assert_eq!(analysis.byte_count as usize, text.len());
    assert_eq!(analysis.top_terms.len(), 5);
}
