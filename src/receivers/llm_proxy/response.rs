//! What the vitals need from a response: model, usage, tool calls, error
//! type. Read from a whole JSON body or from the events of a stream, for
//! Chat Completions and the Responses API alike. Like the request, a
//! response is read member by member from its bytes, never as a JSON tree,
//! so a large body costs no more than its (bounded) capture.

use super::request::{for_each_element, for_each_member, text};
use serde_json::value::RawValue;
use std::collections::HashSet;

/// Most distinct streamed tool calls tracked in one response.
const MAX_TRACKED_TOOL_CALLS: usize = 1024;
const MAX_ERROR_TYPE_CHARS: usize = 64;
const MAX_MODEL_CHARS: usize = 200;

/// The facts of one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub model: Option<String>,
    pub input_tokens: u64,
    /// Input tokens served from the provider's prompt cache (part of
    /// `input_tokens`), priced at the cached rate.
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    /// A usage object was seen; without one the token counts are 0, not
    /// guesses.
    pub usage_known: bool,
    pub tool_calls: u32,
    /// `error.type`, else `error.code`, of an error body or stream event.
    pub error_type: Option<String>,
}

/// Accumulates facts from a JSON body or from stream events.
#[derive(Debug, Default)]
pub struct ResponseObserver {
    facts: ResponseFacts,
    /// Streamed Chat Completions tool calls: (choice, tool call index).
    streamed_calls: HashSet<(u64, u64)>,
    /// Responses API tool-call items seen in `response.output_item.done`.
    done_items: u32,
    /// Tool calls in the final Responses object, when one was seen.
    final_output_calls: Option<u32>,
}

/// The members of a response object or stream event the vitals read.
#[derive(Default)]
struct Members<'a> {
    model: Option<&'a RawValue>,
    usage: Option<&'a RawValue>,
    output: Option<&'a RawValue>,
    object: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
    choices: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    response: Option<&'a RawValue>,
    item: Option<&'a RawValue>,
    code: Option<&'a RawValue>,
}

impl<'a> Members<'a> {
    /// The members of the JSON object `json`; `None` when it is not one.
    fn of(json: &'a [u8]) -> Option<Self> {
        let mut m = Members::default();
        for_each_member(json, |key, value| match key {
            "model" => m.model = Some(value),
            "usage" => m.usage = Some(value),
            "output" => m.output = Some(value),
            "object" => m.object = Some(value),
            "error" => m.error = Some(value),
            "choices" => m.choices = Some(value),
            "type" => m.kind = Some(value),
            "response" => m.response = Some(value),
            "item" => m.item = Some(value),
            "code" => m.code = Some(value),
            _ => {}
        })
        .ok()?;
        Some(m)
    }

    /// The members of a nested value, when it is an object.
    fn of_raw(value: Option<&'a RawValue>) -> Option<Self> {
        value
            .filter(|v| v.get().starts_with('{'))
            .and_then(|v| Self::of(v.get().as_bytes()))
    }
}

/// The value of `key` in the object `object`, raw (the last copy).
fn member<'a>(object: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    let mut found = None;
    if object.get().starts_with('{') {
        let _ = for_each_member(object.get().as_bytes(), |k, v| {
            if k == key {
                found = Some(v);
            }
        });
    }
    found
}

fn as_u64(value: Option<&RawValue>) -> Option<u64> {
    value.and_then(|v| serde_json::from_str::<u64>(v.get()).ok())
}

fn is_array(value: Option<&RawValue>) -> Option<&RawValue> {
    value.filter(|v| v.get().starts_with('['))
}

/// Calls `each` for every element of `array` (nothing when it is none).
fn elements<'a>(array: Option<&'a RawValue>, each: impl FnMut(&'a RawValue)) {
    if let Some(array) = is_array(array) {
        let _ = for_each_element(array, each);
    }
}

impl ResponseObserver {
    /// One complete JSON body (a non-streamed response or an error).
    pub fn observe_body(&mut self, body: &[u8]) {
        let Some(members) = Members::of(body) else {
            return;
        };
        self.observe_object(&members);
        if is_array(members.choices).is_some() {
            let mut calls: usize = 0;
            elements(members.choices, |choice| {
                let Some(message) = member(choice, "message") else {
                    return;
                };
                let mut tools = 0;
                elements(member(message, "tool_calls"), |_| tools += 1);
                let legacy =
                    member(message, "function_call").is_some_and(|f| f.get().starts_with('{'));
                calls = calls.saturating_add(tools + usize::from(legacy));
            });
            self.facts.tool_calls = saturate(calls);
        }
    }

