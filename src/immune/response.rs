//! The immune response: how an agent moves through its lifecycle on each
//! evaluation, as time passes, on executor results and on operator
//! decisions. Every transition is an `agent_immune.lifecycle` event with
//! its reason; what must happen outside leaves as `Effect` values.

use super::action::Action;
use super::agent::AgentRecord;
use super::anomaly::AnomalySet;
use super::command::CommandError;
use super::config::ImmuneConfig;
use super::core::Exchanged;
use super::correlator::{self, CorrelationVerdict, Scope};
use super::diagnosis::{self, Diagnosis, Feedback};
use super::effect::Effect;
use super::episode::{Approval, Attempt, Episode, Infection};
use super::event::Event;
use super::fleet::FleetSummary;
use super::healing;
use super::lifecycle::LifecycleState::{self, *};
use super::report::{self, Confirmation};
use super::sentinel::Evaluation;
use super::vitals::{UnixNanos, Vitals};
use std::collections::HashSet;
use std::time::Duration;

/// Everything a response step may touch besides the agent itself.
pub struct Ctx<'a> {
    pub config: &'a ImmuneConfig,
    /// The fleet as the edge last summed it; None: this core is the fleet.
    pub external: Option<&'a Exchanged>,
    /// This core's part of the fleet summary.
    pub local: &'a mut FleetSummary,
    pub now: UnixNanos,
    pub events: &'a mut Vec<Event>,
    pub effects: &'a mut Vec<Effect>,
    pub next_attempt: &'a mut u64,
    /// Agents `tick` looks at (`watched_on_tick`).
    pub timed: &'a mut HashSet<String>,
}

impl Ctx<'_> {
    fn fleet(&self) -> FleetSummary {
        fleet_view(self.external, self.local)
    }

    /// Fleet exchanges so far (0 while this core is the whole fleet).
    fn exchanges(&self) -> u64 {
        self.external.map_or(0, |f| f.count)
    }

    fn attempt(&mut self, action: Action, diagnosis: Option<Diagnosis>) -> Attempt {
        *self.next_attempt += 1;
        Attempt {
            id: *self.next_attempt,
            action,
            diagnosis,
            started: self.now,
        }
    }
}

/// The fleet with this core's part as it is now.
pub fn fleet_view(external: Option<&Exchanged>, local: &FleetSummary) -> FleetSummary {
    match external {
        Some(f) => f.total.rebased(&f.published, local),
        None => *local,
    }
}

/// Fleet exchanges an agent waits, from becoming SUSPECTED, before it may
/// be drained: by the second, every other shard has published what its
/// agents showed since then, so an outage that began at once everywhere
/// is seen as fleet-wide before anyone is quarantined.
pub const EXCHANGES_BEFORE_DRAIN: u64 = 2;

/// A configured duration in nanoseconds (saturating).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Moves the agent to `to`, with the lifecycle event and the fleet
/// summary's bookkeeping.
pub fn transition(
    id: &str,
    agent: &mut AgentRecord,
    to: LifecycleState,
    reason: &str,
    ctx: &mut Ctx,
) {
    let from = agent.state;
    if from == to {
        return;
    }
    agent.state = to;
    agent.since = ctx.now;
    if from == Initializing {
        ctx.local.monitored += 1;
    }
    if to == Initializing {
        ctx.local.monitored = ctx.local.monitored.saturating_sub(1);
        ctx.local.update_showing(agent.showing, AnomalySet::EMPTY);
        agent.showing = AnomalySet::EMPTY;
    }
    if watched_on_tick(to) {
        ctx.timed.insert(id.to_string());
    } else if watched_on_tick(from) {
        ctx.timed.remove(id);
    }
    ctx.events.push(report::lifecycle(
        id,
        agent.link(),
        from,
        to,
        reason,
        ctx.now,
    ));
}

fn end_episode(agent: &mut AgentRecord) {
    agent.drain_held = false;
    if let Some(ep) = agent.episode.take() {
        agent.last_diagnosis = ep.diagnosis().or(agent.last_diagnosis);
    }
    agent.anomalous_streak = 0;
    agent.sustained_ticks = 0;
}

/// The response to one evaluation. `counted` is what the fleet summary
/// held for this agent before it (so it is not its own peer).
pub fn on_evaluation(
    id: &str,
    agent: &mut AgentRecord,
    evaluation: &Evaluation,
    vitals: &Vitals,
    counted: AnomalySet,
    ctx: &mut Ctx,
) {
    match agent.state {
        Healthy | Suspected => watch(id, agent, evaluation, vitals, counted, ctx),
        Probation => probation_turn(id, agent, evaluation, ctx),
        Initializing | Draining | Quarantined | Healing | Exhausted => {
            if let Some(ep) = agent.episode.as_mut() {
                ep.max_deviation = ep.max_deviation.max(evaluation.max_deviation);
            }
        }
    }
}

fn watch(
    id: &str,
    agent: &mut AgentRecord,
    evaluation: &Evaluation,
    vitals: &Vitals,
    counted: AnomalySet,
    ctx: &mut Ctx,
) {
    let config = ctx.config;
    if !evaluation.is_anomalous() {
        agent.anomalous_streak = 0;
        if agent.state == Suspected {
            end_episode(agent);
            transition(
                id,
                agent,
                Healthy,
                "clean evaluation: the anomaly did not persist",
                ctx,
            );
        }
        return;
    }
    agent.anomalous_streak = agent.anomalous_streak.saturating_add(1);
    if agent.state == Healthy {
        agent.sustained_ticks = 0;
        let reason = format!(
            "anomalous evaluation: {}",
            report::describe_anomalies(evaluation)
        );
        agent.suspected_at_exchange = ctx.exchanges();
        transition(id, agent, Suspected, &reason, ctx);
    }
    if evaluation.is_sustained_anomalous() {
        agent.sustained_ticks = agent.sustained_ticks.saturating_add(1);
    }
    match agent.episode.as_mut() {
        Some(ep) => ep.max_deviation = ep.max_deviation.max(evaluation.max_deviation),
        None => confirm(id, agent, evaluation, vitals, counted, ctx),
    }

    if let Some(reason) = drain_called_for(agent, evaluation, config) {
        agent.drain_held = true;
        try_drain(id, agent, evaluation.anomalies, counted, &reason, ctx);
    }
}

/// Why the agent should be drained, if it should. Only the sustained view
/// moves an agent on: a single turn, however extreme, never quarantines by
/// itself.
fn drain_called_for(
    agent: &AgentRecord,
    evaluation: &Evaluation,
    config: &ImmuneConfig,
) -> Option<String> {
    if agent.sustained_ticks >= config.suspect_ticks {
        Some(format!(
            "sustained view anomalous on {} evaluations",
            agent.sustained_ticks
        ))
    } else if evaluation.max_sustained_deviation > config.severe_sigma {
        Some(format!(
            "sustained deviation {:.1}σ beyond severe {}σ",
            evaluation.max_sustained_deviation, config.severe_sigma
        ))
    } else {
        None
    }
}

/// Drains the SUSPECTED agent unless the fleet may not have shown the same
/// anomaly yet (then `tick` or the next turn decides) or already shows it
/// (an external cause: the correlation event is the alert).
fn try_drain(
    id: &str,
    agent: &mut AgentRecord,
    anomalies: AnomalySet,
    counted: AnomalySet,
    reason: &str,
    ctx: &mut Ctx,
) {
    let config = ctx.config;
    let confirmed_at = agent.episode.as_ref().map_or(ctx.now, |e| e.started);
    let unseen_by_fleet = ctx.now < confirmed_at.saturating_add(nanos(config.correlation_hold))
        || (ctx.external.is_some()
            && ctx.exchanges() < agent.suspected_at_exchange + EXCHANGES_BEFORE_DRAIN);
    if unseen_by_fleet {
        // The peers' turns, or the other shards' view of them, may not be
        // in yet.
        ctx.timed.insert(id.to_string());
        return;
    }
    agent.drain_held = false;
    // The fleet view is summed anew on each call: once per decision.
    let fleet = ctx.fleet();
    let verdict = correlator::correlate(anomalies, counted, true, &fleet, config);
    let link = agent.link();
    let Some(ep) = agent.episode.as_mut() else {
        return;
    };
    if verdict.scope != ep.correlation.scope {
        rediagnose(
            id,
            link,
            ep,
            anomalies,
            verdict,
            &fleet.confidence_shift,
            ctx,
        );
    }
    if verdict.scope == Scope::FleetWide {
        return;
    }
    start_drain(id, agent, reason, ctx);
}

