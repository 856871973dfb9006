//! An [`Event`] as the outbox stores it. `Event` holds its name as a
//! `&'static str` (names are constants in the core); read back, a name is
//! interned once so no allocation leaks per event.

use super::record::StateRecord;
use crate::immune::event::{AttrValue, Event, Severity};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// Distinct event names interned at most; an outbox holding more (a
/// corrupted or foreign store) reads the rest as [`UNKNOWN_EVENT_NAME`].
const MAX_INTERNED_NAMES: usize = 1024;
const MAX_NAME_LEN: usize = 256;
pub const UNKNOWN_EVENT_NAME: &str = "agent_immune.unknown";

/// Variant order is part of the stored format: append, never reorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum StoredSeverity {
    Info,
    Warn,
    Error,
}

/// Variant order is part of the stored format: append, never reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum StoredAttr {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    StrList(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    id: String,
    name: String,
    time: u64,
    severity: StoredSeverity,
    agent_id: String,
    trace_id: Option<[u8; 16]>,
    span_id: Option<[u8; 8]>,
    body: String,
    attributes: Vec<(String, StoredAttr)>,
}

impl StateRecord for StoredEvent {
    const VERSION: u16 = 1;
}

impl StoredEvent {
    pub fn from_event(event: &Event) -> Self {
        Self {
            id: event.id.clone(),
            name: event.name.to_string(),
            time: event.time,
            severity: match event.severity {
                Severity::Info => StoredSeverity::Info,
                Severity::Warn => StoredSeverity::Warn,
                Severity::Error => StoredSeverity::Error,
            },
            agent_id: event.agent_id.clone(),
            trace_id: event.trace_id,
            span_id: event.span_id,
            body: event.body.clone(),
            attributes: event
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), StoredAttr::from(v)))
                .collect(),
        }
    }

    pub fn into_event(self) -> Event {
        Event {
            id: self.id,
            name: intern(&self.name),
            time: self.time,
            severity: match self.severity {
                StoredSeverity::Info => Severity::Info,
                StoredSeverity::Warn => Severity::Warn,
                StoredSeverity::Error => Severity::Error,
            },
            agent_id: self.agent_id,
            trace_id: self.trace_id,
            span_id: self.span_id,
            body: self.body,
            attributes: self
                .attributes
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
        }
    }
}

impl From<&AttrValue> for StoredAttr {
    fn from(value: &AttrValue) -> Self {
        match value {
            AttrValue::Str(s) => Self::Str(s.clone()),
            AttrValue::Int(i) => Self::Int(*i),
            AttrValue::Double(d) => Self::Double(*d),
            AttrValue::Bool(b) => Self::Bool(*b),
            AttrValue::StrList(l) => Self::StrList(l.clone()),
        }
    }
}

impl From<StoredAttr> for AttrValue {
    fn from(value: StoredAttr) -> Self {
        match value {
            StoredAttr::Str(s) => Self::Str(s),
            StoredAttr::Int(i) => Self::Int(i),
            StoredAttr::Double(d) => Self::Double(d),
            StoredAttr::Bool(b) => Self::Bool(b),
            StoredAttr::StrList(l) => Self::StrList(l),
        }
    }
}

/// The `&'static str` for an event name: each distinct name is leaked once,
/// up to [`MAX_INTERNED_NAMES`].
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    let Ok(mut names) = names.lock() else {
        return UNKNOWN_EVENT_NAME;
    };
    if let Some(known) = names.get(name) {
        return known;
    }
    if names.len() >= MAX_INTERNED_NAMES || name.len() > MAX_NAME_LEN {
        return UNKNOWN_EVENT_NAME;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::{decode, encode};

    pub(crate) fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            name: "agent_immune.infection",
            time: 1_700_000_000_000_000_000,
            severity: Severity::Warn,
            agent_id: "planner".into(),
            trace_id: Some([0xab; 16]),
            span_id: None,
            body: "planner infected".into(),
            attributes: vec![
                ("agent_immune.max_deviation".into(), AttrValue::Double(7.2)),
                ("agent_immune.anomaly_count".into(), AttrValue::Int(2)),
                ("agent_immune.severe".into(), AttrValue::Bool(true)),
                (
                    "agent_immune.view".into(),
                    AttrValue::Str("sustained".into()),
                ),
                (
                    "agent_immune.anomalies".into(),
                    AttrValue::StrList(vec!["token_spike".into()]),
                ),
            ],
        }
    }

    #[test]
    fn an_event_round_trips_exactly() {
        let original = event("ev-1");
        let bytes = encode("event", &StoredEvent::from_event(&original)).unwrap();
        let back = decode::<StoredEvent>(&bytes).unwrap().into_event();
        assert_eq!(back, original);
    }

    #[test]
    fn names_are_interned_once() {
        let a = intern("agent_immune.quarantine");
        let b = intern(&String::from("agent_immune.quarantine"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(intern(&"x".repeat(MAX_NAME_LEN + 1)), UNKNOWN_EVENT_NAME);
    }
}
