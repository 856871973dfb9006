//! Durations in config are human strings ("2s", "500ms", "1m 30s"), as in
//! the Collector; parsing is humantime's.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?}: {e} (expected e.g. \"2s\", \"500ms\")"
        ))
    })
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}
