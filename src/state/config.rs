//! `[state]`: where the durable state lives, how often learned baselines are
//! written, and how large the event outbox may grow.

use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(10);
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_OUTBOX_EVENTS: usize = 10_000_000;
const MIN_OUTBOX_BYTES: u64 = 1024 * 1024;
const MAX_OUTBOX_BYTES: u64 = 64 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory of the state store (created owner-only, mode 0700).
    /// `--data-dir` and the `AGENT_IMMUNE_DATA_DIR` environment variable
    /// win over it; a leading `~/` is the home directory. Default:
    /// `$XDG_STATE_HOME/agent-immune`, else `~/.local/state/agent-immune`.
    pub data_dir: Option<String>,
    /// How often learned baselines are written to disk, in one transaction.
    /// A crash loses at most this much learning; state transitions,
    /// approvals, decisions and events are written at once regardless.
    /// Default "1s".
    #[serde(with = "crate::config::duration")]
    pub flush_interval: Duration,
    /// Most events the outbox keeps while the events endpoint is
    /// unreachable; beyond it the oldest are dropped and counted.
    /// Default 100000.
    pub outbox_max_events: usize,
    /// Most bytes of stored events the outbox keeps; beyond it the oldest
    /// are dropped and counted. Default 268435456 (256 MiB).
    pub outbox_max_bytes: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            flush_interval: Duration::from_secs(1),
            outbox_max_events: 100_000,
            outbox_max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl StateConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self
            .data_dir
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            issues.push(ConfigIssue::new(
                "data_dir",
                "is empty; remove the key to use the default directory",
            ));
        }
        if !(MIN_FLUSH_INTERVAL..=MAX_FLUSH_INTERVAL).contains(&self.flush_interval) {
            issues.push(ConfigIssue::new(
                "flush_interval",
                format!("must be between {MIN_FLUSH_INTERVAL:?} and {MAX_FLUSH_INTERVAL:?}"),
            ));
        }
        if self.outbox_max_events == 0 || self.outbox_max_events > MAX_OUTBOX_EVENTS {
            issues.push(ConfigIssue::new(
                "outbox_max_events",
                format!("must be between 1 and {MAX_OUTBOX_EVENTS}"),
            ));
        }
        if !(MIN_OUTBOX_BYTES..=MAX_OUTBOX_BYTES).contains(&self.outbox_max_bytes) {
            issues.push(ConfigIssue::new(
                "outbox_max_bytes",
                format!(
                    "must be between {MIN_OUTBOX_BYTES} (1 MiB) and {MAX_OUTBOX_BYTES} (64 GiB)"
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
    fn defaults_are_documented_and_valid() {
        let cfg = StateConfig::default();
        assert_eq!(cfg.data_dir, None);
        assert_eq!(cfg.flush_interval, Duration::from_secs(1));
        assert_eq!(cfg.outbox_max_events, 100_000);
        assert_eq!(cfg.outbox_max_bytes, 256 * 1024 * 1024);
        assert!(cfg.validate().is_empty());
    }

    #[test]
    fn toml_shape_and_bad_values() {
        let cfg: StateConfig = toml::from_str(
            r#"data_dir = "/var/lib/agent-immune"
               flush_interval = "250ms"
               outbox_max_events = 5000"#,
        )
        .unwrap();
        assert_eq!(cfg.data_dir.as_deref(), Some("/var/lib/agent-immune"));
        assert_eq!(cfg.flush_interval, Duration::from_millis(250));
        assert!(cfg.validate().is_empty());

        let cfg: StateConfig = toml::from_str(
            r#"data_dir = " "
               flush_interval = "1ms"
               outbox_max_events = 0
               outbox_max_bytes = 10"#,
        )
        .unwrap();
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "data_dir",
                "flush_interval",
                "outbox_max_events",
                "outbox_max_bytes"
            ]
        );
        assert!(toml::from_str::<StateConfig>("datadir = \"x\"").is_err());
    }
}
