//! The genai processor's hot path: every received span becomes compact
//! `SpanFacts` (what it is, and what vitals need of it). It runs on the
//! receiving task for every span, so it borrows, looks keys up as &str,
//! and allocates only for what it keeps.

use super::config::GenaiConfig;
use super::content;
use super::error_type;
use super::facts::{ResourceFacts, SpanClass, SpanFacts};
use super::intern::Interner;
use super::price::{PriceTable, TokenUsage};
use super::scan::{Scan, split_index};
use super::value::{
    MAX_NAME_BYTES, as_cost, as_count, as_http_status, as_name, as_str, as_text,
    finish_reasons_say_tool_calls, is_tool_calls_reason, truncated,
};
use crate::immune::vitals::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Recognises GenAI spans; shared by every receiving task.
#[derive(Debug)]
pub struct Recogniser {
    extra_identity_keys: Vec<String>,
    placeholders: Vec<String>,
    /// Resource attributes kept for enforcement.
    resource_keys: Vec<String>,
    prices: PriceTable,
    spans: AtomicU64,
    invalid_spans: AtomicU64,
}

/// What the recogniser has seen since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecogniserStats {
    /// Spans turned into facts.
    pub spans: u64,
    /// Spans skipped because their trace, span or parent id was malformed.
    pub invalid_spans: u64,
}

impl Recogniser {
    pub fn new(config: &GenaiConfig) -> Self {
        Self {
            extra_identity_keys: config.agent_id_attributes.clone(),
            placeholders: config.placeholder_agents.clone(),
            resource_keys: Vec::new(),
            prices: PriceTable::new(&config.prices),
            spans: AtomicU64::new(0),
            invalid_spans: AtomicU64::new(0),
        }
    }

    /// Also keeps these resource attributes of every span (what the
    /// executors route and act on).
    pub fn keeping_resource(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        self.resource_keys = keys.into_iter().collect();
        self
    }

    pub fn stats(&self) -> RecogniserStats {
        RecogniserStats {
            spans: self.spans.load(Ordering::Relaxed),
            invalid_spans: self.invalid_spans.load(Ordering::Relaxed),
        }
    }

    /// Appends the facts of every well-formed span of `request` to `out`.
    /// Spans with malformed ids are skipped and counted; nothing panics.
    pub fn recognise(&self, request: &ExportTraceServiceRequest, out: &mut Vec<SpanFacts>) {
        let mut interner = Interner::default();
        let mut kept = 0u64;
        let mut invalid = 0u64;
        for resource_spans in &request.resource_spans {
            let resource = Arc::new(self.resource_facts(resource_spans.resource.as_ref()));
            for scope_spans in &resource_spans.scope_spans {
                out.reserve(scope_spans.spans.len());
                for span in &scope_spans.spans {
                    match self.span_facts(span, &resource, &mut interner) {
                        Some(facts) => {
                            out.push(facts);
                            kept += 1;
                        }
                        None => invalid += 1,
                    }
                }
            }
        }
        self.spans.fetch_add(kept, Ordering::Relaxed);
        if invalid > 0 {
            self.invalid_spans.fetch_add(invalid, Ordering::Relaxed);
        }
    }

    fn resource_facts(&self, resource: Option<&Resource>) -> ResourceFacts {
        let attributes: &[KeyValue] = resource.map_or(&[], |r| &r.attributes);
        let service_name = find(attributes, "service.name")
            .and_then(as_name)
            .map_or("unknown_service", |s| truncated(s, MAX_NAME_BYTES));
        let agent = self
            .extra_identity_keys
            .iter()
            .filter_map(|key| find(attributes, key).and_then(as_name))
            .find(|name| !self.is_placeholder(name))
            .map(|name| Box::from(truncated(name, MAX_NAME_BYTES)));
        let kept = self
            .resource_keys
            .iter()
            .filter_map(|key| {
                let value = find(attributes, key).and_then(as_text)?;
                Some((
                    Box::from(key.as_str()),
                    Box::from(truncated(&value, MAX_NAME_BYTES)),
                ))
            })
            .collect();
        ResourceFacts {
            service_name: Box::from(service_name),
            agent,
            kept,
        }
    }

    fn is_placeholder(&self, name: &str) -> bool {
        self.placeholders.iter().any(|p| p == name)
    }

