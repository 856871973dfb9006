//! Shared pieces of the management API tests: the real pipeline started
//! with `Service::start`, the API served over a real socket with a test
//! key, an HTTP control API standing in for the agent (its healing actions
//! can be held until the test lets them finish), and agents driven through
//! `POST /api/v1/ingest`.
#![allow(dead_code)]

use crate::common::pipeline::TestPipeline;
use agent_immune::api::config::ApiConfig;
use agent_immune::api::server::{self, ApiState, ProxyHandles};
use agent_immune::config::document::Config;
use agent_immune::pipeline::service::Service;
use agent_immune::state::{ApiKey, StateConfig, Store, resolve_api_key};
use axum::extract::{Path, State};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "test-api-key-0123456789abcdef";
pub const WRONG_KEY: &str = "test-api-key-0123456789abcdeX";

/// The key in force, made the way the service makes it from
/// `AGENT_IMMUNE_API_KEY` (a throwaway store: the env value is not stored).
pub fn api_key(secret: &str) -> ApiKey {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StateConfig::default()).unwrap();
    resolve_api_key(&store, Some(secret), &mut std::io::sink()).unwrap()
}

/// An agent's HTTP control API: records each action; healing actions wait
/// until [`ControlAgent::release_healing`] (drain and quarantine do not).
#[derive(Clone)]
pub struct ControlAgent {
    pub addr: SocketAddr,
    pub calls: Arc<Mutex<Vec<String>>>,
    gate: watch::Sender<bool>,
}

impl ControlAgent {
    pub async fn start(held: bool) -> ControlAgent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, _) = watch::channel(!held);
        let agent = ControlAgent {
            addr,
            calls: Arc::default(),
            gate,
        };
        let app = axum::Router::new()
            .route("/control/{action}", axum::routing::post(control))
            .with_state(agent.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        agent
    }

    pub fn release_healing(&self) {
        self.gate.send_replace(true);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

async fn control(State(agent): State<ControlAgent>, Path(action): Path<String>) -> &'static str {
    agent.calls.lock().unwrap().push(action.clone());
    if !matches!(action.as_str(), "drain" | "quarantine" | "release") {
        let mut open = agent.gate.subscribe();
        let _ = open.wait_for(|o| *o).await;
    }
    "ok"
}

/// What a test pipeline runs.
pub struct Options {
    pub api: ApiConfig,
    /// The key in force; `None` runs the API without one (fail closed).
    pub key: Option<&'static str>,
    /// Act on agents through a [`ControlAgent`] (healing held when true),
    /// else the noop target.
    pub control: Option<bool>,
    /// Run an llm_proxy receiver too (its discovery and policies in the API).
    pub llm_proxy: bool,
    pub ready: bool,
    /// Hand the fleet to the API (false: as with no detection pipeline).
    pub fleet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api: ApiConfig {
                endpoint: "127.0.0.1:0".to_string(),
                ..ApiConfig::default()
            },
            key: Some(KEY),
            control: None,
            llm_proxy: false,
            ready: true,
            fleet: true,
        }
    }
}

pub fn pipeline(control: Option<SocketAddr>, llm_proxy: bool, api_endpoint: &str) -> Config {
    let executor = match control {
        Some(addr) => {
            format!("[executors.http_control]\nbase_url = \"http://{addr}\"\ntimeout = \"120s\"")
        }
        None => "[executors.noop]".to_string(),
    };
    let mut pipeline = TestPipeline::default();
    if llm_proxy {
        pipeline = pipeline.llm_proxy("http://127.0.0.1:9");
    }
    pipeline
        .table(executor)
        .table("[service]\nshards = 2")
        .api(api_endpoint)
        .config("api_test")
}

/// The pipeline, and the API in front of it with the test key.
pub struct Harness {
    pub service: Service,
    pub base: String,
    pub control: Option<ControlAgent>,
    pub http: reqwest::Client,
    pub ready: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    turn: AtomicU64,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The `error` message of an error answer.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {:?}", self.text))
            .to_string()
    }

    pub fn field(&self) -> Option<String> {
        self.json()["field"].as_str().map(str::to_string)
    }
}

