//! What the vitals need from a response: model, usage, tool calls, error
//! type. Read from a whole JSON body or from the events of a stream, for
//! Chat Completions and the Responses API alike.

use serde_json::Value;
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

impl ResponseObserver {
    /// One complete JSON body (a non-streamed response or an error).
    pub fn observe_body(&mut self, body: &Value) {
        self.observe_object(body);
        if let Some(choices) = body.get("choices").and_then(Value::as_array) {
            let calls: usize = choices
                .iter()
                .filter_map(|c| c.get("message"))
                .map(|m| {
                    let tools = m
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    let legacy = usize::from(m.get("function_call").is_some_and(Value::is_object));
                    tools + legacy
                })
                .sum();
            self.facts.tool_calls = saturate(calls);
        }
    }

    /// The `data` of one stream event.
    pub fn observe_event(&mut self, data: &[u8]) {
        if data == b"[DONE]" {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "error" {
            // Responses API stream error: {"type":"error","code":..,"message":..}
            self.set_error(&[event.get("code")]);
            return;
        }
        if let Some(response) = event.get("response").filter(|r| r.is_object()) {
            // Responses API: created / in_progress / completed / failed /
            // incomplete all carry the response object; the last one wins.
            self.observe_object(response);
            if let Some(output) = response.get("output").and_then(Value::as_array)
                && (!output.is_empty() || kind == "response.completed")
            {
                self.final_output_calls = Some(responses_tool_calls(output));
            }
        }
        if kind == "response.output_item.done"
            && event
                .get("item")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
                .is_some_and(is_tool_call_item)
        {
            self.done_items = self.done_items.saturating_add(1);
        }
        if kind.is_empty() {
            // Chat Completions chunk.
            self.observe_object(&event);
            for choice in event
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let choice_index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let deltas = choice
                    .get("delta")
                    .and_then(|d| d.get("tool_calls"))
                    .and_then(Value::as_array);
                for (position, call) in deltas.into_iter().flatten().enumerate() {
                    let index = call
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(position as u64);
                    if self.streamed_calls.len() < MAX_TRACKED_TOOL_CALLS {
                        self.streamed_calls.insert((choice_index, index));
                    }
                }
            }
        }
    }

    /// Model, usage and error of a response object (either API).
    fn observe_object(&mut self, object: &Value) {
        if let Some(model) = object.get("model").and_then(Value::as_str)
            && !model.is_empty()
        {
            self.facts.model = Some(model.chars().take(MAX_MODEL_CHARS).collect());
        }
        if let Some(usage) = object.get("usage").filter(|u| u.is_object()) {
            let tokens = |keys: [&str; 2]| {
                keys.iter()
                    .find_map(|k| usage.get(*k).and_then(Value::as_u64))
            };
            let input = tokens(["prompt_tokens", "input_tokens"]);
            let output = tokens(["completion_tokens", "output_tokens"]);
            if input.is_some() || output.is_some() {
                self.facts.input_tokens = input.unwrap_or(0);
                self.facts.output_tokens = output.unwrap_or(0);
                self.facts.cached_input_tokens = ["prompt_tokens_details", "input_tokens_details"]
                    .iter()
                    .find_map(|k| usage.get(*k)?.get("cached_tokens")?.as_u64())
                    .unwrap_or(0);
                self.facts.usage_known = true;
            }
        }
        if let Some(output) = object.get("output").and_then(Value::as_array)
            && object.get("object").and_then(Value::as_str) == Some("response")
        {
            self.final_output_calls = Some(responses_tool_calls(output));
        }
        if let Some(error) = object.get("error").filter(|e| e.is_object()) {
            self.set_error(&[error.get("type"), error.get("code")]);
        }
    }

    /// The first usable of `candidates` (a non-empty string or a number),
    /// else "error".
    fn set_error(&mut self, candidates: &[Option<&Value>]) {
        if self.facts.error_type.is_some() {
            return;
        }
        let text = candidates
            .iter()
            .find_map(|c| match c {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
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

/// Tool calls among a Responses API `output`: `function_call` items and the
/// built-in tools' `*_call` items (web_search_call, file_search_call, …).
fn responses_tool_calls(output: &[Value]) -> u32 {
    saturate(
        output
            .iter()
            .filter_map(|item| item.get("type").and_then(Value::as_str))
            .filter(|t| is_tool_call_item(t))
            .count(),
    )
}

fn is_tool_call_item(kind: &str) -> bool {
    kind.ends_with("_call")
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body_facts(body: Value) -> ResponseFacts {
        let mut observer = ResponseObserver::default();
        observer.observe_body(&body);
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
