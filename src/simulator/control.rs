//! The control API the simulated agents serve, as agent-immune's
//! `http_control` target calls it: `POST /control/<action>` with a JSON
//! body naming the agent (`{"agent_id": "support-00", ...}`). Also
//! `GET /agents`, the fleet as the simulator sees it.

use super::fleet::{ControlError, SimFleet};
use crate::executors::http_control::action_path;
use crate::immune::action::Action;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A control call is a few hundred bytes; anything far larger is refused.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct ControlState {
    fleet: Arc<Mutex<SimFleet>>,
    started: Instant,
}

/// The body fields the simulator reads; the others agent-immune sends
/// (diagnosis, reason, event_id, parameters) are accepted and ignored.
#[derive(serde::Deserialize)]
struct ControlBody {
    agent_id: String,
}

/// Binds `addr` and serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    fleet: Arc<Mutex<SimFleet>>,
    started: Instant,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/control/{action}", post(control))
        .route("/agents", get(agents))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ControlState { fleet, started });
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(e) = server.await {
            tracing::warn!("simulator control API stopped: {e}");
        }
    });
    Ok((bound, task))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn control(
    State(state): State<ControlState>,
    Path(action): Path<String>,
    body: Bytes,
) -> Response {
    let Some(action) = Action::ALL.into_iter().find(|a| action_path(*a) == action) else {
        let known: Vec<String> = Action::ALL.into_iter().map(action_path).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown control action {:?} (known: {})",
                action.chars().take(64).collect::<String>(),
                known.join(", ")
            ),
        );
    };
    let body: ControlBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON with a string agent_id: {e}"),
            );
        }
    };
    let now = state.started.elapsed();
    let result = state
        .fleet
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .control(&body.agent_id, action, now);
    match result {
        Ok(message) => {
            tracing::info!(agent = %body.agent_id, action = %action, "control: {message}");
            Json(serde_json::json!({
                "agent_id": body.agent_id,
                "action": action.as_str(),
                "ok": true,
                "message": message,
            }))
            .into_response()
        }
        Err(e @ ControlError::UnknownAgent(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn agents(State(state): State<ControlState>) -> Response {
    let statuses = state
        .fleet
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .statuses();
    Json(statuses).into_response()
}
