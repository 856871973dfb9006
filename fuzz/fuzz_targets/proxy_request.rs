//! The LLM proxy's reading of a request body, for every API, straight from
//! the bytes (no JSON tree): the facts it takes, and the rewrites
//! enforcement makes (tools revoked, output tokens capped), which must do
//! what they say and be idempotent.
#![no_main]

use agent_immune::receivers::llm_proxy::request::{Api, inspect};
use agent_immune::receivers::llm_proxy::rewrite::{Rewrite, rewrite};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use std::collections::HashMap;

const CAP: u64 = 256;

/// The output-token limits of each API, as the proxy documents them.
fn limit_fields(api: Api) -> &'static [&'static str] {
    match api {
        Api::ChatCompletions => &["max_completion_tokens", "max_tokens"],
        Api::Responses => &["max_output_tokens"],
        Api::Completions => &["max_tokens"],
        Api::Other => &[],
    }
}

/// The body after `change`: the rewritten bytes, or the body itself when
/// nothing needed to change; `None` when it cannot be changed.
fn apply(api: Api, body: &[u8], change: Rewrite) -> Option<Vec<u8>> {
    match rewrite(api, body, change) {
        Ok(Some(changed)) => Some(changed),
        Ok(None) => Some(body.to_vec()),
        Err(message) => {
            assert!(!message.is_empty());
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for api in [
        Api::ChatCompletions,
        Api::Responses,
        Api::Completions,
        Api::Other,
    ] {
        let Some(info) = inspect(api, data) else {
            continue;
        };
        assert!(info.model.as_ref().is_none_or(|m| m.chars().count() <= 200));
        assert!(info.prompt_hash.as_ref().is_none_or(|h| h.len() == 64));

        let strip = Rewrite {
            strip_tools: true,
            max_output_tokens: None,
        };
        if let Some(stripped) = apply(api, data, strip) {
            let after = inspect(api, &stripped).expect("a rewritten body is still one object");
            assert!(!after.has_tools, "no tools left after stripping");
            assert_eq!(
                rewrite(api, &stripped, strip),
                Ok(None),
                "stripping twice changes nothing"
            );
        }

        let cap = Rewrite {
            strip_tools: false,
            max_output_tokens: Some(CAP),
        };
        if let Some(capped) = apply(api, data, cap) {
            // Members kept raw: JSON allows numbers outside f64's range
            // (`1e999`), which the proxy forwards untouched and a
            // `serde_json::Value` would refuse. The last of duplicate keys
            // wins, as in the parsers upstream.
            let members: HashMap<String, Box<RawValue>> =
                serde_json::from_slice(&capped).expect("a rewritten body is still a JSON object");
            for key in limit_fields(api) {
                if let Some(raw) = members.get(*key).filter(|v| v.get() != "null") {
                    let limit: Option<u64> = serde_json::from_str(raw.get()).ok();
                    assert!(limit.is_some_and(|n| n <= CAP), "{key} = {}", raw.get());
                }
            }
            assert_eq!(
                rewrite(api, &capped, cap),
                Ok(None),
                "capping twice changes nothing"
            );
        }
    }
});