    fn span_facts(
        &self,
        span: &Span,
        resource: &Arc<ResourceFacts>,
        interner: &mut Interner,
    ) -> Option<SpanFacts> {
        let trace_id: TraceId = non_zero_id(&span.trace_id)?;
        let span_id: SpanId = non_zero_id(&span.span_id)?;
        let parent_span_id = match span.parent_span_id.len() {
            0 => None,
            8 => non_zero_id(&span.parent_span_id),
            _ => return None,
        };
        let scan = Scan::of(&span.attributes, &self.extra_identity_keys);
        let class = classify(&scan);
        let status = span.status.as_ref();
        let status_code = status.map_or(StatusCode::Unset as i32, |s| s.code);
        let status_message = status.map_or("", |s| s.message.as_str());
        let failed = status_code == StatusCode::Error as i32
            || (status_code != StatusCode::Ok as i32 && scan.error_type.is_some());
        let exception = if failed {
            exception_of(&span.events)
        } else {
            None
        };

        let mut http_status = scan
            .http_status
            .iter()
            .flatten()
            .find_map(|v| as_http_status(v));
        if failed && http_status.is_none() {
            http_status = error_type::status_in_message(status_message).or_else(|| {
                exception
                    .and_then(|e| e.message)
                    .and_then(error_type::status_in_message)
            });
        }
        let error_type = if failed {
            self.error_type(&scan, exception, http_status, status_message, interner)
        } else {
            None
        };

        let calls_model = matches!(class, SpanClass::Llm | SpanClass::Embeddings);
        let input = first_count(&scan.input_tokens);
        let output = first_count(&scan.output_tokens);
        let usage_present = input.is_some() || output.is_some();
        let model_name = if calls_model || class == SpanClass::Agent {
            model_of(&scan, &span.name)
        } else {
            None
        };
        let usage = TokenUsage {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
            cached_input: first_count(&scan.cached_tokens).unwrap_or(0),
        };
        let cost_usd = if calls_model {
            scan.cost
                .iter()
                .flatten()
                .find_map(|v| as_cost(v))
                .or_else(|| {
                    let model = model_name.as_deref()?;
                    usage_present
                        .then(|| self.prices.cost(model, usage))
                        .flatten()
                })
                .unwrap_or(0.0)
        } else {
            0.0
        };

        let (tool_calls_requested, finish_tool_calls) = if class == SpanClass::Llm {
            requested_tool_calls(&scan)
        } else {
            (0, false)
        };
        let prompt_hash = if matches!(class, SpanClass::Llm | SpanClass::Agent) {
            prompt_hash(&scan, &span.attributes, &span.events)
        } else {
            None
        };
        let (agent, agent_placeholder) = self.identity(&scan, class, &span.name);

        Some(SpanFacts {
            trace_id,
            span_id,
            parent_span_id,
            start_ns: span.start_time_unix_nano,
            end_ns: span.end_time_unix_nano,
            class,
            failed,
            error_type,
            http_status,
            model: model_name.map(|m| interner.get(truncated(&m, MAX_NAME_BYTES))),
            input_tokens: usage.input,
            output_tokens: usage.output,
            usage_present,
            tool_calls_requested,
            finish_tool_calls,
            cost_usd,
            prompt_hash,
            agent: agent.map(|a| interner.get(truncated(a, MAX_NAME_BYTES))),
            agent_placeholder,
            workflow: scan
                .workflow_name
                .map(|w| interner.get(truncated(w, MAX_NAME_BYTES))),
            resource: resource.clone(),
        })
    }

    /// README order: `error.type`, the exception event's type, the HTTP
    /// status, then an exception class leading the status description.
    fn error_type(
        &self,
        scan: &Scan<'_>,
        exception: Option<Exception<'_>>,
        http_status: Option<u16>,
        status_message: &str,
        interner: &mut Interner,
    ) -> Option<Arc<str>> {
        if let Some(t) = scan.error_type.and_then(error_type::normalise) {
            return Some(interner.get(t));
        }
        if let Some(t) = exception
            .and_then(|e| e.kind)
            .and_then(error_type::normalise)
        {
            return Some(interner.get(t));
        }
        if let Some(status) = http_status.filter(|s| *s >= 400) {
            return Some(interner.get(&status.to_string()));
        }
        error_type::type_leading_message(status_message).map(|t| interner.get(t))
    }

    /// The span's own identity, placeholders skipped, and whether a
    /// placeholder was seen. Agent spans also fall back to Traceloop's
    /// entity name and to their span name.
    fn identity<'a>(
        &self,
        scan: &Scan<'a>,
        class: SpanClass,
        span_name: &'a str,
    ) -> (Option<&'a str>, bool) {
        let is_agent = class == SpanClass::Agent;
        let entity = scan
            .entity_name
            .filter(|_| is_agent && scan.traceloop_kind == Some("agent"));
        let from_name = if is_agent {
            agent_in_span_name(span_name)
        } else {
            None
        };
        let candidates = [
            scan.agent_id,
            scan.agent_name,
            scan.extra_identity.map(|(_, v)| v),
            scan.oi_agent_name,
            entity,
            from_name,
        ];
        let mut placeholder = false;
        for candidate in candidates.into_iter().flatten() {
            if self.is_placeholder(candidate) {
                placeholder = true;
            } else {
                return (Some(candidate), placeholder);
            }
        }
        (None, placeholder)
    }
}

