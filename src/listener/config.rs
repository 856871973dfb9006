//! The connection limits every listener takes, as a `listener` table in
//! `[receivers.otlp]`, `[api]` and `[receivers.llm_proxy]`. Key names are
//! the Collector's confighttp ones.

use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Connections served at once, per listener; beyond, new connections
    /// wait in the kernel's backlog until one closes. Fitted below the
    /// process's file-descriptor limit at start. Default 1024.
    pub max_connections: usize,
    /// Time a new connection has to deliver its first request's head (the
    /// HTTP/2 preface included); slower connections are closed. Default
    /// "10s".
    #[serde(with = "crate::config::duration")]
    pub read_header_timeout: Duration,
    /// Time a connection may stay open with no request in flight (a later
    /// request whose head is still arriving is not yet in flight). Default
    /// "60s".
    #[serde(with = "crate::config::duration")]
    pub idle_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ListenerConfig {
    /// Issues keyed `listener.<key>`.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            issues.push(ConfigIssue::new(
                "listener.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        for (key, value) in [
            ("listener.read_header_timeout", self.read_header_timeout),
            ("listener.idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                issues.push(ConfigIssue::new(
                    key,
                    "must be more than 0 and at most 24h".to_string(),
                ));
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(ListenerConfig::default().validate().is_empty());
        let cfg: ListenerConfig =
            toml::from_str("max_connections = 0\nread_header_timeout = \"0s\"").unwrap();
        let keys: Vec<String> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            ["listener.max_connections", "listener.read_header_timeout"]
        );
        assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
        assert!(toml::from_str::<ListenerConfig>("max_conections = 5").is_err());
    }
}
