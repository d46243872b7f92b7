//! `grpc.health.v1.Health` on a running server.

mod common;

use common::Server;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const COMPUTE: &str = "nuell.compute.v1.ComputeService";

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn overall_and_compute_service_are_serving() {
    let server = Server::start(&[]).await;
    let mut client = HealthClient::new(server.channel().await);

    assert_eq!(
        check(&mut client, "").await.expect("check \"\""),
        ServingStatus::Serving
    );
    assert_eq!(
        check(&mut client, COMPUTE).await.expect("check compute"),
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn unknown_service_is_not_found() {
    let server = Server::start(&[]).await;
    let mut client = HealthClient::new(server.channel().await);

    let status = check(&mut client, "nuell.compute.v1.NoSuchService")
        .await
        .expect_err("unknown service must not report a status");
    assert_eq!(status.code(), Code::NotFound);
}
