//! The fleet listing of the real binary pages, over HTTP: with 20k agents
//! (JSON ingest batches) a page is bounded in size whatever the fleet, the
//! cursor walks every agent exactly once in id order, the state filter
//! picks only agents in that state, and the CLI follows the cursor to the
//! end.

mod common;

use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{free_port, poll_until};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const KEY: &str = "paging-test-key-0123456789abcdef";
const AGENTS: usize = 20_000;
const BATCH: usize = 1000;
/// Agents that learn a baseline and turn HEALTHY; the others stay
/// INITIALIZING (one turn each).
const STEADY: usize = 7;
const LIMIT: Duration = Duration::from_secs(120);

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// The status and body of `GET path`.
    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Posts one ingest batch, retrying while the pipeline asks to (429 /
    /// 503 while starting).
    async fn ingest(&self, batch: &Value) {
        let body = serde_json::to_vec(batch).unwrap();
        poll_until("an accepted ingest batch", LIMIT, async || {
            let response = self
                .http
                .post(format!("{}/api/v1/ingest", self.base))
                .header("X-API-Key", KEY)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                202 => Some(()),
                429 | 503 => None,
                other => panic!(
                    "ingest answered {other}: {}",
                    response.text().await.unwrap()
                ),
            }
        })
        .await;
    }
}

fn id(i: usize) -> String {
    // Mixed widths and a non-ASCII tail, so id order is not insertion order.
    match i % 3 {
        0 => format!("agent-{i}"),
        1 => format!("agent-{i:06}-ü"),
        _ => format!("Agent {i}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_bounded_and_cursors_walk_every_agent_once() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = TestPipeline::default()
        .immune("min_samples = 5")
        .state_in(data.path())
        .api(format!("127.0.0.1:{port}"))
        .write_to(data.path());
    let _bin = Binary::start(&config, &[("AGENT_IMMUNE_API_KEY", KEY)]).await;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };

    let mut sent = BTreeSet::new();
    let ids: Vec<String> = (0..AGENTS).map(id).collect();
    for chunk in ids.chunks(BATCH) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|a| json!({"agent_id": a, "latency_ms": 100}))
            .collect();
        api.ingest(&Value::from(batch)).await;
        sent.extend(chunk.iter().cloned());
    }
    for turn in 0..10 {
        let batch: Vec<Value> = (0..STEADY)
            .map(|s| json!({"agent_id": format!("steady-{s}"), "latency_ms": 100 + turn}))
            .collect();
        api.ingest(&Value::from(batch)).await;
    }
    let everyone = AGENTS + STEADY;
    poll_until(
        "every agent registered, the steady ones HEALTHY",
        LIMIT,
        async || {
            let stats = api.json("/api/v1/stats").await;
            (stats["agents"] == everyone && stats["by_state"]["HEALTHY"] == STEADY).then_some(())
        },
    )
    .await;

    // The default page: bounded, whatever the fleet's size.
    let (status, body) = api.get("/api/v1/agents").await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(page["agents"].as_array().unwrap().len(), 100);
    assert_eq!(page["total"], everyone);
    assert!(page["next_cursor"].is_string());
    assert!(
        body.len() < 256 * 1024,
        "default page is {} bytes",
        body.len()
    );
    let (_, body) = api.get("/api/v1/agents?limit=1000").await;
    assert!(
        body.len() < 2 * 1024 * 1024,
        "largest page is {} bytes",
        body.len()
    );
    for (query, field) in [
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("cursor=xyz", "cursor"),
        ("state=healthy", "state"),
        ("state=SICK", "state"),
    ] {
        let (status, body) = api.get(&format!("/api/v1/agents?{query}")).await;
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, error["field"].as_str()),
            (400, Some(field)),
            "{query}"
        );
    }

    // The cursor walks everyone exactly once, in id order.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/agents?limit=1000&cursor={c}"),
            None => "/api/v1/agents?limit=1000".to_string(),
        };
        let page = api.json(&path).await;
        assert_eq!(page["total"], everyone);
        let agents = page["agents"].as_array().unwrap();
        assert!(agents.len() <= 1000);
        walked.extend(
            agents
                .iter()
                .map(|a| a["agent_id"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, everyone.div_ceil(1000));
    assert_eq!(walked.len(), everyone, "every agent once");
    assert!(walked.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    let walked: BTreeSet<String> = walked.into_iter().collect();
    assert!(walked.is_superset(&sent));

    // The state filter: only HEALTHY agents, paged with their own total.
    let mut healthy = Vec::new();
    let mut path = "/api/v1/agents?state=HEALTHY&limit=3".to_string();
    loop {
        let page = api.json(&path).await;
        assert_eq!(page["total"], STEADY);
        for agent in page["agents"].as_array().unwrap() {
            assert_eq!(agent["state"], "HEALTHY");
            healthy.push(agent["agent_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/api/v1/agents?state=HEALTHY&limit=3&cursor={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..STEADY).map(|s| format!("steady-{s}")).collect();
    assert_eq!(healthy, expected);
    let initializing = api.json("/api/v1/agents?state=INITIALIZING&limit=1").await;
    assert_eq!(initializing["total"], AGENTS);

    // The CLI follows the cursor through every page.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-immune"))
        .args(["agents", "--api", &api.base])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8(output.stdout).unwrap();
    for agent in [id(0), id(1), id(AGENTS - 1), "steady-6".to_string()] {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{agent} "))),
            "{agent} missing from the CLI's table"
        );
    }
    assert_eq!(
        table.lines().count(),
        everyone + 1,
        "a header and one row per agent"
    );
}
