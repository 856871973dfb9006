//! Helpers for the llm_proxy tests: a fake OpenAI server (a real axum
//! server on a real socket, mimicking Chat Completions, the Responses API,
//! streams with and without usage, and OpenAI error bodies, recording what it
//! received), the proxy started on port 0, and a vitals recorder.
#![allow(dead_code)]

use agent_immune::immune::vitals::Vitals;
use agent_immune::pipeline::consumer::{Refused, VitalsConsumer};
use agent_immune::receivers::llm_proxy::{
    AgentRegistry, LlmProxy, LlmProxyConfig, PolicyEngine, ProxyEnforcement,
};
use agent_immune::telemetry::Telemetry;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Upper bound on any wait in these tests (a hang fails, it never blocks CI).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Usage the fake reports for a non-streamed chat completion.
pub const CHAT_USAGE: (u64, u64) = (42, 7);
/// Usage in the final chunk of a chat stream (with include_usage).
pub const STREAM_USAGE: (u64, u64) = (21, 3);
/// Usage of a Responses API answer (streamed or not).
pub const RESPONSES_USAGE: (u64, u64) = (33, 8);

pub const ERROR_429_BODY: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
pub const ERROR_500_BODY: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;

/// One request as the fake upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct FakeState {
    name: String,
    seen: Mutex<Vec<Seen>>,
    seen_changed: Notify,
    /// Gated streams wait here after their first event; gated answers
    /// (model "hang") before their headers.
    gate: Semaphore,
}

/// A fake OpenAI server. Behaviour is chosen by the request, like a real
/// model's: `model = "error-429" | "error-500" | "hang" | "gated-…"`, tool
/// calls by a `[tools=N]` marker in the last user message when tools are
/// offered, a usage chunk only with `stream_options.include_usage`.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    cancel: CancellationToken,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl FakeUpstream {
    pub async fn start(name: &str) -> Self {
        let state = Arc::new(FakeState {
            name: name.to_string(),
            seen: Mutex::default(),
            seen_changed: Notify::new(),
            gate: Semaphore::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .fallback(fake_openai)
            .with_state(state.clone());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        // As a real provider's front end does: no Nagle delay on streams.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Self {
            addr,
            state,
            cancel,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets one gated stream (or hung answer) continue.
    pub fn release_gate(&self) {
        self.state.gate.add_permits(1);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Waits until the fake has received `n` requests.
    pub async fn wait_seen(&self, n: usize) -> Vec<Seen> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.state.seen_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let seen = self.seen();
                if seen.len() >= n {
                    return seen;
                }
                changed.await;
            }
        })
        .await
        .expect("the fake upstream did not receive the expected requests")
    }
}

async fn fake_openai(State(state): State<Arc<FakeState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    let n = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen);
        all.len()
    };
    state.seen_changed.notify_waiters();
    // Huge bodies (memory tests) are counted, not parsed: this process's
    // memory is not what they measure.
    let request: Value = if body.len() <= 1024 * 1024 {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    let model = request["model"]
        .as_str()
        .unwrap_or("gpt-4o-mini")
        .to_string();
    let path = parts.uri.path().to_string();
    let mut response = match (parts.method.as_str(), path.as_str()) {
        ("GET", "/v1/models") => json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "openai"}]}).to_string(),
        ),
        ("POST", "/v1/chat/completions") | ("POST", "/v1/responses") if model == "error-429" => {
            let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, ERROR_429_BODY.to_string());
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            r
        }
        ("POST", "/v1/chat/completions") | ("POST", "/v1/responses") if model == "error-500" => {
            json_response(StatusCode::INTERNAL_SERVER_ERROR, ERROR_500_BODY.to_string())
        }
        ("POST", "/v1/chat/completions") | ("POST", "/v1/responses") if model == "hang" => {
            let _ = state.gate.acquire().await.map(|p| p.forget());
            json_response(StatusCode::OK, "{}".to_string())
        }
        ("POST", "/v1/chat/completions") => {
            if request["stream"].as_bool() == Some(true) {
                chat_stream(&state, &request, &model, n)
            } else {
                json_response(StatusCode::OK, chat_completion(&request, &model, n).to_string())
            }
        }
        ("POST", "/v1/responses") => {
            if request["stream"].as_bool() == Some(true) {
                responses_stream(&request, &model, n)
            } else {
                json_response(StatusCode::OK, responses_object(&request, &model, n).to_string())
            }
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"message": format!("Invalid URL ({} {})", parts.method, path), "type": "invalid_request_error", "param": null, "code": null}}).to_string(),
        ),
    };
    let headers = response.headers_mut();
    headers.insert("x-upstream", state.name.parse().unwrap());
    headers.insert("x-request-id", format!("req_{n}").parse().unwrap());
    headers.insert("openai-processing-ms", "12".parse().unwrap());
    // Hop-by-hop: must not reach the proxy's client.
    headers.insert("keep-alive", "timeout=5".parse().unwrap());
    response
}

