//! The request path: identify the agent, admit it (quarantine, drain),
//! read the body within its limit, apply policies and healing
//! restrictions, route, forward, and stream the answer back chunk by chunk
//! while a tee reads it for vitals. The turn's vitals go to detection when
//! the response ends; detection refusing them never affects the client.

use super::config::RevokeToolsMode;
use super::enforcement::{Admitted, ProxyEnforcement};
use super::error::ProxyError;
use super::fingerprint::{Fingerprint, fingerprint};
use super::headers::{PROVIDER_HEADER, client_response_headers, upstream_request_headers};
use super::policy::{ExtraLimits, PolicyEngine, Verdict};
use super::price::ModelPrice;
use super::registry::AgentRegistry;
use super::request::{Api, RequestInfo, cap_output_tokens, inspect, strip_tools};
use super::routing::{Routing, check_path, upstream_url};
use super::tee::Tee;
use super::turn::{FinishedTurn, TurnIds, client_retries, unix_nanos};
use crate::pipeline::consumer::VitalsConsumer;
use crate::telemetry::Telemetry;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Frame;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A client that has not sent its whole body by then gets 408, so a slow
/// sender cannot hold a connection and its buffer forever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks buffered between the upstream and a slow client; beyond it the
/// proxy stops reading the upstream (backpressure, not buffering).
const CHUNK_QUEUE: usize = 16;

/// What every request handler shares.
pub struct ProxyState {
    pub client: reqwest::Client,
    pub routing: Routing,
    pub policies: Arc<PolicyEngine>,
    pub registry: Arc<AgentRegistry>,
    pub enforcement: ProxyEnforcement,
    pub vitals: Arc<dyn VitalsConsumer>,
    pub telemetry: Arc<Telemetry>,
    pub prices: BTreeMap<String, ModelPrice>,
    pub max_body_bytes: usize,
    pub upstream_timeout: Duration,
    pub revoke_tools_mode: RevokeToolsMode,
    pub ids: TurnIds,
}

/// The facts of a request that the turn keeps until its response ends.
struct TurnStart {
    agent_id: String,
    api: Api,
    info: RequestInfo,
    ids: ([u8; 16], [u8; 8]),
    arrived: Instant,
    arrived_unix: u64,
    retries: u32,
    reduced: Option<ExtraLimits>,
}

