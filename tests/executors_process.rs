//! The process target against real child processes: stopped and resumed
//! (state read from /proc), terminated with SIGTERM, SIGKILLed when SIGTERM
//! is ignored, and refusals for a gone pid and pid 1.
//!
//! These tests run as root here, so "another user's process" cannot be set
//! up for real; that rule is unit-tested on a fake /proc status in
//! `executors::process::proc_status`.

use agent_immune::executors::process::ProcessTarget;
use agent_immune::executors::process::config::ProcessConfig;
use agent_immune::executors::{ActionOutcome, ActionRequest, Executors, run_with_timeout};
use agent_immune::immune::action::Action;
use rustix::process::{Pid, WaitOptions, WaitStatus};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed and reaped however the test ends.
struct Agent(Child);

impl Agent {
    fn sleeping() -> Agent {
        Agent(Command::new("sleep").arg("600").spawn().unwrap())
    }

    /// A process that ignores SIGTERM; returns once the trap is in place.
    fn ignoring_sigterm() -> Agent {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 600"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        Agent(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// One-letter state from /proc/<pid>/stat (the field after the name).
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.chars().next().unwrap()
    }

    /// Waits (without reaping) until the child stops or continues.
    async fn wait_for(&self, options: WaitOptions) -> WaitStatus {
        let pid = Pid::from_raw(self.pid() as i32).unwrap();
        let wait =
            tokio::task::spawn_blocking(move || rustix::process::waitpid(Some(pid), options));
        let (_, status) = tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("child did not change state in 10s")
            .unwrap()
            .unwrap()
            .unwrap();
        status
    }

