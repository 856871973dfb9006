//! Healing restrictions that change a request body: revoke_tools strips the
//! tool fields, reduce_autonomy caps the output tokens. Only the top-level
//! members are touched; every other value is copied byte for byte from the
//! body, so the rewrite costs one output buffer no larger than the body
//! plus one member, never a JSON tree.

use super::request::{Api, for_each_member};
use std::io::Write;

/// Fields that offer tools to the model, removed by revoke_tools.
const TOOL_FIELDS: [&str; 5] = [
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
];

/// What to change in a body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Remove the tool fields.
    pub strip_tools: bool,
    /// Lower the output-token limit to this, or set it when absent.
    pub max_output_tokens: Option<u64>,
}

impl Rewrite {
    pub fn is_nothing(&self) -> bool {
        *self == Self::default()
    }
}

/// The body with `change` applied: `Ok(None)` when nothing needed to
/// change (the body goes as received), an error when the body is not one
/// JSON object (it cannot be changed, so it must not go at all).
pub fn rewrite(api: Api, body: &[u8], change: Rewrite) -> Result<Option<Vec<u8>>, String> {
    let limit_fields: &[&str] = match (api, change.max_output_tokens) {
        (_, None) | (Api::Other, _) => &[],
        (Api::ChatCompletions, Some(_)) => &["max_completion_tokens", "max_tokens"],
        (Api::Responses, Some(_)) => &["max_output_tokens"],
        (Api::Completions, Some(_)) => &["max_tokens"],
    };
    let cap = change.max_output_tokens.unwrap_or(u64::MAX);
    let cap_text = cap.to_string();
    let mut out = Vec::with_capacity(body.len().saturating_add(64));
    let mut changed = false;
    let mut limit_present = false;
    out.push(b'{');
    for_each_member(body, |key, value| {
        if change.strip_tools && TOOL_FIELDS.contains(&key) {
            changed = true;
            return;
        }
        let mut raw = value.get();
        if limit_fields.contains(&key) && raw == "null" {
            // null is no limit: dropped, so the cap added below is the only copy.
            changed = true;
            return;
        }
        if limit_fields.contains(&key) {
            limit_present = true;
            if serde_json::from_str::<u64>(raw).map_or(true, |n| n > cap) {
                raw = &cap_text;
                changed = true;
            }
        }
        member(&mut out, key, raw);
    })
    .map_err(|e| format!("the body is not a JSON object ({e})"))?;
    if let Some(field) = limit_fields.first()
        && !limit_present
    {
        // The first field is the API's current name for the limit.
        member(&mut out, field, &cap_text);
        changed = true;
    }
    out.push(b'}');
    Ok(changed.then_some(out))
}

/// Appends `"key":raw` (with a comma after the first member).
fn member(out: &mut Vec<u8>, key: &str, raw: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    let _ = write!(out, ":{raw}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn apply(api: Api, body: &Value, change: Rewrite) -> Option<Value> {
        rewrite(api, body.to_string().as_bytes(), change)
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    const STRIP: Rewrite = Rewrite {
        strip_tools: true,
        max_output_tokens: None,
    };

    fn cap(n: u64) -> Rewrite {
        Rewrite {
            strip_tools: false,
            max_output_tokens: Some(n),
        }
    }

    #[test]
    fn strip_and_cap() {
        let body = json!({"model": "m", "tools": [1], "tool_choice": "auto", "max_tokens": 5000, "messages": [{"role": "user", "content": "a\nb"}]});
        let stripped = apply(Api::ChatCompletions, &body, STRIP).unwrap();
        assert_eq!(
            stripped,
            json!({"model": "m", "max_tokens": 5000, "messages": [{"role": "user", "content": "a\nb"}]})
        );
        assert_eq!(apply(Api::ChatCompletions, &stripped, STRIP), None);
        let capped = apply(Api::ChatCompletions, &stripped, cap(100)).unwrap();
        assert_eq!(capped["max_tokens"], 100);
        assert!(capped.get("max_completion_tokens").is_none());
        assert_eq!(apply(Api::ChatCompletions, &capped, cap(100)), None);
        let set = apply(Api::Responses, &json!({"input": "x"}), cap(64)).unwrap();
        assert_eq!(set, json!({"input": "x", "max_output_tokens": 64}));
        let lower = json!({"messages": [], "max_completion_tokens": 10});
        assert_eq!(apply(Api::ChatCompletions, &lower, cap(100)), None);
        let odd = json!({"max_tokens": "lots", "max_completion_tokens": null});
        assert_eq!(
            apply(Api::ChatCompletions, &odd, cap(7)).unwrap(),
            json!({"max_tokens": 7})
        );
        let null = json!({"max_completion_tokens": null, "n": 1});
        assert_eq!(
            apply(Api::ChatCompletions, &null, cap(7)).unwrap(),
            json!({"n": 1, "max_completion_tokens": 7})
        );
        // An empty object gains the limit.
        assert_eq!(
            apply(Api::Completions, &json!({}), cap(3)).unwrap(),
            json!({"max_tokens": 3})
        );
    }

    #[test]
    fn other_members_are_copied_byte_for_byte() {
        let body = br#"{"tools" : [1], "x": [1.0,  2e3, "\u00e9"],"tool\u005fchoice":"auto","y":{"z":null}}"#;
        let out = rewrite(Api::ChatCompletions, body, STRIP).unwrap().unwrap();
        assert_eq!(out, br#"{"x":[1.0,  2e3, "\u00e9"],"y":{"z":null}}"#);
        // Duplicates: every copy is stripped or capped.
        let dup = br#"{"tools":[1],"max_tokens":9000,"tools":[2],"max_tokens":5}"#;
        let both = Rewrite {
            strip_tools: true,
            max_output_tokens: Some(10),
        };
        let out = rewrite(Api::ChatCompletions, dup, both).unwrap().unwrap();
        assert_eq!(out, br#"{"max_tokens":10,"max_tokens":5}"#);
    }

    #[test]
    fn a_body_that_is_not_an_object_cannot_be_rewritten() {
        for body in [&b"[1]"[..], b"{\"a\":", b"{} {}", b"nope"] {
            assert!(rewrite(Api::ChatCompletions, body, STRIP).is_err());
        }
    }
}
