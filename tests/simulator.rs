//! The simulator against the real pipeline: agent-immune receives the
//! simulated fleet's OTLP, and enforces through the simulator's own HTTP
//! control API (`[executors.http_control]`), so quarantine really stops an
//! agent's traffic and healing really ends its infection. Events are read
//! at a real downstream OTLP receiver.

mod common;

use agent_immune::config::document::Config;
use agent_immune::pipeline::service::Service;
use agent_immune::simulator::{Simulator, SimulatorOptions};
use common::pipeline::TestPipeline;
use common::{Received, attr, attr_str, event_name, free_port};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::net::SocketAddr;
use std::time::Duration;

/// Two shards, events downstream, enforcement through the simulator's
/// control API.
fn pipeline(downstream: SocketAddr, control_port: u16) -> Config {
    TestPipeline::events_to(downstream)
        .table(format!(
            "[executors.http_control]\nbase_url = \"http://127.0.0.1:{control_port}\"\ntimeout = \"5s\""
        ))
        .table("[service]\nshards = 2")
        .config("simulator test")
}

struct Run {
    service: Service,
    simulator: Simulator,
    received: std::sync::Arc<Received>,
}

async fn start(agents: usize, rate: f64, duration: Duration, inject: &[&str]) -> Run {
    let (downstream, received) = common::downstream_collector().await;
    let control_port = free_port();
    let service = Service::start(pipeline(downstream, control_port))
        .await
        .expect("start agent-immune");
    let options = SimulatorOptions {
        endpoint: format!("http://{}", service.otlp_grpc_addr().expect("grpc bound")),
        agents,
        rate,
        duration,
        injections: inject.iter().map(|s| s.parse().unwrap()).collect(),
        control: Some(SocketAddr::from(([127, 0, 0, 1], control_port))),
        seed: 7,
        ..SimulatorOptions::default()
    };
    let simulator = Simulator::start(options).await.expect("start simulator");
    Run {
        service,
        simulator,
        received,
    }
}

fn of_agent<'a>(records: &'a [LogRecord], name: &str, agent: &str) -> Vec<&'a LogRecord> {
    records
        .iter()
        .filter(|l| event_name(l) == name && attr_str(l, "gen_ai.agent.id") == Some(agent))
        .collect()
}

/// What happened to these agents, in order, for failure messages.
/// The agents' events, each with its time in seconds since the first.
fn history(records: &[LogRecord], agents: &[&str]) -> Vec<String> {
    let start = records.iter().map(|l| l.time_unix_nano).min().unwrap_or(0);
    records
        .iter()
        .filter(|l| attr_str(l, "gen_ai.agent.id").is_some_and(|a| agents.contains(&a)))
        .map(|l| {
            let at = l.time_unix_nano.saturating_sub(start) as f64 / 1e9;
            match l.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(Value::StringValue(s)) => format!("{at:6.2}s {}: {s}", event_name(l)),
                _ => format!("{at:6.2}s {}", event_name(l)),
            }
        })
        .collect()
}

