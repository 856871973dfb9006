//! What the API answers with, beyond the fleet's own views: events as JSON,
//! an agent with its lifecycle history, fleet statistics with totals.

use crate::immune::event::{AttrValue, Event, Severity};
use crate::immune::fleet::HealingStat;
use crate::immune::report;
use crate::immune::vitals::UnixNanos;
use crate::pipeline::fleet::{AgentView, FleetStats, event_attr};
use serde::Serialize;
use serde_json::{Map, Value};

/// One immune event as JSON (the same content as its OTLP log record).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventView {
    pub id: String,
    pub name: &'static str,
    pub time: UnixNanos,
    pub severity: &'static str,
    pub agent_id: String,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub body: String,
    pub attributes: Map<String, Value>,
}

fn attr_json(value: &AttrValue) -> Value {
    match value {
        AttrValue::Str(s) => Value::String(s.clone()),
        AttrValue::Int(i) => Value::from(*i),
        // NaN or infinity has no JSON form: null says "no number".
        AttrValue::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::StrList(list) => Value::from(list.clone()),
    }
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id.clone(),
            name: e.name,
            time: e.time,
            severity: match e.severity {
                Severity::Info => "info",
                Severity::Warn => "warn",
                Severity::Error => "error",
            },
            agent_id: e.agent_id.clone(),
            trace_id: e.trace_id.map(hex::encode),
            span_id: e.span_id.map(hex::encode),
            body: e.body.clone(),
            attributes: e
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), attr_json(v)))
                .collect(),
        }
    }
}

/// One lifecycle transition.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transition {
    pub time: UnixNanos,
    pub from: String,
    pub to: String,
    pub reason: String,
}

impl Transition {
    /// The transition an `agent_immune.lifecycle` event records.
    pub fn of(event: &Event) -> Option<Self> {
        if event.name != report::LIFECYCLE {
            return None;
        }
        let text = |key| match event_attr(event, key) {
            Some(AttrValue::Str(s)) => Some(s.clone()),
            _ => None,
        };
        Some(Self {
            time: event.time,
            from: text("agent_immune.from")?,
            to: text("agent_immune.to")?,
            reason: text("agent_immune.reason").unwrap_or_default(),
        })
    }
}

/// `GET /agents/{id}`: the agent, its transitions and its recent events
/// (both from the in-memory timeline, so bounded to what it still holds).
#[derive(Debug, Clone, Serialize)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: AgentView,
    pub history: Vec<Transition>,
    pub events: Vec<EventView>,
}

/// `GET /agents`: one page, sorted by agent id.
#[derive(Debug, Clone, Serialize)]
pub struct AgentsReply {
    pub agents: Vec<AgentView>,
    /// Agents matching the filter, across all pages.
    pub total: usize,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /stats`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsView {
    pub agents: usize,
    pub by_state: std::collections::BTreeMap<String, usize>,
    pub pending_approvals: usize,
    pub rejected_approvals: usize,
    /// Infections confirmed since start.
    pub infections: u64,
    /// Turns assembled from spans since start (ingested vitals not included).
    pub turns: u64,
    /// Healing actions with a result, fleet-wide, and how many succeeded.
    pub healings: u64,
    pub healings_succeeded: u64,
    /// `healings_succeeded / healings`; null before any healing.
    pub healing_success_rate: Option<f64>,
    /// Per diagnosis and action.
    pub healing: Vec<HealingStat>,
}

impl StatsView {
    pub fn new(stats: FleetStats, infections: u64, turns: u64) -> Self {
        let succeeded: u64 = stats.healing.iter().map(|h| h.successes).sum();
        let failed: u64 = stats.healing.iter().map(|h| h.failures).sum();
        let healings = succeeded.saturating_add(failed);
        Self {
            agents: stats.agents,
            by_state: stats.by_state,
            pending_approvals: stats.pending_approvals,
            rejected_approvals: stats.rejected_approvals,
            infections,
            turns,
            healings,
            healings_succeeded: succeeded,
            healing_success_rate: (healings > 0).then(|| succeeded as f64 / healings as f64),
            healing: stats.healing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::lifecycle::LifecycleState;

    #[test]
    fn lifecycle_event_becomes_a_transition() {
        let mut e = report::lifecycle(
            "a",
            Some(([1; 16], [2; 8])),
            LifecycleState::Quarantined,
            LifecycleState::Healing,
            "approved",
            42,
        );
        e.id = "r-0-1".into();
        let t = Transition::of(&e).unwrap();
        assert_eq!(
            (t.from.as_str(), t.to.as_str(), t.reason.as_str()),
            ("QUARANTINED", "HEALING", "approved")
        );
        let view = EventView::from(&e);
        assert_eq!(view.trace_id.as_deref(), Some("01".repeat(16).as_str()));
        assert_eq!(view.attributes["agent_immune.to"], "HEALING");
        assert_eq!(view.severity, "info");
    }

    #[test]
    fn non_finite_doubles_are_null() {
        assert_eq!(attr_json(&AttrValue::Double(f64::NAN)), Value::Null);
        assert_eq!(attr_json(&AttrValue::Double(1.5)), Value::from(1.5));
    }
}
