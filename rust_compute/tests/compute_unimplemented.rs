//! Until the text algorithms land, every ComputeService RPC must say so:
//! UNIMPLEMENTED with `ErrorInfo{reason: NOT_IMPLEMENTED}`, never a fake
//! answer.

mod common;

use common::Server;
use rust_compute::proto::v1::compute_service_client::ComputeServiceClient;
use rust_compute::proto::v1::{
    AnalyzeRequest, AnalyzeStreamRequest, CompareRequest, Document, FindNearDuplicatesRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn assert_not_implemented(result: Result<impl std::fmt::Debug, Status>, rpc: &str) {
    let status = result.expect_err("the RPC must not pretend to work");
    assert_eq!(status.code(), Code::Unimplemented, "{rpc}: {status:?}");
    assert!(
        status.message().contains(rpc),
        "{rpc}: message {:?}",
        status.message()
    );

    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("{rpc}: no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, "NOT_IMPLEMENTED", "{rpc}");
    assert_eq!(info.domain, "compute.nuell.dev", "{rpc}");
    assert_eq!(
        info.metadata.get("method").map(String::as_str),
        Some(format!("/nuell.compute.v1.ComputeService/{rpc}").as_str()),
        "{rpc}"
    );
}

#[tokio::test]
async fn every_rpc_answers_unimplemented_with_error_info() {
    let server = Server::start(&[]).await;
    let mut client = ComputeServiceClient::new(server.channel().await);

    let analyze = client
        .analyze(AnalyzeRequest {
            text: "a quick brown fox".to_owned(),
            top_k: 3,
        })
        .await;
    assert_not_implemented(analyze, "Analyze");

    let compare = client
        .compare(CompareRequest {
            a: "one text".to_owned(),
            b: "another text".to_owned(),
        })
        .await;
    assert_not_implemented(compare, "Compare");

    let duplicates = client
        .find_near_duplicates(FindNearDuplicatesRequest {
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
        })
        .await;
    assert_not_implemented(duplicates, "FindNearDuplicates");

    let stream = client
        .analyze_stream(tokio_stream::iter([AnalyzeStreamRequest {
            id: "1".to_owned(),
            text: "streamed text".to_owned(),
            top_k: 0,
        }]))
        .await;
    assert_not_implemented(stream.map(|_| ()), "AnalyzeStream");
}
