//! The whole immune cycle of one agent over real OTLP: turns go in over
//! gRPC with the generated OTLP client, and the response comes out as a
//! sequence of OTLP log events at a real downstream receiver: infection →
//! quarantine → healing action → probation → healthy. The enforcement
//! target is noop (observe only), so every action "succeeds".

mod common;

use agent_immune::config::document::Config;
use agent_immune::pipeline::service::Service;
use common::pipeline::TestPipeline;
use common::{attr_str, event_name, is_transition, wobbled_turn};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::net::SocketAddr;
use std::time::Duration;

fn pipeline(downstream: SocketAddr) -> Config {
    // Observe only: every action "succeeds". Approval is out of reach so
    // this test follows the automatic path; the approval path has its own
    // tests.
    TestPipeline::events_to(downstream)
        .without_approval()
        .table("[executors.noop]")
        .config("immune_cycle")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infection_quarantine_healing_probation_healthy_as_otlp_logs() {
    let (downstream, received) = common::downstream_collector().await;
    let service = Service::start(pipeline(downstream)).await.expect("start");
    let endpoint = format!("http://{}", service.otlp_grpc_addr().expect("grpc"));
    let mut client = TraceServiceClient::connect(endpoint)
        .await
        .expect("connect");
    let agent = "billing-agent";
    let mut i = 0u64;
    let mut send = async |factor: f64, i: &mut u64| {
        client
            .export(wobbled_turn(agent, *i, 1.0, factor).request())
            .await
            .expect("export accepted");
        *i += 1;
    };

    // Learn the agent's normal.
    for _ in 0..25 {
        send(1.0, &mut i).await;
    }
    // Its tokens triple and stay there: suspected, infected, drained,
    // quarantined, healed (noop target).
    for _ in 0..8 {
        send(3.0, &mut i).await;
    }
    received
        .wait_for_event("agent_immune.healing_result", Duration::from_secs(30))
        .await;
    // Healed: fresh healthy turns pass probation (10 samples, judged once
    // the evaluation window is full) and the agent is healthy again.
    for _ in 0..20 {
        send(1.0, &mut i).await;
    }
    received
        .wait_for_record("PROBATION -> HEALTHY", Duration::from_secs(30), |l| {
            is_transition(l, "PROBATION", "HEALTHY")
        })
        .await;

    let names: Vec<String> = received
        .log_records()
        .iter()
        .filter(|l| attr_str(l, "gen_ai.agent.id") == Some(agent))
        .map(|l| event_name(l).to_string())
        .collect();
    let expected = [
        "agent_immune.infection",
        "agent_immune.diagnosis",
        "agent_immune.quarantine",
        "agent_immune.healing_action",
        "agent_immune.healing_result",
        "agent_immune.probation",
        "agent_immune.lifecycle",
    ];
    let mut at = 0;
    for name in &names {
        if at < expected.len() && name == expected[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        expected.len(),
        "events out of order or missing: {names:?}"
    );
    // Every event is attributable: agent id, a stable id, the offending trace.
    for record in received.log_records() {
        assert!(attr_str(&record, "event.id").is_some_and(|id| !id.is_empty()));
        assert_eq!(record.trace_id.len(), 16, "{}", event_name(&record));
    }
    service.shutdown(Duration::from_secs(5)).await;
}
