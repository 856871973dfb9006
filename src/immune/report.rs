//! Turning evaluations into events people and backends can read: one line
//! of text, and the numbers as typed attributes.

use super::event::{AttrValue, Event, Severity};
use super::sentinel::{Evaluation, MetricReading};
use super::vitals::{UnixNanos, Vitals};

pub const INFECTION: &str = "agent_immune.infection";

/// Why an infection was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// `confirm_after` anomalous evaluations in a row.
    Consecutive(u32),
    /// A deviation beyond `severe_sigma`.
    Severe,
}

impl Confirmation {
    pub fn as_str(self) -> &'static str {
        match self {
            Confirmation::Consecutive(_) => "consecutive",
            Confirmation::Severe => "severe",
        }
    }
}

/// An event about an agent, linked to the turn that caused it.
pub fn agent_event(
    name: &'static str,
    severity: Severity,
    vitals: Option<&Vitals>,
    agent_id: &str,
    now: UnixNanos,
    body: String,
) -> Event {
    Event {
        id: String::new(),
        name,
        time: now,
        severity,
        agent_id: agent_id.to_string(),
        trace_id: vitals.map(|v| v.trace_id),
        span_id: vitals.map(|v| v.root_span_id),
        body,
        attributes: vec![(
            "gen_ai.agent.id".to_string(),
            AttrValue::Str(agent_id.to_string()),
        )],
    }
}

/// `token_spike 8.1σ latest (observed 3400 tokens, baseline 680 tokens)`,
/// one part per anomaly, largest first.
pub fn describe_anomalies(evaluation: &Evaluation) -> String {
    let mut parts: Vec<String> = evaluation
        .anomalous_readings()
        .into_iter()
        .map(|r| {
            format!(
                "{} {:.1}σ {} (observed {}, baseline {})",
                super::anomaly::AnomalyType::of_metric(r.metric),
                r.deviation(),
                r.view().as_str(),
                r.describe_observed(),
                r.metric.describe(r.mean),
            )
        })
        .collect();
    if let Some(p) = evaluation.prompt.filter(|p| p.changed) {
        parts.push(format!(
            "prompt_change ({} of {} turns ran prompt {}, baseline {})",
            p.changed_turns,
            p.window_turns,
            p.observed.map(|h| h.to_string()).unwrap_or_default(),
            p.baseline
        ));
    }
    parts.join("; ")
}

/// The deviation report as attributes: max deviation, anomalies, view,
/// then observed / baseline / deviation per judged metric, anomalous
/// metrics first (consoles show the first numbers).
pub fn push_evaluation_attributes(
    attributes: &mut Vec<(String, AttrValue)>,
    evaluation: &Evaluation,
) {
    attributes.push((
        "agent_immune.max_deviation".to_string(),
        AttrValue::Double(evaluation.max_deviation),
    ));
    attributes.push((
        "agent_immune.anomalies".to_string(),
        AttrValue::StrList(evaluation.anomalies.names()),
    ));
    if let Some(view) = evaluation.view {
        attributes.push((
            "agent_immune.view".to_string(),
            AttrValue::Str(view.as_str().to_string()),
        ));
    }
    let anomalous = evaluation.anomalous_readings();
    let rest = evaluation
        .metrics
        .iter()
        .filter(|r| r.judged && !r.is_anomalous());
    for r in anomalous.into_iter().chain(rest) {
        push_metric(attributes, r);
    }
    if let Some(p) = evaluation.prompt {
        attributes.push((
            "agent_immune.prompt_hash.baseline".to_string(),
            AttrValue::Str(p.baseline.to_string()),
        ));
        if let Some(observed) = p.observed {
            attributes.push((
                "agent_immune.prompt_hash.observed".to_string(),
                AttrValue::Str(observed.to_string()),
            ));
        }
    }
}

fn push_metric(attributes: &mut Vec<(String, AttrValue)>, r: &MetricReading) {
    let name = r.metric.as_str();
    let mut push = |kind: &str, v: f64| {
        // Backends reject NaN poorly; a missing number is left out.
        if v.is_finite() {
            attributes.push((format!("agent_immune.{kind}.{name}"), AttrValue::Double(v)));
        }
    };
    push("observed", r.observed());
    push("baseline", r.baseline());
    push("deviation", r.deviation());
}

/// The `agent_immune.infection` event.
pub fn infection(
    agent_id: &str,
    vitals: &Vitals,
    evaluation: &Evaluation,
    confirmation: Confirmation,
    now: UnixNanos,
) -> Event {
    let how = match confirmation {
        Confirmation::Consecutive(n) => format!("{n} anomalous evaluations in a row"),
        Confirmation::Severe => "beyond the severe threshold".to_string(),
    };
    let body = format!(
        "agent {agent_id} infected: {} [{how}]",
        describe_anomalies(evaluation)
    );
    let mut event = agent_event(INFECTION, Severity::Warn, Some(vitals), agent_id, now, body);
    push_evaluation_attributes(&mut event.attributes, evaluation);
    event.attributes.push((
        "agent_immune.confirmed_by".to_string(),
        AttrValue::Str(confirmation.as_str().to_string()),
    ));
    if let Confirmation::Consecutive(n) = confirmation {
        event.attributes.push((
            "agent_immune.anomalous_evaluations".to_string(),
            AttrValue::Int(i64::from(n)),
        ));
    }
    event
}
