//! `nuell.compute.v1.ComputeService`: the gRPC face of the text analytics.
//!
//! Each handler is meant to stay a screenful: decode the request (validate
//! it into domain input), call the pure text modules, encode the result.
//! Until those modules exist every RPC answers UNIMPLEMENTED, so nothing
//! pretends to work.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ComputeError;
use crate::proto::v1::{
    AnalyzeRequest, AnalyzeResponse, AnalyzeStreamRequest, AnalyzeStreamResponse, CompareRequest,
    CompareResponse, FindNearDuplicatesRequest, FindNearDuplicatesResponse, compute_service_server,
};

/// Responses of one `AnalyzeStream` call; boxed so the handler can choose
/// how it produces them.
pub type AnalyzeStreamResponses =
    Pin<Box<dyn Stream<Item = Result<AnalyzeStreamResponse, Status>> + Send + 'static>>;

/// The compute service.
///
/// Holds no state yet: per-process settings the handlers will need (such as
/// batch limits from [`Config`](crate::config::Config)) become a shared
/// `Arc` field here, so cloning the service for each connection stays cheap.
#[derive(Debug, Clone, Default)]
pub struct ComputeService {}

impl ComputeService {
    /// Wraps the service for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> compute_service_server::ComputeServiceServer<Self> {
        compute_service_server::ComputeServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl compute_service_server::ComputeService for ComputeService {
    async fn analyze(
        &self,
        _request: Request<AnalyzeRequest>,
    ) -> Result<Response<AnalyzeResponse>, Status> {
        Err(not_implemented("/nuell.compute.v1.ComputeService/Analyze"))
    }

    async fn compare(
        &self,
        _request: Request<CompareRequest>,
    ) -> Result<Response<CompareResponse>, Status> {
        Err(not_implemented("/nuell.compute.v1.ComputeService/Compare"))
    }

    async fn find_near_duplicates(
        &self,
        _request: Request<FindNearDuplicatesRequest>,
    ) -> Result<Response<FindNearDuplicatesResponse>, Status> {
        Err(not_implemented(
            "/nuell.compute.v1.ComputeService/FindNearDuplicates",
        ))
    }

    type AnalyzeStreamStream = AnalyzeStreamResponses;

    async fn analyze_stream(
        &self,
        _request: Request<Streaming<AnalyzeStreamRequest>>,
    ) -> Result<Response<Self::AnalyzeStreamStream>, Status> {
        Err(not_implemented(
            "/nuell.compute.v1.ComputeService/AnalyzeStream",
        ))
    }
}

/// The status for a method of the contract that this build does not serve.
fn not_implemented(method: &'static str) -> Status {
    ComputeError::NotImplemented { method }.into()
}
