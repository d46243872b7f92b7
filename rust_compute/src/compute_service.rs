//! `nuell.compute.v1.ComputeService`: the gRPC face of the text analytics.
//!
//! Each handler is decode → call → encode, all of it inside one job on the
//! [`Workers`] pool: validating a 100,000-document batch and building a
//! large response are CPU work too, and none of it belongs on the async
//! threads. Errors become statuses through `From<ComputeError> for Status`.
//!
//! Calls are counted, timed and logged once for all handlers by
//! [`telemetry`](crate::telemetry); a handler only reports the work a valid
//! request brings (text bytes, batch size) through `Usage`, which logs
//! sizes and never text.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::conversions::{AnalyzeInput, BatchInput, CompareInput, StreamInput};
use crate::error::ComputeError;
use crate::error::FieldViolation;
use crate::limits::MESSAGE_MAX_BYTES;
use crate::limits::{DOCUMENT_TEXT_MAX_BYTES, VIOLATIONS_REPORTED_MAX};
use crate::metrics::{self, Metrics};
use crate::proto::v1::{
    AnalyzeRequest, AnalyzeResponse, AnalyzeStreamRequest, AnalyzeStreamResponse,
    CompareManyRequest, CompareManyResponse, CompareRequest, CompareResponse,
    FindNearDuplicatesRequest, FindNearDuplicatesResponse, Token, TokenKind, TokenizeRequest,
    TokenizeResponse, TokenizedText, compute_service_server,
};
use crate::text;
use crate::text::search::{self, Kind};
use crate::transport::{self, Deadline, Transport};
use crate::workers::Workers;

/// Responses of one `AnalyzeStream` call, produced by a task the handler
/// spawns.
pub type AnalyzeStreamResponses =
    Pin<Box<dyn Stream<Item = Result<AnalyzeStreamResponse, Status>> + Send + 'static>>;

/// Responses an AnalyzeStream may have computed ahead of a slow reader;
/// past this the stream waits, so a caller that stops reading holds back
/// its own requests instead of filling memory.
const STREAM_BUFFER: usize = 16;

/// The compute service. Cloned per connection, so its state is shared.
#[derive(Debug, Clone)]
pub struct ComputeService {
    /// Where every computation runs.
    workers: Arc<Workers>,
    /// Where the work of valid requests is counted.
    metrics: Metrics,
}

/// The mountable service: the generated server with the contract's message
/// size limits, wrapped by [`Transport`].
pub type ComputeServer = Transport<compute_service_server::ComputeServiceServer<ComputeService>>;

impl ComputeService {
    /// A service that computes on `workers` and counts its work in
    /// `metrics`.
    pub fn new(workers: Workers, metrics: Metrics) -> Self {
        Self {
            workers: Arc::new(workers),
            metrics,
        }
    }

    fn usage(&self, method: &'static str) -> Usage {
        Usage {
            metrics: self.metrics.clone(),
            method,
        }
    }

    /// Wraps the service for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> ComputeServer {
        Transport::new(
            compute_service_server::ComputeServiceServer::new(self)
                .max_decoding_message_size(MESSAGE_MAX_BYTES)
                .max_encoding_message_size(MESSAGE_MAX_BYTES),
        )
    }
}