fn str_list(record: &LogRecord, key: &str) -> Vec<String> {
    match attr(record, key) {
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_caught_and_healed_while_gradual_drift_is_learned() {
    // 8 agents at 5 turns/s each: baselines are ready after ~3 s.
    let mut run = start(
        8,
        40.0,
        Duration::from_secs(45),
        &["infinite_loop@1:8s", "gradual_drift@2:6s+30s"],
    )
    .await;
    let ids = run.simulator.agent_ids();
    let (looping, drifting) = (ids[1].clone(), ids[2].clone());

    let infection = run
        .received
        .wait_for(
            "the looping agent's infection",
            Duration::from_secs(60),
            |r| {
                of_agent(&r.log_records(), "agent_immune.infection", &looping)
                    .first()
                    .map(|l| (*l).clone())
            },
        )
        .await;
    let anomalies = str_list(&infection, "agent_immune.anomalies");
    assert!(
        anomalies.contains(&"tool_explosion".to_string()),
        "{anomalies:?}"
    );
    let diagnosis = run
        .received
        .wait_for("its diagnosis", Duration::from_secs(30), |r| {
            of_agent(&r.log_records(), "agent_immune.diagnosis", &looping)
                .first()
                .map(|l| (*l).clone())
        })
        .await;
    assert_eq!(
        attr_str(&diagnosis, "agent_immune.diagnosis"),
        Some("infinite_loop")
    );

    // A loop this far out asks an operator before healing (approval_sigma
    // 5 by default): the test is the operator and approves.
    let next = run
        .received
        .wait_for(
            "an approval request or a healing action",
            Duration::from_secs(60),
            |r| {
                let records = r.log_records();
                [
                    "agent_immune.approval_requested",
                    "agent_immune.healing_action",
                ]
                .into_iter()
                .find(|name| !of_agent(&records, name, &looping).is_empty())
            },
        )
        .await;
    if next == "agent_immune.approval_requested" {
        let fleet = run.service.fleet.as_ref().expect("detection runs");
        fleet.approve(&looping).await.expect("approve healing");
    }
    let healed = run
        .received
        .wait_for(
            "a successful healing result",
            Duration::from_secs(60),
            |r| {
                of_agent(&r.log_records(), "agent_immune.healing_result", &looping)
                    .into_iter()
                    .find(|l| attr(l, "agent_immune.ok") == Some(&Value::BoolValue(true)))
                    .cloned()
            },
        )
        .await;
    let action = attr_str(&healed, "agent_immune.action")
        .unwrap()
        .to_string();

    // The agent was quarantined (its traffic stopped), healed through the
    // control API, released, and passed probation on fresh turns.
    run.received
        .wait_for("probation passed", Duration::from_secs(60), |r| {
            of_agent(&r.log_records(), "agent_immune.probation", &looping)
                .iter()
                .any(|l| attr_str(l, "agent_immune.result") == Some("passed"))
                .then_some(())
        })
        .await;
    let status = run.simulator.status(&looping).unwrap();
    assert_eq!(status.cured, vec!["infinite_loop"]);
    assert_eq!(status.state, "running");
    assert_eq!(
        status.heals.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        vec![action.as_str()]
    );
    let calls: Vec<&str> = run
        .simulator
        .control_log()
        .iter()
        .filter(|c| c.agent_id == looping)
        .map(|c| c.action.as_str())
        .collect();
    assert_eq!(calls, ["drain", "quarantine", action.as_str(), "release"]);

    // The drift ran its whole ramp (input tokens and latency doubled) and
    // was learned: no infection, no enforcement.
    let report = run.simulator.finished().await;
    assert_eq!(report.failed_requests, 0, "{report:?}");
    run.service.shutdown(Duration::from_secs(10)).await;
    let records = run.received.log_records();
    let drift_events = history(&records, &[drifting.as_str()]);
    assert!(
        of_agent(&records, "agent_immune.infection", &drifting).is_empty(),
        "gradual drift raised: {drift_events:#?}"
    );
    assert!(run.simulator.status(&drifting).unwrap().heals.is_empty());
    assert!(
        run.simulator.status(&drifting).unwrap().turns > 150,
        "the drift agent lived through its ramp"
    );
    run.simulator.shutdown(Duration::from_secs(5)).await;
}

/// A provider outage over half the fleet, run to its end.
async fn outage_run() -> (Simulator, Vec<LogRecord>) {
    let mut run = start(
        10,
        50.0,
        Duration::from_secs(25),
        &["provider_outage@50%:8s"],
    )
    .await;
    let alert = run
        .received
        .wait_for("a fleet-wide correlation", Duration::from_secs(60), |r| {
            r.log_records().into_iter().find(|l| {
                event_name(l) == "agent_immune.correlation"
                    && attr_str(l, "agent_immune.scope") == Some("fleet_wide")
            })
        })
        .await;
    let agent = attr_str(&alert, "gen_ai.agent.id").unwrap().to_string();
    let status = run.simulator.status(&agent).unwrap();
    assert_eq!(status.infections, vec!["provider_outage"]);
    run.simulator.finished().await;
    run.service.shutdown(Duration::from_secs(10)).await;
    (run.simulator, run.received.log_records())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_is_alerted_fleet_wide_and_alerted_agents_stay_unquarantined() {
    let (simulator, records) = outage_run().await;
    // Every agent judged fleet-wide is left alone from then on: the alert
    // is the response, not a quarantine.
    let mut alerted: Vec<&str> = Vec::new();
    for l in &records {
        let agent = attr_str(l, "gen_ai.agent.id").unwrap_or("");
        match event_name(l) {
            "agent_immune.correlation"
                if attr_str(l, "agent_immune.scope") == Some("fleet_wide") =>
            {
                alerted.push(agent);
            }
            "agent_immune.quarantine" => assert!(
                !alerted.contains(&agent),
                "{agent} was quarantined after a fleet-wide verdict: {:#?}",
                history(&records, &[agent])
            ),
            _ => {}
        }
    }
    assert!(!alerted.is_empty());
    simulator.shutdown(Duration::from_secs(5)).await;
}

/// The whole requirement: no agent of the outage is quarantined. The
/// first agents' sustained view turns anomalous before their peers' slow
/// turns have ended; the correlation hold and the shards' fleet exchanges
/// give the peers time to show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_quarantines_no_agent() {
    let (simulator, records) = outage_run().await;
    let quarantined: Vec<&str> = records
        .iter()
        .filter(|l| event_name(l) == "agent_immune.quarantine")
        .filter_map(|l| attr_str(l, "gen_ai.agent.id"))
        .collect();
    let agents = simulator.agent_ids();
    let everyone: Vec<&str> = agents.iter().map(String::as_str).collect();
    assert!(
        quarantined.is_empty(),
        "quarantined: {quarantined:?}; the fleet's events: {:#?}",
        history(&records, &everyone)
    );
    simulator.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_names_what_is_wrong_with_a_call() {
    let (downstream, received) = common::downstream_collector().await;
    let simulator = Simulator::start(SimulatorOptions {
        endpoint: format!("http://{downstream}"),
        agents: 3,
        rate: 30.0,
        duration: Duration::from_secs(30),
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", simulator.control_addr.unwrap());
    let client = reqwest::Client::new();
    let post = |path: &str, body: &str| {
        client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let id = simulator.agent_ids()[0].clone();

    let unknown_action = post("/control/explode", &format!(r#"{{"agent_id":"{id}"}}"#))
        .await
        .unwrap();
    assert_eq!(unknown_action.status(), 404);
    assert!(
        unknown_action
            .text()
            .await
            .unwrap()
            .contains("reset-memory")
    );
    let bad_json = post("/control/quarantine", "{").await.unwrap();
    assert_eq!(bad_json.status(), 400);
    assert!(bad_json.text().await.unwrap().contains("agent_id"));
    let unknown_agent = post("/control/quarantine", r#"{"agent_id":"nobody"}"#)
        .await
        .unwrap();
    assert_eq!(unknown_agent.status(), 404);
    assert!(unknown_agent.text().await.unwrap().contains("nobody"));
    let too_large = post("/control/quarantine", &"x".repeat(100_000))
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert!(simulator.control_log().is_empty(), "nothing was applied");

    // A well-formed call with agent-immune's whole body is applied.
    let body = format!(
        r#"{{"agent_id":"{id}","action":"quarantine","diagnosis":null,"reason":"r","event_id":"e","parameters":{{}}}}"#
    );
    let ok = post("/control/quarantine", &body).await.unwrap();
    assert_eq!(ok.status(), 200);
    let answer: serde_json::Value = serde_json::from_str(&ok.text().await.unwrap()).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(simulator.status(&id).unwrap().state, "quarantined");
    let agents = client
        .get(format!("{base}/agents"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let agents: serde_json::Value = serde_json::from_str(&agents).unwrap();
    assert_eq!(agents.as_array().unwrap().len(), 3);

    // The fleet's traffic reaches the endpoint, and the paused agent is
    // skipped.
    received
        .wait_for("simulated spans", Duration::from_secs(30), |r| {
            (r.span_count() > 0).then_some(())
        })
        .await;
    let report = simulator.shutdown(Duration::from_secs(5)).await;
    assert!(
        report.turns > 0 && report.failed_requests == 0,
        "{report:?}"
    );
}
