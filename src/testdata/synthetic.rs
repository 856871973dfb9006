//! Synthetic GenAI traces in the current OpenTelemetry GenAI convention (as
//! util-genai emits them): an `invoke_agent` root with chat spans carrying
//! token usage and `execute_tool` spans, exported children first.

use super::kv::{kv_f64, kv_i64, kv_str, kv_str_array};
use crate::immune::vitals::{SpanId, TraceId, UnixNanos};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// 2023-11-14T22:13:20Z, a fixed start so traces are reproducible.
pub const DEFAULT_START: UnixNanos = 1_700_000_000_000_000_000;

/// One agent turn as a trace. Every field is public; the setters are
/// shorthand for the common ones.
#[derive(Debug, Clone)]
pub struct AgentTrace {
    /// `gen_ai.agent.name` of the `invoke_agent` root.
    pub agent_name: String,
    /// `gen_ai.agent.id` of the root, when set.
    pub agent_id: Option<String>,
    /// Emit the `invoke_agent` root; without it the chat and tool spans are
    /// parentless (a plain application, the trace-level turn).
    pub with_agent_span: bool,
    pub service_name: String,
    /// Request model; the response model is the same name.
    pub model: String,
    pub llm_calls: u32,
    pub tool_calls: u32,
    /// Usage per chat span.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Leave `gen_ai.usage.*` off the chat spans (a stream without usage).
    pub omit_usage: bool,
    /// Captured system prompt: in `gen_ai.input.messages` of every chat
    /// span. `None` is the default no-content capture.
    pub system_prompt: Option<String>,
    /// The last chat span fails with this `error.type` (and no usage).
    pub llm_error: Option<String>,
    /// The last tool span fails with this `error.type`.
    pub tool_error: Option<String>,
    /// HTTP attempt spans under each chat span (0 = none captured); more
    /// than one means retries.
    pub http_attempts: u32,
    /// Duration of each chat span and each tool span.
    pub llm_ms: f64,
    pub tool_ms: f64,
    pub start: UnixNanos,
    /// Ids derive from this (same seed, same ids).
    pub seed: u64,
}

