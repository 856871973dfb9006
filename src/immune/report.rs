//! Turning evaluations into events people and backends can read: one line
//! of text, and the numbers as typed attributes.

use super::correlator::{CorrelationVerdict, Scope};
use super::diagnosis::Hypothesis;
use super::episode::{Attempt, Episode};
use super::event::{AttrValue, Event, Severity};
use super::lifecycle::LifecycleState;
use super::sentinel::{Evaluation, MetricReading};
use super::vitals::{SpanId, TraceId, UnixNanos, Vitals};

pub const INFECTION: &str = "agent_immune.infection";
pub const CORRELATION: &str = "agent_immune.correlation";
pub const DIAGNOSIS: &str = "agent_immune.diagnosis";
pub const QUARANTINE: &str = "agent_immune.quarantine";
pub const RELEASE: &str = "agent_immune.release";
pub const APPROVAL_REQUESTED: &str = "agent_immune.approval_requested";
pub const APPROVAL_DECIDED: &str = "agent_immune.approval_decided";
pub const HEALING_ACTION: &str = "agent_immune.healing_action";
pub const HEALING_RESULT: &str = "agent_immune.healing_result";
pub const PROBATION: &str = "agent_immune.probation";
pub const LIFECYCLE: &str = "agent_immune.lifecycle";

/// The turn an event is about: its trace and root span.
pub type Link = Option<(TraceId, SpanId)>;

pub fn link_of(vitals: &Vitals) -> Link {
    Some((vitals.trace_id, vitals.root_span_id))
}

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
    link: Link,
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
        trace_id: link.map(|l| l.0),
        span_id: link.map(|l| l.1),
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
    let mut event = agent_event(
        INFECTION,
        Severity::Warn,
        link_of(vitals),
        agent_id,
        now,
        body,
    );
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

fn str_attr(key: &str, value: impl Into<String>) -> (String, AttrValue) {
    (key.to_string(), AttrValue::Str(value.into()))
}

fn int_attr(key: &str, value: u64) -> (String, AttrValue) {
    (
        key.to_string(),
        AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
    )
}

fn double_attr(key: &str, value: f64) -> (String, AttrValue) {
    (key.to_string(), AttrValue::Double(value))
}

/// `agent_immune.lifecycle`: every state transition, with its reason.
pub fn lifecycle(
    agent_id: &str,
    link: Link,
    from: LifecycleState,
    to: LifecycleState,
    reason: &str,
    now: UnixNanos,
) -> Event {
    let severity = match to {
        LifecycleState::Exhausted => Severity::Error,
        LifecycleState::Draining | LifecycleState::Quarantined => Severity::Warn,
        _ => Severity::Info,
    };
    let body = format!("agent {agent_id}: {from} -> {to}: {reason}");
    let mut e = agent_event(LIFECYCLE, severity, link, agent_id, now, body);
    e.attributes.extend([
        str_attr("agent_immune.from", from.as_str()),
        str_attr("agent_immune.to", to.as_str()),
        str_attr("agent_immune.reason", reason),
    ]);
    e
}

/// `agent_immune.correlation`: how far across the fleet the anomaly is.
/// Fleet-wide is the alert (severity warn): the agent is not quarantined.
pub fn correlation(
    agent_id: &str,
    link: Link,
    verdict: &CorrelationVerdict,
    now: UnixNanos,
) -> Event {
    let kind = verdict.kind.map(|k| k.as_str()).unwrap_or("none");
    let share = verdict.share * 100.0;
    let (severity, body) = match verdict.scope {
        Scope::FleetWide => (
            Severity::Warn,
            format!(
                "fleet-wide {kind}: {share:.0}% of {} other agents show it; external cause, agent {agent_id} is not quarantined",
                verdict.others
            ),
        ),
        Scope::PartialFleet => (
            Severity::Info,
            format!(
                "partial-fleet {kind}: {share:.0}% of {} other agents show it as well as agent {agent_id}",
                verdict.others
            ),
        ),
        Scope::AgentSpecific => (
            Severity::Info,
            format!(
                "agent-specific: agent {agent_id}'s anomaly is shared by {share:.0}% of {} other agents",
                verdict.others
            ),
        ),
    };
    let mut e = agent_event(CORRELATION, severity, link, agent_id, now, body);
    e.attributes.extend([
        str_attr("agent_immune.scope", verdict.scope.as_str()),
        double_attr("agent_immune.share", verdict.share),
        int_attr("agent_immune.peers", verdict.peers),
        int_attr("agent_immune.monitored_others", verdict.others),
    ]);
    if let Some(k) = verdict.kind {
        e.attributes
            .push(str_attr("agent_immune.anomaly", k.as_str()));
    }
    e
}

