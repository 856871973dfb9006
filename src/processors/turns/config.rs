//! `[processors.turns]`: when a trace's turns close, and how much of the
//! traffic may wait in memory for its root span.

use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_OPEN_TRACES: usize = 10_000_000;
const MAX_SPANS_PER_TRACE: usize = 1_000_000;
const MAX_CLOSED_CACHE: usize = 10_000_000;
const MAX_BUFFERED_SPANS: usize = 100_000_000;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnsConfig {
    /// A trace whose root span has not arrived is closed (its turns emitted
    /// with what they have) after receiving no span for this long.
    /// Default "2s".
    #[serde(with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// Traces waiting for their root span at once; beyond it the oldest is
    /// closed early and counted as evicted. Default 50000.
    pub max_open_traces: usize,
    /// Spans kept per trace; further spans are counted and dropped.
    /// Default 10000.
    pub max_spans_per_trace: usize,
    /// Spans waiting in all open traces together; beyond it the oldest
    /// traces are closed early (evicted). Default 1000000.
    pub max_buffered_spans: usize,
    /// Recently closed trace ids remembered, so a span that arrives after
    /// its trace closed is counted as late instead of opening a bogus
    /// partial turn. Default 100000.
    pub closed_trace_cache: usize,
}

impl Default for TurnsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(2),
            max_open_traces: 50_000,
            max_spans_per_trace: 10_000,
            max_buffered_spans: 1_000_000,
            closed_trace_cache: 100_000,
        }
    }
}

impl TurnsConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.idle_timeout.is_zero() || self.idle_timeout > MAX_IDLE_TIMEOUT {
            issues.push(ConfigIssue::new(
                "idle_timeout",
                format!(
                    "must be above 0 and at most 1h, got {}",
                    humantime::format_duration(self.idle_timeout)
                ),
            ));
        }
        let mut range = |key: &str, value: usize, min: usize, max: usize| {
            if value < min || value > max {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be between {min} and {max}, got {value}"),
                ));
            }
        };
        range("max_open_traces", self.max_open_traces, 1, MAX_OPEN_TRACES);
        range(
            "max_spans_per_trace",
            self.max_spans_per_trace,
            1,
            MAX_SPANS_PER_TRACE,
        );
        range(
            "max_buffered_spans",
            self.max_buffered_spans,
            1,
            MAX_BUFFERED_SPANS,
        );
        range(
            "closed_trace_cache",
            self.closed_trace_cache,
            0,
            MAX_CLOSED_CACHE,
        );
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_an_empty_table() {
        assert!(TurnsConfig::default().validate().is_empty());
        let parsed: TurnsConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, TurnsConfig::default());
        let parsed: TurnsConfig = toml::from_str("idle_timeout = \"500ms\"").unwrap();
        assert_eq!(parsed.idle_timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_their_key() {
        let config = TurnsConfig {
            idle_timeout: Duration::ZERO,
            max_open_traces: 0,
            max_spans_per_trace: usize::MAX,
            ..TurnsConfig::default()
        };
        let keys: Vec<String> = config.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            vec!["idle_timeout", "max_open_traces", "max_spans_per_trace"]
        );
        assert!(toml::from_str::<TurnsConfig>("idle_timeout = \"soon\"").is_err());
        assert!(toml::from_str::<TurnsConfig>("idle = \"2s\"").is_err());
    }
}
