//! Captured message content: the system instructions (hashed, never kept)
//! and the tool calls a model asked for. Content comes as JSON strings or
//! as structured attribute values; both are read, and anything malformed
//! (including the Python reprs some SDKs write) is simply not content.

use super::value::as_str;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValueList};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Hashes the text parts of the system instructions in order, one newline
/// between parts, so every source of the same prompt gives the same hash.
#[derive(Default)]
pub struct PromptHasher {
    sha: Sha256,
    parts: u32,
}

impl PromptHasher {
    pub fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.parts > 0 {
            self.sha.update(b"\n");
        }
        self.sha.update(text.as_bytes());
        self.parts += 1;
    }

    pub fn finish(self) -> Option<[u8; 32]> {
        (self.parts > 0).then(|| self.sha.finalize().into())
    }
}

fn is_system_role(role: &str) -> bool {
    matches!(role, "system" | "developer")
}

/// `gen_ai.system_instructions`: an array of parts (JSON or structured);
/// a string that is not JSON is taken as the instructions themselves.
pub fn hash_system_instructions(v: &AnyValue) -> Option<[u8; 32]> {
    let mut hasher = PromptHasher::default();
    match &v.value {
        Some(Value::StringValue(s)) => {
            if s.trim_start().starts_with('[') {
                let parts: Vec<Part<'_>> = serde_json::from_str(s).ok()?;
                for part in &parts {
                    part.hash_text(&mut hasher);
                }
            } else {
                hasher.push(s);
            }
        }
        Some(Value::ArrayValue(parts)) => {
            for part in &parts.values {
                hash_structured_part(part, &mut hasher);
            }
        }
        _ => {}
    }
    hasher.finish()
}

/// `gen_ai.input.messages`: the text parts of the `system` / `developer`
/// messages.
pub fn hash_system_in_messages(v: &AnyValue) -> Option<[u8; 32]> {
    match &v.value {
        Some(Value::StringValue(s)) => hash_system_in_json_messages(s),
        Some(Value::ArrayValue(messages)) => {
            let mut hasher = PromptHasher::default();
            for message in &messages.values {
                let Some(Value::KvlistValue(m)) = &message.value else {
                    continue;
                };
                if !field(m, "role")
                    .and_then(as_str)
                    .is_some_and(is_system_role)
                {
                    continue;
                }
                if let Some(Value::ArrayValue(parts)) =
                    field(m, "parts").and_then(|p| p.value.as_ref())
                {
                    for part in &parts.values {
                        hash_structured_part(part, &mut hasher);
                    }
                } else if let Some(text) = field(m, "content").and_then(as_str) {
                    hasher.push(text);
                }
            }
            hasher.finish()
        }
        _ => None,
    }
}

/// A JSON array of messages, in the GenAI form (`parts`) or the OpenAI
/// form (`content` as a string or a list of text parts), or an object with
/// such an array under `messages` (OpenInference `input.value`).
pub fn hash_system_in_json_messages(json: &str) -> Option<[u8; 32]> {
    let trimmed = json.trim_start();
    let messages: Vec<Message<'_>> = if trimmed.starts_with('[') {
        serde_json::from_str(json).ok()?
    } else if trimmed.starts_with('{') {
        serde_json::from_str::<Request<'_>>(json).ok()?.messages
    } else {
        return None;
    };
    let mut hasher = PromptHasher::default();
    for message in messages
        .iter()
        .filter(|m| m.role.0.as_deref().is_some_and(is_system_role))
    {
        if let Some(parts) = &message.parts {
            for part in parts {
                part.hash_text(&mut hasher);
            }
        }
        for text in &message.content.0 {
            hasher.push(text);
        }
    }
    hasher.finish()
}

