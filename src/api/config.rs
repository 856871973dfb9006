//! `[api]`: where the management API and dashboard listen, and who may read.

use crate::config::ConfigIssue;
use crate::listener::ListenerConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Largest `max_body_kib` accepted (64 MiB).
const MAX_BODY_KIB_LIMIT: u64 = 64 * 1024;
/// Largest `max_ingest_batch` accepted.
const MAX_INGEST_BATCH_LIMIT: usize = 100_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address of the management API, the JSON ingest and the
    /// dashboard. Localhost by default, as the Collector binds its own
    /// endpoints; an empty string disables it. Default "127.0.0.1:8090".
    pub endpoint: String,
    /// Require the API key for the read-only endpoints too (`/api/v1/...`
    /// reads and `/metrics`); `/healthz`, `/readyz`, the dashboard page and
    /// the OpenAPI document stay open. Mutating endpoints and ingest always
    /// require it. Default false.
    pub read_requires_key: bool,
    /// Largest request body accepted, in KiB (ingest batches, feedback,
    /// policies); larger bodies get 413. Default 1024.
    pub max_body_kib: u64,
    /// Most vitals records in one ingest request (a JSON array). Default 1000.
    pub max_ingest_batch: usize,
    /// Serve the web dashboard at `/`. Default true.
    pub dashboard: bool,
    /// Connection limits of the API's listener; it keeps its own share of
    /// file descriptors so `/healthz` answers when other listeners are
    /// flooded.
    pub listener: ListenerConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:8090".to_string(),
            read_requires_key: false,
            max_body_kib: 1024,
            max_ingest_batch: 1000,
            dashboard: true,
            listener: ListenerConfig::default(),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(e) = self.addr() {
            issues.push(ConfigIssue::new("endpoint", e));
        }
        if self.max_body_kib == 0 || self.max_body_kib > MAX_BODY_KIB_LIMIT {
            issues.push(ConfigIssue::new(
                "max_body_kib",
                format!("must be between 1 and {MAX_BODY_KIB_LIMIT}"),
            ));
        }
        if self.max_ingest_batch == 0 || self.max_ingest_batch > MAX_INGEST_BATCH_LIMIT {
            issues.push(ConfigIssue::new(
                "max_ingest_batch",
                format!("must be between 1 and {MAX_INGEST_BATCH_LIMIT}"),
            ));
        }
        issues.extend(self.listener.validate());
        issues
    }

    /// The listen address, `None` when disabled.
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.endpoint.is_empty() {
            return Ok(None);
        }
        self.endpoint.parse().map(Some).map_err(|e| {
            format!(
                "{:?} is not a socket address (host:port): {e}",
                self.endpoint
            )
        })
    }

    /// The body limit in bytes (validated config: at most 64 MiB).
    pub fn max_body_bytes(&self) -> usize {
        usize::try_from(self.max_body_kib.min(MAX_BODY_KIB_LIMIT) * 1024).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_checked() {
        assert!(ApiConfig::default().validate().is_empty());
        let bad = ApiConfig {
            endpoint: "localhost".to_string(),
            max_body_kib: 0,
            max_ingest_batch: MAX_INGEST_BATCH_LIMIT + 1,
            ..ApiConfig::default()
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["endpoint", "max_body_kib", "max_ingest_batch"]);
    }

    #[test]
    fn empty_endpoint_disables() {
        let off = ApiConfig {
            endpoint: String::new(),
            ..ApiConfig::default()
        };
        assert_eq!(off.addr(), Ok(None));
        assert_eq!(ApiConfig::default().max_body_bytes(), 1024 * 1024);
    }
}
