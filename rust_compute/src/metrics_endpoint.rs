//! The Prometheus scrape endpoint: `GET /metrics` over plain HTTP/1.1 on
//! its own address (`--metrics-addr`, default `127.0.0.1:9465`), apart
//! from the gRPC port so scrapers need no HTTP/2 and gRPC callers never see
//! it. Any other path is 404.

use std::future::Future;
use std::io;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// Serves `metrics` on `listener` until `shutdown` resolves, then lets
/// scrapes in progress finish.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = Router::new()
        .route(METRICS_PATH, get(scrape))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(metrics): State<Metrics>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        // Writing into a String does not fail; if it ever did, the scraper
        // should see a failed scrape rather than partial numbers.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