/// Tool calls requested in `gen_ai.output.messages` (parts of type
/// `tool_call`), and whether a message finished for tool calls.
pub fn output_tool_calls(v: &AnyValue) -> (u32, bool) {
    match &v.value {
        Some(Value::StringValue(s)) => {
            // Most outputs are plain text: skip the parse when no tool call
            // can be in there.
            if !s.contains("tool_call") {
                return (0, false);
            }
            let Ok(messages) = serde_json::from_str::<Vec<Message<'_>>>(s) else {
                return (0, false);
            };
            let mut calls = 0u32;
            let mut finish = false;
            for message in &messages {
                if let Some(parts) = &message.parts {
                    let n = parts
                        .iter()
                        .filter(|p| p.kind.0.as_deref() == Some("tool_call"))
                        .count();
                    calls = calls.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                }
                finish |= message
                    .finish_reason
                    .0
                    .as_deref()
                    .is_some_and(super::value::is_tool_calls_reason);
            }
            (calls, finish)
        }
        Some(Value::ArrayValue(messages)) => {
            let mut calls = 0u32;
            let mut finish = false;
            for message in &messages.values {
                let Some(Value::KvlistValue(m)) = &message.value else {
                    continue;
                };
                if let Some(Value::ArrayValue(parts)) =
                    field(m, "parts").and_then(|p| p.value.as_ref())
                {
                    for part in &parts.values {
                        if let Some(Value::KvlistValue(p)) = &part.value
                            && field(p, "type").and_then(as_str) == Some("tool_call")
                        {
                            calls = calls.saturating_add(1);
                        }
                    }
                }
                finish |= field(m, "finish_reason")
                    .and_then(as_str)
                    .is_some_and(super::value::is_tool_calls_reason);
            }
            (calls, finish)
        }
        _ => (0, false),
    }
}

/// The `model` in OpenInference's `llm.invocation_parameters` JSON.
pub fn model_in_invocation_parameters(json: &str) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Parameters<'a> {
        #[serde(borrow, default)]
        model: Text<'a>,
    }
    if !json.contains("\"model\"") {
        return None;
    }
    serde_json::from_str::<Parameters<'_>>(json).ok()?.model.0
}

fn field<'v>(list: &'v KeyValueList, key: &str) -> Option<&'v AnyValue> {
    list.values
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A structured part: `{type: "text", content: "..."}`.
fn hash_structured_part(part: &AnyValue, hasher: &mut PromptHasher) {
    match &part.value {
        Some(Value::KvlistValue(p)) => {
            let kind = field(p, "type").and_then(as_str);
            if kind.is_none_or(|k| k == "text")
                && let Some(text) = field(p, "content").and_then(as_str)
            {
                hasher.push(text);
            }
        }
        Some(Value::StringValue(s)) => hasher.push(s),
        _ => {}
    }
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    messages: Vec<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Text<'a>,
    #[serde(borrow, default)]
    parts: Option<Vec<Part<'a>>>,
    #[serde(borrow, default)]
    content: Content<'a>,
    #[serde(borrow, default)]
    finish_reason: Text<'a>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Text<'a>,
    #[serde(borrow, default)]
    content: Text<'a>,
}

impl Part<'_> {
    fn hash_text(&self, hasher: &mut PromptHasher) {
        if self.kind.0.as_deref().is_none_or(|k| k == "text")
            && let Some(text) = &self.content.0
        {
            hasher.push(text);
        }
    }
}

