//! Crash resilience of the real binary: SIGKILL in the middle of a busy run
//! (spans flowing, an approval pending, the downstream receiver down), then
//! a restart on the same data dir, then the receiver comes back. The same
//! baselines, the same pending approval, the quarantined agent still
//! quarantined, and every event emitted before the kill delivered (at least
//! once; `event.id` is stable, so duplicates can be recognised).

mod common;

use agent_immune::testdata::AgentTrace;
use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{attr_str, free_port, poll_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

const KEY: &str = "restart-test-key-0123456789abcdef";
/// How long an HTTP-visible condition may take.
const LIMIT: Duration = Duration::from_secs(60);

fn turn(agent: &str, i: u64, factor: f64) -> AgentTrace {
    let w =
        0.85 + 0.3 * ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64);
    // Each agent's turns get their own trace ids (the seed picks them).
    let salt = agent
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    AgentTrace::new(agent)
        .seed(salt.wrapping_mul(1_000_003).wrapping_add(i))
        .start(1_800_000_000_000_000_000 + i * 1_000_000_000)
        .tokens((500.0 * w * factor) as u64, (100.0 * w) as u64)
        .tool_calls(2)
        .latency_ms(200.0 * w, 20.0)
}

async fn get(api: &str, path: &str) -> Value {
    let text = reqwest::get(format!("{api}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_no_state_and_no_event() {
    let data = tempfile::tempdir().unwrap();
    let (otlp, api_port, down) = (free_port(), free_port(), free_port());
    let config = data.path().join("pipeline.toml");
    let retrying = r#"retry_on_failure = { initial_interval = "100ms", max_interval = "200ms" }"#;
    let text = TestPipeline::default()
        .otlp(format!("127.0.0.1:{otlp}"), "")
        .turns("")
        .events_otlp(format!(
            r#"{{ endpoint = "http://127.0.0.1:{down}", protocol = "grpc", {retrying} }}"#
        ))
        .table(format!(
            "[state]\ndata_dir = \"{}/state\"\nflush_interval = \"100ms\"",
            data.path().display()
        ))
        .api(format!("127.0.0.1:{api_port}"))
        .text();
    std::fs::write(&config, text).unwrap();
    let api = format!("http://127.0.0.1:{api_port}");
    let mut first = Binary::start(&config, &[("AGENT_IMMUNE_API_KEY", KEY)]).await;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{otlp}"))
        .await
        .unwrap();

    // Two agents learn their normal; then one goes severely anomalous and
    // waits, quarantined, for an operator's approval.
    for i in 0..25 {
        for agent in ["quiet", "sick"] {
            client.export(turn(agent, i, 1.0).request()).await.unwrap();
        }
    }
    for i in 25..35 {
        client
            .export(turn("sick", i, 20.0).request())
            .await
            .unwrap();
    }
    poll_until("the pending approval", LIMIT, async || {
        let pending = get(&api, "/api/v1/approvals?status=pending").await;
        pending.to_string().contains("\"sick\"").then_some(())
    })
    .await;
    let quiet_before = get(&api, "/api/v1/agents/quiet").await["baseline"].clone();
    let sick_state = get(&api, "/api/v1/agents/sick").await["state"].clone();
    assert_eq!(sick_state, "QUARANTINED");
    let events_before: Value = get(&api, "/api/v1/events?limit=1000").await;
    let ids_before: BTreeSet<String> = events_before
        .as_array()
        .or_else(|| events_before["events"].as_array())
        .expect("events list")
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    assert!(!ids_before.is_empty());

    // Spans keep flowing (another agent) while the store flushes the quiet
    // agent's baseline: wait until the store file was written after reading,
    // one shard tick (idle_timeout / 4 = 500 ms: learning is staged once a
    // tick) and one flush (100 ms) later.
    let store_file = data.path().join("state/state.redb");
    let read_at = SystemTime::now();
    let mut busy = client.clone();
    let flowing = tokio::spawn(async move {
        for i in 0.. {
            if busy.export(turn("busy", i, 1.0).request()).await.is_err() {
                break;
            }
        }
    });
    poll_until("a flush after the reading", LIMIT, async || {
        let written = std::fs::metadata(&store_file)
            .and_then(|m| m.modified())
            .ok()?;
        (written > read_at + Duration::from_millis(800)).then_some(())
    })
    .await;

    // SIGKILL, mid-run.
    let pid = first.pid.to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    first.child.wait().await.unwrap();
    flowing.abort();

    // Restart on the same data dir: resumed, not relearned.
    let _second = Binary::start(&config, &[("AGENT_IMMUNE_API_KEY", KEY)]).await;
    let quiet_after = get(&api, "/api/v1/agents/quiet").await["baseline"].clone();
    assert_eq!(
        quiet_after, quiet_before,
        "baseline changed across the restart"
    );
    assert_eq!(
        get(&api, "/api/v1/agents/sick").await["state"],
        "QUARANTINED"
    );
    let pending = get(&api, "/api/v1/approvals?status=pending").await;
    assert!(
        pending.to_string().contains("\"sick\""),
        "approval lost: {pending}"
    );

    // The receiver comes back: every event from before the kill arrives.
    let (_, received) =
        common::downstream_collector_at(format!("127.0.0.1:{down}").parse().unwrap()).await;
    received
        .wait_for("every pre-kill event", Duration::from_secs(60), |r| {
            let got: BTreeSet<String> = r
                .log_records()
                .iter()
                .filter_map(|l| attr_str(l, "event.id").map(str::to_string))
                .collect();
            ids_before.is_subset(&got).then_some(())
        })
        .await;
}
