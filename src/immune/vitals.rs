//! Vitals: what one agent turn looked like, the unit the baseline learns.

/// Nanoseconds since the Unix epoch; the core never reads a clock itself.
pub type UnixNanos = u64;

/// OTLP trace id (16 bytes) and span id (8 bytes), kept so every event can
/// link back to the turn that caused it.
pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// The vitals of one agent turn (one agent invocation within one trace).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vitals {
    /// Stable identity of the agent the turn belongs to.
    pub agent_id: String,
    /// Trace the turn was assembled from.
    pub trace_id: TraceId,
    /// Root span of the turn (the agent span, or the trace root).
    pub root_span_id: SpanId,
    /// End of the turn (root span end time, the agent's clock); 0 when
    /// not known (its timestamps could not be believed).
    pub end_time: UnixNanos,
    /// Root duration in milliseconds; NaN when not known.
    pub latency_ms: f64,
    /// Input (prompt) tokens summed over the turn's LLM calls.
    pub input_tokens: u64,
    /// Output (completion) tokens summed over the turn's LLM calls.
    pub output_tokens: u64,
    /// False when an LLM call reported no usage (e.g. a stream without
    /// `include_usage`): the token numbers are then a lower bound, not a fact.
    pub usage_known: bool,
    /// Number of LLM calls in the turn.
    pub llm_calls: u32,
    /// Tool calls: tool spans, else tool calls requested by the model.
    pub tool_calls: u32,
    /// Retried attempts (HTTP attempts beyond the first, app-level retries).
    pub retries: u32,
    /// Spans in the turn that ended in error.
    pub errors: u32,
    /// Type of the first error seen, when any.
    pub error_type: Option<String>,
    /// Estimated cost in USD (reported cost, else tokens x price table).
    pub cost_usd: f64,
    /// Model used (response model when known, else request model).
    pub model: Option<String>,
    /// SHA-256 (hex) of the system instructions, where content is captured.
    pub prompt_hash: Option<String>,
    /// The agent's resource attributes enforcement reads (`process.pid`,
    /// `k8s.deployment.name`, ...), as text; empty unless an executor or
    /// routing rule needs them. Not judged.
    pub resource: Vec<(String, String)>,
    /// What reported the turn.
    pub source: VitalsSource,
}

/// Where a turn's vitals came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VitalsSource {
    /// Assembled from the agent's own spans (OTLP).
    #[default]
    Spans,
    /// One LLM call seen by the proxy.
    LlmProxy,
    /// Reported through the JSON ingest API.
    Ingest,
}

impl Vitals {
    /// Total tokens of the turn.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// True when the turn ended in error or any of its spans did.
    pub fn failed(&self) -> bool {
        self.errors > 0
    }
}