/// Visitor methods that turn every scalar that is not a string into
/// `$empty` (strings and containers are handled by each visitor).
macro_rules! scalars_are {
    ($empty:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($empty)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($empty)
        }
    };
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A JSON value kept only when it is a string; anything else is skipped.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            scalars_are!(Text(None));
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Text::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq).map(|()| Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map).map(|()| Text(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// OpenAI message content: a string, or a list of `{type: "text", text}`
/// parts; anything else holds no text.
#[derive(Default)]
struct Content<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("message content")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Content(vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Content(vec![Cow::Owned(v.to_owned())]))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Content(vec![Cow::Owned(v)]))
            }
            scalars_are!(Content::default());
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Content::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut texts = Vec::new();
                while let Some(TextPart(text)) = seq.next_element::<TextPart<'a>>()? {
                    texts.extend(text);
                }
                Ok(Content(texts))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map).map(|()| Content::default())
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One element of an OpenAI content list: the text of a `text` part;
/// images, audio and non-objects hold none.
struct TextPart<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for TextPart<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TextPart<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a content part")
            }
            fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(TextPart(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(TextPart(None))
            }
            scalars_are!(TextPart(None));
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq).map(|()| TextPart(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut kind = Text(None);
                let mut text = Text(None);
                while let Some(key) = map.next_key::<Text<'a>>()? {
                    match key.0.as_deref() {
                        Some("type") => kind = map.next_value()?,
                        Some("text") => text = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let is_text = kind.0.as_deref().is_none_or(|k| k == "text");
                Ok(TextPart(if is_text { text.0 } else { None }))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue};

    const PROMPT: &str = "You are WeatherBot. Answer briefly.";

    fn sha(text: &str) -> [u8; 32] {
        Sha256::digest(text.as_bytes()).into()
    }
    fn s(x: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(x.into())),
        }
    }
    fn kvlist(pairs: Vec<(&str, AnyValue)>) -> AnyValue {
        AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: pairs
                    .into_iter()
                    .map(|(k, v)| KeyValue {
                        key: k.into(),
                        value: Some(v),
                        ..Default::default()
                    })
                    .collect(),
            })),
        }
    }
    fn array(values: Vec<AnyValue>) -> AnyValue {
        AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values })),
        }
    }

    #[test]
    fn every_form_of_the_same_prompt_hashes_the_same() {
        let want = Some(sha(PROMPT));
        let genai = format!(
            r#"[{{"role":"system","parts":[{{"content":"{PROMPT}","type":"text"}}]}},{{"role":"user","parts":[{{"content":"hi","type":"text"}}]}}]"#
        );
        assert_eq!(hash_system_in_messages(&s(&genai)), want);
        let instructions = format!(r#"[{{"type":"text","content":"{PROMPT}"}}]"#);
        assert_eq!(hash_system_instructions(&s(&instructions)), want);
        assert_eq!(hash_system_instructions(&s(PROMPT)), want);
        let openai = format!(
            r#"{{"messages": [{{"role": "system", "content": "{PROMPT}"}}, {{"role": "user", "content": "hi"}}], "model": "m"}}"#
        );
        assert_eq!(hash_system_in_json_messages(&openai), want);
        let parts = format!(
            r#"[{{"role": "developer", "content": [{{"type": "text", "text": "{PROMPT}"}}, 7]}}]"#
        );
        assert_eq!(hash_system_in_json_messages(&parts), want);
        let structured = array(vec![kvlist(vec![
            ("role", s("system")),
            (
                "parts",
                array(vec![kvlist(vec![
                    ("type", s("text")),
                    ("content", s(PROMPT)),
                ])]),
            ),
        ])]);
        assert_eq!(hash_system_in_messages(&structured), want);
    }

    #[test]
    fn escaped_content_is_unescaped_before_hashing() {
        let json = r#"[{"role":"system","parts":[{"type":"text","content":"say \"hi\"\n"}]}]"#;
        assert_eq!(hash_system_in_messages(&s(json)), Some(sha("say \"hi\"\n")));
    }

    #[test]
    fn no_system_message_or_junk_gives_no_hash() {
        assert_eq!(
            hash_system_in_messages(&s(r#"[{"role":"user","parts":[]}]"#)),
            None
        );
        assert_eq!(hash_system_in_messages(&s("{'role': 'system'}")), None);
        assert_eq!(hash_system_in_messages(&s("[{\"role\":")), None);
        assert_eq!(hash_system_in_json_messages("__REDACTED__"), None);
        assert_eq!(hash_system_instructions(&s("[]")), None);
        assert_eq!(hash_system_in_messages(&AnyValue { value: None }), None);
    }

    #[test]
    fn tool_calls_are_counted_in_the_output_only() {
        let out = r#"[{"role":"assistant","parts":[{"arguments":{"city":"Paris"},"name":"get_weather","id":"a","type":"tool_call"},{"type":"tool_call","name":"get_time","id":"b","arguments":{}}],"finish_reason":"tool_calls"}]"#;
        assert_eq!(output_tool_calls(&s(out)), (2, true));
        let text = r#"[{"role":"assistant","parts":[{"content":"Hello","type":"text"}],"finish_reason":"stop"}]"#;
        assert_eq!(output_tool_calls(&s(text)), (0, false));
        // openai-agents-v2 writes a Python repr: not JSON, not counted.
        let repr = r#"[{"role":"assistant","parts":[{"type":"text","content":"{'tool_calls': [{'id': 'call_abc123'}]}"}]}]"#;
        assert_eq!(output_tool_calls(&s(repr)), (0, false));
        assert_eq!(output_tool_calls(&s("[{\"tool_call\"")), (0, false));
        let structured = array(vec![kvlist(vec![
            ("parts", array(vec![kvlist(vec![("type", s("tool_call"))])])),
            ("finish_reason", s("tool_call")),
        ])]);
        assert_eq!(output_tool_calls(&structured), (1, true));
    }

    #[test]
    fn invocation_parameters_name_the_model() {
        assert_eq!(
            model_in_invocation_parameters(r#"{"model": "gpt-4o-mini", "stream": true}"#)
                .as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(model_in_invocation_parameters(r#"{"base_url": "x"}"#), None);
        assert_eq!(model_in_invocation_parameters(r#"{"model": 3}"#), None);
        assert_eq!(model_in_invocation_parameters("{\"model\""), None);
    }
}