pub async fn handle(
    State(state): State<Arc<ProxyState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let arrived = Instant::now();
    let arrived_unix = unix_nanos(SystemTime::now());
    let metrics = &state.telemetry.llm_proxy;
    metrics.requests.inc();
    let (parts, body) = request.into_parts();
    if let Err(message) = check_path(parts.uri.path()) {
        metrics.refused_invalid.inc();
        return ProxyError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            message,
        )
        .into_response();
    }
    let agent = fingerprint(&parts.headers, peer.ip());
    state.registry.saw(&agent, peer.ip(), arrived_unix);
    let admitted = match state.enforcement.admit(&agent.agent_id) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            if refusal.kind == ProxyError::quarantined().kind {
                metrics.refused_quarantined.inc();
            } else {
                metrics.refused_draining.inc();
            }
            return refuse(&state, &agent, refusal);
        }
    };

    let body = match read_body(&parts.headers, body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(refusal) => {
            metrics.refused_invalid.inc();
            return refuse(&state, &agent, refusal);
        }
    };
    let api = Api::of(&parts.method, parts.uri.path());
    let mut json = parse_json(&parts.headers, &body);
    let info = json.as_ref().map(|j| inspect(api, j)).unwrap_or_default();
    if let Some(model) = &info.model {
        state.registry.used_model(&agent.agent_id, model);
    }

    let reduced = admitted.restrictions.reduced_autonomy.map(|r| ExtraLimits {
        requests_per_minute: r.requests_per_minute,
        tokens_per_minute: r.tokens_per_minute,
    });
    match state.policies.check(
        &agent.agent_id,
        info.model.as_deref(),
        reduced.as_ref(),
        Instant::now(),
    ) {
        Verdict::Refuse(violation) => {
            let status = if violation.kind.is_throttle() {
                metrics.refused_throttled.inc();
                StatusCode::TOO_MANY_REQUESTS
            } else {
                metrics.refused_model.inc();
                StatusCode::FORBIDDEN
            };
            tracing::info!(
                agent_id = %agent.agent_id,
                rule = %violation.rule,
                "llm_proxy: request refused by policy: {}",
                violation.message
            );
            let kind = if violation.kind.is_throttle() {
                "rate_limit_exceeded"
            } else {
                "policy_violation"
            };
            let mut refusal =
                ProxyError::new(status, kind, violation.kind.code(), violation.message);
            if let Some(wait) = violation.retry_after {
                refusal = refusal.retry_after(super::rate::retry_after_secs(wait));
            }
            return refuse(&state, &agent, refusal);
        }
        Verdict::Allow { alerts } => {
            for alert in alerts {
                metrics.policy_alerts.inc();
                tracing::warn!(
                    agent_id = %agent.agent_id,
                    rule = %alert.rule,
                    "llm_proxy: policy alert (alert-only rule, request forwarded): {}",
                    alert.message
                );
            }
        }
    }

    // Healing restrictions rewrite the body; untouched bodies go as received.
    let mut rewritten = false;
    if admitted.restrictions.tools_revoked && info.has_tools {
        match state.revoke_tools_mode {
            RevokeToolsMode::Refuse => {
                metrics.refused_tools.inc();
                return refuse(
                    &state,
                    &agent,
                    ProxyError::new(
                        StatusCode::FORBIDDEN,
                        "tools_revoked",
                        "tools_revoked",
                        "tool use is revoked for this agent by agent-immune; send the request without tools",
                    ),
                );
            }
            RevokeToolsMode::Strip => {
                if let Some(j) = json.as_mut() {
                    rewritten |= strip_tools(j);
                    metrics.tools_stripped.inc();
                }
            }
        }
    }
    if let (Some(limits), Some(j)) = (admitted.restrictions.reduced_autonomy, json.as_mut()) {
        rewritten |= cap_output_tokens(api, j, limits.max_tokens);
    }
    let body = match (rewritten, json) {
        (true, Some(j)) => match serde_json::to_vec(&j) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                return ProxyError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "rewrite_failed",
                    format!("could not re-encode the request body: {e}"),
                )
                .into_response();
            }
        },
        _ => body,
    };

    let wanted = parts
        .headers
        .get(PROVIDER_HEADER)
        .and_then(|v| v.to_str().ok());
    let route = state.routing.pick(&agent.agent_id, wanted);
    if route.refused_header {
        metrics.unknown_provider_headers.inc();
        tracing::debug!(
            agent_id = %agent.agent_id,
            "llm_proxy: X-LLM-Provider names no allowlisted provider; using {}",
            route.provider
        );
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str());
    let url = match upstream_url(route.base, path_and_query) {
        Ok(url) => url,
        Err(message) => {
            metrics.refused_invalid.inc();
            return ProxyError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_path",
                message,
            )
            .into_response();
        }
    };
    let provider = route.provider.to_string();

    let turn = TurnStart {
        ids: state.ids.ids(&parts.headers, arrived_unix),
        retries: client_retries(&parts.headers),
        agent_id: agent.agent_id,
        api,
        info,
        arrived,
        arrived_unix,
        reduced,
    };
    let upstream_request = state
        .client
        .request(parts.method, url)
        .headers(upstream_request_headers(&parts.headers))
        .body(body);
    let sent = Instant::now();
    metrics.forwarded.inc();
    let answer = tokio::select! {
        answer = tokio::time::timeout(state.upstream_timeout, upstream_request.send()) => answer,
        () = admitted.cut.cancelled() => {
            metrics.cut_streams.inc();
            return ProxyError::quarantined().into_response();
        }
    };
    let upstream = match answer {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            // The URL may carry a provider key in its query: never shown.
            let e = e.without_url();
            metrics.upstream_failures.inc();
            let reason = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            tracing::warn!(
                agent_id = %turn.agent_id,
                provider = %provider,
                "llm_proxy: upstream request {reason}: {}",
                error_chain(&e)
            );
            let error = ProxyError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "upstream_unreachable",
                format!(
                    "agent-immune could not reach provider {provider:?}: {}",
                    error_chain(&e)
                ),
            );
            finish_turn(
                &state,
                &turn,
                502,
                Default::default(),
                Some("upstream_unreachable"),
            );
            return error.into_response();
        }
        Err(_) => {
            metrics.upstream_failures.inc();
            tracing::warn!(
                agent_id = %turn.agent_id,
                provider = %provider,
                "llm_proxy: provider did not answer within {}",
                humantime::format_duration(state.upstream_timeout)
            );
            finish_turn(
                &state,
                &turn,
                504,
                Default::default(),
                Some("upstream_timeout"),
            );
            return ProxyError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "upstream_timeout",
                format!(
                    "provider {provider:?} did not answer within {}",
                    humantime::format_duration(state.upstream_timeout)
                ),
            )
            .into_response();
        }
    };
    let answered = Instant::now();

    let status = upstream.status();
    if status.as_u16() >= 400 {
        metrics.upstream_errors.inc();
    }
    let headers = client_response_headers(upstream.headers());
    let tee = turn.api.is_generation().then(|| {
        let value = |name| upstream.headers().get(name).and_then(|v| v.to_str().ok());
        Tee::new(value(header::CONTENT_TYPE), value(header::CONTENT_ENCODING))
    });
    let (chunks, receiver) = mpsc::channel(CHUNK_QUEUE);
    tokio::spawn(pump(state.clone(), upstream, chunks, tee, turn, admitted));
    let mut response = Response::new(Body::new(ChunkBody { receiver }));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    metrics
        .added_latency
        .record(sent.duration_since(arrived) + answered.elapsed());
    response
}