    /// The `data` of one stream event.
    pub fn observe_event(&mut self, data: &[u8]) {
        if data == b"[DONE]" {
            return;
        }
        let Some(event) = Members::of(data) else {
            return;
        };
        let kind = event.kind.and_then(text).unwrap_or_default();
        if kind == "error" {
            // Responses API stream error: {"type":"error","code":..,"message":..}
            self.set_error(&[event.code]);
            return;
        }
        if let Some(response) = Members::of_raw(event.response) {
            // Responses API: created / in_progress / completed / failed /
            // incomplete all carry the response object; the last one wins.
            self.observe_object(&response);
            if let Some(output) = is_array(response.output) {
                let (mut items, mut calls) = (0usize, 0usize);
                elements(Some(output), |item| {
                    items += 1;
                    calls += usize::from(is_tool_call(item));
                });
                if items > 0 || kind == "response.completed" {
                    self.final_output_calls = Some(saturate(calls));
                }
            }
        }
        if kind == "response.output_item.done" && event.item.is_some_and(is_tool_call) {
            self.done_items = self.done_items.saturating_add(1);
        }
        if kind.is_empty() {
            // Chat Completions chunk.
            self.observe_object(&event);
            let mut seen = Vec::new();
            elements(event.choices, |choice| {
                let choice_index = as_u64(member(choice, "index")).unwrap_or(0);
                let deltas = member(choice, "delta").and_then(|d| member(d, "tool_calls"));
                let mut position = 0u64;
                elements(deltas, |call| {
                    let index = as_u64(member(call, "index")).unwrap_or(position);
                    seen.push((choice_index, index));
                    position += 1;
                });
            });
            for call in seen {
                if self.streamed_calls.len() < MAX_TRACKED_TOOL_CALLS {
                    self.streamed_calls.insert(call);
                }
            }
        }
    }

    /// Model, usage and error of a response object (either API).
    fn observe_object(&mut self, object: &Members<'_>) {
        if let Some(model) = object.model.and_then(text)
            && !model.is_empty()
        {
            self.facts.model = Some(model.chars().take(MAX_MODEL_CHARS).collect());
        }
        if let Some(usage) = object.usage.filter(|u| u.get().starts_with('{')) {
            let tokens = |keys: [&str; 2]| keys.iter().find_map(|k| as_u64(member(usage, k)));
            let input = tokens(["prompt_tokens", "input_tokens"]);
            let output = tokens(["completion_tokens", "output_tokens"]);
            if input.is_some() || output.is_some() {
                self.facts.input_tokens = input.unwrap_or(0);
                self.facts.output_tokens = output.unwrap_or(0);
                self.facts.cached_input_tokens = ["prompt_tokens_details", "input_tokens_details"]
                    .iter()
                    .find_map(|k| as_u64(member(member(usage, k)?, "cached_tokens")))
                    .unwrap_or(0);
                self.facts.usage_known = true;
            }
        }
        if let Some(output) = is_array(object.output)
            && object.object.and_then(text).as_deref() == Some("response")
        {
            let mut calls = 0usize;
            elements(Some(output), |item| {
                calls += usize::from(is_tool_call(item))
            });
            self.final_output_calls = Some(saturate(calls));
        }
        if let Some(error) = Members::of_raw(object.error) {
            self.set_error(&[error.kind, error.code]);
        }
    }

    /// The first usable of `candidates` (a non-empty string or a number),
    /// else "error".
    fn set_error(&mut self, candidates: &[Option<&RawValue>]) {
        if self.facts.error_type.is_some() {
            return;
        }
        let text = candidates
            .iter()
            .flatten()
            .find_map(|c| match text(c) {
                Some(s) if !s.is_empty() => Some(s.into_owned()),
                Some(_) => None,
                None => serde_json::from_str::<serde_json::Number>(c.get())
                    .ok()
                    .map(|n| n.to_string()),
            })
            .unwrap_or_else(|| "error".to_string());
        self.facts.error_type = Some(text.chars().take(MAX_ERROR_TYPE_CHARS).collect());
    }

    pub fn finish(mut self) -> ResponseFacts {
        let streamed = saturate(self.streamed_calls.len());
        let responses = self.final_output_calls.unwrap_or(0).max(self.done_items);
        self.facts.tool_calls = self.facts.tool_calls.max(streamed).max(responses);
        self.facts
    }
}

