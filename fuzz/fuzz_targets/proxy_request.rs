//! The LLM proxy's reading of a request body, for every API: the facts it
//! takes, and the two rewrites enforcement makes (tools revoked, output
//! tokens capped), which must do what they say and be idempotent.
#![no_main]

use agent_immune::receivers::llm_proxy::request::{Api, cap_output_tokens, inspect, strip_tools};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

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

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for api in [
        Api::ChatCompletions,
        Api::Responses,
        Api::Completions,
        Api::Other,
    ] {
        let info = inspect(api, &body);
        assert!(info.model.as_ref().is_none_or(|m| m.chars().count() <= 200));
        assert!(info.prompt_hash.as_ref().is_none_or(|h| h.len() == 64));

        let mut stripped = body.clone();
        let removed = strip_tools(&mut stripped);
        assert_eq!(removed, stripped != body);
        assert!(!inspect(api, &stripped).has_tools);
        assert!(
            !strip_tools(&mut stripped),
            "stripping twice changes nothing"
        );

        let mut capped = body.clone();
        let changed = cap_output_tokens(api, &mut capped, CAP);
        assert_eq!(changed, capped != body);
        if body.is_object() {
            for key in limit_fields(api) {
                if let Some(v) = capped.get(key).filter(|v| !v.is_null()) {
                    assert!(v.as_u64().is_some_and(|n| n <= CAP), "{key} = {v}");
                }
            }
        }
        assert!(
            !cap_output_tokens(api, &mut capped, CAP),
            "capping twice changes nothing"
        );
    }
});
