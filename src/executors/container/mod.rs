//! The container target: runs the real docker or kubectl CLI.
//!
//! | action      | docker                 | kubectl                                            |
//! |-------------|------------------------|----------------------------------------------------|
//! | quarantine  | `pause <name>`         | `scale deployment/<name> --replicas=0 [-n ns]`     |
//! | release     | `unpause <name>`       | `scale deployment/<name> --replicas=<replicas>`    |
//! | reset_agent | `restart <name>`       | `rollout restart deployment/<name> [-n ns]`        |
//! | drain       | no-op success, says so | no-op success, says so                             |
//!
//! The other healing actions are refused. A missing CLI, a non-zero exit or
//! a timeout (the CLI is killed) is a failed outcome quoting its stderr.

pub mod config;
pub mod template;

use self::config::{ContainerConfig, Runtime};
use self::template::Template;
use super::request::{ActionOutcome, ActionRequest, action_words, truncate};
use super::target::{EnforcementTarget, OutcomeFuture};
use crate::immune::action::Action;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most of the CLI's stdout or stderr kept (the rest is read and dropped).
const MAX_OUTPUT_BYTES: usize = 16 * 1024;
/// Most of it quoted in the outcome.
const MAX_QUOTED_CHARS: usize = 300;

#[derive(Debug)]
pub struct ContainerTarget {
    id: String,
    runtime: Runtime,
    template: Template,
    namespace: Option<String>,
    replicas: u32,
    args: Vec<String>,
    cli: String,
    env: BTreeMap<String, String>,
    timeout: Duration,
}

impl ContainerTarget {
    pub fn new(id: impl Into<String>, config: &ContainerConfig) -> Result<Self, String> {
        let template = Template::parse(&config.target).map_err(|e| format!("target: {e}"))?;
        Ok(Self {
            id: id.into(),
            runtime: config.runtime,
            template,
            namespace: config.namespace.clone(),
            replicas: config.replicas,
            args: config.args.clone(),
            cli: config.cli().to_string(),
            env: config.env.clone(),
            timeout: config.timeout,
        })
    }

    async fn act(&self, request: &ActionRequest) -> Result<String, String> {
        let name = self.template.render(&request.agent_id, &request.resource)?;
        let command = match subcommand(
            self.runtime,
            request.action,
            &name,
            self.namespace.as_deref(),
            self.replicas,
        ) {
            Command::Run(argv) => argv,
            Command::NoOp => {
                return Ok(format!(
                    "drain not enforced by {}: {name} runs on until quarantined",
                    self.runtime.default_cli()
                ));
            }
            Command::Unsupported => {
                return Err(format!(
                    "container target cannot {} (it can only pause, resume or restart {name})",
                    action_words(request.action)
                ));
            }
        };
        // Shown without the configured extra args: they may hold credentials.
        let shown = format!("{} {}", self.cli, command.join(" "));
        let mut child = tokio::process::Command::new(&self.cli)
            .args(&self.args)
            .args(&command)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timeout drops this future; the CLI must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "container CLI {:?} not found (install it, put it on PATH, or set cli)",
                    self.cli
                ),
                std::io::ErrorKind::PermissionDenied => {
                    format!("container CLI {:?} is not executable", self.cli)
                }
                _ => format!("cannot run {:?}: {e}", self.cli),
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (status, stdout, stderr) =
            tokio::join!(child.wait(), read_capped(stdout), read_capped(stderr));
        let status = status.map_err(|e| format!("`{shown}`: cannot wait for it: {e}"))?;
        let quote =
            |bytes: &[u8]| truncate(String::from_utf8_lossy(bytes).trim(), MAX_QUOTED_CHARS);
        if status.success() {
            let out = quote(&stdout);
            Ok(if out.is_empty() {
                format!("`{shown}`: ok")
            } else {
                format!("`{shown}`: {out}")
            })
        } else {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_string(),
            };
            let err = quote(&stderr);
            Err(if err.is_empty() {
                format!("`{shown}` {how}")
            } else {
                format!("`{shown}` {how}: {err}")
            })
        }
    }
}

/// What one action means for a runtime.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(Vec<String>),
    NoOp,
    Unsupported,
}

fn subcommand(
    runtime: Runtime,
    action: Action,
    name: &str,
    namespace: Option<&str>,
    replicas: u32,
) -> Command {
    let words: Vec<String> = match (runtime, action) {
        (_, Action::Drain) => return Command::NoOp,
        (Runtime::Docker, Action::Quarantine) => vec!["pause".into(), name.into()],
        (Runtime::Docker, Action::Release) => vec!["unpause".into(), name.into()],
        (Runtime::Docker, Action::ResetAgent) => vec!["restart".into(), name.into()],
        (Runtime::Kubectl, Action::Quarantine) => vec![
            "scale".into(),
            format!("deployment/{name}"),
            "--replicas=0".into(),
        ],
        (Runtime::Kubectl, Action::Release) => vec![
            "scale".into(),
            format!("deployment/{name}"),
            format!("--replicas={replicas}"),
        ],
        (Runtime::Kubectl, Action::ResetAgent) => vec![
            "rollout".into(),
            "restart".into(),
            format!("deployment/{name}"),
        ],
        _ => return Command::Unsupported,
    };
    let mut words = words;
    if let (Runtime::Kubectl, Some(ns)) = (runtime, namespace) {
        words.push("-n".into());
        words.push(ns.into());
    }
    Command::Run(words)
}

/// Reads at most `MAX_OUTPUT_BYTES`, then drains the rest so the CLI never
/// blocks on a full pipe.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl EnforcementTarget for ContainerTarget {
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

    fn run(words: &[&str]) -> Command {
        Command::Run(words.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn docker_commands() {
        let d = |a| subcommand(Runtime::Docker, a, "agent-x", None, 1);
        assert_eq!(d(Action::Quarantine), run(&["pause", "agent-x"]));
        assert_eq!(d(Action::Release), run(&["unpause", "agent-x"]));
        assert_eq!(d(Action::ResetAgent), run(&["restart", "agent-x"]));
        assert_eq!(d(Action::Drain), Command::NoOp);
        assert_eq!(d(Action::ResetMemory), Command::Unsupported);
    }

    #[test]
    fn kubectl_commands() {
        let k = |a| subcommand(Runtime::Kubectl, a, "agent-x", Some("agents"), 3);
        assert_eq!(
            k(Action::Quarantine),
            run(&[
                "scale",
                "deployment/agent-x",
                "--replicas=0",
                "-n",
                "agents"
            ])
        );
        assert_eq!(
            k(Action::Release),
            run(&[
                "scale",
                "deployment/agent-x",
                "--replicas=3",
                "-n",
                "agents"
            ])
        );
        assert_eq!(
            k(Action::ResetAgent),
            run(&["rollout", "restart", "deployment/agent-x", "-n", "agents"])
        );
        assert_eq!(
            subcommand(Runtime::Kubectl, Action::ResetAgent, "a", None, 1),
            run(&["rollout", "restart", "deployment/a"])
        );
    }
}
