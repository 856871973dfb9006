//! `[api]`: where the management endpoints listen.

use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address of the management API (health, readiness, metrics).
    /// Localhost by default, as the Collector binds its own endpoints;
    /// an empty string disables it. Default "127.0.0.1:8090".
    pub endpoint: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:8090".to_string(),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        match self.addr() {
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigIssue::new("endpoint", e)],
        }
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
}
