//! The processes measured: started, waited on until they listen, looked at
//! through /proc (CPU time, resident memory), and stopped.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// /proc/<pid>/stat counts CPU time in USER_HZ ticks, 100 per second on
/// every Linux architecture that matters here (x86_64, aarch64).
const USER_HZ: f64 = 100.0;
/// How long a target may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running process under measurement (killed on drop).
pub struct Target {
    pub name: String,
    pub pid: u32,
    /// Where it receives OTLP/gRPC.
    pub grpc: SocketAddr,
    /// agent-immune's management API (for /metrics), when enabled.
    pub api: Option<SocketAddr>,
    child: Child,
    log: PathBuf,
}

/// A port free on loopback now (bound by the target right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A fresh directory for one target's config, data and logs.
pub fn work_dir(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(format!("{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

impl Target {
    /// `agent-immune run --config <dir>/pipeline.toml`; `api` is where the
    /// config puts the management API, if it does.
    pub async fn agent_immune(
        binary: &Path,
        config: &str,
        grpc: SocketAddr,
        api: Option<SocketAddr>,
        dir: &Path,
    ) -> anyhow::Result<Target> {
        let path = dir.join("pipeline.toml");
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("AGENT_IMMUNE_DATA_DIR", dir.join("data"))
            .env_remove("RUST_LOG");
        let mut target = Self::spawn("agent-immune", command, grpc, dir).await?;
        target.api = api;
        Ok(target)
    }

    /// Rotel as a pass-through collector: OTLP/gRPC in, OTLP/gRPC out to
    /// `sink`, no compression (the same work agent-immune's forward does).
    pub async fn rotel(
        binary: &Path,
        grpc: SocketAddr,
        http: SocketAddr,
        sink: SocketAddr,
        dir: &Path,
    ) -> anyhow::Result<Target> {
        let mut command = Command::new(binary);
        command
            .arg("start")
            .arg("--otlp-grpc-endpoint")
            .arg(grpc.to_string())
            .arg("--otlp-http-endpoint")
            .arg(http.to_string())
            .arg("--exporter")
            .arg("otlp")
            .arg("--otlp-exporter-endpoint")
            .arg(format!("http://{sink}"))
            .arg("--otlp-exporter-protocol")
            .arg("grpc")
            .arg("--otlp-exporter-compression")
            .arg("none");
        Self::spawn("rotel", command, grpc, dir).await
    }

    async fn spawn(
        name: &str,
        mut command: Command,
        grpc: SocketAddr,
        dir: &Path,
    ) -> anyhow::Result<Target> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        let mut target = Target {
            name: name.to_string(),
            pid,
            grpc,
            api: None,
            child,
            log,
        };
        target.wait_listening().await?;
        Ok(target)
    }

    /// Polls the port: when another process starts listening is known
    /// only to the OS, so it is re-checked every 20 ms, up to a limit.
    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if tokio::net::TcpStream::connect(self.grpc).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}) before listening on {}: {}",
                    self.name,
                    self.grpc,
                    self.log_tail()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {} within {START_DEADLINE:?}: {}",
                    self.name,
                    self.grpc,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of the target's output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// CPU time (user + system, all threads) used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of(self.pid)
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid)
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// utime + stime of a process from /proc/<pid>/stat.
pub fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))
}

fn parse_cpu(stat: &str) -> Option<Duration> {
    // Fields after the parenthesised command name (which may hold spaces):
    // state is field 3, utime 14 and stime 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Duration::try_from_secs_f64((utime + stime) as f64 / USER_HZ).ok()
}

/// VmRSS of a process from /proc/<pid>/status, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_rss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "1234 (tokio worker (x)) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu(stat), Some(Duration::from_millis(3250)));
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t  2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        assert_eq!(parse_rss("Name:\tx\n"), None);
        let own = cpu_of(std::process::id()).unwrap();
        assert!(own < Duration::from_secs(100_000));
        assert!(rss_of(std::process::id()).unwrap() > 1024 * 1024);
    }
}
