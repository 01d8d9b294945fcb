//! The replica's HTTP endpoints: `/metrics`, `/-/healthy`, `/-/ready`, `POST /-/reload`, and
//! the Prometheus remote-write receiver `POST /api/v1/write`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use ingest::remote_write::RemoteWriteMetrics;
use prometheus_client::registry::Registry;
use storage::Head;

/// Re-reads the configuration (`POST /-/reload`, SIGHUP).
pub(crate) trait Reload: std::fmt::Debug + Send + Sync {
    /// Applies the file anew; `Ok` says what changed, `Err` why nothing did.
    fn reload(&self) -> Result<String, String>;
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    /// Every component's counters, registered at startup.
    pub(crate) registry: Arc<Registry>,
    /// Set once startup (and, later, WAL replay) is complete.
    pub(crate) ready: Arc<AtomicBool>,
    /// Config reload, shared with the SIGHUP handler.
    pub(crate) reload: Arc<dyn Reload>,
    /// Where remote-written samples go.
    pub(crate) head: Arc<Head>,
    /// Remote-write counters.
    pub(crate) remote_write: RemoteWriteMetrics,
}

/// Largest compressed remote-write body accepted (senders batch far less).
const REMOTE_WRITE_BODY_LIMIT: usize = 32 << 20;

/// The router for the HTTP listener.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .route(
            "/api/v1/write",
            post(remote_write).layer(DefaultBodyLimit::max(REMOTE_WRITE_BODY_LIMIT)),
        )
        .with_state(state)
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthy() -> &'static str {
    "Arrowhead is Healthy.\n"
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "Arrowhead is Ready.\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Arrowhead is not ready.\n")
    }
}

async fn reload(State(state): State<HttpState>) -> impl IntoResponse {
    match state.reload.reload() {
        Ok(summary) => (StatusCode::OK, format!("{summary}\n")),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        ),
    }
}

/// `POST /api/v1/write`: 204 once the samples are in the WAL and the head; 400 with the
/// reason when the body is malformed (the sender drops it: retrying cannot help); 413 when
/// too large; 503 when the WAL cannot be written (the sender retries).
async fn remote_write(State(state): State<HttpState>, body: Bytes) -> impl IntoResponse {
    // Decompressing and decoding is CPU work: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        ingest::remote_write::receive(&body, &mut state.head.appender(), &state.remote_write)
    })
    .await;
    match result {
        Ok(Ok(_)) => (StatusCode::NO_CONTENT, String::new()),
        Ok(Err(e)) if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("remote write failed: {e}\n"),
        ),
    }
}