/// Answers `refusal` and counts it against the agent.
fn refuse(state: &ProxyState, agent: &Fingerprint, refusal: ProxyError) -> Response {
    state.registry.refused(&agent.agent_id);
    tracing::debug!(
        agent_id = %agent.agent_id,
        status = refusal.status.as_u16(),
        kind = refusal.kind,
        "llm_proxy: request refused"
    );
    refusal.into_response()
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let too_large = || {
        ProxyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!(
                "request body exceeds the proxy's limit of {limit} bytes (max_request_body_mib)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(ProxyError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "unreadable_body",
            format!("could not read the request body: {e}"),
        )),
        Err(_) => Err(ProxyError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "body_timeout",
            "request body not received in time",
        )),
    }
}

/// The body as JSON when it claims to be JSON (or says nothing) and parses;
/// anything else is forwarded untouched and read for nothing.
fn parse_json(headers: &HeaderMap, body: &[u8]) -> Option<serde_json::Value> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let json_like = media
        .as_deref()
        .is_none_or(|m| m == "application/json" || m.ends_with("+json"));
    if body.is_empty() || !json_like {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// Copies the upstream body to the client chunk by chunk, feeding the tee,
/// until the body ends, the client leaves, or the agent is quarantined;
/// then hands the turn's vitals to detection.
async fn pump(
    state: Arc<ProxyState>,
    mut upstream: reqwest::Response,
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
    mut tee: Option<Tee>,
    turn: TurnStart,
    admitted: Admitted,
) {
    let status = upstream.status().as_u16();
    let is_stream = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
    let cut: CancellationToken = admitted.cut.clone();
    let mut transport_error = None;
    let mut was_cut = false;
    loop {
        let next = tokio::select! {
            () = cut.cancelled() => {
                was_cut = true;
                break;
            }
            () = chunks.closed() => break,
            next = tokio::time::timeout(state.upstream_timeout, upstream.chunk()) => next,
        };
        let chunk = match next {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                let e = e.without_url();
                transport_error = Some("upstream_disconnected");
                tracing::warn!(
                    agent_id = %turn.agent_id,
                    "llm_proxy: upstream body failed: {}",
                    error_chain(&e)
                );
                let _ = chunks
                    .send(Err(std::io::Error::other("upstream body failed")))
                    .await;
                break;
            }
            Err(_) => {
                transport_error = Some("upstream_timeout");
                tracing::warn!(
                    agent_id = %turn.agent_id,
                    "llm_proxy: upstream body stalled for {}",
                    humantime::format_duration(state.upstream_timeout)
                );
                let _ = chunks
                    .send(Err(std::io::Error::other("upstream body stalled")))
                    .await;
                break;
            }
        };
        if let Some(tee) = tee.as_mut() {
            tee.feed(&chunk);
        }
        let sent = tokio::select! {
            sent = chunks.send(Ok(chunk)) => sent.is_ok(),
            () = cut.cancelled() => {
                was_cut = true;
                false
            }
        };
        if !sent {
            break;
        }
    }
    if was_cut {
        state.telemetry.llm_proxy.cut_streams.inc();
        tracing::info!(agent_id = %turn.agent_id, "llm_proxy: response cut, agent quarantined");
        // A stream ends with an error event the OpenAI SDKs raise as an API
        // error; any other body is aborted, so the client never mistakes
        // the cut for a complete answer.
        let last = if is_stream {
            Ok(quarantine_event())
        } else {
            Err(std::io::Error::other("agent quarantined"))
        };
        // A client too slow to take it within a second gets a closed body.
        let _ = tokio::time::timeout(Duration::from_secs(1), chunks.send(last)).await;
    }
    // The response ends here (the client sees the end of the body).
    drop(chunks);
    drop(upstream);
    let facts = tee.map(Tee::finish).unwrap_or_default();
    finish_turn(&state, &turn, status, facts, transport_error);
    drop(admitted);
}

