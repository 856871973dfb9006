//! The management HTTP server (axum).

use super::metrics;
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub telemetry: Arc<Telemetry>,
    /// Set once every receiver is bound and every pipeline runs; cleared
    /// when shutdown begins, so load balancers stop sending first.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn readyz(State(state): State<ApiState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"not ready"}"#,
        )
    }
}

async fn prometheus(State(state): State<ApiState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state.telemetry),
    )
}

/// Binds, then serves until cancelled.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let shutdown = cancel.cancelled_owned();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("management API stopped: {e}");
        }
    });
    Ok((bound, task))
}
