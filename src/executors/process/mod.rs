//! The process target: OS signals on the agent's process (Linux).
//!
//! - quarantine: SIGSTOP; release: SIGCONT.
//! - reset_agent: SIGTERM (plus SIGCONT, so a stopped agent can act on it),
//!   then SIGKILL when it has not exited after `grace_period`. Restarting it
//!   is its supervisor's job (systemd, a container's restart policy).
//! - drain: a successful no-op that says so: a process cannot be told to
//!   refuse new work, and its in-flight work finishes by itself until the
//!   quarantine stops it.
//! - the other healing actions are refused: signals cannot reset memory.
//!
//! The process is held by a pidfd from the checks to the signal, so a pid
//! reused by another process in between is never signalled. Pid 0 and 1,
//! agent-immune itself and other users' processes are refused.

pub mod config;
pub mod proc_status;

use self::config::ProcessConfig;
use self::proc_status::{ProcStatus, check_owner, read_status};
use super::request::{ActionOutcome, ActionRequest, action_words};
use super::target::{EnforcementTarget, OutcomeFuture};
use crate::immune::action::Action;
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Resource attribute holding the agent's pid (OpenTelemetry semconv).
pub const PID_ATTRIBUTE: &str = "process.pid";
/// Resource attribute naming the agent's host (OpenTelemetry semconv).
pub const HOST_ATTRIBUTE: &str = "host.name";
/// How long to wait for a SIGKILLed process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct ProcessTarget {
    id: String,
    pids: BTreeMap<String, u32>,
    resource_pids: bool,
    host_name: String,
    grace_period: Duration,
    timeout: Duration,
}

/// The agent's process, pinned by a pidfd.
struct Pinned {
    pid: u32,
    fd: OwnedFd,
    status: ProcStatus,
}

impl ProcessTarget {
    pub fn new(id: impl Into<String>, config: &ProcessConfig) -> Self {
        let host_name = config.host_name.clone().unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        });
        Self {
            id: id.into(),
            pids: config.pids.clone(),
            resource_pids: config.resource_pids,
            host_name,
            grace_period: config.grace_period,
            timeout: config.timeout,
        }
    }

    async fn act(&self, request: &ActionRequest) -> Result<String, String> {
        let action = request.action;
        if !matches!(
            action,
            Action::Quarantine | Action::Release | Action::Drain | Action::ResetAgent
        ) {
            return Err(format!(
                "process target cannot {} (signals can only stop, resume or terminate an agent)",
                action_words(action)
            ));
        }
        let (pid, source) = self.resolve_pid(request)?;
        let pinned = match pin(pid)? {
            Some(pinned) => pinned,
            None if action == Action::ResetAgent => {
                return Ok(format!("pid {pid} ({source}) had already exited"));
            }
            None => return Err(format!("pid {pid} ({source}) has exited")),
        };
        match action {
            Action::Quarantine => {
                signal(&pinned, Signal::STOP)?;
                Ok(format!("sent SIGSTOP to pid {pid} ({source})"))
            }
            Action::Release => {
                signal(&pinned, Signal::CONT)?;
                Ok(format!("sent SIGCONT to pid {pid} ({source})"))
            }
            Action::Drain => Ok(format!(
                "drain not enforced by signals: pid {pid} ({source}) runs on until quarantined"
            )),
            _ => self.terminate(pinned, source).await,
        }
    }

    /// SIGTERM, then SIGKILL after the grace period.
    async fn terminate(&self, pinned: Pinned, source: &str) -> Result<String, String> {
        let pid = pinned.pid;
        signal(&pinned, Signal::TERM)?;
        if pinned.status.stopped() {
            // A stopped process keeps SIGTERM pending until it runs again.
            signal(&pinned, Signal::CONT)?;
        }
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open
        // and refers to this pidfd for the AsyncFd's whole life.
        let exit = unsafe { AsyncFd::register_with_interest(pinned.fd, Interest::READABLE) }
            .map_err(|e| format!("cannot watch pid {pid} for its exit: {}", e.into_parts().1))?;
        if wait_exit(&exit, self.grace_period).await {
            return Ok(format!("pid {pid} ({source}) exited after SIGTERM"));
        }
        match rustix::process::pidfd_send_signal(exit.get_ref(), Signal::KILL) {
            Ok(()) | Err(Errno::SRCH) => {}
            Err(e) => return Err(format!("cannot SIGKILL pid {pid}: {e}")),
        }
        let grace = humantime::format_duration(self.grace_period);
        if wait_exit(&exit, KILL_WAIT).await {
            Ok(format!(
                "pid {pid} ({source}) ignored SIGTERM for {grace}; SIGKILLed"
            ))
        } else {
            Err(format!(
                "pid {pid} ({source}) ignored SIGTERM for {grace} and was SIGKILLed, but has not exited yet"
            ))
        }
    }

    /// The agent's pid: registered in config, else (when allowed) from its
    /// resource attributes.
    fn resolve_pid(&self, request: &ActionRequest) -> Result<(u32, &'static str), String> {
        if let Some(pid) = self.pids.get(&request.agent_id) {
            return Ok((*pid, "registered"));
        }
        let agent = &request.agent_id;
        if !self.resource_pids {
            return Err(format!(
                "no pid registered for agent {agent:?} (add it to pids, or set resource_pids = true)"
            ));
        }
        let Some(raw) = request.resource.get(PID_ATTRIBUTE) else {
            return Err(format!(
                "no pid registered for agent {agent:?} and its resource has no {PID_ATTRIBUTE}"
            ));
        };
        let pid: u32 = raw
            .trim()
            .parse()
            .map_err(|_| format!("agent {agent:?} reports {PID_ATTRIBUTE} = {raw:?}, not a pid"))?;
        match request.resource.get(HOST_ATTRIBUTE) {
            Some(host) if *host == self.host_name => Ok((pid, "from process.pid")),
            Some(host) => Err(format!(
                "agent {agent:?} runs on host {host:?}, not on this host ({:?}): its pid means nothing here",
                self.host_name
            )),
            None => Err(format!(
                "agent {agent:?} reports {PID_ATTRIBUTE} without {HOST_ATTRIBUTE}: cannot tell it is on this host"
            )),
        }
    }
}

