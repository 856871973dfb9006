//! `[executors.process]`: OS signals on the agent's own process.

use crate::config::ConfigIssue;
use crate::executors::http_control::validate_timeout;
use crate::executors::target::DEFAULT_TIMEOUT;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most pids that may be registered in one target.
const MAX_PIDS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Agent id → pid of the agent's process, e.g.
    /// `pids = { "billing-agent" = 4242 }`. Default none.
    pub pids: BTreeMap<String, u32>,
    /// Also take the pid from the agent's resource attribute `process.pid`
    /// when its `host.name` is this host. Default false: whoever can send
    /// telemetry could otherwise name any process of agent-immune's user.
    pub resource_pids: bool,
    /// This host's name as agents report it in `host.name`. Default: the
    /// kernel's host name.
    pub host_name: Option<String>,
    /// For reset_agent: time between SIGTERM and SIGKILL. Default "5s".
    #[serde(with = "crate::config::duration")]
    pub grace_period: Duration,
    /// Limit on one call; must exceed grace_period. Default "10s".
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            pids: BTreeMap::new(),
            resource_pids: false,
            host_name: None,
            grace_period: Duration::from_secs(5),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ProcessConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.pids.len() > MAX_PIDS {
            issues.push(ConfigIssue::new(
                "pids",
                format!("at most {MAX_PIDS} agents per target"),
            ));
        }
        for (agent, pid) in &self.pids {
            if *pid <= 1 || *pid > i32::MAX as u32 {
                issues.push(ConfigIssue::new(
                    format!("pids.{agent}"),
                    format!("{pid} is not a pid agent-immune will signal (must be above 1)"),
                ));
            }
        }
        if matches!(&self.host_name, Some(name) if name.trim().is_empty()) {
            issues.push(ConfigIssue::new("host_name", "must not be empty"));
        }
        if self.grace_period.is_zero() {
            issues.push(ConfigIssue::new("grace_period", "must be above 0"));
        }
        issues.extend(validate_timeout(self.timeout));
        if self.timeout <= self.grace_period {
            issues.push(ConfigIssue::new(
                "timeout",
                format!(
                    "must exceed grace_period ({}), or reset_agent times out before SIGKILL",
                    humantime::format_duration(self.grace_period)
                ),
            ));
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let cfg = ProcessConfig::default();
        assert_eq!(cfg.grace_period, Duration::from_secs(5));
        assert_eq!(cfg.timeout, Duration::from_secs(10));
        assert!(!cfg.resource_pids);
        assert!(cfg.validate().is_empty());
        let cfg: ProcessConfig = toml::from_str(
            r#"pids = { "a" = 1, "b" = 4242 }
               grace_period = "20s""#,
        )
        .unwrap();
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["pids.a", "timeout"]);
        assert!(toml::from_str::<ProcessConfig>("pid = 3").is_err());
    }
}
