//! Hostile input against the immune core, over real sockets to the real
//! binary: a flood of agent names must not lock new agents out of the
//! table; poisoned span timestamps must not blind the latency baseline nor
//! hold an agent in PROBATION; and `AGENT_IMMUNE_API_KEY` guards the API
//! without a `[state]` table.

mod common;

use agent_immune::testdata::AgentTrace;
use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{free_port, poll_until, wobbled_turn};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

const KEY: &str = "core-safety-test-key-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(60);

/// A running binary on `pipeline` (its OTLP gRPC and API ports set here),
/// with an OTLP client and the API's base URL.
struct Running {
    _bin: Binary,
    _dir: tempfile::TempDir,
    client: TraceServiceClient<Channel>,
    api: String,
}

async fn start(pipeline: TestPipeline, env: &[(&str, &str)]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (otlp, api_port) = (free_port(), free_port());
    let text = pipeline
        .otlp(format!("127.0.0.1:{otlp}"), "")
        .api(format!("127.0.0.1:{api_port}"))
        .text();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(&config, text).unwrap();
    let bin = Binary::start(Path::new(&config), env).await;
    let client = TraceServiceClient::connect(format!("http://127.0.0.1:{otlp}"))
        .await
        .unwrap();
    Running {
        _bin: bin,
        _dir: dir,
        client,
        api: format!("http://127.0.0.1:{api_port}"),
    }
}

impl Running {
    async fn send(&mut self, request: ExportTraceServiceRequest) {
        self.client.export(request).await.expect("export accepted");
    }

    /// The agent's state, `None` while it is not monitored (404).
    async fn state(&self, agent: &str) -> Option<String> {
        let response = reqwest::get(format!("{}/api/v1/agents/{agent}", self.api))
            .await
            .unwrap();
        if response.status() == 404 {
            return None;
        }
        let view: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        view["state"].as_str().map(str::to_string)
    }

    async fn wait_state(&self, agent: &str, wanted: impl Fn(&str) -> bool, what: &str) -> String {
        poll_until(what, LIMIT, async || {
            self.state(agent).await.filter(|s| wanted(s))
        })
        .await
    }

    /// The value of a `/metrics` sample.
    async fn metric(&self, name: &str) -> u64 {
        common::metric(&self.api, name).await
    }
}

