//! The real `agent-immune` binary as a child process, for tests that must
//! talk to exactly what users run (hostile input, crashes, restarts): started
//! on a config file, its stderr (the log) and stdout (console events) kept
//! (bounded) for assertions, its memory read from /proc, killed on drop.
//!
//! ```ignore
//! let bin = Binary::start(&config_path, &[("AGENT_IMMUNE_API_KEY", KEY)]).await;
//! let peak = bin.peak_rss_bytes();
//! assert!(bin.stderr_contains("accept error").is_none());
//! ```

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How many stderr lines are kept (the oldest are dropped beyond).
const KEPT_LINES: usize = 20_000;
/// How long the binary may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Binary {
    pub child: tokio::process::Child,
    pub pid: u32,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

type Kept = Arc<Mutex<Vec<String>>>;

fn keep(kept: &Mutex<Vec<String>>, line: String) {
    let mut kept = kept.lock().unwrap();
    if kept.len() >= KEPT_LINES {
        kept.remove(0);
    }
    kept.push(line);
}

/// Keeps reading `lines` into `kept`, so the child never blocks on a full
/// pipe.
fn drain<R: tokio::io::AsyncBufRead + Unpin + Send + 'static>(
    mut lines: tokio::io::Lines<R>,
    kept: Kept,
) {
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep(&kept, line);
        }
    });
}

impl Binary {
    /// Starts `agent-immune run --config <config>` with `env` added, and
    /// waits until its log says the management API listens (or, when the
    /// config has no `[api]`, until the first "listening" line).
    pub async fn start(config: &Path, env: &[(&str, &str)]) -> Binary {
        Self::start_until(config, env, "management API listening").await
    }

    /// As [`Binary::start`], waiting for a stderr line containing `ready`.
    pub async fn start_until(config: &Path, env: &[(&str, &str)], ready: &str) -> Binary {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-immune"));
        command.args(["run", "--config"]).arg(config);
        Self::spawn(command, env, ready).await
    }

    /// As [`Binary::start`], with its file-descriptor limit (soft and hard)
    /// set to `fd_limit` by the shell that execs it (same pid).
    pub async fn start_with_fd_limit(config: &Path, env: &[(&str, &str)], fd_limit: u64) -> Binary {
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {fd_limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_agent-immune"))
            .args(["run", "--config"])
            .arg(config);
        Self::spawn(command, env, "management API listening").await
    }

    async fn spawn(
        mut command: tokio::process::Command,
        env: &[(&str, &str)],
        ready: &str,
    ) -> Binary {
        command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start agent-immune");
        let pid = child.id().expect("child pid");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout: Kept = Arc::new(Mutex::new(Vec::new()));
        drain(
            BufReader::new(child.stdout.take().expect("piped stdout")).lines(),
            stdout.clone(),
        );
        loop {
            let line = tokio::time::timeout(START_LIMIT, lines.next_line())
                .await
                .expect("agent-immune did not start in time")
                .expect("read agent-immune's stderr");
            let Some(line) = line else {
                panic!(
                    "agent-immune exited while starting:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            };
            let done = line.contains(ready);
            keep(&stderr, line);
            if done {
                break;
            }
        }
        drain(lines, stderr.clone());
        Binary {
            child,
            pid,
            stderr,
            stdout,
        }
    }

    /// Resident memory now (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// Peak resident memory since start (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} missing in /proc/{}/status", self.pid))
    }

    /// The first kept stderr line containing `needle`.
    pub fn stderr_line(&self, needle: &str) -> Option<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Every kept stderr line, for failure messages.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Every kept stdout line (the console events).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Every kept stderr line (the log).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
