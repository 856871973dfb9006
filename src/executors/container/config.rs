//! `[executors.container]`: the agent's container or deployment, through
//! the docker or kubectl CLI.

use super::template::Template;
use crate::config::ConfigIssue;
use crate::executors::http_control::validate_timeout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const MAX_ARGS: usize = 64;
const MAX_ENV: usize = 64;
const MAX_REPLICAS: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// `docker pause | unpause | restart <container>`.
    Docker,
    /// `kubectl scale deployment/<name> --replicas=0|N`, `kubectl rollout
    /// restart deployment/<name>`.
    Kubectl,
}

impl Runtime {
    /// The CLI run when `cli` is not set (looked up on PATH).
    pub fn default_cli(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Kubectl => "kubectl",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// `docker` or `kubectl`. Default "docker".
    pub runtime: Runtime,
    /// The container (docker) or deployment (kubectl) to act on, per agent:
    /// `{agent_id}` and `{<resource attribute>}` (e.g.
    /// `{k8s.deployment.name}`, `{container.name}`) are filled in. The result
    /// must be a plain name (letters, digits, `_ . -`). Default "{agent_id}".
    pub target: String,
    /// kubectl only: the namespace (`-n`). Default: kubectl's current one.
    pub namespace: Option<String>,
    /// kubectl only: replicas that release scales back to. Default 1.
    pub replicas: u32,
    /// Extra arguments before the subcommand, e.g. `["--context", "prod"]`
    /// or `["--host", "ssh://ops@agents"]`. Never quoted in messages.
    /// Default none.
    pub args: Vec<String>,
    /// Path of the CLI. Default "docker" or "kubectl", looked up on PATH.
    pub cli: Option<String>,
    /// Environment variables for the CLI, e.g. `{ KUBECONFIG = "/etc/agents.kubeconfig" }`
    /// (a PATH here also changes where the CLI is looked up). Default none.
    pub env: BTreeMap<String, String>,
    /// Limit on one call. Default "30s" (`docker restart` alone waits up to
    /// 10s for the container to stop).
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            runtime: Runtime::Docker,
            target: "{agent_id}".into(),
            namespace: None,
            replicas: 1,
            args: Vec::new(),
            cli: None,
            env: BTreeMap::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl ContainerConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(problem) = Template::parse(&self.target) {
            issues.push(ConfigIssue::new("target", problem));
        }
        match (&self.namespace, self.runtime) {
            (Some(_), Runtime::Docker) => issues.push(ConfigIssue::new(
                "namespace",
                "only applies to runtime = \"kubectl\"",
            )),
            (Some(ns), Runtime::Kubectl) if !super::template::is_safe_name(ns) => issues.push(
                ConfigIssue::new("namespace", format!("{ns:?} is not a namespace name")),
            ),
            _ => {}
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            issues.push(ConfigIssue::new(
                "replicas",
                format!("must be between 1 and {MAX_REPLICAS}"),
            ));
        }
        if self.args.len() > MAX_ARGS {
            issues.push(ConfigIssue::new(
                "args",
                format!("at most {MAX_ARGS} arguments"),
            ));
        }
        if matches!(&self.cli, Some(cli) if cli.trim().is_empty()) {
            issues.push(ConfigIssue::new("cli", "must not be empty"));
        }
        if self.env.len() > MAX_ENV {
            issues.push(ConfigIssue::new(
                "env",
                format!("at most {MAX_ENV} variables"),
            ));
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                issues.push(ConfigIssue::new(
                    format!("env.{name}"),
                    "is not an environment variable name",
                ));
            }
        }
        issues.extend(validate_timeout(self.timeout));
        issues
    }

    /// The CLI to run.
    pub fn cli(&self) -> &str {
        self.cli.as_deref().unwrap_or(self.runtime.default_cli())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_docker_by_agent_id() {
        let cfg = ContainerConfig::default();
        assert_eq!(cfg.runtime, Runtime::Docker);
        assert_eq!(cfg.target, "{agent_id}");
        assert_eq!(cfg.cli(), "docker");
        assert_eq!(cfg.timeout, Duration::from_secs(30));
        assert!(cfg.validate().is_empty());
    }

    #[test]
    fn kubectl_keys_are_checked() {
        let cfg: ContainerConfig = toml::from_str(
            r#"runtime = "kubectl"
               target = "{k8s.deployment.name"
               namespace = "-all"
               replicas = 0"#,
        )
        .unwrap();
        assert_eq!(cfg.cli(), "kubectl");
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["target", "namespace", "replicas"]);
        let docker_ns: ContainerConfig = toml::from_str(r#"namespace = "agents""#).unwrap();
        let keys: Vec<_> = docker_ns.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["namespace"]);
        assert!(toml::from_str::<ContainerConfig>(r#"runtime = "podman""#).is_err());
    }
}