impl Harness {
    pub async fn start(options: Options) -> Harness {
        let control = match options.control {
            Some(held) => Some(ControlAgent::start(held).await),
            None => None,
        };
        // The service's own API is off here: the tests serve it with a key
        // (the service gets its key from the state store).
        let service = Service::start(pipeline(
            control.as_ref().map(|c| c.addr),
            options.llm_proxy,
            "",
        ))
        .await
        .expect("start the pipeline");
        let ready = Arc::new(AtomicBool::new(options.ready));
        let proxy = service.gateways.first().map(|g| ProxyHandles {
            registry: g.registry.clone(),
            policies: g.policies.clone(),
        });
        let state = ApiState::new(service.telemetry.clone(), ready.clone(), options.api)
            .with_fleet(if options.fleet {
                service.fleet.clone()
            } else {
                None
            })
            .with_api_key(options.key.map(api_key))
            .with_proxy(proxy);
        let cancel = CancellationToken::new();
        let (addr, task) = server::serve("127.0.0.1:0".parse().unwrap(), state, cancel.clone())
            .await
            .expect("serve the API");
        Harness {
            service,
            base: format!("http://{addr}"),
            control,
            http: reqwest::Client::new(),
            ready,
            cancel,
            task,
            turn: AtomicU64::new(0),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, self.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("the API answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    /// A request with the test key.
    pub async fn keyed(&self, method: &str, path: &str, body: Option<String>) -> Reply {
        self.send(method, path, body, &[("x-api-key", KEY)]).await
    }

    /// POST with the test key.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.keyed("POST", path, Some(body.to_string())).await
    }

    pub async fn ingest(&self, body: Value) -> Reply {
        self.post("/api/v1/ingest", body).await
    }

    /// One turn's vitals: a ±20% wobble around the agent's normal, tokens
    /// times `factor`.
    pub fn turn(&self, agent: &str, factor: f64) -> Value {
        let i = self.turn.fetch_add(1, Ordering::Relaxed);
        let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
        let w = 0.8 + 0.4 * (x as f64 / (1u64 << 53) as f64);
        json!({
            "agent_id": agent,
            "latency_ms": 300.0 * w,
            "input_tokens": (400.0 * w * factor) as u64,
            "output_tokens": (120.0 * w) as u64,
            "tool_calls": 2,
            "retries": 0,
            "success": true,
            "cost": 0.002 * w,
            "model": "gpt-4o-mini",
        })
    }

    /// `n` normal turns, in one batch.
    pub async fn healthy_turns(&self, agent: &str, n: usize) {
        let batch: Vec<Value> = (0..n).map(|_| self.turn(agent, 1.0)).collect();
        let reply = self.ingest(Value::Array(batch)).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }

    pub async fn agent(&self, agent: &str) -> Option<Value> {
        let reply = self.get(&format!("/api/v1/agents/{agent}")).await;
        match reply.status {
            200 => Some(reply.json()),
            404 => None,
            other => panic!("GET agent: {other} {}", reply.text),
        }
    }

    pub async fn state(&self, agent: &str) -> Option<String> {
        self.agent(agent)
            .await
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }

    /// Polls the API until `agent` is in `state`.
    pub async fn wait_state(&self, agent: &str, state: &str) {
        eventually(&format!("{agent} to be {state}"), || async {
            (self.state(agent).await.as_deref() == Some(state)).then_some(())
        })
        .await;
    }

    /// Warms `agent` up, then makes its tokens jump 20x until it waits for
    /// approval. Returns its pending approval.
    pub async fn drive_to_approval(&self, agent: &str) -> Value {
        self.healthy_turns(agent, 25).await;
        self.wait_state(agent, "HEALTHY").await;
        for _ in 0..6 {
            let reply = self.ingest(self.turn(agent, 20.0)).await;
            assert_eq!(reply.status, 202, "{}", reply.text);
        }
        eventually(&format!("a pending approval for {agent}"), || async {
            let list = self.get("/api/v1/approvals?status=pending").await.json();
            list.as_array()
                .unwrap()
                .iter()
                .find(|a| a["agent_id"] == agent)
                .cloned()
        })
        .await
    }

    /// Healthy turns, one at a time, until the agent is HEALTHY again.
    pub async fn heal_through_probation(&self, agent: &str) {
        for _ in 0..60 {
            if self.state(agent).await.as_deref() == Some("HEALTHY") {
                return;
            }
            let before = self.turns_seen(agent).await;
            let reply = self.ingest(self.turn(agent, 1.0)).await;
            assert_eq!(reply.status, 202, "{}", reply.text);
            // Wait for this turn to be judged before the next one.
            eventually("the turn to be judged", || async {
                (self.turns_seen(agent).await != before).then_some(())
            })
            .await;
        }
        panic!(
            "{agent} did not pass probation: {:?}",
            self.agent(agent).await
        );
    }

    /// The trace of the agent's last judged turn (new with every turn).
    async fn turns_seen(&self, agent: &str) -> Value {
        self.agent(agent).await.unwrap()["last_vitals"]["trace_id"].clone()
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
        self.service.shutdown(Duration::from_secs(5)).await;
    }
}

/// Polls `check` until it gives a value, or panics after 30 s naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    // Polling: the API is the only view of the fleet a client has.
    crate::common::poll_until(what, Duration::from_secs(30), async || check().await).await
}