/// The correlation changed: the episode is diagnosed again, from its first
/// hypothesis, with both events.
fn rediagnose(
    id: &str,
    link: report::Link,
    ep: &mut Episode,
    anomalies: AnomalySet,
    verdict: CorrelationVerdict,
    shift: &[f64; Diagnosis::COUNT],
    ctx: &mut Ctx,
) {
    ep.correlation = verdict;
    ep.hypotheses = diagnosis::diagnose(anomalies, &verdict, shift);
    ep.hypothesis = 0;
    ctx.events
        .push(report::correlation(id, link, &verdict, ctx.now));
    ctx.events
        .push(report::diagnosis(id, link, &ep.hypotheses, ctx.now));
}

/// Confirms the infection when the rules say so: infection, correlation
/// and diagnosis events, and a new episode.
fn confirm(
    id: &str,
    agent: &mut AgentRecord,
    evaluation: &Evaluation,
    vitals: &Vitals,
    counted: AnomalySet,
    ctx: &mut Ctx,
) {
    let config = ctx.config;
    let confirmation = if evaluation.max_deviation > config.severe_sigma {
        Confirmation::Severe
    } else if agent.anomalous_streak >= config.confirm_after {
        Confirmation::Consecutive(agent.anomalous_streak)
    } else {
        return;
    };
    ctx.events.push(report::infection(
        id,
        vitals,
        evaluation,
        confirmation,
        ctx.now,
    ));
    let fleet = ctx.fleet();
    let verdict = correlator::correlate(evaluation.anomalies, counted, true, &fleet, config);
    let hypotheses = diagnosis::diagnose(evaluation.anomalies, &verdict, &fleet.confidence_shift);
    let link = report::link_of(vitals);
    ctx.events
        .push(report::correlation(id, link, &verdict, ctx.now));
    ctx.events
        .push(report::diagnosis(id, link, &hypotheses, ctx.now));
    agent.last_diagnosis = hypotheses.first().map(|h| h.diagnosis);
    agent.episode = Some(Box::new(Episode {
        started: ctx.now,
        infection: Infection {
            confirmed_at: ctx.now,
            max_deviation: evaluation.max_deviation,
            anomalies: evaluation.anomalies,
            view: evaluation.view,
            trace_id: vitals.trace_id,
            span_id: vitals.root_span_id,
            description: report::describe_anomalies(evaluation),
        },
        max_deviation: evaluation.max_deviation,
        correlation: verdict,
        hypotheses,
        hypothesis: 0,
        approval: Approval::NotNeeded,
        approval_requested_at: None,
        healing: None,
        drain: None,
        heal_attempts: 0,
        failed_here: 0,
        probation_turns: 0,
        probation_ticks: 0,
    }));
}

fn start_drain(id: &str, agent: &mut AgentRecord, reason: &str, ctx: &mut Ctx) {
    let attempt = ctx.attempt(Action::Drain, None);
    if let Some(ep) = agent.episode.as_mut() {
        ep.drain = Some(attempt);
    }
    ctx.effects.push(Effect::Drain {
        agent_id: id.to_string(),
        attempt_id: attempt.id,
    });
    transition(id, agent, Draining, reason, ctx);
}

/// Sends a quarantine or release, with its event.
fn enforce(id: &str, agent: &mut AgentRecord, action: Action, reason: &str, ctx: &mut Ctx) {
    let attempt = ctx.attempt(action, None);
    agent.enforcement = Some(attempt);
    let agent_id = id.to_string();
    let (effect, name) = if action == Action::Quarantine {
        (
            Effect::Quarantine {
                agent_id,
                attempt_id: attempt.id,
            },
            report::QUARANTINE,
        )
    } else {
        (
            Effect::Release {
                agent_id,
                attempt_id: attempt.id,
            },
            report::RELEASE,
        )
    };
    ctx.effects.push(effect);
    ctx.events.push(report::enforcement(
        name,
        id,
        agent.link(),
        attempt.id,
        reason,
        None,
        ctx.now,
    ));
}

/// Quarantines the agent, then asks for approval or starts healing.
fn quarantine(id: &str, agent: &mut AgentRecord, reason: &str, ctx: &mut Ctx) {
    if let Some(ep) = agent.episode.as_mut() {
        ep.drain = None;
    }
    enforce(id, agent, Action::Quarantine, reason, ctx);
    transition(id, agent, Quarantined, reason, ctx);
    let link = agent.link();
    let approval_sigma = ctx.config.approval_sigma;
    let Some(ep) = agent.episode.as_mut() else {
        return;
    };
    match ep.approval {
        Approval::NotNeeded if ep.max_deviation >= approval_sigma => {
            ep.approval = Approval::Pending { since: ctx.now };
            ep.approval_requested_at = Some(ctx.now);
            ctx.events.push(report::approval_requested(
                id,
                link,
                ep,
                approval_sigma,
                ctx.now,
            ));
        }
        Approval::Pending { .. } | Approval::Rejected { .. } => {}
        Approval::NotNeeded | Approval::Approved { .. } => start_healing(id, agent, ctx),
    }
}

/// Sends the next healing action: the current hypothesis's ladder minus
/// what failed, then the next hypotheses'; EXHAUSTED when none is left.
fn start_healing(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) {
    let link = agent.link();
    let Some(ep) = agent.episode.as_mut() else {
        return;
    };
    let fleet = ctx.fleet();
    let mut chosen = None;
    while let Some(d) = ep.diagnosis() {
        let next = healing::plan(d, &agent.memory, &fleet)
            .into_iter()
            .find(|a| !ep.failed_here(*a));
        if let Some(action) = next {
            chosen = Some((d, action));
            break;
        }
        ep.hypothesis += 1;
    }
    let Some((d, action)) = chosen else {
        transition(
            id,
            agent,
            Exhausted,
            "every healing action of every hypothesis failed; waits for an operator",
            ctx,
        );
        return;
    };
    let attempt = ctx.attempt(action, Some(d));
    ep.healing = Some(attempt);
    ep.heal_attempts += 1;
    let confidence = ep.hypotheses[ep.hypothesis].confidence;
    let reason = format!(
        "{action} for {d} (hypothesis {} of {}, confidence {confidence:.2})",
        ep.hypothesis + 1,
        ep.hypotheses.len()
    );
    ctx.effects.push(Effect::Heal {
        agent_id: id.to_string(),
        action,
        diagnosis: d,
        attempt_id: attempt.id,
    });
    ctx.events.push(report::healing_action(
        id,
        link,
        &attempt,
        ep.heal_attempts,
        ctx.now,
    ));
    transition(id, agent, Healing, &reason, ctx);
}

/// The healing action under way did not heal: remember it, for this agent
/// and diagnosis and across the fleet.
fn record_heal_failure(agent: &mut AgentRecord, ctx: &mut Ctx) {
    let Some(ep) = agent.episode.as_mut() else {
        return;
    };
    let Some(attempt) = ep.healing.take() else {
        return;
    };
    ep.record_failure_here(attempt.action);
    if let Some(d) = attempt.diagnosis {
        agent.memory.record_failure(d, attempt.action);
        ctx.local.record_outcome(d, attempt.action, false);
    }
}

