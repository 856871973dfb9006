//! What the proxy reads from, and may change in, a request body: the API,
//! model, streaming flag, tools, and the hash of the system instructions.
//! Chat Completions (`messages`) and the Responses API (`instructions`,
//! `input`) both.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Which OpenAI API a request calls; only generation calls become vitals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/completions` (legacy)
    Completions,
    /// Anything else (models, embeddings, files, …): forwarded, no vitals.
    Other,
}

impl Api {
    /// The API of `POST <path>` (path without query).
    pub fn of(method: &http::Method, path: &str) -> Api {
        if method != http::Method::POST {
            return Api::Other;
        }
        match path.trim_end_matches('/') {
            "/v1/chat/completions" => Api::ChatCompletions,
            "/v1/responses" => Api::Responses,
            "/v1/completions" => Api::Completions,
            _ => Api::Other,
        }
    }

    /// True for the calls that are an LLM turn.
    pub fn is_generation(self) -> bool {
        self != Api::Other
    }
}

/// Facts about a request, read once before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: bool,
    /// The request offers tools (or legacy functions) to the model.
    pub has_tools: bool,
    /// SHA-256 (hex) of the system/developer instructions, when present.
    pub prompt_hash: Option<String>,
}

/// Reads the facts of a parsed JSON body.
pub fn inspect(api: Api, body: &Value) -> RequestInfo {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .map(|m| m.chars().take(200).collect());
    let non_empty = |key: &str| match body.get(key) {
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    };
    RequestInfo {
        model,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        has_tools: non_empty("tools") || non_empty("functions"),
        prompt_hash: system_text(api, body).map(|text| hash_hex(&text)),
    }
}

/// SHA-256 hex of `text`, as the prompt hash everywhere in agent-immune.
pub fn hash_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The system instructions: the text of every system or developer message
/// part (Chat Completions), or `instructions` followed by the parts of the
/// system/developer items of `input` (Responses), in order, one newline
/// between non-empty parts. The genai processor hashes OTLP content the same
/// way, so the same prompt gives the same hash on both paths.
fn system_text(api: Api, body: &Value) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    match api {
        Api::ChatCompletions => {
            for message in body.get("messages").and_then(Value::as_array)? {
                if is_system(message) {
                    content_parts(&mut parts, message.get("content"));
                }
            }
        }
        Api::Responses => {
            if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
                parts.push(instructions);
            }
            if let Some(items) = body.get("input").and_then(Value::as_array) {
                for item in items.iter().filter(|i| is_system(i)) {
                    content_parts(&mut parts, item.get("content"));
                }
            }
        }
        Api::Completions | Api::Other => return None,
    }
    parts.retain(|p| !p.is_empty());
    (!parts.is_empty()).then(|| parts.join("\n"))
}

fn is_system(message: &Value) -> bool {
    matches!(
        message.get("role").and_then(Value::as_str),
        Some("system" | "developer")
    )
}

/// The text parts of a message content: the string itself, or the `text`
/// of each text part (type `text`, the Responses API's `input_text`, or
/// untyped); images, audio and files hold none.
fn content_parts<'a>(out: &mut Vec<&'a str>, content: Option<&'a Value>) {
    match content {
        Some(Value::String(s)) => out.push(s),
        Some(Value::Array(parts)) => {
            out.extend(
                parts
                    .iter()
                    .filter(|p| {
                        p.get("type")
                            .and_then(Value::as_str)
                            .is_none_or(|t| t == "text" || t == "input_text")
                    })
                    .filter_map(|p| p.get("text").and_then(Value::as_str)),
            );
        }
        _ => {}
    }
}

/// Fields that offer tools to the model, removed by revoke_tools.
const TOOL_FIELDS: [&str; 5] = [
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
];

/// Removes the tool fields; true when any was present.
pub fn strip_tools(body: &mut Value) -> bool {
    let Some(object) = body.as_object_mut() else {
        return false;
    };
    let mut removed = false;
    for field in TOOL_FIELDS {
        removed |= object.remove(field).is_some();
    }
    removed
}

