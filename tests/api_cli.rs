//! The operator CLI (the real binary) against the real API: tables of
//! agents and approvals, the approval flow (approve, reject, heal now,
//! feedback), and clear failures with non-zero exits: API unreachable,
//! missing or wrong key (401), unknown agent (404), wrong state (409).

mod api_support;
mod common;

use api_support::{Harness, KEY, Options, WRONG_KEY};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn cli(api: &str, key: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-immune"));
    command.args(args).args(["--api", api]);
    command.env_remove("AGENT_IMMUNE_API_KEY");
    command.env_remove("AGENT_IMMUNE_API");
    if let Some(key) = key {
        command.env("AGENT_IMMUNE_API_KEY", key);
    }
    let out = command.output().await.expect("run agent-immune");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_flow_from_the_cli() {
    let h = Harness::start(Options {
        control: Some(true),
        ..Options::default()
    })
    .await;
    let api = h.base.clone();
    let run = cli(&api, None, &["agents"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "no agents monitored yet\n");
    let run = cli(&api, None, &["approvals"]).await;
    assert_eq!(run.stdout, "no approvals waiting\n");

    let agent = "billing-agent";
    let approval = h.drive_to_approval(agent).await;
    let run = cli(&api, None, &["agents"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let header = run.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("AGENT") && header.contains("STATE") && header.contains("DEVIATION")
    );
    let row = run.stdout.lines().nth(1).unwrap();
    assert!(
        row.starts_with(agent) && row.contains("QUARANTINED"),
        "{row}"
    );
    assert!(row.contains('σ'), "{row}");

    let run = cli(&api, None, &["approvals", "--status", "pending"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lead = approval["hypotheses"][0]["diagnosis"].as_str().unwrap();
    assert!(
        run.stdout.contains(agent) && run.stdout.contains("pending"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(lead), "{}", run.stdout);
    assert!(
        run.stdout.contains(approval["reasoning"].as_str().unwrap()),
        "{}",
        run.stdout
    );

    // Deciding needs the key.
    let run = cli(&api, None, &["approve", agent]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("401") && run.stderr.contains("AGENT_IMMUNE_API_KEY"),
        "{}",
        run.stderr
    );
    let run = cli(&api, Some(WRONG_KEY), &["approve", agent]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("invalid API key"), "{}", run.stderr);
    assert!(!run.stderr.contains(WRONG_KEY), "the key is never echoed");
    let run = cli(&api, Some(KEY), &["approve", "nobody"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("\"nobody\" is not monitored (404)"),
        "{}",
        run.stderr
    );

    let run = cli(&api, Some(KEY), &["approve", agent]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, format!("approved: agent {agent} is HEALING\n"));
    let run = cli(&api, Some(KEY), &["approve", agent]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no pending approval") && run.stderr.contains("(409)"),
        "{}",
        run.stderr
    );

    h.control.as_ref().unwrap().release_healing();
    h.wait_state(agent, "PROBATION").await;
    h.heal_through_probation(agent).await;
    let run = cli(&api, None, &["agents"]).await;
    assert!(
        run.stdout.lines().nth(1).unwrap().contains("HEALTHY"),
        "{}",
        run.stdout
    );

    let run = cli(
        &api,
        Some(KEY),
        &[
            "feedback",
            agent,
            "correct",
            "--notes",
            "confirmed by the on-call",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with(&format!("feedback recorded: agent {agent}, diagnosis ")),
        "{}",
        run.stdout
    );
    let run = cli(&api, Some(KEY), &["feedback", agent, "bad_luck"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("actual_cause: must be"),
        "{}",
        run.stderr
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_heal_now_from_the_cli() {
    let h = Harness::start(Options::default()).await;
    let api = h.base.clone();
    let agent = "support-agent";
    h.drive_to_approval(agent).await;
    let run = cli(&api, Some(KEY), &["reject", agent]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("rejected: agent {agent} is EXHAUSTED\n")
    );
    let run = cli(&api, None, &["approvals", "--status", "rejected"]).await;
    assert!(
        run.stdout.contains(agent) && run.stdout.contains("rejected"),
        "{}",
        run.stdout
    );
    let run = cli(&api, Some(KEY), &["heal", agent]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with(&format!("healing: agent {agent} is ")),
        "{}",
        run.stdout
    );
    h.stop().await;
}

#[tokio::test]
async fn unreachable_api_and_bad_urls() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let run = cli(&format!("http://127.0.0.1:{port}"), None, &["agents"]).await;
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("cannot reach the agent-immune API"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.to_lowercase().contains("connection refused"),
        "{}",
        run.stderr
    );
    let run = cli("localhost:8090", None, &["agents"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("not an http:// or https:// URL"),
        "{}",
        run.stderr
    );
}