/// `prompt_drift 0.75 (reasoning); then prompt_injection 0.40, unknown 0.20`.
pub fn describe_hypotheses(hypotheses: &[Hypothesis]) -> String {
    let Some((first, rest)) = hypotheses.split_first() else {
        return "no hypothesis".to_string();
    };
    let mut s = format!(
        "{} {:.2} ({})",
        first.diagnosis, first.confidence, first.reasoning
    );
    if !rest.is_empty() {
        let others: Vec<String> = rest
            .iter()
            .map(|h| format!("{} {:.2}", h.diagnosis, h.confidence))
            .collect();
        s.push_str("; then ");
        s.push_str(&others.join(", "));
    }
    s
}

/// `agent_immune.diagnosis`: the ranked hypotheses.
pub fn diagnosis(agent_id: &str, link: Link, hypotheses: &[Hypothesis], now: UnixNanos) -> Event {
    let body = format!(
        "agent {agent_id} diagnosis: {}",
        describe_hypotheses(hypotheses)
    );
    let mut e = agent_event(DIAGNOSIS, Severity::Info, link, agent_id, now, body);
    if let Some(top) = hypotheses.first() {
        e.attributes.extend([
            str_attr("agent_immune.diagnosis", top.diagnosis.as_str()),
            double_attr("agent_immune.confidence", top.confidence),
            str_attr("agent_immune.reasoning", top.reasoning.clone()),
        ]);
    }
    e.attributes.push((
        "agent_immune.hypotheses".to_string(),
        AttrValue::StrList(
            hypotheses
                .iter()
                .map(|h| format!("{}:{:.2}", h.diagnosis, h.confidence))
                .collect(),
        ),
    ));
    e
}

/// `agent_immune.quarantine` / `agent_immune.release`: an enforcement
/// effect sent out (`ok` None) or a failed one reported back.
pub fn enforcement(
    name: &'static str,
    agent_id: &str,
    link: Link,
    attempt_id: u64,
    reason: &str,
    failed: Option<&str>,
    now: UnixNanos,
) -> Event {
    let verb = if name == QUARANTINE {
        "quarantine"
    } else {
        "release"
    };
    let (severity, body) = match failed {
        None if name == QUARANTINE => (
            Severity::Warn,
            format!("agent {agent_id} quarantined: {reason}"),
        ),
        None => (
            Severity::Info,
            format!("agent {agent_id} released: {reason}"),
        ),
        Some(message) => (
            Severity::Error,
            format!("{verb} of agent {agent_id} failed: {message}"),
        ),
    };
    let mut e = agent_event(name, severity, link, agent_id, now, body);
    e.attributes.extend([
        str_attr("agent_immune.reason", reason),
        int_attr("agent_immune.attempt_id", attempt_id),
        (
            "agent_immune.ok".to_string(),
            AttrValue::Bool(failed.is_none()),
        ),
    ]);
    if let Some(message) = failed {
        e.attributes.push(str_attr("agent_immune.message", message));
    }
    e
}

/// `agent_immune.approval_requested`: healing waits for an operator.
pub fn approval_requested(
    agent_id: &str,
    link: Link,
    episode: &Episode,
    approval_sigma: f64,
    now: UnixNanos,
) -> Event {
    let body = format!(
        "agent {agent_id} needs approval to heal: deviation {:.1}σ >= {approval_sigma}σ; {}; diagnosis: {}",
        episode.max_deviation,
        episode.infection.description,
        describe_hypotheses(&episode.hypotheses)
    );
    let mut e = agent_event(
        APPROVAL_REQUESTED,
        Severity::Warn,
        link,
        agent_id,
        now,
        body,
    );
    e.attributes.extend([
        double_attr("agent_immune.max_deviation", episode.max_deviation),
        double_attr("agent_immune.approval_sigma", approval_sigma),
        (
            "agent_immune.anomalies".to_string(),
            AttrValue::StrList(episode.infection.anomalies.names()),
        ),
    ]);
    if let Some(top) = episode.hypotheses.first() {
        e.attributes.extend([
            str_attr("agent_immune.diagnosis", top.diagnosis.as_str()),
            double_attr("agent_immune.confidence", top.confidence),
            str_attr("agent_immune.reasoning", top.reasoning.clone()),
        ]);
    }
    e
}

