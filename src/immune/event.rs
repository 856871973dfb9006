//! Events: every step of the immune response, as a value. The events
//! exporter turns each into one OTLP LogRecord (`event.name`, typed
//! attributes, trace/span id of the offending turn).

use super::vitals::{SpanId, TraceId, UnixNanos};

/// Severity, mapped onto OTLP SeverityNumber by the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

/// A typed attribute value, kept typed so backends can filter numerically.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    StrList(Vec<String>),
}

/// One immune event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Stable, unique id (for deduplication downstream); set by the shard
    /// that emits the event.
    pub id: String,
    /// `event.name`, e.g. `agent_immune.infection`.
    pub name: &'static str,
    pub time: UnixNanos,
    pub severity: Severity,
    pub agent_id: String,
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    /// One human-readable line (the LogRecord body).
    pub body: String,
    /// Typed attributes, in a stable order.
    pub attributes: Vec<(String, AttrValue)>,
}
