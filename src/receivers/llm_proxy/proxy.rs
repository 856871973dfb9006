//! The request path: identify the agent by its credential, admit it
//! (quarantine, drain), read the body within its limit (its bytes, never a
//! JSON tree), apply policies and healing restrictions, route, forward, and stream the answer back chunk by chunk
//! while a tee reads it for vitals. The turn's vitals go to detection when
//! the response ends; detection refusing them never affects the client.

use super::config::RevokeToolsMode;
use super::enforcement::{Admitted, ProxyEnforcement};
use super::error::ProxyError;
use super::fingerprint::Fingerprint;
use super::headers::{PROVIDER_HEADER, client_response_headers, upstream_request_headers};
use super::identity::{Binding, Gateway};
use super::policy::{ExtraLimits, PolicyEngine, Verdict};
use super::price::ModelPrice;
use super::registry::AgentRegistry;
use super::request::{Api, RequestInfo, inspect};
use super::rewrite::{Rewrite, rewrite};
use super::routing::{Routing, check_path, upstream_url};
use super::tee::Tee;
use super::turn::{FinishedTurn, TurnIds, client_retries, unix_nanos};
use crate::pipeline::consumer::VitalsConsumer;
use crate::telemetry::Telemetry;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
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
    pub gateway: Gateway,
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
    let caller = match state.gateway.identify(&parts.headers, peer.ip()) {
        Ok((caller, binding)) => {
            if binding == Binding::TableFull {
                metrics.identity_unbound.inc();
            }
            caller
        }
        Err(refusal) => {
            metrics.refused_identity.inc();
            tracing::debug!(
                status = refusal.0.status.as_u16(),
                "llm_proxy: request refused: {}",
                refusal.0.message
            );
            return refusal.0.into_response();
        }
    };
    let agent = &caller.agent;
    state.registry.saw(agent, peer.ip(), arrived_unix);
    let admitted = match state.enforcement.admit(&agent.agent_id) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            if refusal.kind == ProxyError::quarantined().kind {
                metrics.refused_quarantined.inc();
            } else {
                metrics.refused_draining.inc();
            }
            return refuse(&state, agent, refusal);
        }
    };

    let body = match read_body(&parts.headers, body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(refusal) => {
            metrics.refused_invalid.inc();
            return refuse(&state, agent, refusal);
        }
    };
    let api = Api::of(&parts.method, parts.uri.path());
    let restrictions = admitted.restrictions;
    // A restricted agent's body is read whatever it claims to be: a
    // restriction the proxy cannot apply must not be skipped.
    let restricted = api.is_generation()
        && (restrictions.tools_revoked || restrictions.reduced_autonomy.is_some());
    let read = (restricted || is_json_like(&parts.headers))
        .then(|| inspect(api, &body))
        .flatten();
    let readable = read.is_some();
    let info = read.unwrap_or_default();
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
            return refuse(&state, agent, refusal);
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
    if restricted && !readable && !body.is_empty() {
        metrics.refused_invalid.inc();
        return refuse(
            &state,
            agent,
            unreadable("could not read this body as one JSON object"),
        );
    }
    let mut change = Rewrite::default();
    if restrictions.tools_revoked && info.has_tools {
        match state.revoke_tools_mode {
            RevokeToolsMode::Refuse => {
                metrics.refused_tools.inc();
                return refuse(
                    &state,
                    agent,
                    ProxyError::new(
                        StatusCode::FORBIDDEN,
                        "tools_revoked",
                        "tools_revoked",
                        "tool use is revoked for this agent by agent-immune; send the request without tools",
                    ),
                );
            }
            RevokeToolsMode::Strip => {
                change.strip_tools = true;
                metrics.tools_stripped.inc();
            }
        }
    }
    if let Some(limits) = restrictions.reduced_autonomy
        && api.is_generation()
    {
        change.max_output_tokens = Some(limits.max_tokens);
    }
    let body = if change.is_nothing() {
        body
    } else {
        match rewrite(api, &body, change) {
            Ok(Some(rewritten)) => Bytes::from(rewritten),
            Ok(None) => body,
            Err(message) => {
                metrics.refused_invalid.inc();
                return refuse(&state, agent, unreadable(&message));
            }
        }
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
        agent_id: agent.agent_id.clone(),
        api,
        info,
        arrived,
        arrived_unix,
        reduced,
    };
    let mut headers = upstream_request_headers(&parts.headers);
    state.gateway.upstream_credential(&caller, &mut headers);
    let upstream_request = state
        .client
        .request(parts.method, url)
        .headers(headers)
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

/// A restricted agent's body the proxy cannot apply its restrictions to:
/// refused rather than forwarded blind.
fn unreadable(why: &str) -> ProxyError {
    ProxyError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "unreadable_body",
        format!(
            "agent-immune restricts this agent's requests and cannot apply them to this body: {why}"
        ),
    )
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

/// The whole body, at most `limit` bytes, read into one buffer sized by
/// `Content-Length` (so a body is held once, never twice while joining
/// its frames).
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
    let capacity = declared.map_or(0, |len| usize::try_from(len).unwrap_or(limit));
    let collect = async {
        let mut body = body;
        let mut buffer = BytesMut::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ProxyError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "unreadable_body",
                    format!("could not read the request body: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buffer.len().saturating_add(data.len()) > limit {
                    return Err(too_large());
                }
                buffer.extend_from_slice(&data);
            }
        }
        Ok(buffer.freeze())
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "body_timeout",
            "request body not received in time",
        )),
    }
}

/// The body claims to be JSON (or says nothing); anything else is
/// forwarded untouched and read for nothing.
fn is_json_like(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_none_or(|m| m == "application/json" || m.ends_with("+json"))
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
    let facts = tee
        .map(|tee| {
            let oversized = tee.oversized();
            if oversized > 0 {
                state.telemetry.llm_proxy.response_oversized.add(oversized);
            }
            tee.finish()
        })
        .unwrap_or_default();
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