#[tonic::async_trait]
impl compute_service_server::ComputeService for ComputeService {
    async fn analyze(
        &self,
        request: Request<AnalyzeRequest>,
    ) -> Result<Response<AnalyzeResponse>, Status> {
        let deadline = Deadline::of(&request);
        let request = request.into_inner();
        let usage = self.usage(metrics::ANALYZE);
        let response = self
            .workers
            .run(deadline, move |cancel| {
                let input = AnalyzeInput::try_from(request)?;
                usage.text(input.text.len());
                let analysis = text::analyze(&input.text, input.top_k, cancel)?;
                Ok(AnalyzeResponse {
                    analysis: Some(analysis.into()),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn compare(
        &self,
        request: Request<CompareRequest>,
    ) -> Result<Response<CompareResponse>, Status> {
        let deadline = Deadline::of(&request);
        let request = request.into_inner();
        let usage = self.usage(metrics::COMPARE);
        let response = self
            .workers
            .run(deadline, move |cancel| {
                let input = CompareInput::try_from(request)?;
                usage.text(input.a.len() + input.b.len());
                Ok(text::compare(&input.a, &input.b, cancel)?.into())
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn find_near_duplicates(
        &self,
        request: Request<FindNearDuplicatesRequest>,
    ) -> Result<Response<FindNearDuplicatesResponse>, Status> {
        let deadline = Deadline::of(&request);
        let request = request.into_inner();
        let usage = self.usage(metrics::FIND_NEAR_DUPLICATES);
        let response = self
            .workers
            .run(deadline, move |cancel| {
                let input = BatchInput::try_from(request)?;
                usage.batch(input.documents.len(), input.text_bytes);
                let result = text::find_near_duplicates(&input.documents, input.threshold, cancel)?;
                let response = FindNearDuplicatesResponse::from(result);
                // Refused here with the contract's status rather than by
                // tonic's encoder, which would fail the call mid-response.
                if response.encoded_len() > MESSAGE_MAX_BYTES {
                    return Err(ComputeError::MessageTooLarge {
                        limit: MESSAGE_MAX_BYTES,
                    });
                }
                Ok(response)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn tokenize(
        &self,
        request: Request<TokenizeRequest>,
    ) -> Result<Response<TokenizeResponse>, Status> {
        let deadline = Deadline::of(&request);
        let request = request.into_inner();
        let usage = self.usage(metrics::TOKENIZE);
        let response = self
            .workers
            .run(deadline, move |cancel| {
                let mut violations = Vec::new();
                check_texts("texts", &request.texts, &mut violations);
                finish(violations)?;
                usage.batch(
                    request.texts.len(),
                    request.texts.iter().map(String::len).sum(),
                );
                let texts = search::tokenize_batch(&request.texts, request.band_keys, cancel)?;
                Ok(TokenizeResponse {
                    texts: texts.into_iter().map(tokenized_to_proto).collect(),
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn compare_many(
        &self,
        request: Request<CompareManyRequest>,
    ) -> Result<Response<CompareManyResponse>, Status> {
        let deadline = Deadline::of(&request);
        let request = request.into_inner();
        let usage = self.usage(metrics::COMPARE_MANY);
        let response = self
            .workers
            .run(deadline, move |cancel| {
                let mut violations = Vec::new();
                if request.text.len() > DOCUMENT_TEXT_MAX_BYTES {
                    violations.push(max_bytes_violation("text".to_owned()));
                }
                check_texts("others", &request.others, &mut violations);
                finish(violations)?;
                usage.batch(
                    request.others.len(),
                    request.text.len() + request.others.iter().map(String::len).sum::<usize>(),
                );
                let jaccards = search::compare_many(&request.text, &request.others, cancel)?;
                Ok(CompareManyResponse { jaccards })
            })
            .await?;
        Ok(Response::new(response))
    }

    type AnalyzeStreamStream = AnalyzeStreamResponses;

    async fn analyze_stream(
        &self,
        request: Request<Streaming<AnalyzeStreamRequest>>,
    ) -> Result<Response<Self::AnalyzeStreamStream>, Status> {
        let deadline = Deadline::of(&request);
        let (responses, receiver) = mpsc::channel(STREAM_BUFFER);
        // In the call's span, so the stream's logs name the call too.
        tokio::spawn(
            answer_stream(
                Arc::clone(&self.workers),
                self.usage(metrics::ANALYZE_STREAM),
                deadline,
                request.into_inner(),
                responses,
            )
            .in_current_span(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Answers an AnalyzeStream in order, one request at a time, until the
/// caller half-closes (clean end), sends an invalid request, the deadline
/// passes or the caller goes away. Every error is sent as the stream's
/// final status, after the responses to all earlier requests.
async fn answer_stream(
    workers: Arc<Workers>,
    usage: Usage,
    deadline: Option<Instant>,
    mut requests: Streaming<AnalyzeStreamRequest>,
    responses: mpsc::Sender<Result<AnalyzeStreamResponse, Status>>,
) {
    let answer_all = async {
        while let Some(request) = requests
            .message()
            .await
            .map_err(transport::inbound_status)?
        {
            let usage = usage.clone();
            let response = workers
                .run(deadline, move |cancel| {
                    let input = StreamInput::try_from(request)?;
                    usage.text(input.analyze.text.len());
                    let analysis = text::analyze(&input.analyze.text, input.analyze.top_k, cancel)?;
                    Ok(AnalyzeStreamResponse {
                        id: input.id,
                        analysis: Some(analysis.into()),
                    })
                })
                .await?;
            if responses.send(Ok(response)).await.is_err() {
                break;
            }
        }
        Ok::<(), Status>(())
    };
    let deadline_passed = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = answer_all => outcome,
        // Waiting for the caller's next message is bounded by the deadline
        // too, not only the computations.
        () = deadline_passed => Err(ComputeError::DeadlineExceeded.into()),
        // The caller cancelled or went away: dropping `answer_all` cancels
        // the computation in flight, and there is nobody left to tell.
        () = responses.closed() => return,
    };
    if let Err(status) = outcome {
        // Fails only if the caller has gone meanwhile.
        let _ = responses.send(Err(status)).await;
    }
}

/// What a handler reports about the work a valid request brings: counted
/// in the metrics, and logged at DEBUG as sizes, never as text.
#[derive(Debug, Clone)]
struct Usage {
    metrics: Metrics,
    method: &'static str,
}

impl Usage {
    /// A request with `bytes` of text to analyse.
    fn text(&self, bytes: usize) {
        self.metrics.record_text(self.method, bytes);
        tracing::debug!(text_bytes = bytes, "request accepted");
    }

    /// A FindNearDuplicates batch of `documents` holding `bytes` of text.
    fn batch(&self, documents: usize, bytes: usize) {
        self.metrics.record_text(self.method, bytes);
        self.metrics.record_batch(documents);
        tracing::debug!(documents, text_bytes = bytes, "request accepted");
    }
}

/// Most texts in one Tokenize or CompareMany request (the contract's
/// `repeated.max_items`).
const SEARCH_TEXTS_MAX: usize = 1000;

fn max_bytes_violation(field: String) -> FieldViolation {
    FieldViolation {
        field,
        rule: "string.max_bytes",
        description: format!("value length must be at most {DOCUMENT_TEXT_MAX_BYTES} bytes"),
    }
}

/// The rules of a `repeated string` of 1 to 1,000 texts of at most 64 KiB.
fn check_texts(field: &str, texts: &[String], violations: &mut Vec<FieldViolation>) {
    if texts.is_empty() {
        violations.push(FieldViolation {
            field: field.to_owned(),
            rule: "repeated.min_items",
            description: "value must contain at least 1 item(s)".to_owned(),
        });
    }
    if texts.len() > SEARCH_TEXTS_MAX {
        violations.push(FieldViolation {
            field: field.to_owned(),
            rule: "repeated.max_items",
            description: format!("value must contain no more than {SEARCH_TEXTS_MAX} item(s)"),
        });
    }
    for (index, text) in texts.iter().enumerate() {
        if text.len() > DOCUMENT_TEXT_MAX_BYTES {
            violations.push(max_bytes_violation(format!("{field}[{index}]")));
        }
    }
}

fn finish(mut violations: Vec<FieldViolation>) -> Result<(), ComputeError> {
    if violations.is_empty() {
        return Ok(());
    }
    let total = violations.len();
    violations.truncate(VIOLATIONS_REPORTED_MAX);
    Err(ComputeError::InvalidArgument {
        violations,
        total,
        request_id: None,
    })
}

fn tokenized_to_proto(text: search::Tokenized) -> TokenizedText {
    TokenizedText {
        tokens: text
            .tokens
            .into_iter()
            .map(|token| Token {
                term: token.term,
                position: token.position,
                kind: match token.kind {
                    Kind::Word => TokenKind::Word,
                    Kind::CjkBigram => TokenKind::CjkBigram,
                    Kind::CjkSingle => TokenKind::CjkSingle,
                }
                .into(),
            })
            .collect(),
        band_keys: text.band_keys,
    }
}
