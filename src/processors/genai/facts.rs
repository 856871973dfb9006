//! What the recogniser keeps of one span: only what turn vitals need.

use crate::immune::vitals::{SpanId, TraceId, UnixNanos};
use std::sync::Arc;

/// What a span is, by the fixture README's priority rules (never by span
/// kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanClass {
    /// One call to a model (chat, text completion, generate content).
    Llm,
    Embeddings,
    Tool,
    Agent,
    /// Workflow, chain or task wrapper.
    Workflow,
    /// An HTTP client attempt (one per try under an LLM span).
    Http,
    Other,
}

/// Identity shared by every span of one `ResourceSpans`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceFacts {
    /// `service.name`, or `unknown_service` as the SDKs default it.
    pub service_name: Box<str>,
    /// The first configured identity attribute found on the resource.
    pub agent: Option<Box<str>>,
    /// The resource attributes enforcement reads (`process.pid`,
    /// `k8s.deployment.name`, ...: the executors' `resource_keys`), as
    /// text. Empty unless routing or a target needs them.
    pub kept: Box<[(Box<str>, Box<str>)]>,
}

/// The compact facts of one span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanFacts {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span (empty or all-zero parent id).
    pub parent_span_id: Option<SpanId>,
    pub start_ns: UnixNanos,
    /// As sent: it may be before `start_ns` (then `duration_ns` is 0, and
    /// the turn's timing is not believed, see `immune::timing`).
    pub end_ns: UnixNanos,
    pub class: SpanClass,
    /// Status ERROR (or `error.type` set on a span whose status is not OK).
    pub failed: bool,
    /// Normalised error type (`RateLimitError`, `TimeoutError`, `429`) of a
    /// failed span, when any source names it.
    pub error_type: Option<Arc<str>>,
    /// HTTP response status of an HTTP span (or parsed from an error).
    pub http_status: Option<u16>,
    /// Response model when known, else the request model.
    pub model: Option<Arc<str>>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// False when the span reported no token usage at all.
    pub usage_present: bool,
    /// Tool calls the model asked for in its output (never the input).
    pub tool_calls_requested: u32,
    /// A finish reason was `tool_calls` / `tool_call`.
    pub finish_tool_calls: bool,
    /// Reported cost, else tokens x price; 0 when neither is known.
    pub cost_usd: f64,
    /// SHA-256 of the system instructions, where content was captured.
    pub prompt_hash: Option<[u8; 32]>,
    /// The span's own agent identity, placeholders skipped. For agent spans
    /// this is who the agent is; on other spans it is an inherited hint
    /// (Traceloop copies `gen_ai.agent.name` down to every child).
    pub agent: Option<Arc<str>>,
    /// The span carried agent identity attributes, but only placeholders.
    pub agent_placeholder: bool,
    /// `traceloop.workflow.name`.
    pub workflow: Option<Arc<str>>,
    pub resource: Arc<ResourceFacts>,
}

impl SpanFacts {
    /// An agent span that names a real agent: it can own a turn.
    pub fn is_named_agent(&self) -> bool {
        self.class == SpanClass::Agent && self.agent.is_some()
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}
