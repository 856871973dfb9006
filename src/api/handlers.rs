//! The fleet endpoints under `/api/v1`: agents, stats, approvals, operator
//! commands, feedback, events and the JSON vitals ingest.

use super::cursor;
use super::error::ApiError;
use super::ingest;
use super::query::Params;
use super::server::Shared;
use super::views::{AgentDetail, AgentsReply, EventView, StatsView, Transition};
use crate::immune::agent_id;
use crate::immune::diagnosis::{Diagnosis, Feedback};
use crate::immune::lifecycle::LifecycleState;
use crate::pipeline::fleet::{AgentQuery, AgentView, Fleet};
use crate::pipeline::shard::now;
use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Agents on a page of `GET /agents` when `limit` is not given, and the
/// most on one page.
pub const DEFAULT_AGENTS_PAGE: usize = 100;
pub const MAX_AGENTS_PAGE: usize = 1000;
/// Events returned when `limit` is not given, and the most ever returned.
const DEFAULT_EVENTS: usize = 100;
const MAX_EVENTS: usize = 1000;
/// Recent events shown with one agent.
const AGENT_EVENTS: usize = 50;
/// Longest feedback note.
const MAX_NOTES_CHARS: usize = 2000;

type Result<T> = std::result::Result<T, ApiError>;

/// The agent id from the path, checked like an ingested one.
fn agent_id(path: std::result::Result<Path<String>, PathRejection>) -> Result<String> {
    let Path(id) = path.map_err(|e| ApiError::field("id", e.body_text()))?;
    Ok(agent_id::parse(&id)
        .map_err(|e| ApiError::field("id", e.to_string()))?
        .to_string())
}

/// The body as bytes, or the limit/read error as JSON.
pub(super) fn body(body: std::result::Result<Bytes, BytesRejection>) -> Result<Bytes> {
    body.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than [api] max_body_kib allows".to_string()
        } else {
            format!("cannot read the request body: {}", e.body_text())
        };
        ApiError::new(status, message)
    })
}

pub async fn agents(
    State(state): State<Shared>,
    query: std::result::Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<AgentsReply>> {
    let params = Params::new(query, &["limit", "cursor", "state"])?;
    let limit = match params.number("limit", MAX_AGENTS_PAGE as u64)? {
        None => DEFAULT_AGENTS_PAGE,
        Some(0) => return Err(ApiError::field("limit", "must be at least 1")),
        Some(n) => n as usize,
    };
    let after = params
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(cursor::decode)
        .transpose()?;
    let wanted = params
        .get("state")
        .map(|raw| {
            LifecycleState::ALL
                .into_iter()
                .find(|s| s.as_str() == raw)
                .ok_or_else(|| {
                    let names: Vec<&str> = LifecycleState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::field("state", format!("must be one of {}", names.join(", ")))
                })
        })
        .transpose()?;
    let page = state
        .fleet()?
        .agents(AgentQuery {
            after,
            state: wanted,
            limit,
        })
        .await?;
    Ok(Json(AgentsReply {
        next_cursor: page.last_id_if_more.as_deref().map(cursor::encode),
        total: page.total,
        agents: page.agents,
    }))
}

pub async fn agent(
    State(state): State<Shared>,
    path: std::result::Result<Path<String>, PathRejection>,
) -> Result<Json<AgentDetail>> {
    let id = agent_id(path)?;
    let fleet = state.fleet()?;
    let view = fleet
        .agent(&id)
        .await?
        .ok_or_else(|| ApiError::unknown_agent(&id))?;
    Ok(Json(detail(fleet, view)))
}

fn detail(fleet: &Fleet, agent: AgentView) -> AgentDetail {
    let mine = fleet.events.query(Some(&agent.agent_id), 0, usize::MAX);
    let history = mine.iter().filter_map(Transition::of).collect();
    let skip = mine.len().saturating_sub(AGENT_EVENTS);
    let events = mine[skip..].iter().map(EventView::from).collect();
    AgentDetail {
        agent,
        history,
        events,
    }
}

pub async fn stats(State(state): State<Shared>) -> Result<Json<StatsView>> {
    let stats = state.fleet()?.stats().await?;
    let detection = &state.telemetry.detection;
    Ok(Json(StatsView::new(
        stats,
        detection.infections.get(),
        detection.turns.get(),
    )))
}

pub async fn approvals(
    State(state): State<Shared>,
    query: std::result::Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<impl IntoResponse> {
    let params = Params::new(query, &["status"])?;
    let (want_pending, want_rejected) = match params.get("status") {
        None => (true, true),
        Some("pending") => (true, false),
        Some("rejected") => (false, true),
        Some(_) => {
            return Err(ApiError::field(
                "status",
                "must be \"pending\" or \"rejected\"",
            ));
        }
    };
    let (pending, rejected) = state.fleet()?.approvals().await?;
    let mut out = Vec::new();
    if want_pending {
        out.extend(pending);
    }
    if want_rejected {
        out.extend(rejected);
    }
    out.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    Ok(Json(out))
}

macro_rules! command {
    ($name:ident, $method:ident, $verb:literal) => {
        pub async fn $name(
            State(state): State<Shared>,
            path: std::result::Result<Path<String>, PathRejection>,
        ) -> Result<Json<AgentView>> {
            let id = agent_id(path)?;
            let fleet = state.fleet()?;
            let view = fleet.$method(&id).await?;
            tracing::info!(agent = %id, "operator {} through the API", $verb);
            Ok(Json(view))
        }
    };
}

command!(approve, approve, "approved healing");
command!(reject, reject, "rejected healing");
command!(heal, heal_now, "asked to heal now");
command!(reset_baseline, reset_baseline, "reset the baseline");

#[derive(Serialize)]
pub struct FeedbackReply {
    pub agent: String,
    pub actual_cause: Feedback,
    /// The diagnosis the feedback was about.
    pub diagnosis: Diagnosis,
}

pub async fn feedback(
    State(state): State<Shared>,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<FeedbackReply>> {
    let raw = body(raw)?;
    let value: Value = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "body must be a JSON object {agent, actual_cause, notes}",
        ));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["agent", "actual_cause", "notes"].contains(&k.as_str()))
    {
        let shown: String = unknown.chars().take(64).collect();
        return Err(ApiError::field(
            shown,
            "unknown field (known: agent, actual_cause, notes)",
        ));
    }
    let agent = match map.get("agent") {
        Some(Value::String(s)) => agent_id::parse(s)
            .map_err(|e| ApiError::field("agent", e.to_string()))?
            .to_string(),
        Some(_) => return Err(ApiError::field("agent", "must be a string")),
        None => return Err(ApiError::field("agent", "is required")),
    };
    const CAUSES: &str = "false_positive, wrong_diagnosis, provider_outage or correct";
    let cause = match map.get("actual_cause") {
        Some(Value::String(s)) => parse_cause(s)
            .ok_or_else(|| ApiError::field("actual_cause", format!("must be {CAUSES}")))?,
        Some(_) => {
            return Err(ApiError::field(
                "actual_cause",
                format!("must be a string: {CAUSES}"),
            ));
        }
        None => return Err(ApiError::field("actual_cause", "is required")),
    };
    let notes = match map.get("notes") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.chars().count() <= MAX_NOTES_CHARS => s.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::field(
                "notes",
                format!("longer than {MAX_NOTES_CHARS} characters"),
            ));
        }
        Some(_) => return Err(ApiError::field("notes", "must be a string")),
    };
    let diagnosis = state.fleet()?.feedback(&agent, cause).await?;
    // Notes are for people: the log keeps them (the core keeps the cause).
    tracing::info!(agent = %agent, actual_cause = cause.as_str(), diagnosis = diagnosis.as_str(), notes = ?notes, "operator feedback");
    Ok(Json(FeedbackReply {
        agent,
        actual_cause: cause,
        diagnosis,
    }))
}

