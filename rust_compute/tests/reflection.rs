//! Server reflection in both protocol versions, so `grpcurl list` and
//! `describe` work without proto files (the grpcurl wheel speaks v1alpha).

mod common;

use common::Server;
use prost::Message;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;
use tonic_reflection::pb::{v1, v1alpha};

/// Services every reflection `list` must show.
const EXPECTED: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "nuell.compute.v1.ComputeService",
];

async fn ask_v1(
    channel: Channel,
    request: v1::server_reflection_request::MessageRequest,
) -> v1::server_reflection_response::MessageResponse {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("open v1 reflection stream")
        .into_inner();
    responses
        .message()
        .await
        .expect("v1 reflection answer")
        .expect("one response")
        .message_response
        .expect("response body")
}

async fn ask_v1alpha(
    channel: Channel,
    request: v1alpha::server_reflection_request::MessageRequest,
) -> v1alpha::server_reflection_response::MessageResponse {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("open v1alpha reflection stream")
        .into_inner();
    responses
        .message()
        .await
        .expect("v1alpha reflection answer")
        .expect("one response")
        .message_response
        .expect("response body")
}

fn assert_lists_expected(mut names: Vec<String>) {
    names.sort();
    assert_eq!(names, EXPECTED, "services listed by reflection");
}

#[tokio::test]
async fn v1_lists_every_service() {
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;

    let server = Server::start(&[]).await;
    let response = ask_v1(
        server.channel().await,
        MessageRequest::ListServices(String::new()),
    )
    .await;
    let MessageResponse::ListServicesResponse(list) = response else {
        panic!("expected a service list, got {response:?}");
    };
    assert_lists_expected(list.service.into_iter().map(|s| s.name).collect());
}

#[tokio::test]
async fn v1alpha_lists_every_service() {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;

    let server = Server::start(&[]).await;
    let response = ask_v1alpha(
        server.channel().await,
        MessageRequest::ListServices(String::new()),
    )
    .await;
    let MessageResponse::ListServicesResponse(list) = response else {
        panic!("expected a service list, got {response:?}");
    };
    assert_lists_expected(list.service.into_iter().map(|s| s.name).collect());
}

/// `grpcurl describe` and calling by name need the service's file; error
/// details need google.rpc's, so grpcurl can print ErrorInfo.
#[tokio::test]
async fn v1alpha_serves_descriptors_for_the_service_and_error_details() {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;

    let server = Server::start(&[]).await;
    for (package, symbol) in [
        ("nuell.compute.v1", "ComputeService"),
        ("google.rpc", "ErrorInfo"),
    ] {
        let full_name = format!("{package}.{symbol}");
        let response = ask_v1alpha(
            server.channel().await,
            MessageRequest::FileContainingSymbol(full_name.clone()),
        )
        .await;
        let MessageResponse::FileDescriptorResponse(files) = response else {
            panic!("expected descriptors for {full_name}, got {response:?}");
        };
        let declares_symbol = files.file_descriptor_proto.iter().any(|raw| {
            let file = FileDescriptorProto::decode(raw.as_slice()).expect("valid descriptor");
            file.package() == package
                && (file.service.iter().any(|s| s.name() == symbol)
                    || file.message_type.iter().any(|m| m.name() == symbol))
        });
        assert!(declares_symbol, "no served file declares {full_name}");
    }
}