/// A Responses API output item that is a tool call: `function_call` and
/// the built-in tools' `*_call` items (web_search_call, file_search_call, …).
fn is_tool_call(item: &RawValue) -> bool {
    member(item, "type")
        .and_then(text)
        .is_some_and(|t| t.ends_with("_call"))
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body_facts(body: Value) -> ResponseFacts {
        let mut observer = ResponseObserver::default();
        observer.observe_body(body.to_string().as_bytes());
        observer.finish()
    }

    fn stream_facts(events: &[Value]) -> ResponseFacts {
        let mut observer = ResponseObserver::default();
        for event in events {
            observer.observe_event(event.to_string().as_bytes());
        }
        observer.observe_event(b"[DONE]");
        observer.finish()
    }

    #[test]
    fn chat_completion_body() {
        let facts = body_facts(json!({
            "object": "chat.completion",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [{"id": "a"}, {"id": "b"}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46, "prompt_tokens_details": {"cached_tokens": 10}}
        }));
        assert_eq!(facts.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!((facts.input_tokens, facts.output_tokens), (12, 34));
        assert_eq!(facts.cached_input_tokens, 10);
        assert!(facts.usage_known);
        assert_eq!(facts.tool_calls, 2);
        assert_eq!(facts.error_type, None);
    }

    #[test]
    fn error_bodies() {
        let facts = body_facts(
            json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}),
        );
        assert_eq!(facts.error_type.as_deref(), Some("requests"));
        let facts =
            body_facts(json!({"error": {"message": "x", "type": null, "code": "invalid_api_key"}}));
        assert_eq!(facts.error_type.as_deref(), Some("invalid_api_key"));
        assert!(!facts.usage_known);
        // A Responses object with "error": null is not an error.
        let facts = body_facts(json!({"object": "response", "error": null, "output": []}));
        assert_eq!(facts.error_type, None);
    }

    #[test]
    fn responses_body() {
        let facts = body_facts(json!({
            "object": "response",
            "model": "gpt-4.1-2025-04-14",
            "status": "completed",
            "error": null,
            "output": [
                {"type": "reasoning"},
                {"type": "function_call", "name": "lookup"},
                {"type": "function_call", "name": "lookup"},
                {"type": "message"}
            ],
            "usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
        }));
        assert_eq!((facts.input_tokens, facts.output_tokens), (100, 20));
        assert_eq!(facts.tool_calls, 2);
        assert_eq!(facts.model.as_deref(), Some("gpt-4.1-2025-04-14"));
    }

    #[test]
    fn chat_stream_with_and_without_usage() {
        let chunks = [
            json!({"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]}}]}),
            json!({"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]}),
            json!({"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "b"}]}}]}),
            json!({"object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": null}),
        ];
        let facts = stream_facts(&chunks);
        assert_eq!(facts.tool_calls, 2);
        assert!(!facts.usage_known);
        assert_eq!((facts.input_tokens, facts.output_tokens), (0, 0));

        let mut with_usage = chunks.to_vec();
        with_usage.push(json!({"object": "chat.completion.chunk", "model": "m", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9}}));
        let facts = stream_facts(&with_usage);
        assert!(facts.usage_known);
        assert_eq!((facts.input_tokens, facts.output_tokens), (7, 9));
    }

    #[test]
    fn responses_stream() {
        let events = [
            json!({"type": "response.created", "response": {"object": "response", "model": "gpt-4.1", "output": [], "usage": null}}),
            json!({"type": "response.output_item.done", "item": {"type": "function_call"}}),
            json!({"type": "response.completed", "response": {"object": "response", "model": "gpt-4.1", "output": [{"type": "function_call"}, {"type": "message"}], "usage": {"input_tokens": 5, "output_tokens": 6}}}),
        ];
        let facts = stream_facts(&events);
        assert_eq!((facts.input_tokens, facts.output_tokens), (5, 6));
        assert!(facts.usage_known);
        assert_eq!(facts.tool_calls, 1);
        let failed = stream_facts(&[
            json!({"type": "response.failed", "response": {"object": "response", "error": {"code": "server_error", "message": "x"}, "output": []}}),
        ]);
        assert_eq!(failed.error_type.as_deref(), Some("server_error"));
        let error = stream_facts(&[
            json!({"type": "error", "code": "rate_limit_exceeded", "message": "x"}),
        ]);
        assert_eq!(error.error_type.as_deref(), Some("rate_limit_exceeded"));
    }
}