/// Lowers the request's output-token limit to `cap`, or sets it when the
/// request has none; true when the body changed.
pub fn cap_output_tokens(api: Api, body: &mut Value, cap: u64) -> bool {
    let Some(object) = body.as_object_mut() else {
        return false;
    };
    let fields: &[&str] = match api {
        Api::ChatCompletions => &["max_completion_tokens", "max_tokens"],
        Api::Responses => &["max_output_tokens"],
        Api::Completions => &["max_tokens"],
        Api::Other => return false,
    };
    let mut changed = false;
    let mut present = false;
    for field in fields {
        if let Some(value) = object.get_mut(*field).filter(|v| !v.is_null()) {
            present = true;
            if value.as_u64().is_none_or(|n| n > cap) {
                *value = Value::from(cap);
                changed = true;
            }
        }
    }
    if !present {
        // The first field is the API's current name for the limit.
        object.insert(fields[0].to_string(), Value::from(cap));
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn api_from_method_and_path() {
        let post = http::Method::POST;
        assert_eq!(Api::of(&post, "/v1/chat/completions"), Api::ChatCompletions);
        assert_eq!(Api::of(&post, "/v1/responses"), Api::Responses);
        assert_eq!(Api::of(&post, "/v1/completions"), Api::Completions);
        assert_eq!(Api::of(&post, "/v1/embeddings"), Api::Other);
        assert_eq!(Api::of(&http::Method::GET, "/v1/responses"), Api::Other);
    }

    #[test]
    fn chat_request_facts() {
        let body = json!({
            "model": "gpt-4o-mini",
            "stream": true,
            "messages": [
                {"role": "system", "content": "You are "},
                {"role": "developer", "content": [{"type": "text", "text": "a "}, {"type": "image_url", "text": "not text"}, {"type": "text", "text": "bot."}]},
                {"role": "user", "content": "hi"}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}]
        });
        let info = inspect(Api::ChatCompletions, &body);
        assert_eq!(info.model.as_deref(), Some("gpt-4o-mini"));
        assert!(info.stream);
        assert!(info.has_tools);
        assert_eq!(info.prompt_hash, Some(hash_hex("You are \na \nbot.")));
        let none = inspect(
            Api::ChatCompletions,
            &json!({"messages": [{"role": "user", "content": "x"}], "tools": []}),
        );
        assert_eq!(none.prompt_hash, None);
        assert!(!none.has_tools);
    }

    #[test]
    fn responses_request_facts() {
        let body = json!({
            "model": "gpt-4.1",
            "instructions": "Be brief.",
            "input": [{"role": "developer", "content": [{"type": "input_text", "text": " Always."}]}, {"role": "user", "content": "hi"}]
        });
        let info = inspect(Api::Responses, &body);
        assert_eq!(info.prompt_hash, Some(hash_hex("Be brief.\n Always.")));
        assert!(!info.stream);
        let plain = inspect(Api::Responses, &json!({"input": "hello"}));
        assert_eq!(plain.prompt_hash, None);
    }

    #[test]
    fn strip_and_cap() {
        let mut body =
            json!({"model": "m", "tools": [1], "tool_choice": "auto", "max_tokens": 5000});
        assert!(strip_tools(&mut body));
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
        assert!(!strip_tools(&mut body));
        assert!(cap_output_tokens(Api::ChatCompletions, &mut body, 100));
        assert_eq!(body["max_tokens"], 100);
        assert!(body.get("max_completion_tokens").is_none());
        assert!(!cap_output_tokens(Api::ChatCompletions, &mut body, 100));
        let mut body = json!({"input": "x"});
        assert!(cap_output_tokens(Api::Responses, &mut body, 64));
        assert_eq!(body["max_output_tokens"], 64);
        let mut body = json!({"messages": [], "max_completion_tokens": 10});
        assert!(!cap_output_tokens(Api::ChatCompletions, &mut body, 100));
    }
}
