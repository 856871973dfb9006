//! Self-observability: the pipeline's own counters, in one place. Names
//! follow the Collector's (`otelcol_receiver_accepted_spans` becomes
//! `agent_immune_receiver_accepted_spans`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (queue depths, open traces). Several
/// owners (shards) may each add their own share.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters per signal, indexed by `Signal`.
#[derive(Debug, Default)]
pub struct PerSignal<T> {
    pub traces: T,
    pub metrics: T,
    pub logs: T,
}

impl<T> PerSignal<T> {
    pub fn get(&self, signal: crate::pipeline::consumer::Signal) -> &T {
        use crate::pipeline::consumer::Signal;
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }
}

/// Receiver counters (items = spans, log records or metric points).
#[derive(Debug, Default)]
pub struct ReceiverMetrics {
    pub accepted: PerSignal<Counter>,
    pub refused: PerSignal<Counter>,
    /// Requests rejected as malformed (400 / INVALID_ARGUMENT).
    pub malformed_requests: Counter,
    /// Requests beyond a per-request limit: too many items or attributes,
    /// or a decoded size beyond the whole budget (400 / INVALID_ARGUMENT).
    pub over_limit_requests: Counter,
    /// Requests refused because the decoded-data budget was full or
    /// resident memory was above the limit (429 / RESOURCE_EXHAUSTED).
    pub memory_refused_requests: Counter,
    /// Attribute values nested deeper than max_attribute_depth, truncated.
    pub truncated_values: Counter,
}

/// Exporter counters, as the Collector's exporterhelper reports them.
#[derive(Debug, Default)]
pub struct ExporterMetrics {
    pub sent: Counter,
    pub send_failed: Counter,
    pub enqueue_failed: Counter,
    pub queue_size: Gauge,
    /// Bytes the queued and in-flight requests hold (forwarding only).
    pub queue_bytes: Gauge,
}

/// Detection-side counters.
#[derive(Debug, Default)]
pub struct DetectionMetrics {
    /// Spans the detector never saw because its queue was full (only with
    /// `when_full = "drop"`; the default refuses the request instead).
    pub dropped_spans: Counter,
    pub turns: Counter,
    pub open_traces: Gauge,
    /// Open traces closed early because the cap on open traces was reached.
    pub evicted_traces: Counter,
    /// Spans that arrived after their trace's turn was closed.
    pub late_spans: Counter,
    pub infections: Counter,
    pub monitored_agents: Gauge,
    /// LLM-proxy turns not judged: the agent's own spans report its turns.
    pub shadowed_turns: Counter,
    /// Turns not judged: unusable agent id, or the agent table full of
    /// agents that must be kept.
    pub skipped_turns: Counter,
    /// Agents evicted (least recently seen, holding nothing an operator
    /// needs) to make room for new ones.
    pub evicted_agents: Counter,
    /// Turns of new agents refused: every place held by an agent that
    /// must be kept (also in `skipped_turns`).
    pub refused_turns: Counter,
    /// Turns whose timestamps could not be believed (unset, reversed, far
    /// in the future, too long): judged with latency and end unknown.
    pub bad_timestamps: Counter,
    /// Vitals records (JSON ingest, LLM proxy) refused because their
    /// shard's vitals queue was full.
    pub refused_vitals: Counter,
    /// Turns assembled from spans that were not judged because the owning
    /// shard's turn queue was full.
    pub dropped_turns: Counter,
}

/// All of the pipeline's own counters, shared by reference.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub receiver: ReceiverMetrics,
    pub forward: ExporterMetrics,
    pub events: ExporterMetrics,
    pub detection: DetectionMetrics,
    /// Each listener's connection counters.
    pub listeners: crate::listener::ListenerRegistry,
    /// The llm_proxy receiver's counters and added-latency histogram.
    pub llm_proxy: crate::receivers::llm_proxy::metrics::ProxyMetrics,
    /// Whether the state store takes the shards' commits (readiness).
    pub state: crate::state::StoreHealth,
}
