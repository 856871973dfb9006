//! The TOML pipeline config: `${env:...}` expansion, parsing and every
//! component's validation. Invalid text is a list of errors, each with a
//! message; valid text is a config.
#![no_main]

use agent_immune::config::document::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |name: &str| match name {
        "SET" => Some("4317".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    match Config::parse("fuzz.toml", text, lookup) {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refusal names at least one error");
            for e in &errors.0 {
                assert!(!e.message.is_empty(), "{e}");
            }
            assert!(!errors.to_string().is_empty());
        }
    }
});
