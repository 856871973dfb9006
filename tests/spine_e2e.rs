//! The spine end to end, with real parts at every boundary: a Python agent
//! instrumented with the official OpenTelemetry GenAI instrumentation drives
//! the real `openai` client against a local fake provider, exports OTLP to
//! agent-immune with nothing but OTEL_EXPORTER_OTLP_ENDPOINT, and the
//! infection arrives as an OTLP log at a real downstream receiver.

mod common;

use agent_immune::config::document::Config;
use agent_immune::pipeline::service::Service;
use common::pipeline::TestPipeline;
use common::{attr, attr_str, event_name};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::net::SocketAddr;
use std::time::Duration;

/// Both OTLP protocols, two detection shards, events on the console and
/// downstream, spans forwarded downstream, the API on a free port.
fn pipeline(downstream: SocketAddr) -> Config {
    TestPipeline::events_to(downstream)
        .otlp("127.0.0.1:0", "127.0.0.1:0")
        .forward_to(downstream)
        .console()
        .table("[service]\nshards = 2")
        .api("127.0.0.1:0")
        .config("spine_e2e")
}

async fn infection_after_jump(protocol: &str, anomaly: &str, expected: &[&str]) {
    let (downstream, received) = common::downstream_collector().await;
    let service = Service::start(pipeline(downstream)).await.expect("start");
    let provider = common::fake_openai().await;
    let endpoint = match protocol {
        "grpc" => format!("http://{}", service.otlp_grpc_addr().expect("grpc bound")),
        _ => format!("http://{}", service.otlp_http_addr().expect("http bound")),
    };
    let agent = format!("agent-{anomaly}-{}", protocol.replace('/', "-"));
    let turns = common::run_python_agent(
        &provider,
        &endpoint,
        protocol,
        &[
            "--agent",
            &agent,
            "--normal",
            "30",
            "--anomalous",
            "3",
            "--anomaly",
            anomaly,
        ],
    )
    .await;
    assert_eq!(turns.len(), 33, "the agent ran every turn");
    let anomalous: Vec<&str> = turns
        .iter()
        .filter(|t| t.anomalous)
        .map(|t| t.trace_id.as_str())
        .collect();

    let infection = received
        .wait_for(
            "an agent_immune.infection log",
            Duration::from_secs(150),
            |r| {
                r.log_records()
                    .into_iter()
                    .find(|l| event_name(l) == "agent_immune.infection")
            },
        )
        .await;

    // The infection names the agent and carries the trace id of an
    // anomalous turn: a 5x jump is caught on the turn it happens.
    assert_eq!(
        attr_str(&infection, "gen_ai.agent.id"),
        Some(agent.as_str())
    );
    // Turns exported in one batch may be judged a few apart, so the
    // infection names one of the anomalous turns (never a healthy one, see
    // below), most often the first.
    assert!(
        anomalous.contains(&hex::encode(&infection.trace_id).as_str()),
        "infection trace {} is not an anomalous turn",
        hex::encode(&infection.trace_id)
    );
    assert_eq!(
        infection.span_id.len(),
        8,
        "root span id of the offending turn"
    );
    let Some(Value::ArrayValue(anomalies)) = attr(&infection, "agent_immune.anomalies") else {
        panic!("anomalies attribute missing: {infection:?}");
    };
    let names: Vec<&str> = anomalies
        .values
        .iter()
        .filter_map(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        expected.iter().any(|e| names.contains(e)),
        "expected one of {expected:?} in {names:?}"
    );
    match attr(&infection, "agent_immune.max_deviation") {
        Some(Value::DoubleValue(d)) => assert!(*d > 2.5, "max deviation {d}"),
        other => panic!("max_deviation should be a double, got {other:?}"),
    }

    // Every span the agent sent was forwarded downstream untouched:
    // 33 turns of invoke_agent + 2 chat calls + the tool calls.
    let tools_per_turn = |t: &common::AgentTurn| {
        if t.anomalous && anomaly == "tools" {
            10
        } else {
            2
        }
    };
    let expected_spans: usize = turns.iter().map(|t| 3 + tools_per_turn(t)).sum();
    received
        .wait_for("all spans forwarded", Duration::from_secs(150), |r| {
            (r.span_count() >= expected_spans).then_some(())
        })
        .await;
    assert_eq!(received.span_count(), expected_spans);

    // Every infection raised belongs to an anomalous turn.
    for record in received.log_records() {
        if event_name(&record) == "agent_immune.infection" {
            assert!(anomalous.contains(&hex::encode(&record.trace_id).as_str()));
        }
    }
    service.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_jump_over_grpc_raises_infection_with_the_turns_trace_id() {
    infection_after_jump("grpc", "tokens", &["input_token_spike", "token_spike"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_call_jump_over_http_raises_infection_with_the_turns_trace_id() {
    infection_after_jump("http/protobuf", "tools", &["tool_explosion"]).await;
}
