//! One pass over a span's attributes that notes, by reference, the few
//! values vitals need. Nothing is copied here; keys are compared as &str.

use super::value::{as_name, as_str, is_tool_calls_reason};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// References into one span's attributes, one slot per source; where the
/// README lists a priority order, slot 0 is the first choice.
#[derive(Default)]
pub struct Scan<'a> {
    pub op: Option<&'a str>,
    pub oi_kind: Option<&'a str>,
    pub traceloop_kind: Option<&'a str>,
    pub request_type: Option<&'a str>,
    pub http_method: bool,
    pub tool_name: bool,
    /// `gen_ai.request.model` or any `gen_ai.usage.*`: the weak LLM hint.
    pub genai_model_or_usage: bool,

    pub agent_id: Option<&'a str>,
    pub agent_name: Option<&'a str>,
    /// Configured identity attribute: (its position in the config, value).
    pub extra_identity: Option<(usize, &'a str)>,
    pub oi_agent_name: Option<&'a str>,
    pub entity_name: Option<&'a str>,
    pub workflow_name: Option<&'a str>,

    pub input_tokens: [Option<&'a AnyValue>; 3],
    pub output_tokens: [Option<&'a AnyValue>; 3],
    pub cached_tokens: [Option<&'a AnyValue>; 3],
    pub cost: [Option<&'a AnyValue>; 2],
    pub models: [Option<&'a AnyValue>; 5],
    pub invocation_parameters: Option<&'a str>,

    pub error_type: Option<&'a str>,
    pub http_status: [Option<&'a AnyValue>; 2],

    pub finish_reasons: Option<&'a AnyValue>,
    pub oi_finish_reason: Option<&'a str>,
    pub completion_finish_tool_calls: bool,
    /// Distinct (message, call) pairs in flattened output tool calls.
    pub flat_output_tool_calls: u32,

    pub system_instructions: Option<&'a AnyValue>,
    pub input_messages: Option<&'a AnyValue>,
    pub output_messages: Option<&'a AnyValue>,
    pub oi_input_value: Option<&'a str>,
    pub oi_input_flattened: bool,
    pub prompt_flattened: bool,
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

impl<'a> Scan<'a> {
    pub fn of(attributes: &'a [KeyValue], extra_identity_keys: &[String]) -> Self {
        let mut scan = Scan::default();
        for kv in attributes {
            let Some(value) = kv.value.as_ref() else {
                continue;
            };
            let key = kv.key.as_str();
            let known = if let Some(rest) = key.strip_prefix("gen_ai.") {
                scan.gen_ai(rest, value)
            } else if let Some(rest) = key.strip_prefix("llm.") {
                scan.llm(rest, value)
            } else {
                scan.other(key, value)
            };
            if !known && !extra_identity_keys.is_empty() {
                scan.extra(key, value, extra_identity_keys);
            }
        }
        scan
    }

    fn extra(&mut self, key: &str, value: &'a AnyValue, keys: &[String]) {
        let Some(position) = keys.iter().position(|k| k == key) else {
            return;
        };
        if self.extra_identity.is_some_and(|(p, _)| p <= position) {
            return;
        }
        if let Some(name) = as_name(value) {
            self.extra_identity = Some((position, name));
        }
    }

    /// `gen_ai.*` keys (prefix stripped). Returns whether the key is one of
    /// ours.
    fn gen_ai(&mut self, rest: &str, v: &'a AnyValue) -> bool {
        match rest {
            "operation.name" => set(&mut self.op, as_name(v)),
            "agent.id" => set(&mut self.agent_id, as_name(v)),
            "agent.name" => set(&mut self.agent_name, as_name(v)),
            "tool.name" => self.tool_name = true,
            "request.model" => {
                self.genai_model_or_usage = true;
                set(&mut self.models[2], Some(v));
            }
            "response.model" => set(&mut self.models[0], Some(v)),
            "usage.input_tokens" => set(&mut self.input_tokens[0], Some(v)),
            "usage.prompt_tokens" => set(&mut self.input_tokens[1], Some(v)),
            "usage.output_tokens" => set(&mut self.output_tokens[0], Some(v)),
            "usage.completion_tokens" => set(&mut self.output_tokens[1], Some(v)),
            "usage.cache_read.input_tokens" => set(&mut self.cached_tokens[0], Some(v)),
            "usage.cache_read_input_tokens" => set(&mut self.cached_tokens[1], Some(v)),
            "usage.cost" => set(&mut self.cost[1], Some(v)),
            "response.finish_reasons" => set(&mut self.finish_reasons, Some(v)),
            "system_instructions" => set(&mut self.system_instructions, Some(v)),
            "input.messages" => set(&mut self.input_messages, Some(v)),
            "output.messages" => set(&mut self.output_messages, Some(v)),
            _ => {
                if let Some(prompt) = rest.strip_prefix("prompt.") {
                    self.prompt_flattened |= !prompt.is_empty();
                } else if let Some(completion) = rest.strip_prefix("completion.") {
                    self.flat_completion(completion, v);
                } else if rest.starts_with("usage.") {
                    self.genai_model_or_usage = true;
                    return true;
                } else {
                    return false;
                }
            }
        }
        if rest.starts_with("usage.") {
            self.genai_model_or_usage = true;
        }
        true
    }

    /// `gen_ai.completion.{i}.tool_calls.{j}.name` and
    /// `gen_ai.completion.{i}.finish_reason` (Traceloop up to 0.54).
    fn flat_completion(&mut self, rest: &str, v: &'a AnyValue) {
        let Some((_, field)) = split_index(rest) else {
            return;
        };
        if field == "finish_reason" {
            self.completion_finish_tool_calls |= as_str(v).is_some_and(is_tool_calls_reason);
        } else if let Some(call) = field.strip_prefix("tool_calls.")
            && split_index(call).is_some_and(|(_, f)| f == "name")
        {
            self.flat_output_tool_calls = self.flat_output_tool_calls.saturating_add(1);
        }
    }

    /// `llm.*` keys (prefix stripped): OpenInference and old Traceloop.
    fn llm(&mut self, rest: &str, v: &'a AnyValue) -> bool {
        match rest {
            "token_count.prompt" => set(&mut self.input_tokens[2], Some(v)),
            "token_count.completion" => set(&mut self.output_tokens[2], Some(v)),
            "token_count.prompt_details.cache_read" => set(&mut self.cached_tokens[2], Some(v)),
            "cost.total" => set(&mut self.cost[0], Some(v)),
            "response.model_name" => set(&mut self.models[1], Some(v)),
            "request.model_name" => set(&mut self.models[3], Some(v)),
            "model_name" => set(&mut self.models[4], Some(v)),
            "invocation_parameters" => set(&mut self.invocation_parameters, as_str(v)),
            "finish_reason" => set(&mut self.oi_finish_reason, as_str(v)),
            "request.type" => set(&mut self.request_type, as_name(v)),
            _ => {
                if let Some(m) = rest.strip_prefix("input_messages.") {
                    self.oi_input_flattened |= !m.is_empty();
                } else if let Some(m) = rest.strip_prefix("output_messages.") {
                    // {i}.message.tool_calls.{j}.tool_call.function.name
                    if let Some((_, field)) = split_index(m)
                        && let Some(call) = field.strip_prefix("message.tool_calls.")
                        && split_index(call).is_some_and(|(_, f)| f == "tool_call.function.name")
                    {
                        self.flat_output_tool_calls = self.flat_output_tool_calls.saturating_add(1);
                    }
                } else {
                    return false;
                }
            }
        }
        true
    }

    fn other(&mut self, key: &str, v: &'a AnyValue) -> bool {
        match key {
            "openinference.span.kind" => set(&mut self.oi_kind, as_name(v)),
            "traceloop.span.kind" => set(&mut self.traceloop_kind, as_name(v)),
            "traceloop.entity.name" => set(&mut self.entity_name, as_name(v)),
            "traceloop.workflow.name" => set(&mut self.workflow_name, as_name(v)),
            "agent.name" => set(&mut self.oi_agent_name, as_name(v)),
            "error.type" => set(&mut self.error_type, as_name(v)),
            "http.request.method" | "http.method" => self.http_method = true,
            "http.response.status_code" => set(&mut self.http_status[0], Some(v)),
            "http.status_code" => set(&mut self.http_status[1], Some(v)),
            "input.value" => set(&mut self.oi_input_value, as_str(v)),
            _ => return false,
        }
        true
    }
}

/// `"{i}.{rest}"` → `(i, rest)`.
pub fn split_index(s: &str) -> Option<(u32, &str)> {
    let (digits, rest) = s.split_once('.')?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn flattened_tool_calls_count_each_call_once() {
        let attrs = vec![
            kv("gen_ai.completion.0.tool_calls.0.id", "a"),
            kv("gen_ai.completion.0.tool_calls.0.name", "get_weather"),
            kv("gen_ai.completion.0.tool_calls.1.name", "get_time"),
            kv("gen_ai.completion.0.finish_reason", "tool_calls"),
            kv(
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name",
                "x",
            ),
            kv(
                "llm.output_messages.0.message.tool_calls.0.tool_call.id",
                "x",
            ),
            // Input-side tool calls are the previous turn's: never counted.
            kv("gen_ai.prompt.2.tool_calls.0.name", "get_weather"),
            kv(
                "llm.input_messages.2.message.tool_calls.0.tool_call.function.name",
                "x",
            ),
        ];
        let scan = Scan::of(&attrs, &[]);
        assert_eq!(scan.flat_output_tool_calls, 3);
        assert!(scan.completion_finish_tool_calls);
        assert!(scan.prompt_flattened && scan.oi_input_flattened);
    }

    #[test]
    fn extra_identity_keys_follow_config_order() {
        let attrs = vec![kv("b.agent", "second"), kv("a.agent", "first")];
        let keys = vec!["a.agent".to_string(), "b.agent".to_string()];
        assert_eq!(Scan::of(&attrs, &keys).extra_identity, Some((0, "first")));
        assert_eq!(Scan::of(&attrs, &[]).extra_identity, None);
    }

    #[test]
    fn index_parsing_is_strict() {
        assert_eq!(split_index("12.role"), Some((12, "role")));
        assert_eq!(split_index("x.role"), None);
        assert_eq!(split_index(".role"), None);
        assert_eq!(split_index("99999999999.role"), None);
        assert_eq!(split_index("3"), None);
    }
}