/// The README's classification, first match wins; span kind is never used.
fn classify(scan: &Scan<'_>) -> SpanClass {
    match scan.op {
        Some("chat" | "text_completion" | "generate_content") => return SpanClass::Llm,
        Some("embeddings") => return SpanClass::Embeddings,
        Some("invoke_agent" | "create_agent") => return SpanClass::Agent,
        Some("execute_tool") => return SpanClass::Tool,
        Some("invoke_workflow") => return SpanClass::Workflow,
        // "unknown" (openai-agents-v2 turn wrappers) and newer operations
        // fall through to the other conventions.
        _ => {}
    }
    match scan.oi_kind {
        Some("LLM") => return SpanClass::Llm,
        Some("EMBEDDING") => return SpanClass::Embeddings,
        Some("TOOL") => return SpanClass::Tool,
        Some("AGENT") => return SpanClass::Agent,
        Some("CHAIN") => return SpanClass::Workflow,
        Some(_) => return SpanClass::Other,
        None => {}
    }
    match scan.traceloop_kind {
        Some("agent") => return SpanClass::Agent,
        Some("tool") => return SpanClass::Tool,
        Some("workflow" | "task") => return SpanClass::Workflow,
        _ => {}
    }
    match scan.request_type {
        Some("chat" | "completion") => return SpanClass::Llm,
        Some("embedding" | "embeddings") => return SpanClass::Embeddings,
        _ => {}
    }
    if scan.op.is_none() {
        if scan.tool_name {
            return SpanClass::Tool;
        }
        let agent_marker = scan.agent_id.is_some() || scan.agent_name.is_some();
        if scan.genai_model_or_usage && !agent_marker {
            return SpanClass::Llm;
        }
    }
    if scan.http_method {
        return SpanClass::Http;
    }
    SpanClass::Other
}

/// A trace or span id of the right length that is not all zeros.
fn non_zero_id<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let id: [u8; N] = bytes.try_into().ok()?;
    id.iter().any(|b| *b != 0).then_some(id)
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn first_count(slots: &[Option<&AnyValue>]) -> Option<u64> {
    slots.iter().flatten().find_map(|v| as_count(v))
}

/// README order: response model, request model, OpenInference's model
/// name, its invocation parameters, then the span name `chat <model>`.
fn model_of<'a>(scan: &Scan<'a>, span_name: &'a str) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(m) = scan.models.iter().flatten().find_map(|v| as_name(v)) {
        return Some(m.into());
    }
    if let Some(m) = scan
        .invocation_parameters
        .and_then(content::model_in_invocation_parameters)
        .filter(|m| !m.trim().is_empty())
    {
        return Some(m);
    }
    let (op, model) = span_name.split_once(' ')?;
    let model = model.trim();
    (matches!(
        op,
        "chat" | "text_completion" | "generate_content" | "embeddings"
    ) && !model.is_empty()
        && !model.contains(' '))
    .then_some(model.into())
}

/// The agent a span name names by convention: `invoke_agent WeatherBot`
/// (OTel) or `WeatherBot.agent` (Traceloop). Other names are not read as
/// agents: an OpenAI Agents SDK workflow root is an agent span named after
/// the workflow ("Agent workflow" unless the app names it), and taking that
/// for an agent would put an empty turn of a bogus agent in every trace.
fn agent_in_span_name(name: &str) -> Option<&str> {
    let name = name.trim();
    let bare = name
        .strip_prefix("invoke_agent ")
        .or_else(|| name.strip_prefix("create_agent "))
        .or_else(|| name.strip_suffix(".agent"))?
        .trim();
    (!bare.is_empty()).then_some(bare)
}

fn requested_tool_calls(scan: &Scan<'_>) -> (u32, bool) {
    let (json_calls, json_finish) = scan
        .output_messages
        .map_or((0, false), content::output_tool_calls);
    let calls = if json_calls > 0 {
        json_calls
    } else {
        scan.flat_output_tool_calls
    };
    let finish = scan
        .finish_reasons
        .is_some_and(finish_reasons_say_tool_calls)
        || scan.oi_finish_reason.is_some_and(is_tool_calls_reason)
        || scan.completion_finish_tool_calls
        || json_finish;
    (calls, finish)
}