/// `agent_immune.approval_decided`: approved, rejected, or healed now.
/// The decision when an approval request is dropped because the fleet
/// showed the cause to be external.
pub const WITHDRAWN: &str = "withdrawn";

pub fn approval_decided(agent_id: &str, link: Link, decision: &str, now: UnixNanos) -> Event {
    let by = if decision == WITHDRAWN {
        "the cause proved external"
    } else {
        "by the operator"
    };
    let body = format!("healing of agent {agent_id} {decision}: {by}");
    let mut e = agent_event(APPROVAL_DECIDED, Severity::Info, link, agent_id, now, body);
    e.attributes
        .push(str_attr("agent_immune.decision", decision));
    e
}

fn attempt_attributes(e: &mut Event, attempt: &Attempt) {
    e.attributes
        .push(str_attr("agent_immune.action", attempt.action.as_str()));
    if let Some(d) = attempt.diagnosis {
        e.attributes
            .push(str_attr("agent_immune.diagnosis", d.as_str()));
    }
    e.attributes
        .push(int_attr("agent_immune.attempt_id", attempt.id));
}

/// `agent_immune.healing_action`: a healing action sent out.
pub fn healing_action(
    agent_id: &str,
    link: Link,
    attempt: &Attempt,
    number: u32,
    now: UnixNanos,
) -> Event {
    let diagnosis = attempt.diagnosis.map(|d| d.as_str()).unwrap_or("unknown");
    let body = format!(
        "healing agent {agent_id}: {} for {diagnosis} (attempt {number})",
        attempt.action
    );
    let mut e = agent_event(HEALING_ACTION, Severity::Info, link, agent_id, now, body);
    attempt_attributes(&mut e, attempt);
    e.attributes
        .push(int_attr("agent_immune.attempt", u64::from(number)));
    e
}

/// `agent_immune.healing_result`: what the executor reported.
pub fn healing_result(
    agent_id: &str,
    link: Link,
    attempt: &Attempt,
    ok: bool,
    message: &str,
    now: UnixNanos,
) -> Event {
    let outcome = if ok { "succeeded" } else { "failed" };
    let mut body = format!("{} on agent {agent_id} {outcome}", attempt.action);
    if !message.is_empty() {
        body.push_str(": ");
        body.push_str(message);
    }
    let severity = if ok { Severity::Info } else { Severity::Warn };
    let mut e = agent_event(HEALING_RESULT, severity, link, agent_id, now, body);
    attempt_attributes(&mut e, attempt);
    e.attributes
        .push(("agent_immune.ok".to_string(), AttrValue::Bool(ok)));
    e.attributes.push(str_attr("agent_immune.message", message));
    e
}

/// `agent_immune.probation`: started, passed or failed.
/// `progress` is (fresh turns seen, turns required).
pub fn probation(
    agent_id: &str,
    link: Link,
    result: &str,
    attempt: Option<&Attempt>,
    progress: (u32, u32),
    detail: &str,
    now: UnixNanos,
) -> Event {
    let (turns, samples) = progress;
    let severity = if result == "failed" {
        Severity::Warn
    } else {
        Severity::Info
    };
    let mut body = format!("agent {agent_id} probation {result} ({turns}/{samples} turns)");
    if !detail.is_empty() {
        body.push_str(": ");
        body.push_str(detail);
    }
    let mut e = agent_event(PROBATION, severity, link, agent_id, now, body);
    e.attributes.push(str_attr("agent_immune.result", result));
    e.attributes
        .push(int_attr("agent_immune.turns", u64::from(turns)));
    e.attributes
        .push(int_attr("agent_immune.samples", u64::from(samples)));
    if let Some(a) = attempt {
        attempt_attributes(&mut e, a);
    }
    e
}
