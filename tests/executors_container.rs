//! The container target running a CLI for real. docker and kubectl cannot
//! run in the test environment, so the CLI boundary is mocked: the test
//! links tests/fixtures/bin/fake-container-cli as `docker` and `kubectl` in
//! a temporary directory put first on the CLI's PATH (through the target's
//! `env`, so the test process's own environment is left alone). The script
//! records its arguments and exits with the code the test chooses.

use agent_immune::executors::{ActionOutcome, ActionRequest, Executors};
use agent_immune::immune::action::Action;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FAKE_CLI: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/bin/fake-container-cli"
);

/// A directory holding `docker` and `kubectl` stand-ins and their call log.
struct FakeCli {
    dir: tempfile::TempDir,
}

impl FakeCli {
    fn new() -> FakeCli {
        let dir = tempfile::tempdir().unwrap();
        for name in ["docker", "kubectl"] {
            std::os::unix::fs::symlink(FAKE_CLI, dir.path().join(name)).unwrap();
        }
        FakeCli { dir }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// Each call as "<cli> <args>".
    fn calls(&self) -> Vec<String> {
        match std::fs::read_to_string(self.log()) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The `env` table for a target using this CLI, plus `extra`.
    fn env(&self, extra: &str) -> String {
        format!(
            r#"env = {{ PATH = "{}:/usr/bin:/bin", FAKE_CLI_LOG = "{}"{extra} }}"#,
            self.dir.path().display(),
            self.log().display()
        )
    }
}

fn executors(toml: &str) -> Executors {
    Executors::from_config(&toml::from_str(toml).unwrap()).unwrap()
}

async fn act(executors: &Executors, agent: &str, action: Action) -> ActionOutcome {
    executors.execute(&ActionRequest::new(agent, action)).await
}

#[tokio::test]
async fn docker_pause_unpause_restart() {
    let cli = FakeCli::new();
    let executors = executors(&format!("[container]\n{}", cli.env("")));
    let paused = act(&executors, "agent-7", Action::Quarantine).await;
    assert!(paused.success, "{paused:?}");
    assert_eq!(paused.message, "`docker pause agent-7`: ok");
    assert_eq!(paused.target, "container");
    assert!(act(&executors, "agent-7", Action::Release).await.success);
    assert!(act(&executors, "agent-7", Action::ResetAgent).await.success);
    assert_eq!(
        cli.calls(),
        [
            "docker pause agent-7",
            "docker unpause agent-7",
            "docker restart agent-7"
        ]
    );
}

#[tokio::test]
async fn kubectl_scale_and_rollout_restart_with_configured_arguments() {
    let cli = FakeCli::new();
    let executors = executors(&format!(
        r#"["container/k8s"]
           runtime = "kubectl"
           target = "{{k8s.deployment.name}}"
           namespace = "agents"
           replicas = 2
           args = ["--context", "prod"]
           {}"#,
        cli.env("")
    ));
    let mut request = ActionRequest::new("billing-agent", Action::Quarantine);
    request.resource = BTreeMap::from([("k8s.deployment.name".to_string(), "billing".to_string())]);
    let outcome = executors.execute(&request).await;
    assert!(outcome.success, "{outcome:?}");
    // The configured args are run but never quoted (they may hold credentials).
    assert_eq!(
        outcome.message,
        "`kubectl scale deployment/billing --replicas=0 -n agents`: ok"
    );
    request.action = Action::Release;
    assert!(executors.execute(&request).await.success);
    request.action = Action::ResetAgent;
    assert!(executors.execute(&request).await.success);
    assert_eq!(
        cli.calls(),
        [
            "kubectl --context prod scale deployment/billing --replicas=0 -n agents",
            "kubectl --context prod scale deployment/billing --replicas=2 -n agents",
            "kubectl --context prod rollout restart deployment/billing -n agents",
        ]
    );
}

#[tokio::test]
async fn a_non_zero_exit_fails_with_the_clis_stderr() {
    let cli = FakeCli::new();
    let executors = executors(&format!(
        "[container]\n{}",
        cli.env(
            r#", FAKE_CLI_EXIT = "1", FAKE_CLI_STDERR = "Error response from daemon: No such container: agent-7""#
        )
    ));
    let outcome = act(&executors, "agent-7", Action::Quarantine).await;
    assert!(!outcome.success);
    assert_eq!(
        outcome.message,
        "`docker pause agent-7` exited with status 1: Error response from daemon: No such container: agent-7"
    );
    assert_eq!(cli.calls(), ["docker pause agent-7"]);
}

#[tokio::test]
async fn a_missing_cli_fails_clearly() {
    let empty = tempfile::tempdir().unwrap();
    let executors = executors(&format!(
        "[container]\nenv = {{ PATH = \"{}\" }}",
        empty.path().display()
    ));
    let outcome = act(&executors, "agent-7", Action::Quarantine).await;
    assert!(!outcome.success);
    assert_eq!(
        outcome.message,
        "container CLI \"docker\" not found (install it, put it on PATH, or set cli)"
    );
}

#[tokio::test]
async fn a_hanging_cli_is_cut_off_by_the_timeout() {
    let cli = FakeCli::new();
    let executors = executors(&format!(
        "[container]\ntimeout = \"300ms\"\n{}",
        cli.env(r#", FAKE_CLI_HANG = "1""#)
    ));
    let started = Instant::now();
    let outcome = act(&executors, "agent-7", Action::ResetAgent).await;
    assert!(!outcome.success);
    assert!(outcome.timed_out);
    assert_eq!(
        outcome.message,
        "reset_agent timed out after 300ms (target container did not answer in time)"
    );
    // Timed out rather than failed at once: the CLI ran and hung.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn drain_and_unsupported_actions_run_nothing() {
    let cli = FakeCli::new();
    let executors = executors(&format!("[container]\n{}", cli.env("")));
    let drain = act(&executors, "agent-7", Action::Drain).await;
    assert!(drain.success, "{drain:?}");
    assert!(drain.message.starts_with("drain not enforced by docker"));
    let memory = act(&executors, "agent-7", Action::ResetMemory).await;
    assert!(!memory.success);
    assert!(
        memory
            .message
            .starts_with("container target cannot reset memory")
    );
    let injected = act(&executors, "--host=tcp://elsewhere", Action::Quarantine).await;
    assert!(!injected.success);
    assert!(
        injected
            .message
            .contains("is not a plain container or deployment name")
    );
    assert!(cli.calls().is_empty());
}