fn json_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// `[tools=N]` in the last user message, when the request offers tools.
fn wanted_tool_calls(request: &Value) -> usize {
    let offered = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    if !offered {
        return 0;
    }
    let text = match (&request["messages"], &request["input"]) {
        (Value::Array(messages), _) => messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| m["content"].to_string())
            .unwrap_or_default(),
        (_, input) => input.to_string(),
    };
    text.split("[tools=")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn chat_completion(request: &Value, model: &str, n: usize) -> Value {
    let calls = wanted_tool_calls(request);
    let message = if calls > 0 {
        json!({"role": "assistant", "content": null, "tool_calls": (0..calls).map(|i| json!({
            "id": format!("call_{n}_{i}"), "type": "function",
            "function": {"name": "lookup", "arguments": format!("{{\"q\":{i}}}")}
        })).collect::<Vec<_>>()})
    } else {
        json!({"role": "assistant", "content": "It is raining in Paris."})
    };
    json!({
        "id": format!("chatcmpl-{n}"),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": format!("{model}-2024-07-18"),
        "choices": [{"index": 0, "message": message, "finish_reason": if calls > 0 { "tool_calls" } else { "stop" }}],
        "usage": {"prompt_tokens": CHAT_USAGE.0, "completion_tokens": CHAT_USAGE.1, "total_tokens": CHAT_USAGE.0 + CHAT_USAGE.1}
    })
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

fn stream_response(events: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(events),
        ))
        .unwrap()
}

fn chat_stream(state: &Arc<FakeState>, request: &Value, model: &str, n: usize) -> Response {
    let calls = wanted_tool_calls(request);
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let gated = model.starts_with("gated");
    let model = format!("{model}-2024-07-18");
    let chunk = |delta: Value, finish: Value| {
        json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![sse(
        None,
        &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    )];
    if calls > 0 {
        for i in 0..calls {
            events.push(sse(None, &chunk(json!({"tool_calls": [{"index": i, "id": format!("call_{n}_{i}"), "type": "function", "function": {"name": "lookup", "arguments": ""}}]}), Value::Null)));
            events.push(sse(
                None,
                &chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": "{}"}}]}),
                    Value::Null,
                ),
            ));
        }
    } else {
        for piece in ["It is ", "raining ", "in Paris."] {
            events.push(sse(None, &chunk(json!({"content": piece}), Value::Null)));
        }
    }
    let finish = if calls > 0 { "tool_calls" } else { "stop" };
    events.push(sse(None, &chunk(json!({}), json!(finish))));
    if include_usage {
        events.push(sse(None, &json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [], "usage": {"prompt_tokens": STREAM_USAGE.0, "completion_tokens": STREAM_USAGE.1, "total_tokens": STREAM_USAGE.0 + STREAM_USAGE.1}})));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let (tx, rx) = mpsc::channel(4);
    let state = state.clone();
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
            if gated && i == 0 {
                // The rest only once the test has seen the first event arrive.
                let _ = state.gate.acquire().await.map(|p| p.forget());
            }
        }
    });
    stream_response(rx)
}

