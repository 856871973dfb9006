//! Enforcement for real: an agent process (a Python script using the
//! OpenTelemetry SDK) sends OTLP spans, goes anomalous, is SIGSTOPped by
//! agent-immune (process target), healed through its HTTP control API
//! (served by its supervisor process, which still answers while the agent
//! is stopped), and resumed (SIGCONT) into probation and back to healthy.
//! agent-immune learns the agent's pid from its spans: the SDK's process
//! and host resource detectors put `process.pid` and `host.name` on them,
//! and the process target is configured with `resource_pids` only.

mod common;

use agent_immune::pipeline::service::Service;
use common::pipeline::TestPipeline;
use common::{attr, attr_str, event_name, poll_until};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a state only the OS shows (another process stopped, a file it
/// writes) may take to appear.
const LIMIT: Duration = Duration::from_secs(30);

/// The state letter of a process from /proc/<pid>/stat ('T' = stopped).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may contain spaces.
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

#[derive(serde::Deserialize)]
struct Started {
    pid: u32,
    control_port: u16,
}

/// Kills the agent's supervisor (a separate process serving the control
/// API) however the test ends, so no process outlives it.
struct Supervisor(std::path::PathBuf);

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("control.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalous_agent_is_stopped_healed_over_http_and_resumed() {
    let workdir = tempfile::tempdir().unwrap();
    let dir = workdir.path();
    let _supervisor = Supervisor(dir.to_path_buf());
    // Healing calls wait while this file exists, so the stopped agent can
    // be looked at.
    std::fs::write(dir.join("hold"), b"").unwrap();
    let mut agent = tokio::process::Command::new(common::python())
        .arg(common::python_script("controlled_agent.py"))
        .arg(dir)
        .arg("25")
        .env("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "otel,process,host")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent");
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("agent did not start")
        .unwrap()
        .expect("agent exited");
    let started: Started = serde_json::from_str(&first).unwrap();

    let (downstream, received) = common::downstream_collector().await;
    let executors = format!(
        r#"
[executors.process]
resource_pids = true
grace_period = "1s"
timeout = "5s"
[executors.http_control]
base_url = "http://127.0.0.1:{port}"
timeout = "20s"
[executors.composite]
targets = ["process", "http_control"]
[executors.routing]
default = "composite"
"#,
        port = started.control_port
    );
    let config = TestPipeline::events_to(downstream)
        .without_approval()
        .console()
        .table(executors)
        .config("enforcement_e2e");
    let service = Service::start(config).await.expect("start agent-immune");
    let endpoint = format!("http://{}", service.otlp_grpc_addr().unwrap());
    std::fs::write(dir.join("endpoint"), endpoint).unwrap();

    // Anomalous after 25 turns: quarantined by SIGSTOP.
    let quarantine = received
        .wait_for("the quarantine event", Duration::from_secs(60), |r| {
            r.log_records()
                .into_iter()
                .find(|l| event_name(l) == "agent_immune.quarantine")
        })
        .await;
    assert_eq!(
        attr(&quarantine, "agent_immune.ok"),
        Some(&Value::BoolValue(true)),
        "{quarantine:?}"
    );
    poll_until("the agent to be stopped", LIMIT, async || {
        (process_state(started.pid) == Some('T')).then_some(())
    })
    .await;

    // While it is stopped, its supervisor receives the healing call.
    let control_log = dir.join("control.log");
    poll_until("a healing call at the control API", LIMIT, async || {
        std::fs::read_to_string(&control_log)
            .is_ok_and(|log| {
                log.contains("reset-memory")
                    || log.contains("reduce-autonomy")
                    || log.contains("revoke-tools")
                    || log.contains("rollback-prompt")
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        process_state(started.pid),
        Some('T'),
        "agent must stay stopped while it is healed"
    );
    let turns_while_stopped = std::fs::read_to_string(dir.join("turns")).unwrap();

    // Let the healing call answer: healed, released (SIGCONT), probation,
    // healthy.
    std::fs::remove_file(dir.join("hold")).unwrap();
    received
        .wait_for("PROBATION -> HEALTHY", Duration::from_secs(60), |r| {
            r.log_records()
                .iter()
                .any(|l| {
                    event_name(l) == "agent_immune.lifecycle"
                        && attr_str(l, "agent_immune.from") == Some("PROBATION")
                        && attr_str(l, "agent_immune.to") == Some("HEALTHY")
                })
                .then_some(())
        })
        .await;
    assert_ne!(process_state(started.pid), Some('T'), "agent resumed");
    let turns_after = std::fs::read_to_string(dir.join("turns")).unwrap();
    assert!(
        turns_after.trim().parse::<u64>().unwrap()
            > turns_while_stopped.trim().parse::<u64>().unwrap()
    );

    // What the control API received: the healing action with the agent's
    // id and the diagnosis it is meant to heal.
    let log = std::fs::read_to_string(&control_log).unwrap();
    let call: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(call["body"]["agent_id"], "ops-agent");
    assert!(call["body"]["diagnosis"].is_string(), "{call}");
    let names: Vec<String> = received
        .log_records()
        .iter()
        .map(|l| event_name(l).to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "agent_immune.release"),
        "{names:?}"
    );

    std::fs::write(dir.join("stop"), b"").unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), agent.wait()).await;
    assert!(status.is_ok(), "agent did not stop");
    service.shutdown(Duration::from_secs(5)).await;
    assert!(Path::new(&control_log).exists());
}