    /// Reaps the child; the signal that ended it.
    fn exit_signal(&mut self) -> Option<i32> {
        self.0.wait().unwrap().signal()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn target(pids: &[(&str, u32)], grace: Duration) -> ProcessTarget {
    let config = ProcessConfig {
        pids: pids.iter().map(|(a, p)| (a.to_string(), *p)).collect(),
        grace_period: grace,
        ..Default::default()
    };
    assert!(config.validate().is_empty());
    ProcessTarget::new("process", &config)
}

async fn act(target: &ProcessTarget, agent: &str, action: Action) -> ActionOutcome {
    run_with_timeout(target, &ActionRequest::new(agent, action)).await
}

#[tokio::test]
async fn quarantine_stops_and_release_resumes_a_real_process() {
    let agent = Agent::sleeping();
    let target = target(&[("billing", agent.pid())], Duration::from_secs(5));

    let stopped = act(&target, "billing", Action::Quarantine).await;
    assert!(stopped.success, "{stopped:?}");
    assert_eq!(
        stopped.message,
        format!("sent SIGSTOP to pid {} (registered)", agent.pid())
    );
    assert!(agent.wait_for(WaitOptions::UNTRACED).await.stopped());
    assert_eq!(agent.state(), 'T');

    let resumed = act(&target, "billing", Action::Release).await;
    assert!(resumed.success, "{resumed:?}");
    assert!(agent.wait_for(WaitOptions::CONTINUED).await.continued());
    assert_ne!(agent.state(), 'T');
}

#[tokio::test]
async fn drain_is_a_no_op_that_says_so() {
    let agent = Agent::sleeping();
    let target = target(&[("billing", agent.pid())], Duration::from_secs(5));
    let outcome = act(&target, "billing", Action::Drain).await;
    assert!(outcome.success, "{outcome:?}");
    assert!(
        outcome.message.contains("drain not enforced"),
        "{}",
        outcome.message
    );
    assert_ne!(agent.state(), 'T');
}

#[tokio::test]
async fn reset_agent_terminates_with_sigterm() {
    let mut agent = Agent::sleeping();
    let target = target(&[("billing", agent.pid())], Duration::from_secs(5));
    let outcome = act(&target, "billing", Action::ResetAgent).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(
        outcome.message,
        format!("pid {} (registered) exited after SIGTERM", agent.pid())
    );
    assert_eq!(agent.exit_signal(), Some(libc_sig::TERM));
}

#[tokio::test]
async fn reset_agent_terminates_a_quarantined_process() {
    let mut agent = Agent::sleeping();
    let target = target(&[("billing", agent.pid())], Duration::from_secs(5));
    assert!(act(&target, "billing", Action::Quarantine).await.success);
    assert!(agent.wait_for(WaitOptions::UNTRACED).await.stopped());
    // A stopped process only acts on SIGTERM once continued.
    let outcome = act(&target, "billing", Action::ResetAgent).await;
    assert!(outcome.success, "{outcome:?}");
    assert!(
        outcome.message.ends_with("exited after SIGTERM"),
        "{}",
        outcome.message
    );
    assert_eq!(agent.exit_signal(), Some(libc_sig::TERM));
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_the_grace_period() {
    let mut agent = Agent::ignoring_sigterm();
    let grace = Duration::from_millis(300);
    let target = target(&[("stubborn", agent.pid())], grace);
    let started = Instant::now();
    let outcome = act(&target, "stubborn", Action::ResetAgent).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(
        outcome.message,
        format!(
            "pid {} (registered) ignored SIGTERM for 300ms; SIGKILLed",
            agent.pid()
        )
    );
    assert!(started.elapsed() >= grace);
    assert_eq!(agent.exit_signal(), Some(libc_sig::KILL));
}

#[tokio::test]
async fn a_gone_pid_is_refused() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let target = target(&[("gone", pid)], Duration::from_secs(5));
    let outcome = act(&target, "gone", Action::Quarantine).await;
    assert!(!outcome.success);
    assert_eq!(
        outcome.message,
        format!("pid {pid} is gone (no such process)")
    );
}

#[tokio::test]
async fn pid_1_is_refused_even_from_resource_attributes() {
    let config = ProcessConfig {
        resource_pids: true,
        host_name: Some("agents-host".into()),
        ..Default::default()
    };
    let target = ProcessTarget::new("process", &config);
    let mut request = ActionRequest::new("claims-init", Action::Quarantine);
    request.resource = BTreeMap::from([
        ("process.pid".to_string(), "1".to_string()),
        ("host.name".to_string(), "agents-host".to_string()),
    ]);
    let outcome = run_with_timeout(&target, &request).await;
    assert!(!outcome.success);
    assert_eq!(
        outcome.message,
        "refusing to signal pid 1 (init or a process group)"
    );
}

#[tokio::test]
async fn the_pid_can_come_from_resource_attributes_on_this_host() {
    let agent = Agent::sleeping();
    let executors =
        Executors::from_config(&toml::from_str("[process]\nresource_pids = true").unwrap())
            .unwrap();
    let this_host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let mut request = ActionRequest::new("otel-agent", Action::Quarantine);
    request.resource = BTreeMap::from([
        ("process.pid".to_string(), agent.pid().to_string()),
        ("host.name".to_string(), this_host),
    ]);
    let outcome = executors.execute(&request).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.target, "process");
    assert!(agent.wait_for(WaitOptions::UNTRACED).await.stopped());
    assert_eq!(agent.state(), 'T');
}

#[tokio::test]
async fn healing_other_than_reset_is_refused_clearly() {
    let agent = Agent::sleeping();
    let target = target(&[("billing", agent.pid())], Duration::from_secs(5));
    let outcome = act(&target, "billing", Action::ResetMemory).await;
    assert!(!outcome.success);
    assert!(
        outcome
            .message
            .starts_with("process target cannot reset memory"),
        "{}",
        outcome.message
    );
    let unknown = act(&target, "someone-else", Action::Quarantine).await;
    assert!(!unknown.success);
    assert!(
        unknown
            .message
            .contains("no pid registered for agent \"someone-else\"")
    );
}

/// Signal numbers on Linux (not worth a libc dependency).
mod libc_sig {
    pub const TERM: i32 = 15;
    pub const KILL: i32 = 9;
}
