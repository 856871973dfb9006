//! A hand-made immune event: the infection the exporter tests send.

use crate::immune::event::{AttrValue, Event, Severity};

/// An infection of agent `planner` with a trace link and one attribute of
/// every kind (double, int, bool, string list).
pub fn infection_event() -> Event {
    Event {
        id: "ev-1".into(),
        name: "agent_immune.infection",
        time: 1_700_000_000_000_000_000,
        severity: Severity::Warn,
        agent_id: "planner".into(),
        trace_id: Some([0xab; 16]),
        span_id: Some([0xcd; 8]),
        body: "planner infected: token_spike 7.2 sigma".into(),
        attributes: vec![
            ("agent_immune.max_deviation".into(), AttrValue::Double(7.2)),
            ("agent_immune.anomaly_count".into(), AttrValue::Int(2)),
            ("agent_immune.severe".into(), AttrValue::Bool(true)),
            (
                "agent_immune.anomalies".into(),
                AttrValue::StrList(vec!["token_spike".into(), "cost_spike".into()]),
            ),
        ],
    }
}
