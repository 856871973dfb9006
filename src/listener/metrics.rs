//! Each listener's own counters, registered by name ("otlp/http",
//! "api", ...) and exported on `/metrics` with a `listener` label.

use crate::telemetry::{Counter, Gauge};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct ListenerMetrics {
    pub name: String,
    /// The connection cap in force (after fitting to the fd limit).
    pub max_connections: Gauge,
    /// Connections open now.
    pub open_connections: Gauge,
    /// Connections accepted only after waiting in the backlog because the
    /// listener was at its cap.
    pub deferred_connections: Counter,
    /// Connections closed for not sending a request head in time.
    pub header_timeouts: Counter,
    /// Connections closed for staying idle too long.
    pub idle_timeouts: Counter,
    /// Failed accepts (e.g. out of file descriptors), each followed by a
    /// short back-off.
    pub accept_errors: Counter,
}

/// Every listener's counters, in registration order.
#[derive(Debug, Default)]
pub struct ListenerRegistry(Mutex<Vec<Arc<ListenerMetrics>>>);

impl ListenerRegistry {
    /// The counters of listener `name`, created on first use (a restarted
    /// listener of the same name keeps counting).
    pub fn register(&self, name: &str) -> Arc<ListenerMetrics> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = all.iter().find(|m| m.name == name) {
            return existing.clone();
        }
        let metrics = Arc::new(ListenerMetrics {
            name: name.to_string(),
            ..ListenerMetrics::default()
        });
        all.push(metrics.clone());
        metrics
    }

    pub fn all(&self) -> Vec<Arc<ListenerMetrics>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
