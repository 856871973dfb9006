//! "Committed before acting", with a store that cannot write: the real
//! pipeline (OTLP over gRPC, a state store, the management API, an
//! http_control enforcement target that records what reaches it). While the
//! store refuses writes (its fault-injection seam), an agent is found sick
//! and its drain is decided, but nothing reaches the target, no operator
//! decision is acknowledged and /readyz is not ready; once the store writes
//! again, the held drain reaches the target and readiness returns.

mod common;

use agent_immune::immune::command::CommandError;
use agent_immune::pipeline::fleet::FleetError;
use agent_immune::pipeline::service::Service;
use axum::extract::State;
use common::pipeline::TestPipeline;
use common::{poll_until, wobbled_turn};
use http::Uri;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// An agent's HTTP control API: records the path of every call, answers 200.
async fn control_target() -> (Arc<Mutex<Vec<String>>>, std::net::SocketAddr) {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    async fn record(State(calls): State<Arc<Mutex<Vec<String>>>>, uri: Uri) -> &'static str {
        calls.lock().unwrap().push(uri.path().to_string());
        "done"
    }
    let app = axum::Router::new()
        .fallback(record)
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (calls, addr)
}

async fn readyz(api: &str) -> (u16, String) {
    let response = reqwest::get(format!("{api}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acted_on_or_acknowledged_while_the_store_cannot_write() {
    let data = tempfile::tempdir().unwrap();
    let (calls, target) = control_target().await;
    let config = TestPipeline::default()
        .immune("approval_sigma = 40.0\nsevere_sigma = 50.0\ncorrelation_hold = \"0s\"")
        .table(format!(
            "[executors.http_control]\nbase_url = \"http://{target}/\"\n[executors.routing]\ndefault = \"http_control\""
        ))
        .table(format!(
            "[state]\ndata_dir = \"{}/state\"\nflush_interval = \"100ms\"",
            data.path().display()
        ))
        .api("127.0.0.1:0")
        .config("failed_commit");
    let service = Service::start(config).await.expect("start");
    let api = format!("http://{}", service.api_addr.unwrap());
    let fleet = service.fleet.clone().unwrap();
    let store = service.store().unwrap().clone();
    let failed = || service.telemetry.state.failed_commits.get();
    let mut client =
        TraceServiceClient::connect(format!("http://{}", service.otlp_grpc_addr().unwrap()))
            .await
            .unwrap();

    for i in 0..25 {
        client
            .export(wobbled_turn("billing", i, 1.0, 1.0).request())
            .await
            .unwrap();
    }
    poll_until("a healthy baseline", LIMIT, async || {
        let view = fleet.agent("billing").await.unwrap()?;
        (view.state.as_str() == "HEALTHY").then_some(())
    })
    .await;
    assert_eq!(readyz(&api).await.0, 200);

    // The disk refuses writes; the agent's tokens triple.
    store.inject_write_failure(Some("no space left on device (injected)"));
    for i in 25..33 {
        client
            .export(wobbled_turn("billing", i, 1.0, 3.0).request())
            .await
            .unwrap();
    }
    poll_until("the drain decided", LIMIT, async || {
        let view = fleet.agent("billing").await.unwrap()?;
        (view.state.as_str() == "DRAINING").then_some(())
    })
    .await;
    // Two more failed retries (one a tick): time enough for any effect
    // that was going to run to reach the target.
    let seen = failed();
    assert!(seen >= 1);
    poll_until("two more failed commits", LIMIT, async || {
        (failed() >= seen + 2).then_some(())
    })
    .await;
    assert_eq!(
        calls.lock().unwrap().clone(),
        Vec::<String>::new(),
        "an effect ran before its decision was durable"
    );
    let (status, body) = readyz(&api).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no space left on device"), "{body}");
    // An operator decision is refused, retryably, and changes nothing.
    match fleet.reset_baseline("billing").await {
        Err(FleetError::Command(CommandError::NotDurable { reason })) => {
            assert!(reason.contains("no space left"), "{reason}")
        }
        other => panic!("acknowledged while the store cannot write: {other:?}"),
    }
    let metrics = reqwest::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("agent_immune_state_failed_commits "))
        .expect("failed commits exported");
    assert_ne!(line, "agent_immune_state_failed_commits 0");

    // The disk is back: the held drain is committed, then carried out.
    store.inject_write_failure(None);
    let first = poll_until("the held drain at the target", LIMIT, async || {
        calls.lock().unwrap().first().cloned()
    })
    .await;
    assert!(first.ends_with("/control/drain"), "{first}");
    poll_until("ready again", LIMIT, async || {
        (readyz(&api).await.0 == 200).then_some(())
    })
    .await;
    service.shutdown(Duration::from_secs(5)).await;
}