fn begin_probation(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) {
    let samples = ctx.config.probation_samples;
    let link = agent.link();
    let Some(ep) = agent.episode.as_mut() else {
        return;
    };
    ep.probation_turns = 0;
    ep.probation_ticks = 0;
    let attempt = ep.healing;
    let action = attempt.map(|a| a.action.as_str()).unwrap_or("healing");
    // Probation judges fresh, post-heal turns only.
    agent.window.clear();
    agent.anomalous_streak = 0;
    agent.sustained_ticks = 0;
    let reason = format!("{action} succeeded; probation over {samples} fresh turns");
    enforce(id, agent, Action::Release, &reason, ctx);
    ctx.events.push(report::probation(
        id,
        link,
        "started",
        attempt.as_ref(),
        (0, samples),
        "",
        ctx.now,
    ));
    transition(id, agent, Probation, &reason, ctx);
}

fn probation_turn(id: &str, agent: &mut AgentRecord, evaluation: &Evaluation, ctx: &mut Ctx) {
    let config = ctx.config;
    let samples = config.probation_samples;
    let link = agent.link();
    let full = config.evaluation_window.min(samples as usize);
    let judged = agent.window.len() >= full;
    let Some(ep) = agent.episode.as_mut() else {
        return;
    };
    ep.probation_turns = ep.probation_turns.saturating_add(1);
    if judged && evaluation.is_sustained_anomalous() {
        ep.probation_ticks += 1;
    }
    let attempt = ep.healing;
    let progress = (ep.probation_turns, samples);
    let failed = judged
        && (ep.probation_ticks >= config.suspect_ticks
            || evaluation.max_sustained_deviation > config.severe_sigma);
    if failed {
        let detail = report::describe_anomalies(evaluation);
        ctx.events.push(report::probation(
            id,
            link,
            "failed",
            attempt.as_ref(),
            progress,
            &detail,
            ctx.now,
        ));
        record_heal_failure(agent, ctx);
        quarantine(id, agent, &format!("probation failed: {detail}"), ctx);
        return;
    }
    if ep.probation_turns < samples {
        return;
    }
    ep.healing = None;
    if let Some(a) = attempt
        && let Some(d) = a.diagnosis
    {
        ctx.local.record_outcome(d, a.action, true);
    }
    ctx.events.push(report::probation(
        id,
        link,
        "passed",
        attempt.as_ref(),
        progress,
        "",
        ctx.now,
    ));
    agent.baseline.accelerate(config);
    end_episode(agent);
    let reason = format!("probation passed after {samples} turns; baseline accelerated");
    transition(id, agent, Healthy, &reason, ctx);
}

/// States `on_tick` has work in: a deadline (DRAINING, HEALING), or a
/// hold the fleet may show to be wrong (DRAINING, QUARANTINED, EXHAUSTED).
pub fn watched_on_tick(state: LifecycleState) -> bool {
    matches!(state, Draining | Quarantined | Healing | Exhausted)
}

/// Deadlines (drain timeout, healing timeout), and holds revised when the
/// fleet has since shown the agent's anomaly widely.
pub fn on_tick(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) {
    let config = ctx.config;
    if release_for_external_cause(id, agent, ctx) {
        return;
    }
    if !watched_on_tick(agent.state) {
        // Only a held drain brings a SUSPECTED agent here; `try_drain`
        // puts it back while the hold lasts.
        ctx.timed.remove(id);
    }
    match agent.state {
        // A drain held for the fleet's view, decided once the hold is
        // over even when the agent sends no more turns.
        Suspected if agent.drain_held => {
            let held = agent.last_evaluation.as_ref().and_then(|evaluation| {
                drain_called_for(agent, evaluation, config).map(|r| (evaluation.anomalies, r))
            });
            match held {
                Some((anomalies, reason)) => {
                    try_drain(id, agent, anomalies, agent.showing, &reason, ctx)
                }
                None => agent.drain_held = false,
            }
        }
        Draining if ctx.now >= agent.since.saturating_add(nanos(config.drain_timeout)) => {
            let reason = format!(
                "drain timeout {} elapsed",
                humantime::format_duration(config.drain_timeout)
            );
            quarantine(id, agent, &reason, ctx);
        }
        Healing => {
            let link = agent.link();
            let Some(attempt) = agent.episode.as_ref().and_then(|e| e.healing) else {
                return;
            };
            if ctx.now
                < attempt
                    .started
                    .saturating_add(nanos(config.healing_timeout))
            {
                return;
            }
            let message = format!(
                "no result within {}",
                humantime::format_duration(config.healing_timeout)
            );
            ctx.events.push(report::healing_result(
                id, link, &attempt, false, &message, ctx.now,
            ));
            record_heal_failure(agent, ctx);
            start_healing(id, agent, ctx);
        }
        _ => {}
    }
}

/// An agent drained or quarantined for a cause of its own is let go when
/// the fleet has since shown the same anomaly widely: the first agents of a
/// provider outage are judged while their peers' slow, failing turns are
/// still in flight. Not while a healing action runs, nor against an
/// operator's rejection. Returns true when the agent was released.
fn release_for_external_cause(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) -> bool {
    if !matches!(agent.state, Draining | Quarantined | Exhausted) {
        return false;
    }
    let Some(ep) = agent.episode.as_ref() else {
        return false;
    };
    if ep.correlation.scope == Scope::FleetWide || matches!(ep.approval, Approval::Rejected { .. })
    {
        return false;
    }
    let fleet = ctx.fleet();
    let anomalies = ep.infection.anomalies;
    let verdict = correlator::correlate(anomalies, agent.showing, true, &fleet, ctx.config);
    if verdict.scope != Scope::FleetWide {
        return false;
    }
    let link = agent.link();
    if let Some(ep) = agent.episode.as_mut() {
        ep.drain = None;
        rediagnose(
            id,
            link,
            ep,
            anomalies,
            verdict,
            &fleet.confidence_shift,
            ctx,
        );
    }
    if pending(agent) {
        decide(id, agent, Approval::NotNeeded, report::WITHDRAWN, ctx);
    }
    let reason = format!(
        "the fleet shows it too ({:.0}% of {} other agents): external cause, released and watched",
        verdict.share * 100.0,
        verdict.others
    );
    enforce(id, agent, Action::Release, &reason, ctx);
    transition(id, agent, Suspected, &reason, ctx);
    true
}

/// An executor's report on an effect.
pub fn on_result(
    id: &str,
    agent: &mut AgentRecord,
    attempt_id: u64,
    ok: bool,
    message: &str,
    ctx: &mut Ctx,
) -> Result<(), CommandError> {
    let link = agent.link();
    let state = agent.state;
    if let Some(ep) = agent.episode.as_mut() {
        if ep.drain.is_some_and(|a| a.id == attempt_id) {
            ep.drain = None;
            if state == Draining {
                let reason = if ok {
                    "in-flight work drained".to_string()
                } else {
                    format!("drain failed ({message}); quarantining anyway")
                };
                quarantine(id, agent, &reason, ctx);
            }
            return Ok(());
        }
        if let Some(attempt) = ep
            .healing
            .filter(|a| a.id == attempt_id && state == Healing)
        {
            ctx.events.push(report::healing_result(
                id, link, &attempt, ok, message, ctx.now,
            ));
            if ok {
                begin_probation(id, agent, ctx);
            } else {
                record_heal_failure(agent, ctx);
                start_healing(id, agent, ctx);
            }
            return Ok(());
        }
    }
    if let Some(attempt) = agent.enforcement.filter(|a| a.id == attempt_id) {
        agent.enforcement = None;
        if !ok {
            let name = if attempt.action == Action::Quarantine {
                report::QUARANTINE
            } else {
                report::RELEASE
            };
            ctx.events.push(report::enforcement(
                name,
                id,
                link,
                attempt.id,
                "executor reported a failure",
                Some(message),
                ctx.now,
            ));
        }
        return Ok(());
    }
    Err(CommandError::UnknownAttempt {
        agent: id.to_string(),
        attempt_id,
    })
}