/// `trace` with its root span (the turn's timing) stamped `start`..`end`.
fn stamped(trace: &AgentTrace, start: u64, end: u64) -> ExportTraceServiceRequest {
    let mut request = trace.request();
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    let root = spans
        .iter_mut()
        .find(|s| s.parent_span_id.is_empty())
        .expect("a root span");
    root.start_time_unix_nano = start;
    root.end_time_unix_nano = end;
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_start_time_does_not_hide_a_twenty_times_latency_spike() {
    let mut run = start(TestPipeline::default(), &[]).await;
    // The issue: one span starting at 0 among the agent's first turns, and
    // one claiming to run from 0 to u64::MAX (584 years).
    let first = wobbled_turn("poisoned", 0, 1.0, 1.0);
    run.send(stamped(&first, 0, first.end())).await;
    let second = wobbled_turn("poisoned", 1, 1.0, 1.0);
    run.send(stamped(&second, 0, u64::MAX)).await;
    for i in 2..32 {
        run.send(wobbled_turn("poisoned", i, 1.0, 1.0).request())
            .await;
    }
    run.wait_state("poisoned", |s| s == "HEALTHY", "a healthy baseline")
        .await;
    assert_eq!(run.metric("agent_immune_bad_timestamp_turns").await, 2);
    // Latency 20x: seen (it stayed HEALTHY at 0.28σ before).
    for i in 32..37 {
        run.send(wobbled_turn("poisoned", i, 20.0, 1.0).request())
            .await;
    }
    let state = run
        .wait_state("poisoned", |s| s != "HEALTHY", "the latency spike seen")
        .await;
    assert!(
        ["SUSPECTED", "DRAINING", "QUARANTINED"].contains(&state.as_str()),
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_stamped_u64_max_does_not_keep_an_agent_in_probation() {
    let pipeline = TestPipeline::default()
        .immune("approval_sigma = 40.0\nsevere_sigma = 50.0\ndrain_timeout = \"1s\"")
        .table("[executors.noop]");
    let mut run = start(pipeline, &[]).await;
    for i in 0..25 {
        run.send(wobbled_turn("skewed", i, 1.0, 1.0).request())
            .await;
    }
    run.wait_state("skewed", |s| s == "HEALTHY", "a healthy baseline")
        .await;
    // The issue: one span with start = end = u64::MAX while the agent runs
    // freely (when its clock is learned).
    let odd = wobbled_turn("skewed", 25, 1.0, 1.0);
    run.send(stamped(&odd, u64::MAX, u64::MAX)).await;
    // Sick: tokens triple; it is drained, quarantined and healed (noop
    // target) as the fleet hold and the drain pass.
    let mut i = 26;
    for _ in 0..8 {
        run.send(wobbled_turn("skewed", i, 1.0, 3.0).request())
            .await;
        i += 1;
    }
    run.wait_state("skewed", |s| s == "PROBATION", "probation after the heal")
        .await;
    // Healthy turns again: probation passes on them (it stayed in
    // PROBATION after 80 clean turns before).
    for _ in 0..15 {
        run.send(wobbled_turn("skewed", i, 1.0, 1.0).request())
            .await;
        i += 1;
    }
    run.wait_state("skewed", |s| s == "HEALTHY", "probation passed")
        .await;
    assert!(run.metric("agent_immune_bad_timestamp_turns").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_agents_take_the_place_of_the_least_recently_seen_when_the_table_is_full() {
    let pipeline = TestPipeline::default()
        .immune("max_agents = 4")
        .table("[service]\nshards = 1");
    let mut run = start(pipeline, &[]).await;
    for n in 0..10 {
        run.send(wobbled_turn(&format!("agent-{n}"), 0, 1.0, 1.0).request())
            .await;
        // Each is judged before the next arrives, so "least recently seen"
        // is the order sent.
        run.wait_state(&format!("agent-{n}"), |_| true, "the new agent monitored")
            .await;
    }
    for n in 0..6 {
        assert_eq!(run.state(&format!("agent-{n}")).await, None, "agent-{n}");
    }
    for n in 6..10 {
        assert_eq!(
            run.state(&format!("agent-{n}")).await.as_deref(),
            Some("INITIALIZING"),
            "agent-{n}"
        );
    }
    assert_eq!(run.metric("agent_immune_evicted_agents").await, 6);
    assert_eq!(run.metric("agent_immune_refused_agent_turns").await, 0);
    assert_eq!(run.metric("agent_immune_skipped_turns").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_env_api_key_guards_the_api_without_a_state_table() {
    let run = start(TestPipeline::default(), &[("AGENT_IMMUNE_API_KEY", KEY)]).await;
    let http = reqwest::Client::new();
    let ingest = |key: Option<&str>| {
        let mut request = http
            .post(format!("{}/api/v1/ingest", run.api))
            .header("content-type", "application/json")
            .body(r#"{"agent_id":"ingested","latency_ms":250}"#);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let accepted = ingest(Some(KEY)).await.unwrap();
    assert_eq!(accepted.status(), 202, "{:?}", accepted.text().await);
    assert_eq!(ingest(None).await.unwrap().status(), 401);
    assert_eq!(ingest(Some("not-the-key")).await.unwrap().status(), 401);
    run.wait_state("ingested", |_| true, "the ingested agent")
        .await;
    // A command reaches the fleet (unknown agent: 404, not 503).
    let refused = http
        .post(format!("{}/api/v1/agents/nobody/approve", run.api))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
}