impl AgentTrace {
    pub fn new(agent_name: impl Into<String>) -> Self {
        Self {
            agent_name: agent_name.into(),
            agent_id: None,
            with_agent_span: true,
            service_name: "synthetic-agent".to_string(),
            model: "gpt-4o-mini".to_string(),
            llm_calls: 2,
            tool_calls: 1,
            input_tokens: 42,
            output_tokens: 17,
            omit_usage: false,
            system_prompt: None,
            llm_error: None,
            tool_error: None,
            http_attempts: 0,
            llm_ms: 400.0,
            tool_ms: 20.0,
            start: DEFAULT_START,
            seed: 1,
        }
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn start(mut self, start: UnixNanos) -> Self {
        self.start = start;
        self
    }
    pub fn agent_id(mut self, id: impl Into<String>) -> Self {
        self.agent_id = Some(id.into());
        self
    }
    pub fn without_agent_span(mut self) -> Self {
        self.with_agent_span = false;
        self
    }
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }
    pub fn llm_calls(mut self, n: u32) -> Self {
        self.llm_calls = n;
        self
    }
    pub fn tool_calls(mut self, n: u32) -> Self {
        self.tool_calls = n;
        self
    }
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.input_tokens = input;
        self.output_tokens = output;
        self
    }
    pub fn without_usage(mut self) -> Self {
        self.omit_usage = true;
        self
    }
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }
    pub fn llm_error(mut self, error_type: impl Into<String>) -> Self {
        self.llm_error = Some(error_type.into());
        self
    }
    pub fn tool_error(mut self, error_type: impl Into<String>) -> Self {
        self.tool_error = Some(error_type.into());
        self
    }
    pub fn http_attempts(mut self, n: u32) -> Self {
        self.http_attempts = n;
        self
    }
    pub fn latency_ms(mut self, llm_ms: f64, tool_ms: f64) -> Self {
        self.llm_ms = llm_ms;
        self.tool_ms = tool_ms;
        self
    }

    pub fn trace_id(&self) -> TraceId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&splitmix(self.seed).to_be_bytes());
        id[8..].copy_from_slice(&splitmix(self.seed ^ 0x5bd1_e995).to_be_bytes());
        id
    }

    /// Id of the n-th span of the trace (0 is the root).
    pub fn span_id(&self, n: u64) -> SpanId {
        let v = splitmix(self.seed.wrapping_mul(1_000_003).wrapping_add(n)) | 1;
        v.to_be_bytes()
    }

    /// End of the turn: the root span's end.
    pub fn end(&self) -> UnixNanos {
        self.layout().1
    }

    /// Spans of the trace, children first and the root last, as SDK
    /// exporters send them.
    pub fn spans(&self) -> Vec<Span> {
        let (placements, end) = self.layout();
        let trace_id = self.trace_id().to_vec();
        let root_id = self.span_id(0);
        let parent = if self.with_agent_span {
            root_id.to_vec()
        } else {
            Vec::new()
        };
        let mut spans = Vec::new();
        let mut next_id = 1u64;
        let mut chat_index = 0u32;
        let mut tool_index = 0u32;
        for (kind, start, stop) in placements {
            let span_id = self.span_id(next_id);
            next_id += 1;
            match kind {
                Placed::Chat => {
                    chat_index += 1;
                    let last = chat_index == self.llm_calls;
                    let failed = last && self.llm_error.is_some();
                    for attempt in 0..self.http_attempts {
                        let attempt_failed = failed || attempt + 1 < self.http_attempts;
                        spans.push(self.http_span(
                            &trace_id,
                            self.span_id(next_id),
                            &span_id,
                            start,
                            stop,
                            attempt,
                            attempt_failed,
                        ));
                        next_id += 1;
                    }
                    spans.push(self.chat_span(
                        &trace_id,
                        span_id,
                        &parent,
                        start,
                        stop,
                        chat_index == 1,
                        failed,
                    ));
                }
                Placed::Tool => {
                    tool_index += 1;
                    let failed = tool_index == self.tool_calls && self.tool_error.is_some();
                    spans.push(
                        self.tool_span(
                            &trace_id, span_id, &parent, start, stop, tool_index, failed,
                        ),
                    );
                }
            }
        }
        if self.with_agent_span {
            let mut attributes = vec![
                kv_str("gen_ai.operation.name", "invoke_agent"),
                kv_str("gen_ai.agent.name", &self.agent_name),
                kv_str("gen_ai.request.model", &self.model),
            ];
            if let Some(id) = &self.agent_id {
                attributes.push(kv_str("gen_ai.agent.id", id));
            }
            spans.push(Span {
                trace_id: trace_id.clone(),
                span_id: root_id.to_vec(),
                name: format!("invoke_agent {}", self.agent_name),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: self.start,
                end_time_unix_nano: end,
                attributes,
                ..Default::default()
            });
        }
        spans
    }

    /// The trace as one OTLP request (one resource, one scope).
    pub fn request(&self) -> ExportTraceServiceRequest {
        request_of(std::slice::from_ref(self))
    }

    /// Chat, tool, chat...: the first chat asks for the tools, the tools
    /// run, the remaining chats follow. Returns placements and the end.
    fn layout(&self) -> (Vec<(Placed, UnixNanos, UnixNanos)>, UnixNanos) {
        let llm_ns = millis_to_ns(self.llm_ms);
        let tool_ns = millis_to_ns(self.tool_ms);
        let gap = 1_000_000; // 1 ms of agent code between steps
        let mut at = self.start.saturating_add(gap);
        let mut placements = Vec::new();
        for i in 0..self.llm_calls {
            placements.push((Placed::Chat, at, at.saturating_add(llm_ns)));
            at = at.saturating_add(llm_ns).saturating_add(gap);
            if i == 0 {
                for _ in 0..self.tool_calls {
                    placements.push((Placed::Tool, at, at.saturating_add(tool_ns)));
                    at = at.saturating_add(tool_ns).saturating_add(gap);
                }
            }
        }
        if self.llm_calls == 0 {
            for _ in 0..self.tool_calls {
                placements.push((Placed::Tool, at, at.saturating_add(tool_ns)));
                at = at.saturating_add(tool_ns).saturating_add(gap);
            }
        }
        (placements, at)
    }

    #[allow(clippy::too_many_arguments)]
    fn chat_span(
        &self,
        trace_id: &[u8],
        span_id: SpanId,
        parent: &[u8],
        start: UnixNanos,
        end: UnixNanos,
        asks_for_tools: bool,
        failed: bool,
    ) -> Span {
        let mut attributes = vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.provider.name", "openai"),
            kv_str("gen_ai.request.model", &self.model),
            kv_f64("gen_ai.request.temperature", 0.2),
        ];
        if !failed {
            attributes.push(kv_str("gen_ai.response.model", &self.model));
            let reason = if asks_for_tools && self.tool_calls > 0 {
                "tool_calls"
            } else {
                "stop"
            };
            attributes.push(kv_str_array("gen_ai.response.finish_reasons", &[reason]));
            if !self.omit_usage {
                attributes.push(kv_i64(
                    "gen_ai.usage.input_tokens",
                    clamp_i64(self.input_tokens),
                ));
                attributes.push(kv_i64(
                    "gen_ai.usage.output_tokens",
                    clamp_i64(self.output_tokens),
                ));
            }
        }
        if let Some(prompt) = &self.system_prompt {
            let messages = serde_json::json!([
                {"role": "system", "parts": [{"type": "text", "content": prompt}]},
                {"role": "user", "parts": [{"type": "text", "content": "What now?"}]},
            ]);
            attributes.push(kv_str("gen_ai.input.messages", &messages.to_string()));
        }
        let mut status = None;
        if failed {
            let error_type = self.llm_error.as_deref().unwrap_or("error");
            attributes.push(kv_str("error.type", error_type));
            status = Some(Status {
                code: StatusCode::Error as i32,
                message: format!("{error_type}: synthetic failure"),
            });
        }
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            name: format!("chat {}", self.model),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status,
            ..Default::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tool_span(
        &self,
        trace_id: &[u8],
        span_id: SpanId,
        parent: &[u8],
        start: UnixNanos,
        end: UnixNanos,
        index: u32,
        failed: bool,
    ) -> Span {
        let mut attributes = vec![
            kv_str("gen_ai.operation.name", "execute_tool"),
            kv_str("gen_ai.tool.name", &format!("tool_{index}")),
            kv_str("gen_ai.tool.type", "function"),
        ];
        let mut status = None;
        if failed {
            let error_type = self.tool_error.as_deref().unwrap_or("error");
            attributes.push(kv_str("error.type", error_type));
            status = Some(Status {
                code: StatusCode::Error as i32,
                message: "synthetic tool failure".to_string(),
            });
        }
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            name: format!("execute_tool tool_{index}"),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status,
            ..Default::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn http_span(
        &self,
        trace_id: &[u8],
        span_id: SpanId,
        parent: &SpanId,
        start: UnixNanos,
        end: UnixNanos,
        attempt: u32,
        failed: bool,
    ) -> Span {
        // Attempts share the chat span's time evenly.
        let n = u64::from(self.http_attempts.max(1));
        let slice = end.saturating_sub(start) / n;
        let a_start = start.saturating_add(slice * u64::from(attempt));
        let status_code = if failed { 429 } else { 200 };
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            name: "POST".to_string(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: a_start,
            end_time_unix_nano: a_start.saturating_add(slice),
            attributes: vec![
                kv_str("http.request.method", "POST"),
                kv_i64("http.response.status_code", status_code),
                kv_str_array(
                    "http.request.header.x_stainless_retry_count",
                    &[&attempt.to_string()],
                ),
            ],
            status: failed.then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Placed {
    Chat,
    Tool,
}

/// Several traces in one request, one `ResourceSpans` per service name.
pub fn request_of(traces: &[AgentTrace]) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    for trace in traces {
        let spans = trace.spans();
        let existing = resource_spans.iter_mut().find(|rs| {
            rs.resource.as_ref().is_some_and(|r| {
                r.attributes.first() == Some(&kv_str("service.name", &trace.service_name))
            })
        });
        match existing {
            Some(rs) => rs.scope_spans[0].spans.extend(spans),
            None => resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: resource_attributes(&trace.service_name),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.util.genai.handler".to_string(),
                        version: "synthetic".to_string(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }),
        }
    }
    ExportTraceServiceRequest { resource_spans }
}

fn resource_attributes(service_name: &str) -> Vec<KeyValue> {
    vec![
        kv_str("service.name", service_name),
        kv_str("telemetry.sdk.language", "python"),
        kv_str("telemetry.sdk.name", "opentelemetry"),
    ]
}

fn millis_to_ns(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1e6).min(u64::MAX as f64 / 2.0) as u64
    } else {
        0
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// SplitMix64: a fixed, well-spread id from a seed.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