fn pending(agent: &AgentRecord) -> bool {
    agent.state == Quarantined
        && agent
            .episode
            .as_ref()
            .is_some_and(|e| matches!(e.approval, Approval::Pending { .. }))
}

pub fn approve(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) -> Result<(), CommandError> {
    let approved = Approval::Approved { at: ctx.now };
    decide_pending(id, agent, approved, "approved", ctx)?;
    start_healing(id, agent, ctx);
    Ok(())
}

pub fn reject(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) -> Result<(), CommandError> {
    let rejected = Approval::Rejected { at: ctx.now };
    decide_pending(id, agent, rejected, "rejected", ctx)?;
    let reason = "healing rejected by the operator; stays quarantined until heal-now";
    transition(id, agent, Exhausted, reason, ctx);
    Ok(())
}

/// An operator's decision on a pending approval; refused when none is.
fn decide_pending(
    id: &str,
    agent: &mut AgentRecord,
    approval: Approval,
    decision: &str,
    ctx: &mut Ctx,
) -> Result<(), CommandError> {
    if !pending(agent) {
        return Err(CommandError::NotPending {
            agent: id.to_string(),
            state: agent.state,
        });
    }
    decide(id, agent, approval, decision, ctx);
    Ok(())
}

fn decide(id: &str, agent: &mut AgentRecord, approval: Approval, decision: &str, ctx: &mut Ctx) {
    let link = agent.link();
    if let Some(ep) = agent.episode.as_mut() {
        ep.approval = approval;
    }
    ctx.events
        .push(report::approval_decided(id, link, decision, ctx.now));
}

/// The operator wants the agent healed now: from a pending approval, after
/// a rejection or exhaustion (everything may then be tried again), or
/// straight from SUSPECTED/DRAINING.
pub fn heal_now(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) -> Result<(), CommandError> {
    let state = agent.state;
    let Some(ep) = agent.episode.as_mut() else {
        return Err(CommandError::NothingToHeal {
            agent: id.to_string(),
            state,
        });
    };
    match state {
        Healing | Probation => {
            return Err(CommandError::AlreadyHealing {
                agent: id.to_string(),
                state,
            });
        }
        Exhausted => {
            ep.hypothesis = 0;
            let fleet = ctx.fleet();
            let left = ep.hypotheses.iter().any(|h| {
                healing::plan(h.diagnosis, &agent.memory, &fleet)
                    .iter()
                    .any(|a| !ep.failed_here(*a))
            });
            if !left {
                for h in &ep.hypotheses {
                    agent.memory.forget(h.diagnosis);
                }
                ep.failed_here = 0;
            }
        }
        _ => {}
    }
    decide(
        id,
        agent,
        Approval::Approved { at: ctx.now },
        "healed now",
        ctx,
    );
    match state {
        Suspected | Draining => quarantine(id, agent, "operator asked to heal now", ctx),
        _ => start_healing(id, agent, ctx),
    }
    Ok(())
}

/// Operator feedback on the agent's diagnosis: shifts the confidence of
/// that diagnosis type fleet-wide; a false positive or a provider outage
/// also ends the episode (released, HEALTHY, baseline accelerated so a
/// legitimate change is learned quickly).
pub fn feedback(
    id: &str,
    agent: &mut AgentRecord,
    kind: Feedback,
    ctx: &mut Ctx,
) -> Result<Diagnosis, CommandError> {
    let diagnosed = agent
        .episode
        .as_ref()
        .and_then(|e| e.diagnosis())
        .or(agent.last_diagnosis)
        .ok_or_else(|| CommandError::NoDiagnosis {
            agent: id.to_string(),
        })?;
    for (d, delta) in kind.shifts(diagnosed) {
        ctx.local.shift_confidence(d, delta);
    }
    let clears = matches!(kind, Feedback::FalsePositive | Feedback::ProviderOutage);
    if clears && !matches!(agent.state, Healthy | Initializing) {
        let reason = format!("operator feedback: {}", kind.as_str());
        if matches!(agent.state, Draining | Quarantined | Healing | Exhausted) {
            enforce(id, agent, Action::Release, &reason, ctx);
        }
        end_episode(agent);
        agent.window.clear();
        agent.baseline.accelerate(ctx.config);
        transition(id, agent, Healthy, &reason, ctx);
    }
    Ok(diagnosed)
}

