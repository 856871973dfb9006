//! Shared pieces of the integration tests: a real OTLP receiver that records
//! what it gets (the "downstream collector"), the real Python agent, and
//! the pipeline config the tests run (`pipeline::TestPipeline`).
#![allow(dead_code)]

pub mod binary;
pub mod pipeline;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

/// What the downstream receiver got.
#[derive(Default)]
pub struct Received {
    pub logs: Mutex<Vec<ExportLogsServiceRequest>>,
    pub traces: Mutex<Vec<ExportTraceServiceRequest>>,
    pub changed: Notify,
}

impl Received {
    /// Every log record received so far.
    pub fn log_records(&self) -> Vec<LogRecord> {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .flat_map(|r| r.resource_logs.iter())
            .flat_map(|rl| rl.scope_logs.iter())
            .flat_map(|sl| sl.log_records.iter().cloned())
            .collect()
    }

    pub fn span_count(&self) -> usize {
        let traces = self.traces.lock().unwrap();
        traces
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .map(|ss| ss.spans.len())
            .sum()
    }

    /// Waits until `check` holds (re-checked on every export), or panics
    /// after `timeout` with `what`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        until_notified(&self.changed, what, timeout, || check(self)).await
    }

    /// Waits for the first log record that `matches`, as `wait_for`.
    pub async fn wait_for_record(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&LogRecord) -> bool,
    ) -> LogRecord {
        self.wait_for(what, timeout, |r| {
            r.log_records().into_iter().find(|l| matches(l))
        })
        .await
    }

    /// Waits for the first event named `name` (`agent_immune.quarantine`).
    pub async fn wait_for_event(&self, name: &str, timeout: Duration) -> LogRecord {
        self.wait_for_record(name, timeout, |l| event_name(l) == name)
            .await
    }
}

struct Sink(Arc<Received>);

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.logs.lock().unwrap().push(request.into_inner());
        self.0.changed.notify_waiters();
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.traces.lock().unwrap().push(request.into_inner());
        self.0.changed.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a real OTLP gRPC receiver (logs and traces) on a free port.
