//! The llm_proxy receiver's side of the API: the agents it discovered, and
//! its policy rules (list, add, remove at runtime).

use super::error::ApiError;
use super::handlers::body;
use super::server::{ProxyHandles, Shared};
use crate::receivers::llm_proxy::DiscoveredAgent;
use crate::receivers::llm_proxy::config::PolicyRule;
use crate::receivers::llm_proxy::policy::PolicyError;
use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;

type Result<T> = std::result::Result<T, ApiError>;

fn handles(state: &Shared) -> Result<&ProxyHandles> {
    state
        .proxy
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no llm_proxy receiver is running"))
}

pub async fn agents(State(state): State<Shared>) -> Result<Json<Vec<DiscoveredAgent>>> {
    Ok(Json(handles(&state)?.registry.agents()))
}

pub async fn policies(State(state): State<Shared>) -> Result<Json<Vec<PolicyRule>>> {
    Ok(Json(handles(&state)?.policies.list()))
}

pub async fn add_policy(
    State(state): State<Shared>,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PolicyRule>)> {
    let raw = body(raw)?;
    let proxy = handles(&state)?;
    let rule: PolicyRule = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::bad_request(format!(
            "body is not a policy rule {{name, agents, requests_per_minute, tokens_per_minute, allow_models, block_models, alert_only}}: {e}"
        ))
    })?;
    // The engine validates again; checking here names the field.
    if let Some(issue) = rule.validate().into_iter().next() {
        return Err(ApiError::field(issue.key, issue.message));
    }
    match proxy.policies.add(rule.clone()) {
        Ok(()) => {
            tracing::info!(policy = %rule.name, "policy rule added through the API");
            Ok((StatusCode::CREATED, Json(rule)))
        }
        Err(PolicyError::Duplicate(name)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a rule named {name:?} already exists; delete it first"),
        )),
        Err(PolicyError::Invalid(message)) => Err(ApiError::bad_request(message)),
    }
}

pub async fn remove_policy(
    State(state): State<Shared>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<StatusCode> {
    let Path(name) = path.map_err(|e| ApiError::field("name", e.body_text()))?;
    let proxy = handles(&state)?;
    if proxy.policies.remove(&name) {
        tracing::info!(policy = %name, "policy rule removed through the API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no policy rule named {name:?}"
        )))
    }
}