/// The SSE event that ends a stream cut by quarantine.
fn quarantine_event() -> Bytes {
    let error = ProxyError::quarantined();
    let event = serde_json::json!({
        "error": {"message": error.message, "type": error.kind, "code": error.code, "param": null}
    });
    Bytes::from(format!("data: {event}\n\n"))
}

/// Emits the turn's vitals (generation calls only) and charges its tokens.
fn finish_turn(
    state: &ProxyState,
    turn: &TurnStart,
    status: u16,
    facts: super::response::ResponseFacts,
    transport_error: Option<&'static str>,
) {
    if !turn.api.is_generation() {
        return;
    }
    let tokens = facts.input_tokens.saturating_add(facts.output_tokens);
    if facts.usage_known && tokens > 0 {
        state.policies.charge_tokens(
            &turn.agent_id,
            tokens,
            turn.reduced.as_ref(),
            Instant::now(),
        );
        state.registry.add_tokens(&turn.agent_id, tokens);
    }
    let vitals = FinishedTurn {
        agent_id: &turn.agent_id,
        ids: turn.ids,
        started: turn.arrived_unix,
        duration: turn.arrived.elapsed(),
        request: &turn.info,
        status,
        facts,
        transport_error,
        retries: turn.retries,
    }
    .vitals(&state.prices);
    let metrics = &state.telemetry.llm_proxy;
    match state.vitals.consume_vitals(vitals) {
        Ok(()) => metrics.vitals.inc(),
        Err(refused) => {
            metrics.vitals_dropped.inc();
            tracing::debug!(
                agent_id = %turn.agent_id,
                "llm_proxy: detection refused the turn's vitals: {refused}"
            );
        }
    }
}

/// An error with its sources, for logs (reqwest's own message is terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The client-side body: frames from the pump, in order.
struct ChunkBody {
    receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.receiver
            .poll_recv(cx)
            .map(|next| next.map(|chunk| chunk.map(Frame::data)))
    }
}