pub fn parse_cause(s: &str) -> Option<Feedback> {
    match s {
        "false_positive" => Some(Feedback::FalsePositive),
        "wrong_diagnosis" => Some(Feedback::WrongDiagnosis),
        "provider_outage" => Some(Feedback::ProviderOutage),
        "correct" => Some(Feedback::Correct),
        _ => None,
    }
}

pub async fn events(
    State(state): State<Shared>,
    query: std::result::Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<Vec<EventView>>> {
    let params = Params::new(query, &["agent", "since", "limit"])?;
    // The document says int64: a larger number is refused, not clamped.
    let since = params.number("since", i64::MAX as u64)?.unwrap_or(0);
    let limit = params
        .number("limit", MAX_EVENTS as u64)?
        .map_or(DEFAULT_EVENTS, |n| n as usize);
    let agent = params.get("agent").filter(|a| !a.is_empty());
    let fleet = state.fleet()?;
    let events = fleet.events.query(agent, since, limit);
    Ok(Json(events.iter().map(EventView::from).collect()))
}

#[derive(Serialize)]
pub struct IngestReply {
    pub accepted: usize,
}

pub async fn ingest(
    State(state): State<Shared>,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestReply>)> {
    let result = ingest_batch(&state, raw);
    match &result {
        Ok(n) => state.counters.ingested_vitals.add(*n as u64),
        Err(_) => state.counters.ingest_refused.inc(),
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(IngestReply { accepted: result? }),
    ))
}

fn ingest_batch(state: &Shared, raw: std::result::Result<Bytes, BytesRejection>) -> Result<usize> {
    let raw = body(raw)?;
    if !state.ready.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable(
            "the pipeline is not ready (starting or stopping); retry",
        ));
    }
    let fleet = state.fleet()?;
    let batch = ingest::parse_batch(&raw, state.config.max_ingest_batch, now(), &mut fresh_ids)?;
    let accepted = batch.len();
    fleet.ingest(batch)?;
    Ok(accepted)
}

/// Random trace and span ids for a turn that came without a trace; the
/// clock and a counter when the OS random source fails.
fn fresh_ids() -> ([u8; 16], [u8; 8]) {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        bytes[..8].copy_from_slice(&now().to_be_bytes());
        bytes[8..16].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        bytes[16..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    trace.copy_from_slice(&bytes[..16]);
    span.copy_from_slice(&bytes[16..]);
    // All-zero ids are invalid in OTLP; vanishingly unlikely, but cheap.
    trace[15] |= 1;
    span[7] |= 1;
    (trace, span)
}