/// Re-checks a condition only another process or an HTTP API can show
/// (there is nothing to subscribe to) every 20 ms until it gives a value;
/// panics after `timeout` naming `what`.
pub async fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` holds, re-checking whenever `changed` is notified;
/// panics after `timeout` naming `what`.
pub async fn until_notified<T>(
    changed: &Notify,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = changed.notified();
        if let Some(v) = check() {
            return v;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

pub async fn downstream_collector() -> (SocketAddr, Arc<Received>) {
    downstream_collector_at("127.0.0.1:0".parse().unwrap()).await
}

/// A free loopback port (bound, then released for a server started later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a real OTLP gRPC receiver on the given address.
pub async fn downstream_collector_at(addr: SocketAddr) -> (SocketAddr, Arc<Received>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Received::default());
    let server = tonic::transport::Server::builder()
        .add_service(LogsServiceServer::new(Sink(received.clone())))
        .add_service(TraceServiceServer::new(Sink(received.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (addr, received)
}

/// The string value of a log record attribute.
pub fn attr<'a>(record: &'a LogRecord, key: &str) -> Option<&'a Value> {
    record
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn attr_str<'a>(record: &'a LogRecord, key: &str) -> Option<&'a str> {
    match attr(record, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// Whether `record` is the lifecycle event of the move `from` → `to`.
pub fn is_transition(record: &LogRecord, from: &str, to: &str) -> bool {
    event_name(record) == "agent_immune.lifecycle"
        && attr_str(record, "agent_immune.from") == Some(from)
        && attr_str(record, "agent_immune.to") == Some(to)
}

pub fn event_name(record: &LogRecord) -> &str {
    if !record.event_name.is_empty() {
        return &record.event_name;
    }
    attr_str(record, "event.name").unwrap_or("")
}

/// The Python interpreter of the test virtualenv (made by tests/run.sh).
/// Rotel's collector binary, shipped by the `rotel` package in the test
/// virtualenv.
pub fn rotel_agent() -> PathBuf {
    let python = python();
    let venv = python.parent().and_then(|p| p.parent()).expect("venv root");
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).expect("venv lib") {
        let candidate = entry
            .unwrap()
            .path()
            .join("site-packages/rotel/rotel-agent");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "rotel-agent not found under {}: run tests/run.sh",
        lib.display()
    );
}

pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("AGENT_IMMUNE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the Python test environment is missing: run tests/run.sh (it creates .venv with the OpenTelemetry SDK and openai)"
    );
    venv
}

pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// A running fake OpenAI-compatible provider (killed on drop).
pub struct FakeOpenAi {
    pub base_url: String,
    _child: tokio::process::Child,
}

pub async fn fake_openai() -> FakeOpenAi {
    let mut child = tokio::process::Command::new(python())
        .arg(python_script("fake_openai.py"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start fake OpenAI server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("fake OpenAI server did not report its port")
        .unwrap()
        .unwrap();
    let port: u16 = line.trim_start_matches("PORT ").trim().parse().unwrap();
    FakeOpenAi {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        _child: child,
    }
}

/// One turn the Python agent reported.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AgentTurn {
    pub turn: u32,
    pub trace_id: String,
    pub anomalous: bool,
}

/// Runs the Python agent to completion, pointed at `otlp_endpoint` with
/// nothing but the standard OTel environment variables.
pub async fn run_python_agent(
    provider: &FakeOpenAi,
    otlp_endpoint: &str,
    protocol: &str,
    args: &[&str],
) -> Vec<AgentTurn> {
    let output = tokio::process::Command::new(python())
        .arg(python_script("agent.py"))
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OPENAI_BASE_URL", &provider.base_url)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the Python agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "agent failed: {stderr}");
    // Export retries and errors of the agent's SDK, shown with a failure.
    if !stderr.trim().is_empty() {
        eprintln!("python agent stderr:\n{stderr}");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("agent turn line"))
        .collect()
}

/// Turn `i` of `agent`, ending about now (agents' clocks agree with ours),
/// with a deterministic ±20% wobble so its baseline has a real spread:
/// ~400 input and 120 output tokens, 2 tool calls, 2 LLM calls of ~300 ms;
/// `latency_factor` and `token_factor` make it sick.
pub fn wobbled_turn(
    agent: &str,
    i: u64,
    latency_factor: f64,
    token_factor: f64,
) -> agent_immune::testdata::AgentTrace {
    let w =
        0.8 + 0.4 * ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64);
    // Each agent's turns get their own trace ids (the seed picks them).
    let salt = agent
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    agent_immune::testdata::AgentTrace::new(agent)
        .seed(salt.wrapping_mul(1_000_003).wrapping_add(i))
        .start(agent_immune::pipeline::shard::now())
        .tokens((400.0 * w * token_factor) as u64, (120.0 * w) as u64)
        .tool_calls(2)
        .latency_ms(300.0 * w * latency_factor, 50.0)
}

/// The management API's `/metrics` text (`api` is `http://host:port`).
pub async fn metrics_text(api: &str) -> String {
    reqwest::get(format!("{api}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("read /metrics")
}

/// The value of the sample `name` (with its labels, as printed) in a
/// Prometheus text.
pub fn metric_sample(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The value of a counter or gauge in the Prometheus text of `{api}/metrics`
/// (`api` as `http://host:port`).
pub async fn metric(api: &str, name: &str) -> u64 {
    let text = metrics_text(api).await;
    metric_sample(&text, name)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A raw OTLP/gRPC export of arbitrary bytes (truncated, hostile) to
/// `url` (`http://host:port`); the response's bytes or its status.
pub async fn grpc_raw(
    url: &str,
    signal: agent_immune::pipeline::consumer::Signal,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        signal.grpc_path().parse().unwrap(),
        agent_immune::receivers::otlp::raw_codec::RawBytesCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}