/// Opens a pidfd on `pid` after the safety checks; `None` when the process
/// has exited (gone, or a zombie not yet reaped).
fn pin(pid: u32) -> Result<Option<Pinned>, String> {
    if pid <= 1 {
        return Err(format!(
            "refusing to signal pid {pid} (init or a process group)"
        ));
    }
    if pid == std::process::id() {
        return Err(format!(
            "refusing to signal pid {pid}: that is agent-immune itself"
        ));
    }
    let raw = i32::try_from(pid).map_err(|_| format!("{pid} is not a valid pid"))?;
    let Some(target) = Pid::from_raw(raw) else {
        return Err(format!("{pid} is not a valid pid"));
    };
    let fd = match rustix::process::pidfd_open(target, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Err(format!("pid {pid} is gone (no such process)")),
        Err(Errno::NOSYS) => {
            return Err("this kernel has no pidfd_open (Linux 5.3 or later is needed)".into());
        }
        Err(e) => return Err(format!("cannot open pid {pid}: {e}")),
    };
    // Read after pinning: the status is the pinned process's, not a later
    // process that reused the pid.
    let Some(status) = read_status(pid)? else {
        return Err(format!("pid {pid} is gone (no such process)"));
    };
    if status.exited() {
        return Ok(None);
    }
    check_owner(pid, &status, rustix::process::geteuid().as_raw())?;
    Ok(Some(Pinned { pid, fd, status }))
}

fn signal(pinned: &Pinned, signal: Signal) -> Result<(), String> {
    let pid = pinned.pid;
    rustix::process::pidfd_send_signal(&pinned.fd, signal).map_err(|e| match e {
        Errno::SRCH => format!("pid {pid} exited before it could be signalled"),
        Errno::PERM => format!("not permitted to signal pid {pid} (another user's process?)"),
        e => format!("cannot signal pid {pid}: {e}"),
    })
}

/// True when the process exits within `limit` (its pidfd turns readable).
async fn wait_exit(exit: &AsyncFd<OwnedFd>, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, exit.readable()).await,
        Ok(Ok(_))
    )
}

impl EnforcementTarget for ProcessTarget {
    fn id(&self) -> &str {
        &self.id
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn execute<'a>(&'a self, request: &'a ActionRequest) -> OutcomeFuture<'a> {
        Box::pin(async move {
            match self.act(request).await {
                Ok(message) => ActionOutcome::ok(&self.id, message),
                Err(message) => ActionOutcome::failed(&self.id, message),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(resource_pids: bool) -> ProcessTarget {
        let config = ProcessConfig {
            pids: BTreeMap::from([("registered".to_string(), 4242)]),
            resource_pids,
            host_name: Some("here".into()),
            ..Default::default()
        };
        ProcessTarget::new("process", &config)
    }

    fn request(agent: &str, resource: &[(&str, &str)]) -> ActionRequest {
        let mut request = ActionRequest::new(agent, Action::Quarantine);
        for (k, v) in resource {
            request.resource.insert(k.to_string(), v.to_string());
        }
        request
    }

    #[test]
    fn registered_pid_wins() {
        let r = request(
            "registered",
            &[(PID_ATTRIBUTE, "7"), (HOST_ATTRIBUTE, "here")],
        );
        assert_eq!(target(true).resolve_pid(&r), Ok((4242, "registered")));
    }

    #[test]
    fn resource_pid_only_when_enabled_and_on_this_host() {
        let here = request("other", &[(PID_ATTRIBUTE, "77"), (HOST_ATTRIBUTE, "here")]);
        assert_eq!(
            target(true).resolve_pid(&here),
            Ok((77, "from process.pid"))
        );
        let off = target(false).resolve_pid(&here).unwrap_err();
        assert!(off.contains("resource_pids = true"), "{off}");
        let elsewhere = request("other", &[(PID_ATTRIBUTE, "77"), (HOST_ATTRIBUTE, "there")]);
        let err = target(true).resolve_pid(&elsewhere).unwrap_err();
        assert!(err.contains("not on this host"), "{err}");
        let no_host = request("other", &[(PID_ATTRIBUTE, "77")]);
        assert!(target(true).resolve_pid(&no_host).is_err());
        let junk = request("other", &[(PID_ATTRIBUTE, "-1"), (HOST_ATTRIBUTE, "here")]);
        assert!(
            target(true)
                .resolve_pid(&junk)
                .unwrap_err()
                .contains("not a pid")
        );
    }

    #[test]
    fn refuses_init_and_itself() {
        assert!(pin(1).err().unwrap().contains("refusing to signal pid 1"));
        assert!(pin(0).err().unwrap().contains("refusing"));
        assert!(
            pin(std::process::id())
                .err()
                .unwrap()
                .contains("agent-immune itself")
        );
    }
}
