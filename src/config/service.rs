//! `[service]`: settings of the process itself rather than of a component.

use super::ConfigIssue;
use serde::{Deserialize, Serialize};

/// What to do with detection input when a detection shard's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse the whole request with a retryable error (HTTP 429 /
    /// RESOURCE_EXHAUSTED): nothing is lost, the sender retries.
    #[default]
    Refuse,
    /// Forward the spans anyway and skip detection for them, counted in
    /// `agent_immune_detection_dropped_spans`.
    Drop,
}

/// Log output format of the process's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Bounds on `memory_limit_mib`: below, the process cannot run its own
/// detection state; above, the limit is no limit (1 TiB).
const MIN_MEMORY_MIB: u64 = 64;
const MAX_MEMORY_MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Number of detection shards (worker tasks that own agents); 0 = one
    /// per CPU. Default 0.
    pub shards: usize,
    /// Span batches each detection shard may queue. Default 1024.
    pub detection_queue: usize,
    /// Vitals records (JSON ingest, LLM proxy) each detection shard may
    /// queue; when full, ingest answers 429 and the proxy skips detection
    /// for the call (counted). Default 4096.
    pub vitals_queue: usize,
    /// `refuse` (default) or `drop`: see [`WhenFull`].
    pub when_detection_full: WhenFull,
    /// Log filter for agent-immune's own logs (tracing EnvFilter syntax);
    /// `RUST_LOG` wins when set. Default "info".
    pub log_level: String,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Resident memory, in MiB, above which new OTLP requests are refused
    /// with a retryable status (the Collector's memory_limiter). Default 512.
    pub memory_limit_mib: u64,
    /// Decoded-but-unprocessed data the receivers may hold at once, in MiB:
    /// each request reserves its estimated decoded size before decoding
    /// and holds it until detection has processed it; beyond, requests are
    /// refused retryably. Default: half of `memory_limit_mib`.
    pub decoded_budget_mib: Option<u64>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            detection_queue: 1024,
            vitals_queue: 4096,
            when_detection_full: WhenFull::Refuse,
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            memory_limit_mib: 512,
            decoded_budget_mib: None,
        }
    }
}

impl ServiceConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.shards > 1024 {
            issues.push(ConfigIssue::new("shards", "must be at most 1024"));
        }
        if self.detection_queue == 0 || self.detection_queue > 1_000_000 {
            issues.push(ConfigIssue::new(
                "detection_queue",
                "must be between 1 and 1000000",
            ));
        }
        if self.vitals_queue == 0 || self.vitals_queue > 1_000_000 {
            issues.push(ConfigIssue::new(
                "vitals_queue",
                "must be between 1 and 1000000",
            ));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_limit_mib) {
            issues.push(ConfigIssue::new(
                "memory_limit_mib",
                format!(
                    "must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}, got {}",
                    self.memory_limit_mib
                ),
            ));
        }
        if let Some(budget) = self.decoded_budget_mib
            && (budget == 0 || budget >= self.memory_limit_mib)
        {
            issues.push(ConfigIssue::new(
                "decoded_budget_mib",
                format!(
                    "must be at least 1 and below memory_limit_mib ({}), got {budget}",
                    self.memory_limit_mib
                ),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            issues.push(ConfigIssue::new(
                "log_level",
                format!("{:?} is not a valid log filter", self.log_level),
            ));
        }
        issues
    }

    /// The decoded-data budget and the resident-memory limit, in bytes.
    pub fn memory_budget(&self) -> (u64, u64) {
        let budget = self.decoded_budget_mib.unwrap_or(self.memory_limit_mib / 2);
        (budget << 20, self.memory_limit_mib << 20)
    }

    /// Shard count with 0 resolved to the number of CPUs.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}