fn responses_object(request: &Value, model: &str, n: usize) -> Value {
    let calls = wanted_tool_calls(request);
    let mut output: Vec<Value> = (0..calls)
        .map(|i| json!({"type": "function_call", "id": format!("fc_{n}_{i}"), "call_id": format!("call_{n}_{i}"),
                        "name": "lookup", "arguments": "{}", "status": "completed"}))
        .collect();
    output.push(json!({"type": "message", "id": format!("msg_{n}"), "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": "Done.", "annotations": []}]}));
    json!({
        "id": format!("resp_{n}"), "object": "response", "created_at": 1_700_000_000, "status": "completed",
        "error": null, "incomplete_details": null, "model": format!("{model}-2025-04-14"),
        "output": output, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": RESPONSES_USAGE.0, "output_tokens": RESPONSES_USAGE.1, "total_tokens": RESPONSES_USAGE.0 + RESPONSES_USAGE.1,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    })
}

fn responses_stream(request: &Value, model: &str, n: usize) -> Response {
    let done = responses_object(request, model, n);
    let mut created = done.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    let events = vec![
        sse(
            Some("response.created"),
            &json!({"type": "response.created", "sequence_number": 0, "response": created}),
        ),
        sse(
            Some("response.output_text.delta"),
            &json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": format!("msg_{n}"), "output_index": 0, "content_index": 0, "delta": "Done."}),
        ),
        sse(
            Some("response.completed"),
            &json!({"type": "response.completed", "sequence_number": 2, "response": done}),
        ),
    ];
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for event in events {
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    stream_response(rx)
}

/// Detection's stand-in: records vitals, or refuses them (backpressure).
#[derive(Default)]
pub struct Recorder {
    got: Mutex<Vec<Vitals>>,
    changed: Notify,
    pub refuse: AtomicBool,
    refused: std::sync::atomic::AtomicUsize,
}

impl VitalsConsumer for Recorder {
    fn consume_vitals(&self, vitals: Vitals) -> Result<(), Refused> {
        if self.refuse.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            self.changed.notify_waiters();
            return Err(Refused::Backpressure("test refuses".into()));
        }
        self.got.lock().unwrap().push(vitals);
        self.changed.notify_waiters();
        Ok(())
    }
}

impl Recorder {
    pub fn all(&self) -> Vec<Vitals> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` vitals have been refused.
    pub async fn wait_refused(&self, n: usize) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.refused.load(Ordering::SeqCst) >= n {
                    return;
                }
                changed.await;
            }
        })
        .await
        .expect("vitals refused in time");
    }

    /// Waits until `n` vitals have arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Vitals> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let all = self.all();
                if all.len() >= n {
                    return all;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} vitals, got {:?}", self.all()))
    }

    /// The vitals of `agent_id`, waiting until there are `n`.
    pub async fn wait_for_agent(&self, agent_id: &str, n: usize) -> Vec<Vitals> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let mine: Vec<Vitals> = self
                    .all()
                    .into_iter()
                    .filter(|v| v.agent_id == agent_id)
                    .collect();
                if mine.len() >= n {
                    return mine;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} vitals of {agent_id}, got {:?}", self.all()))
    }
}

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub vitals: Arc<Recorder>,
    pub telemetry: Arc<Telemetry>,
    pub enforcement: ProxyEnforcement,
    pub registry: Arc<AgentRegistry>,
    pub policies: Arc<PolicyEngine>,
    cancel: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Proxy {
    /// A proxy config forwarding to `upstream` by default.
    pub fn config(upstream: &FakeUpstream) -> LlmProxyConfig {
        LlmProxyConfig {
            endpoint: "127.0.0.1:0".into(),
            upstream: upstream.url(),
            ..Default::default()
        }
    }

    /// A fresh fake upstream and a proxy in front of it with the default
    /// config; keep both alive for the test.
    pub async fn with_upstream() -> (FakeUpstream, Self) {
        Self::with_upstream_config(|_| {}).await
    }

    /// As [`Proxy::with_upstream`], with the config changed by `adjust`
    /// (policies, limits, modes) before the proxy starts.
    pub async fn with_upstream_config(
        adjust: impl FnOnce(&mut LlmProxyConfig),
    ) -> (FakeUpstream, Self) {
        let upstream = FakeUpstream::start("default").await;
        let mut cfg = Self::config(&upstream);
        adjust(&mut cfg);
        (upstream, Self::start(cfg).await)
    }

    pub async fn start(cfg: LlmProxyConfig) -> Self {
        let proxy = LlmProxy::bind(&cfg).await.unwrap();
        let vitals = Arc::new(Recorder::default());
        let telemetry = Arc::new(Telemetry::default());
        let cancel = CancellationToken::new();
        let started = Self {
            addr: proxy.addr(),
            vitals: vitals.clone(),
            telemetry: telemetry.clone(),
            enforcement: proxy.enforcement(),
            registry: proxy.registry(),
            policies: proxy.policies(),
            cancel: cancel.clone(),
        };
        proxy.serve(vitals, telemetry, cancel);
        started
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A POST of `body` as JSON from agent `agent_id`, with its own key
    /// (`sk-test-<agent_id>`: the proxy binds a key to one agent).
    pub fn post(&self, agent_id: &str, path: &str, body: &Value) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(self.url(path))
            .header("x-agent-id", agent_id)
            .header("authorization", format!("Bearer sk-test-{agent_id}"))
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// A Chat Completions request from agent `agent_id`, sent; the answer
    /// as it arrived (any status).
    pub async fn chat(&self, agent_id: &str, body: &Value) -> reqwest::Response {
        self.post(agent_id, "/v1/chat/completions", body)
            .send()
            .await
            .unwrap()
    }
}

/// A chat request with a system prompt.
pub fn chat_request(model: &str, system: &str, user: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]
    })
}

/// A streamed chat request that asks for usage in its last chunk.
pub fn streamed_chat_request(model: &str, system: &str, user: &str) -> Value {
    let mut request = chat_request(model, system, user);
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    request
}

pub fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "lookup", "description": "Look something up",
            "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}])
}

/// One request over a raw TCP connection (for what HTTP clients will not
/// send: hop-by-hop headers, dot segments). Returns the status code, the
/// response head and the body.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("raw response in time")
        .unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head, response[split + 4..].to_vec())
}

/// The SHA-256 hex of `text`, computed independently of the proxy.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// The Python interpreter of the test virtualenv (openai installed).
pub fn python() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("AGENT_IMMUNE_TEST_PYTHON") {
        return path.into();
    }
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        local.exists(),
        "no test virtualenv: run tests/run.sh once, or set AGENT_IMMUNE_TEST_PYTHON"
    );
    local
}

/// A response body parsed as JSON (reqwest's `json` feature is not enabled).
pub trait JsonBody {
    fn json_body(self) -> impl std::future::Future<Output = Value>;
}

impl JsonBody for reqwest::Response {
    async fn json_body(self) -> Value {
        let text = self.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}