/// Forget the baseline and learn the agent again (e.g. after a deliberate
/// change of its prompt or model).
pub fn reset_baseline(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) {
    let reason = "baseline reset by the operator: learning again";
    if matches!(agent.state, Draining | Quarantined | Healing | Exhausted) {
        enforce(id, agent, Action::Release, reason, ctx);
    }
    end_episode(agent);
    agent.baseline.reset();
    agent.window.clear();
    transition(id, agent, Initializing, reason, ctx);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::core::ImmuneCore;
    use crate::immune::event::{AttrValue, Severity};
    use crate::immune::testkit::{Harness, SimAgent, attr};

    /// Approval and severity out of the way, for tests about other rules.
    fn lenient() -> ImmuneConfig {
        ImmuneConfig {
            correlation_hold: Duration::ZERO,
            approval_sigma: 20.0,
            severe_sigma: 25.0,
            ..ImmuneConfig::default()
        }
    }

    fn state(h: &Harness, id: &str) -> LifecycleState {
        h.core.state(id).unwrap()
    }

    /// Feeds sick turns until the agent leaves SUSPECTED (or 30 turns).
    fn until_draining(h: &mut Harness, agent: &mut SimAgent) {
        for _ in 0..30 {
            let v = agent.next_turn();
            h.turn(&v);
            if state(h, &agent.id) == Draining {
                return;
            }
        }
        panic!("{} never drained: {:?}", agent.id, h.core.state(&agent.id));
    }

    fn effect_of(h: &Harness, pick: impl Fn(&Effect) -> bool) -> Effect {
        h.effects.iter().rev().find(|e| pick(e)).cloned().unwrap()
    }

    fn last_heal(h: &Harness) -> Effect {
        effect_of(h, |e| matches!(e, Effect::Heal { .. }))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn a_one_evaluation_blip_returns_to_healthy_without_quarantine() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("blip", 1);
        h.healthy(&mut agent, 100);
        // Slow, fast, slow, fast, slow: 3 of 5 slow on one evaluation only
        // (3x, below severe: a sustained view beyond severe would drain).
        for i in 0..5 {
            let mut v = agent.next_turn();
            if i % 2 == 0 {
                v.latency_ms *= 3.0;
            }
            h.turn(&v);
        }
        assert_eq!(state(&h, "blip"), Suspected);
        h.healthy(&mut agent, 3);
        assert_eq!(state(&h, "blip"), Healthy);
        assert!(h.effects.is_empty(), "{:?}", h.effects);
        assert_eq!(h.infections(), 0);
        assert_eq!(
            h.transitions("blip"),
            pairs(&[
                ("INITIALIZING", "HEALTHY"),
                ("HEALTHY", "SUSPECTED"),
                ("SUSPECTED", "HEALTHY")
            ])
        );
    }

    #[test]
    fn turns_lived_before_the_heal_do_not_count_in_probation() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("buffered", 5);
        h.healthy(&mut agent, 100);
        agent.latency_ms *= 2.5;
        until_draining(&mut h, &mut agent);
        h.wait(30);
        let heal = last_heal(&h);
        h.result(&heal, true);
        assert_eq!(state(&h, "buffered"), Probation);
        // Anomalous turns that ended before probation began (held in the
        // agent's exporter while it was stopped) arrive now: ignored.
        let started = h.core.state_since("buffered").unwrap();
        for _ in 0..20 {
            let stale = Vitals {
                end_time: started - 1_000_000_000,
                ..agent.next_turn()
            };
            let mut out = Vec::new();
            h.core.observe(&stale, h.now, &mut out);
        }
        assert_eq!(state(&h, "buffered"), Probation);
        // Fresh, healed turns pass it.
        agent.latency_ms /= 2.5;
        h.healthy(&mut agent, 10);
        assert_eq!(state(&h, "buffered"), Healthy);
    }

    #[test]
    fn a_persistent_anomaly_is_drained_quarantined_healed_and_passes_probation() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("slowpoke", 2);
        h.healthy(&mut agent, 100);
        agent.latency_ms *= 2.5;
        until_draining(&mut h, &mut agent);
        assert!(matches!(h.last_effect(), Some(Effect::Drain { .. })));
        // In-flight work gets drain_timeout; nothing happens before it.
        h.wait(29);
        assert_eq!(state(&h, "slowpoke"), Draining);
        h.wait(1);
        assert_eq!(state(&h, "slowpoke"), Healing);
        assert!(
            h.effects
                .iter()
                .any(|e| matches!(e, Effect::Quarantine { .. }))
        );
        let heal = last_heal(&h);
        // Latency alone: a slow dependency is the likely cause.
        assert_eq!(h.heals(), pairs(&[("reduce_autonomy", "external_cause")]));
        h.result(&heal, true);
        assert_eq!(state(&h, "slowpoke"), Probation);
        assert!(matches!(h.last_effect(), Some(Effect::Release { .. })));
        // Healed: fresh turns are normal again.
        agent.latency_ms /= 2.5;
        h.healthy(&mut agent, 9);
        assert_eq!(state(&h, "slowpoke"), Probation);
        h.healthy(&mut agent, 1);
        assert_eq!(state(&h, "slowpoke"), Healthy);
        assert_eq!(
            h.transitions("slowpoke"),
            pairs(&[
                ("INITIALIZING", "HEALTHY"),
                ("HEALTHY", "SUSPECTED"),
                ("SUSPECTED", "DRAINING"),
                ("DRAINING", "QUARANTINED"),
                ("QUARANTINED", "HEALING"),
                ("HEALING", "PROBATION"),
                ("PROBATION", "HEALTHY"),
            ])
        );
        let names: Vec<&str> = h.events.iter().map(|e| e.name).collect();
        for name in [
            report::INFECTION,
            report::CORRELATION,
            report::DIAGNOSIS,
            report::QUARANTINE,
            report::HEALING_ACTION,
            report::HEALING_RESULT,
            report::PROBATION,
            report::RELEASE,
        ] {
            assert!(names.contains(&name), "no {name} in {names:?}");
        }
        let passed = h.named(report::PROBATION).pop().unwrap();
        assert_eq!(
            attr(passed, "agent_immune.result"),
            &AttrValue::Str("passed".into())
        );
        // The fix is remembered fleet-wide and the baseline follows the
        // healed agent quickly.
        let stats = h
            .core
            .fleet()
            .stats(Diagnosis::ExternalCause, Action::ReduceAutonomy);
        assert_eq!((stats.successes, stats.failures), (1, 0));
        let summary = h.core.baseline("slowpoke").unwrap();
        assert!(summary.metrics[0].accelerated > 0);
        assert!(h.core.episode("slowpoke").is_none());
        // Every event links to a turn.
        assert!(h.events.iter().all(|e| e.trace_id.is_some()));
    }

    #[test]
    fn a_drain_result_quarantines_before_the_timeout() {
        let mut h = Harness::with(lenient());
        let mut agent = SimAgent::new("quick", 3);
        h.healthy(&mut agent, 100);
        agent.latency_ms *= 3.0;
        until_draining(&mut h, &mut agent);
        let drain = h.last_effect().unwrap();
        h.result(&drain, true);
        assert_eq!(state(&h, "quick"), Healing);
        let lifecycle = h.named(report::LIFECYCLE);
        let quarantined = lifecycle
            .iter()
            .find(|e| e.body.contains("-> QUARANTINED"))
            .unwrap();
        assert_eq!(
            attr(quarantined, "agent_immune.reason"),
            &AttrValue::Str("in-flight work drained".into())
        );
    }

    #[test]
    fn seven_sigma_needs_approval_approve_heals_reject_exhausts_until_heal_now() {
        let mut h = Harness::new();
        let mut approved = SimAgent::new("approved", 4);
        let mut rejected = SimAgent::new("rejected", 5);
        h.healthy(&mut approved, 100);
        h.healthy(&mut rejected, 100);
        for agent in [&mut approved, &mut rejected] {
            // ln(6)/0.25 ≈ 7σ.
            agent.latency_ms *= 6.0;
            until_draining(&mut h, agent);
        }
        h.wait(30);
        assert_eq!(state(&h, "approved"), Quarantined);
        assert_eq!(state(&h, "rejected"), Quarantined);
        assert!(h.heals().is_empty(), "no healing before approval");
        let requests = h.named(report::APPROVAL_REQUESTED);
        assert_eq!(requests.len(), 2);
        assert!(
            matches!(attr(requests[0], "agent_immune.max_deviation"), AttrValue::Double(d) if *d >= 5.0)
        );
        let pending = h.core.pending_approvals();
        assert_eq!(h.core.approval_counts(), (2, 0));
        assert_eq!(pending.len(), 2);
        assert!(pending[0].max_deviation >= 5.0);
        assert!(
            pending[0]
                .infection
                .anomalies
                .contains(crate::immune::anomaly::AnomalyType::LatencySpike)
        );
        assert!(!pending[0].hypotheses.is_empty());
        assert!(
            pending[0].reasoning.contains("latency_spike"),
            "{}",
            pending[0].reasoning
        );

        h.command(|c, now, ev| c.approve("approved", now, ev))
            .unwrap();
        assert_eq!(state(&h, "approved"), Healing);
        assert_eq!(h.heals().len(), 1);

        h.command(|c, now, ev| c.reject("rejected", now, ev))
            .unwrap();
        assert_eq!(state(&h, "rejected"), Exhausted);
        assert!(h.core.pending_approvals().is_empty());
        assert_eq!(h.core.approval_counts(), (0, 1));
        let rejected_list = h.core.rejected_approvals();
        assert_eq!(rejected_list.len(), 1);
        assert_eq!(rejected_list[0].agent_id, "rejected");
        // Rejected stays rejected: no healing, more turns change nothing.
        let heals_of = |h: &Harness, id: &str| {
            h.effects
                .iter()
                .filter(|e| matches!(e, Effect::Heal { .. }) && e.agent_id() == id)
                .count()
        };
        h.wait(3600);
        h.healthy(&mut rejected, 20);
        assert_eq!(state(&h, "rejected"), Exhausted);
        assert_eq!(heals_of(&h, "rejected"), 0);
        let err = h
            .command(|c, now, ev| c.approve("rejected", now, ev))
            .unwrap_err();
        assert!(matches!(err, CommandError::NotPending { .. }), "{err}");
        h.command(|c, now, ev| c.heal_now("rejected", now, ev))
            .unwrap();
        assert_eq!(state(&h, "rejected"), Healing);
        assert_eq!(heals_of(&h, "rejected"), 1);
        let decided: Vec<_> = h
            .named(report::APPROVAL_DECIDED)
            .iter()
            .map(|e| attr(e, "agent_immune.decision").clone())
            .collect();
        assert_eq!(
            decided,
            [
                AttrValue::Str("approved".into()),
                AttrValue::Str("rejected".into()),
                AttrValue::Str("healed now".into())
            ]
        );
    }

    #[test]
    fn when_the_primary_hypothesis_is_exhausted_the_secondary_heals() {
        let mut h = Harness::with(lenient());
        let mut agent = SimAgent::new("hoarder", 6);
        h.healthy(&mut agent, 100);
        // Context bloat: input tokens (and so cost) double, same prompt.
        agent.input_tokens *= 2.0;
        until_draining(&mut h, &mut agent);
        let diagnosis = h.core.episode("hoarder").unwrap().hypotheses.clone();
        assert_eq!(diagnosis[0].diagnosis, Diagnosis::MemoryCorruption);
        assert_eq!(diagnosis[1].diagnosis, Diagnosis::CostOverrun);
        h.wait(30);
        // reset_memory "works" but the agent is still sick: probation fails.
        h.result(&last_heal(&h), true);
        assert_eq!(state(&h, "hoarder"), Probation);
        h.healthy(&mut agent, 10);
        assert_eq!(
            state(&h, "hoarder"),
            Healing,
            "probation failed back to healing"
        );
        let failed = h.named(report::PROBATION).pop().unwrap();
        assert_eq!(failed.severity, Severity::Warn);
        assert_eq!(
            attr(failed, "agent_immune.result"),
            &AttrValue::Str("failed".into())
        );
        // reset_agent fails outright: memory_corruption is exhausted.
        h.result(&last_heal(&h), false);
        assert_eq!(state(&h, "hoarder"), Healing);
        // cost_overrun's ladder, without what already failed here.
        let fix = last_heal(&h);
        h.result(&fix, true);
        agent.input_tokens /= 2.0;
        h.healthy(&mut agent, 10);
        assert_eq!(state(&h, "hoarder"), Healthy);
        assert_eq!(
            h.heals(),
            pairs(&[
                ("reset_memory", "memory_corruption"),
                ("reset_agent", "memory_corruption"),
                ("reduce_autonomy", "cost_overrun"),
            ])
        );
        let memory = h.core.memory("hoarder").unwrap();
        assert_eq!(
            memory.failed_actions(Diagnosis::MemoryCorruption),
            [Action::ResetMemory, Action::ResetAgent]
        );
        assert_eq!(
            h.core
                .fleet()
                .stats(Diagnosis::CostOverrun, Action::ReduceAutonomy)
                .successes,
            1
        );
    }

    #[test]
    fn every_action_failing_exhausts_the_agent() {
        let mut h = Harness::with(lenient());
        let mut agent = SimAgent::new("doomed", 7);
        h.healthy(&mut agent, 100);
        agent.latency_ms *= 3.0;
        until_draining(&mut h, &mut agent);
        h.wait(30);
        for _ in 0..20 {
            if state(&h, "doomed") != Healing {
                break;
            }
            h.result(&last_heal(&h), false);
        }
        assert_eq!(state(&h, "doomed"), Exhausted);
        let exhausted = h.named(report::LIFECYCLE).pop().unwrap();
        assert_eq!(exhausted.severity, Severity::Error);
        // No action was tried twice in the episode.
        let mut tried: Vec<String> = h.heals().into_iter().map(|(a, _)| a).collect();
        let n = tried.len();
        tried.sort();
        tried.dedup();
        assert_eq!(tried.len(), n, "{:?}", h.heals());
        // Heal-now lets the operator start over.
        h.command(|c, now, ev| c.heal_now("doomed", now, ev))
            .unwrap();
        assert_eq!(state(&h, "doomed"), Healing);
    }

    #[test]
    fn a_healing_action_without_result_times_out_as_failed() {
        let mut h = Harness::with(lenient());
        let mut agent = SimAgent::new("silent", 8);
        h.healthy(&mut agent, 100);
        agent.latency_ms *= 3.0;
        until_draining(&mut h, &mut agent);
        h.wait(30);
        let first = last_heal(&h);
        h.wait(119);
        assert_eq!(last_heal(&h), first);
        h.wait(1);
        assert_ne!(last_heal(&h), first);
        let result = h.named(report::HEALING_RESULT).pop().unwrap();
        assert_eq!(attr(result, "agent_immune.ok"), &AttrValue::Bool(false));
        assert!(
            result.body.contains("no result within 2m"),
            "{}",
            result.body
        );
        // A late result for the timed-out attempt is refused, not applied.
        let late = h
            .command(|c, now, ev| c.action_result("silent", first.attempt_id(), true, "", now, ev));
        assert!(matches!(late, Err(CommandError::UnknownAttempt { .. })));
    }

    #[test]
    fn forty_percent_of_the_fleet_with_the_same_spike_is_fleet_wide_and_not_quarantined() {
        let mut h = Harness::new();
        let mut fleet: Vec<SimAgent> = (0..10)
            .map(|i| SimAgent::new(&format!("agent-{i}"), 100 + i))
            .collect();
        for _ in 0..100 {
            for agent in &mut fleet {
                let v = agent.next_turn();
                h.turn(&v);
            }
        }
        // The provider slows down for four agents of ten.
        for agent in &mut fleet[..4] {
            agent.latency_ms *= 3.0;
        }
        for _ in 0..20 {
            for agent in &mut fleet {
                let v = agent.next_turn();
                h.turn(&v);
            }
        }
        assert!(
            !h.effects
                .iter()
                .any(|e| matches!(e, Effect::Drain { .. } | Effect::Quarantine { .. })),
            "{:?}",
            h.effects
        );
        for agent in &fleet[..4] {
            assert_eq!(state(&h, &agent.id), Suspected, "{}", agent.id);
        }
        let alerts: Vec<_> = h
            .named(report::CORRELATION)
            .into_iter()
            .filter(|e| attr(e, "agent_immune.scope") == &AttrValue::Str("fleet_wide".into()))
            .collect();
        assert!(!alerts.is_empty());
        assert!(alerts.iter().all(|e| e.severity == Severity::Warn));
        assert!(
            alerts[0].body.contains("external cause"),
            "{}",
            alerts[0].body
        );
        // The diagnosis says so too.
        let ep = h.core.episode("agent-0").unwrap();
        assert_eq!(ep.hypotheses[0].diagnosis, Diagnosis::ExternalCause);
        for agent in &fleet[4..] {
            assert_eq!(state(&h, &agent.id), Healthy);
        }
    }

    /// Infects an agent with a new system prompt and brings it to HEALING.
    fn prompt_infection(h: &mut Harness, agent: &mut SimAgent) {
        agent.prompt_hash = Some("5eed5eed5eed5eed5eed".into());
        until_draining(h, agent);
        h.wait(30);
        assert_eq!(state(h, &agent.id), Healing);
    }

    fn heal_prompt(h: &mut Harness, agent: &mut SimAgent, good: &str) {
        h.result(&last_heal(h), true);
        agent.prompt_hash = Some(good.to_string());
        h.healthy(agent, 10);
        assert_eq!(state(h, &agent.id), Healthy);
    }

    #[test]
    fn a_failed_action_is_never_retried_for_that_agent_and_diagnosis() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("writer", 9);
        let good = agent.prompt_hash.clone().unwrap();
        h.healthy(&mut agent, 100);
        prompt_infection(&mut h, &mut agent);
        assert_eq!(h.heals(), pairs(&[("reset_memory", "prompt_drift")]));
        h.result(&last_heal(&h), false);
        heal_prompt(&mut h, &mut agent, &good);
        // The same infection again: reset_memory is not tried again.
        h.healthy(&mut agent, 20);
        prompt_infection(&mut h, &mut agent);
        assert_eq!(
            h.heals(),
            pairs(&[
                ("reset_memory", "prompt_drift"),
                ("rollback_prompt", "prompt_drift"),
                ("rollback_prompt", "prompt_drift"),
            ])
        );
    }

    #[test]
    fn a_fix_that_worked_for_other_agents_is_tried_first() {
        let mut h = Harness::new();
        let mut first = SimAgent::new("first", 10);
        let mut second = SimAgent::new("second", 11);
        let good = first.prompt_hash.clone().unwrap();
        h.healthy(&mut first, 100);
        h.healthy(&mut second, 100);
        prompt_infection(&mut h, &mut first);
        h.result(&last_heal(&h), false);
        heal_prompt(&mut h, &mut first, &good);
        assert_eq!(
            h.core
                .fleet()
                .stats(Diagnosis::PromptDrift, Action::RollbackPrompt)
                .successes,
            1
        );
        prompt_infection(&mut h, &mut second);
        let Effect::Heal {
            agent_id, action, ..
        } = last_heal(&h)
        else {
            unreachable!()
        };
        assert_eq!(
            (agent_id.as_str(), action),
            ("second", Action::RollbackPrompt)
        );
    }

    #[test]
    fn false_positive_feedback_releases_and_lowers_confidence() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("innocent", 12);
        let good = agent.prompt_hash.clone().unwrap();
        h.healthy(&mut agent, 100);
        prompt_infection(&mut h, &mut agent);
        let confidence = h.core.episode("innocent").unwrap().hypotheses[0].confidence;
        let d = h
            .command(|c, now, ev| c.feedback("innocent", Feedback::FalsePositive, now, ev))
            .unwrap();
        assert_eq!(d, Diagnosis::PromptDrift);
        assert_eq!(state(&h, "innocent"), Healthy);
        assert!(matches!(h.last_effect(), Some(Effect::Release { .. })));
        assert!((h.core.fleet().confidence_shift[d.index()] + 0.05).abs() < 1e-12);
        // The next prompt_drift diagnosis is 0.05 less confident.
        agent.prompt_hash = Some(good);
        h.healthy(&mut agent, 20);
        prompt_infection(&mut h, &mut agent);
        let again = h.core.episode("innocent").unwrap().hypotheses[0].confidence;
        assert!(
            (confidence - again - 0.05).abs() < 1e-12,
            "{confidence} -> {again}"
        );
    }

    #[test]
    fn commands_on_the_wrong_agent_or_state_are_refused() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("fine", 13);
        h.healthy(&mut agent, 20);
        let e = h
            .command(|c, now, ev| c.approve("nobody", now, ev))
            .unwrap_err();
        assert_eq!(e, CommandError::UnknownAgent("nobody".into()));
        let e = h
            .command(|c, now, ev| c.reject("fine", now, ev))
            .unwrap_err();
        assert!(matches!(e, CommandError::NotPending { state: Healthy, .. }));
        let e = h
            .command(|c, now, ev| c.heal_now("fine", now, ev))
            .unwrap_err();
        assert!(matches!(e, CommandError::NothingToHeal { .. }));
        let e = h
            .command(|c, now, ev| c.feedback("fine", Feedback::Correct, now, ev))
            .unwrap_err();
        assert!(matches!(e, CommandError::NoDiagnosis { .. }));
        let e = h
            .command(|c, now, ev| c.action_result("fine", 99, true, "", now, ev))
            .unwrap_err();
        assert!(e.to_string().contains("no action attempt 99"), "{e}");
    }

    #[test]
    fn reset_baseline_relearns_and_leaves_the_fleet_count() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("renewed", 14);
        h.healthy(&mut agent, 20);
        assert_eq!(h.core.summary().monitored, 1);
        h.command(|c, now, ev| c.reset_baseline("renewed", now, ev))
            .unwrap();
        assert_eq!(state(&h, "renewed"), Initializing);
        assert_eq!(h.core.summary().monitored, 0);
        h.healthy(&mut agent, 15);
        assert_eq!(state(&h, "renewed"), Healthy);
        assert_eq!(h.core.summary().monitored, 1);
    }

    #[test]
    fn the_fleet_summary_counts_what_agents_show_now() {
        let mut h = Harness::new();
        let mut a = SimAgent::new("a", 15);
        h.healthy(&mut a, 100);
        let mut v = a.next_turn();
        v.tool_calls = 40;
        h.turn(&v);
        let spike = crate::immune::anomaly::AnomalyType::ToolExplosion.index();
        assert_eq!(h.core.summary().showing[spike], 1);
        h.healthy(&mut a, 1);
        assert_eq!(h.core.summary().showing[spike], 0);
        // Sharded: the edge sums the parts and hands the sum back.
        let mut other = ImmuneCore::new(ImmuneConfig::default());
        let mut total = h.core.summary();
        total.merge(&other.summary());
        other.set_fleet(total);
        assert_eq!(other.fleet().monitored, 1);
    }

    fn learned_fleet(h: &mut Harness, n: u64) -> Vec<SimAgent> {
        let mut fleet: Vec<SimAgent> = (0..n)
            .map(|i| SimAgent::new(&format!("agent-{i}"), 200 + i))
            .collect();
        for _ in 0..100 {
            for agent in &mut fleet {
                let v = agent.next_turn();
                h.turn(&v);
            }
        }
        fleet
    }

    /// The first agent of an outage is judged alone and quarantined (8x
    /// latency is severe: its approval is pending); `meanwhile` runs then;
    /// its peers' slow turns arrive, the outage shows fleet-wide, a second
    /// passes.
    fn outage_seen_late(
        h: &mut Harness,
        fleet: &mut [SimAgent],
        meanwhile: impl FnOnce(&mut Harness),
    ) {
        fleet[0].latency_ms *= 8.0;
        until_draining(h, &mut fleet[0]);
        h.wait(30);
        assert_eq!(state(h, "agent-0"), Quarantined);
        meanwhile(h);
        for agent in &mut fleet[1..5] {
            agent.latency_ms *= 8.0;
        }
        for _ in 0..6 {
            for agent in &mut fleet[1..5] {
                let v = agent.next_turn();
                h.turn(&v);
            }
        }
        h.wait(1);
    }

    #[test]
    fn an_agent_held_before_the_fleet_showed_the_outage_is_released() {
        let mut h = Harness::new();
        let mut fleet = learned_fleet(&mut h, 10);
        outage_seen_late(&mut h, &mut fleet, |h| {
            assert!(matches!(
                h.core.episode("agent-0").unwrap().approval,
                Approval::Pending { .. }
            ));
        });
        assert_eq!(state(&h, "agent-0"), Suspected);
        let Some(Effect::Release { agent_id, .. }) = h
            .effects
            .iter()
            .rev()
            .find(|e| e.agent_id() == "agent-0")
            .cloned()
        else {
            panic!("{:?}", h.effects)
        };
        assert_eq!(agent_id, "agent-0");
        let ep = h.core.episode("agent-0").unwrap();
        assert_eq!(ep.correlation.scope, Scope::FleetWide);
        assert_eq!(ep.approval, Approval::NotNeeded, "approval withdrawn");
        assert_eq!(ep.hypotheses[0].diagnosis, Diagnosis::ExternalCause);
        let withdrawn = h.named(report::APPROVAL_DECIDED);
        assert_eq!(
            attr(withdrawn[0], "agent_immune.decision"),
            &AttrValue::Str("withdrawn".into())
        );
        // Still slow while the outage lasts: watched, not drained again.
        let drains = |h: &Harness| {
            h.effects
                .iter()
                .filter(|e| matches!(e, Effect::Drain { agent_id, .. } if agent_id == "agent-0"))
                .count()
        };
        let before = drains(&h);
        for _ in 0..10 {
            for agent in &mut fleet[..5] {
                let v = agent.next_turn();
                h.turn(&v);
            }
        }
        assert_eq!(drains(&h), before);
        assert_eq!(state(&h, "agent-0"), Suspected);
    }

    #[test]
    fn an_operators_rejection_is_not_overridden_by_the_fleet() {
        let mut h = Harness::new();
        let mut fleet = learned_fleet(&mut h, 10);
        outage_seen_late(&mut h, &mut fleet, |h| {
            h.command(|c, now, ev| c.reject("agent-0", now, ev))
                .unwrap();
        });
        assert_eq!(state(&h, "agent-0"), Exhausted);
    }

    /// Two shards exchanging their parts of the fleet summary, as the
    /// pipeline's shards do on every tick.
    fn exchange(a: &mut Harness, b: &mut Harness) {
        let mut total = a.core.summary();
        total.merge(&b.core.summary());
        a.core.set_fleet(total);
        b.core.set_fleet(total);
    }

    #[test]
    fn a_shard_waits_for_the_other_shards_view_before_draining() {
        let mut a = Harness::of(ImmuneCore::for_shard(ImmuneConfig::default(), 2));
        let mut b = Harness::of(ImmuneCore::for_shard(ImmuneConfig::default(), 2));
        let mut fleet: Vec<SimAgent> = (0..10)
            .map(|i| SimAgent::new(&format!("agent-{i}"), 300 + i))
            .collect();
        let round = |a: &mut Harness, b: &mut Harness, fleet: &mut [SimAgent]| {
            for (i, agent) in fleet.iter_mut().enumerate() {
                let v = agent.next_turn();
                if i < 5 {
                    a.turn(&v);
                } else {
                    b.turn(&v);
                }
            }
        };
        for _ in 0..100 {
            round(&mut a, &mut b, &mut fleet);
        }
        exchange(&mut a, &mut b);
        // An outage on agent-0 (shard a) and agents 5..8 (shard b), with no
        // exchange yet: shard a must not judge agent-0 alone.
        for i in [0, 5, 6, 7, 8] {
            fleet[i].latency_ms *= 3.0;
        }
        for _ in 0..10 {
            round(&mut a, &mut b, &mut fleet);
        }
        assert_eq!(state(&a, "agent-0"), Suspected);
        assert!(!a.effects.iter().any(|e| matches!(e, Effect::Drain { .. })));
        // Two exchanges later the next slow turn sees the fleet.
        exchange(&mut a, &mut b);
        exchange(&mut a, &mut b);
        for _ in 0..5 {
            round(&mut a, &mut b, &mut fleet);
        }
        assert_eq!(state(&a, "agent-0"), Suspected);
        assert_eq!(
            a.core.episode("agent-0").unwrap().correlation.scope,
            Scope::FleetWide
        );
        assert!(!a.effects.iter().any(|e| matches!(e, Effect::Drain { .. })));

        // An agent alone in its trouble is drained once the exchanges show
        // nobody else has it.
        fleet[1].tools_low = 30;
        fleet[1].tools_high = 40;
        for _ in 0..10 {
            round(&mut a, &mut b, &mut fleet);
        }
        exchange(&mut a, &mut b);
        exchange(&mut a, &mut b);
        for _ in 0..3 {
            round(&mut a, &mut b, &mut fleet);
        }
        assert_eq!(state(&a, "agent-1"), Draining);
    }

    /// An agent with a learned baseline, now 3x slower, under a 20 s
    /// correlation hold.
    fn sick_under_a_long_hold(id: &str, seed: u64) -> (Harness, SimAgent) {
        let mut h = Harness::with(ImmuneConfig {
            correlation_hold: Duration::from_secs(20),
            ..lenient()
        });
        let mut agent = SimAgent::new(id, seed);
        h.healthy(&mut agent, 100);
        agent.latency_ms *= 3.0;
        (h, agent)
    }

    #[test]
    fn the_drain_waits_out_the_correlation_hold() {
        let (mut h, mut agent) = sick_under_a_long_hold("patient", 16);
        let mut confirmed = None;
        while state(&h, "patient") != Draining {
            let v = agent.next_turn();
            h.turn(&v);
            if confirmed.is_none() && h.infections() == 1 {
                confirmed = Some(h.now);
            }
            assert!(h.now < 1_700_000_000 * 1_000_000_000 + 300 * 1_000_000_000);
        }
        let waited = h.now - confirmed.unwrap();
        assert!(
            (20_000_000_000..22_000_000_000).contains(&waited),
            "drained {waited} ns after the infection"
        );
    }

    #[test]
    fn a_held_drain_is_decided_on_tick_when_the_agent_goes_quiet() {
        let (mut h, mut agent) = sick_under_a_long_hold("burst", 17);
        // A burst of sick turns, one a second, then silence.
        for _ in 0..8 {
            let v = agent.next_turn();
            h.turn(&v);
        }
        assert_eq!(state(&h, "burst"), Suspected);
        h.wait(5);
        assert_eq!(state(&h, "burst"), Suspected, "still within the hold");
        h.wait(15);
        assert_eq!(state(&h, "burst"), Draining);
        assert!(matches!(h.last_effect(), Some(Effect::Drain { .. })));
    }

    #[test]
    fn probation_reads_a_skewed_agent_clock_on_the_agents_own_timeline() {
        const HOUR: i64 = 3_600_000_000_000;
        const DELAY: u64 = 300_000_000;
        for skew in [-HOUR, 0, HOUR] {
            let mut h = Harness::with(lenient());
            let mut agent = SimAgent::new("skewed", 18);
            // A turn that ended at `ours` on our clock, stamped by the
            // agent's clock and judged 300 ms later (export and transit).
            let turn = |h: &mut Harness, agent: &mut SimAgent, ours: u64| {
                let v = Vitals {
                    end_time: (ours as i64 + skew) as u64,
                    ..agent.next_turn()
                };
                let mut out = Vec::new();
                h.core.observe(&v, ours + DELAY, &mut out);
                h.events.extend(out);
                h.effects.extend(h.core.drain_effects());
            };
            let fresh = |h: &mut Harness, agent: &mut SimAgent| {
                h.now += 1_000_000_000;
                turn(h, agent, h.now - DELAY);
            };
            for _ in 0..100 {
                fresh(&mut h, &mut agent);
            }
            agent.latency_ms *= 2.5;
            while state(&h, "skewed") != Draining {
                fresh(&mut h, &mut agent);
            }
            h.wait(30);
            let heal = last_heal(&h);
            h.result(&heal, true);
            assert_eq!(state(&h, "skewed"), Probation, "skew {skew}");
            // Sick turns that ended before the heal, 200 ms to a minute
            // before, arrive late: ignored.
            let since = h.core.state_since("skewed").unwrap();
            for i in 0..20u64 {
                turn(&mut h, &mut agent, since - 200_000_000 - i * 3_000_000_000);
            }
            assert_eq!(state(&h, "skewed"), Probation, "skew {skew}");
            // Fresh healed turns pass probation.
            agent.latency_ms /= 2.5;
            for _ in 0..10 {
                fresh(&mut h, &mut agent);
            }
            assert_eq!(state(&h, "skewed"), Healthy, "skew {skew}");
        }
    }

    #[test]
    fn a_wrong_clock_estimate_holds_probation_only_until_its_deadline() {
        const SECOND: u64 = 1_000_000_000;
        let mut h = Harness::new();
        let mut agent = SimAgent::new("ahead", 23);
        h.healthy(&mut agent, 100);
        // One turn claims to end 50 minutes from now: within the skew
        // allowance, so it is taken for the agent's clock.
        h.now += SECOND;
        let odd = Vitals {
            end_time: h.now + 3_000 * SECOND,
            ..agent.next_turn()
        };
        let mut out = Vec::new();
        h.core.observe(&odd, h.now, &mut out);
        agent.latency_ms *= 2.5;
        until_draining(&mut h, &mut agent);
        h.wait(30);
        let heal = last_heal(&h);
        h.result(&heal, true);
        assert_eq!(state(&h, "ahead"), Probation);
        // Healed turns read as lived before the heal: not counted yet.
        agent.latency_ms /= 2.5;
        h.healthy(&mut agent, 20);
        assert_eq!(state(&h, "ahead"), Probation);
        // Past the deadline every turn received is fresh.
        h.wait(h.core.config().probation_deadline.as_secs());
        h.healthy(&mut agent, 10);
        assert_eq!(state(&h, "ahead"), Healthy);
    }
}
