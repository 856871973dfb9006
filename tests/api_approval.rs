//! The approval flow over real HTTP against the real pipeline: an agent
//! reporting through the JSON ingest learns its normal, its tokens jump
//! 20x, it is quarantined and waits for approval with its diagnosis; the
//! operator approves, the healing action runs at the agent's control API
//! (held there until the test has seen HEALING), and healthy turns take it
//! through probation back to HEALTHY. Rejection, heal now and feedback too.

mod api_support;
mod common;

use api_support::{Harness, Options, eventually};
use serde_json::{Value, json};

fn transitions(agent: &Value) -> Vec<(String, String)> {
    agent["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(history: &[(String, String)], from: &str, to: &str) -> bool {
    history.iter().any(|(f, t)| f == from && t == to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_heals_through_probation_back_to_healthy() {
    let h = Harness::start(Options {
        control: Some(true),
        ..Options::default()
    })
    .await;
    let agent = "billing-agent";

    let approval = h.drive_to_approval(agent).await;
    // The queue shows what the operator decides on.
    assert_eq!(approval["state"], "QUARANTINED");
    assert!(approval["approval"]["pending"]["since"].as_u64().unwrap() > 0);
    assert!(
        approval["max_deviation"].as_f64().unwrap() >= 5.0,
        "{approval}"
    );
    let description = approval["infection"]["description"].as_str().unwrap();
    assert!(description.contains("token"), "{description}");
    let hypotheses = approval["hypotheses"].as_array().unwrap();
    assert!(!hypotheses.is_empty());
    assert!(hypotheses[0]["diagnosis"].as_str().is_some());
    assert!(!hypotheses[0]["reasoning"].as_str().unwrap().is_empty());
    assert!(!approval["reasoning"].as_str().unwrap().is_empty());
    let rejected = h.get("/api/v1/approvals?status=rejected").await.json();
    assert_eq!(rejected, json!([]));
    let stats = h.get("/api/v1/stats").await.json();
    assert_eq!(stats["pending_approvals"], 1);
    assert!(stats["infections"].as_u64().unwrap() >= 1);
    assert_eq!(stats["by_state"]["QUARANTINED"], 1);

    // Approve: HEALING, while the agent's control API holds the action.
    let reply = h
        .post(&format!("/api/v1/agents/{agent}/approve"), json!({}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["state"], "HEALING");
    let detail = h.agent(agent).await.unwrap();
    assert_eq!(detail["state"], "HEALING");
    assert!(has(&transitions(&detail), "QUARANTINED", "HEALING"));
    let events: Vec<String> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    for name in [
        "agent_immune.infection",
        "agent_immune.approval_requested",
        "agent_immune.approval_decided",
    ] {
        assert!(events.iter().any(|e| e == name), "{name} in {events:?}");
    }
    // Deciding twice is a conflict, not a second healing.
    let again = h
        .post(&format!("/api/v1/agents/{agent}/approve"), json!({}))
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(
        again.error().contains("no pending approval"),
        "{}",
        again.text
    );
    let pending = h.get("/api/v1/approvals?status=pending").await.json();
    assert_eq!(pending, json!([]));

    // The action finishes: probation, then healthy turns pass it.
    let control = h.control.clone().unwrap();
    control.release_healing();
    h.wait_state(agent, "PROBATION").await;
    h.heal_through_probation(agent).await;
    let detail = h.agent(agent).await.unwrap();
    let history = transitions(&detail);
    assert!(has(&history, "HEALING", "PROBATION"), "{history:?}");
    assert!(has(&history, "PROBATION", "HEALTHY"), "{history:?}");
    assert!(
        control
            .calls()
            .iter()
            .any(|c| !matches!(c.as_str(), "drain" | "quarantine" | "release")),
        "a healing action reached the agent: {:?}",
        control.calls()
    );

    // Healing statistics are fleet-wide: shards share them on their tick.
    let stats = eventually("the healing in the fleet statistics", || async {
        let stats = h.get("/api/v1/stats").await.json();
        (stats["healings_succeeded"].as_u64().unwrap() >= 1).then_some(stats)
    })
    .await;
    assert_eq!(stats["by_state"]["HEALTHY"], 1);
    assert!(stats["healing_success_rate"].as_f64().unwrap() > 0.0);
    assert!(!stats["healing"].as_array().unwrap().is_empty());
    let metrics = h.get("/metrics").await.text;
    assert!(
        metrics.contains("agent_immune_agents{state=\"HEALTHY\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("agent_immune_infections 1\n"), "{metrics}");

    // The timeline, filtered by agent and time.
    let all = h
        .get(&format!("/api/v1/events?agent={agent}&limit=1000"))
        .await
        .json();
    let all = all.as_array().unwrap();
    assert!(all.iter().all(|e| e["agent_id"] == agent));
    let times: Vec<u64> = all.iter().map(|e| e["time"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let infection = all
        .iter()
        .find(|e| e["name"] == "agent_immune.infection")
        .unwrap();
    assert_eq!(infection["trace_id"].as_str().unwrap().len(), 32);
    let since = infection["time"].as_u64().unwrap();
    let later = h
        .get(&format!(
            "/api/v1/events?agent={agent}&since={since}&limit=2"
        ))
        .await
        .json();
    let later = later.as_array().unwrap();
    assert_eq!(later.len(), 2, "the newest two");
    assert!(later.iter().all(|e| e["time"].as_u64().unwrap() > since));
    assert_eq!(later[1]["id"], all.last().unwrap()["id"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_then_heal_now_and_feedback() {
    let h = Harness::start(Options::default()).await;
    let agent = "support-agent";
    h.drive_to_approval(agent).await;

    // Feedback on the diagnosis, in every accepted form of the cause.
    let reply = h
        .post(
            "/api/v1/feedback",
            json!({"agent": agent, "actual_cause": "correct", "notes": "prompt was injected"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let feedback = reply.json();
    assert_eq!(feedback["agent"], agent);
    assert_eq!(feedback["actual_cause"], "correct");
    assert!(feedback["diagnosis"].as_str().is_some());

    let reply = h
        .post(&format!("/api/v1/agents/{agent}/reject"), json!({}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["state"], "EXHAUSTED");
    let rejected = h.get("/api/v1/approvals?status=rejected").await.json();
    assert_eq!(rejected[0]["agent_id"], agent);
    assert!(rejected[0]["approval"]["rejected"]["at"].as_u64().is_some());
    assert_eq!(
        h.get("/api/v1/approvals")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "without status: pending and rejected"
    );
    // Rejected: approving is a conflict; healing now is the way out.
    let reply = h
        .post(&format!("/api/v1/agents/{agent}/approve"), json!({}))
        .await;
    assert_eq!(reply.status, 409);
    let reply = h
        .post(&format!("/api/v1/agents/{agent}/heal"), json!({}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["state"], "HEALING");
    h.wait_state(agent, "PROBATION").await;
    h.heal_through_probation(agent).await;
    // Healthy: nothing to heal (409), and the baseline can be reset.
    let reply = h
        .post(&format!("/api/v1/agents/{agent}/heal"), json!({}))
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    let reply = h
        .post(&format!("/api/v1/agents/{agent}/reset-baseline"), json!({}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    eventually("the baseline to be forgotten", || async {
        let a = h.agent(agent).await.unwrap();
        (a["state"] == "INITIALIZING" || a["baseline"]["turns"] == 0).then_some(())
    })
    .await;
    h.stop().await;
}