/// The first source in README order that holds system instructions.
fn prompt_hash(scan: &Scan<'_>, attributes: &[KeyValue], events: &[Event]) -> Option<[u8; 32]> {
    if let Some(h) = scan
        .system_instructions
        .and_then(content::hash_system_instructions)
    {
        return Some(h);
    }
    if let Some(h) = scan
        .input_messages
        .and_then(content::hash_system_in_messages)
    {
        return Some(h);
    }
    if scan.oi_input_flattened
        && let Some(h) = hash_flattened_system(attributes, FlatForm::OpenInference)
    {
        return Some(h);
    }
    if scan.prompt_flattened
        && let Some(h) = hash_flattened_system(attributes, FlatForm::Traceloop)
    {
        return Some(h);
    }
    if let Some(h) = hash_system_in_events(events) {
        return Some(h);
    }
    scan.oi_input_value
        .and_then(content::hash_system_in_json_messages)
}

#[derive(Clone, Copy)]
enum FlatForm {
    /// `llm.input_messages.{i}.message.role|content|contents.{k}.message_content.text`
    OpenInference,
    /// `gen_ai.prompt.{i}.role|content`
    Traceloop,
}

impl FlatForm {
    fn prefix(self) -> &'static str {
        match self {
            FlatForm::OpenInference => "llm.input_messages.",
            FlatForm::Traceloop => "gen_ai.prompt.",
        }
    }
    fn role_field(self) -> &'static str {
        match self {
            FlatForm::OpenInference => "message.role",
            FlatForm::Traceloop => "role",
        }
    }
    /// The order of a content field within its message, if it is one.
    fn content_order(self, field: &str) -> Option<u32> {
        match self {
            FlatForm::OpenInference => {
                if field == "message.content" {
                    return Some(0);
                }
                let (k, rest) = split_index(field.strip_prefix("message.contents.")?)?;
                (rest == "message_content.text").then_some(k.saturating_add(1))
            }
            FlatForm::Traceloop => (field == "content").then_some(0),
        }
    }
}

/// System instructions in flattened message attributes: the indices whose
/// role is system, then their content fields in order.
fn hash_flattened_system(attributes: &[KeyValue], form: FlatForm) -> Option<[u8; 32]> {
    let prefix = form.prefix();
    let fields = || {
        attributes.iter().filter_map(move |kv| {
            let (i, field) = split_index(kv.key.strip_prefix(prefix)?)?;
            Some((i, field, kv.value.as_ref()?))
        })
    };
    let mut system: Vec<u32> = fields()
        .filter(|(_, field, v)| {
            *field == form.role_field()
                && as_str(v).is_some_and(|r| matches!(r, "system" | "developer"))
        })
        .map(|(i, _, _)| i)
        .collect();
    if system.is_empty() {
        return None;
    }
    system.sort_unstable();
    system.dedup();
    let mut texts: Vec<(u32, u32, &str)> = fields()
        .filter(|(i, _, _)| system.binary_search(i).is_ok())
        .filter_map(|(i, field, v)| Some((i, form.content_order(field)?, as_str(v)?)))
        .collect();
    texts.sort_by_key(|(i, k, _)| (*i, *k));
    let mut hasher = content::PromptHasher::default();
    for (_, _, text) in texts {
        hasher.push(text);
    }
    hasher.finish()
}

/// Span events that carry the system prompt in some SDKs: a
/// `gen_ai.system.message` event, or the 1.26 `gen_ai.content.prompt`.
fn hash_system_in_events(events: &[Event]) -> Option<[u8; 32]> {
    for event in events {
        match event.name.as_str() {
            "gen_ai.system.message" => {
                if let Some(text) = find(&event.attributes, "content").and_then(as_str) {
                    let mut hasher = content::PromptHasher::default();
                    hasher.push(text);
                    return hasher.finish();
                }
                if let Some(body) = find(&event.attributes, "gen_ai.event.content").and_then(as_str)
                {
                    #[derive(serde::Deserialize)]
                    struct Body {
                        content: Option<String>,
                    }
                    if let Ok(Body {
                        content: Some(text),
                    }) = serde_json::from_str::<Body>(body)
                    {
                        let mut hasher = content::PromptHasher::default();
                        hasher.push(&text);
                        return hasher.finish();
                    }
                }
            }
            "gen_ai.content.prompt" => {
                if let Some(h) = find(&event.attributes, "gen_ai.prompt")
                    .and_then(as_str)
                    .and_then(content::hash_system_in_json_messages)
                {
                    return Some(h);
                }
            }
            _ => {}
        }
    }
    None
}

#[derive(Clone, Copy)]
struct Exception<'a> {
    kind: Option<&'a str>,
    message: Option<&'a str>,
}

/// The first `exception` span event.
fn exception_of(events: &[Event]) -> Option<Exception<'_>> {
    let event = events.iter().find(|e| e.name == "exception")?;
    Some(Exception {
        kind: find(&event.attributes, "exception.type").and_then(as_name),
        message: find(&event.attributes, "exception.message").and_then(as_str),
    })
}
