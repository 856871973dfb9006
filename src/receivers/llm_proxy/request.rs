//! What the proxy reads from a request body: the API, model, streaming
//! flag, tools, and the hash of the system instructions. Chat Completions
//! (`messages`) and the Responses API (`instructions`, `input`) both.
//!
//! The body is never materialised as a JSON tree: members are visited as
//! raw slices of the body (borrowed, no allocation) and only the few facts
//! above are kept (the model cut to 200 characters, the instructions hashed
//! as they are read), so a 32 MiB `{"x":[0,0,…]}` costs no more than its
//! bytes. Changing a body is `rewrite.rs`, equally bounded.

use crate::processors::genai::content::PromptHasher;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// Longest model name kept.
const MAX_MODEL_CHARS: usize = 200;

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

/// Reads the facts of a JSON body; `None` when it is not one JSON object.
/// A member repeated keeps its last value (as JSON parsers do), except
/// tools: offered by any copy counts, so a duplicate cannot hide them.
pub fn inspect(api: Api, body: &[u8]) -> Option<RequestInfo> {
    let mut info = RequestInfo::default();
    let (mut messages, mut instructions, mut input) = (None, None, None);
    for_each_member(body, |key, value| match key {
        "model" => {
            info.model = text(value).map(|m| m.chars().take(MAX_MODEL_CHARS).collect());
        }
        "stream" => info.stream = value.get() == "true",
        "tools" | "functions" => info.has_tools |= offers_tools(value),
        "messages" => messages = Some(value),
        "instructions" => instructions = Some(value),
        "input" => input = Some(value),
        _ => {}
    })
    .ok()?;
    let mut prompt = PromptHasher::default();
    match api {
        Api::ChatCompletions => system_parts(&mut prompt, messages),
        Api::Responses => {
            if let Some(text) = instructions.and_then(text) {
                prompt.push(&text);
            }
            system_parts(&mut prompt, input);
        }
        Api::Completions | Api::Other => {}
    }
    info.prompt_hash = prompt_hash(prompt);
    Some(info)
}

/// SHA-256 hex of `text`, as the prompt hash everywhere in agent-immune.
pub fn hash_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The system instructions, hashed as read: the text of every system or
/// developer message part (Chat Completions), or `instructions` followed by
/// the parts of the system/developer items of `input` (Responses), in
/// order, with the genai processor's hasher, so the same prompt gives the
/// same hash on both paths.
fn prompt_hash(hasher: PromptHasher) -> Option<String> {
    hasher.finish().map(hex::encode)
}

/// The parts of the system/developer messages of a `messages` or `input`
/// array; anything else (a string `input`, non-objects) holds none.
fn system_parts(prompt: &mut PromptHasher, items: Option<&RawValue>) {
    let Some(items) = items.filter(|v| v.get().starts_with('[')) else {
        return;
    };
    let _ = for_each_element(items, |item| {
        let (mut role, mut content) = (None, None);
        let read = for_each_member(item.get().as_bytes(), |key, value| match key {
            "role" => role = text(value),
            "content" => content = Some(value),
            _ => {}
        });
        if read.is_ok() && matches!(role.as_deref(), Some("system" | "developer")) {
            content_parts(prompt, content);
        }
    });
}

/// The text parts of a message content: the string itself, or the `text`
/// of each text part (type `text`, the Responses API's `input_text`, or
/// untyped); images, audio and files hold none.
fn content_parts(prompt: &mut PromptHasher, content: Option<&RawValue>) {
    let Some(content) = content else { return };
    if content.get().starts_with('"') {
        if let Some(text) = text(content) {
            prompt.push(&text);
        }
        return;
    }
    if !content.get().starts_with('[') {
        return;
    }
    let _ = for_each_element(content, |part| {
        let (mut kind, mut part_text) = (None, None);
        let read = for_each_member(part.get().as_bytes(), |key, value| match key {
            "type" => kind = text(value),
            "text" => part_text = text(value),
            _ => {}
        });
        if read.is_ok()
            && kind
                .as_deref()
                .is_none_or(|t| t == "text" || t == "input_text")
            && let Some(part_text) = part_text
        {
            prompt.push(&part_text);
        }
    });
}

/// `tools` / `functions` offer something: present, not null, not `[]`.
fn offers_tools(value: &RawValue) -> bool {
    let raw = value.get();
    match raw.strip_prefix('[') {
        Some(rest) => rest.trim_start() != "]",
        None => raw != "null",
    }
}

/// A JSON string value, unescaped; `None` for any other value.
pub(super) fn text(value: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Text<'_>>(value.get())
        .ok()
        .map(|t| t.0)
}

/// A JSON string, borrowed from the body when it holds no escapes.
pub(super) struct Text<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Calls `each(key, value)` for every member of the JSON object `body`, in
/// order, each value a raw slice of the body; an error when `body` is not
/// exactly one JSON object. Nothing is kept between members.
pub(super) fn for_each_member<'a>(
    body: &'a [u8],
    each: impl FnMut(&str, &'a RawValue),
) -> Result<(), serde_json::Error> {
    struct Members<F>(F);
    impl<'de, F: FnMut(&str, &'de RawValue)> Visitor<'de> for Members<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Text<'de>>()? {
                let value: &'de RawValue = map.next_value()?;
                (self.0)(&key.0, value);
            }
            Ok(())
        }
    }
    impl<'de, F: FnMut(&str, &'de RawValue)> DeserializeSeed<'de> for Members<F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Members(each).deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Calls `each` for every element of the JSON array `array`, in order.
pub(super) fn for_each_element<'a>(
    array: &'a RawValue,
    each: impl FnMut(&'a RawValue),
) -> Result<(), serde_json::Error> {
    struct Elements<F>(F);
    impl<'de, F: FnMut(&'de RawValue)> Visitor<'de> for Elements<F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            while let Some(element) = seq.next_element::<&'de RawValue>()? {
                (self.0)(element);
            }
            Ok(())
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(array.get());
    deserializer.deserialize_seq(Elements(each))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn inspect(api: Api, body: &Value) -> RequestInfo {
        super::inspect(api, body.to_string().as_bytes()).unwrap()
    }

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
    fn escaped_keys_duplicates_and_non_objects() {
        // Keys are compared unescaped; tools in any copy count.
        let body = br#"{"tool\u0073": [{"type": "function"}], "tools": [], "model": "a\u0062"}"#;
        let info = super::inspect(Api::ChatCompletions, body).unwrap();
        assert!(info.has_tools);
        assert_eq!(info.model.as_deref(), Some("ab"));
        for not_an_object in [&b"[1]"[..], b"", b"{\"a\":1} x", b"{\"a\":}"] {
            assert_eq!(super::inspect(Api::ChatCompletions, not_an_object), None);
        }
        // Odd shapes inside are skipped, not fatal.
        let odd = json!({"model": 5, "stream": "yes", "messages": [0, "x", {"role": "system", "content": 7}, {"content": "late", "role": "system"}]});
        let info = inspect(Api::ChatCompletions, &odd);
        assert_eq!((info.model, info.stream), (None, false));
        assert_eq!(info.prompt_hash, Some(hash_hex("late")));
    }

    #[test]
    fn a_long_model_is_cut() {
        let info = inspect(Api::ChatCompletions, &json!({"model": "m".repeat(5000)}));
        assert_eq!(info.model.unwrap().len(), MAX_MODEL_CHARS);
    }
}
