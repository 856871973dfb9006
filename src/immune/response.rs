//! The immune response: how an agent moves through its lifecycle on each
//! evaluation, as time passes, on executor results and on operator
//! decisions. Every transition is an `agent_immune.lifecycle` event with
//! its reason; what must happen outside leaves as `Effect` values.

use super::action::Action;
use super::agent::AgentRecord;
use super::anomaly::AnomalySet;
use super::command::CommandError;
use super::config::ImmuneConfig;
use super::correlator::{self, Scope};
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
    pub external: Option<&'a FleetSummary>,
    /// This core's part of the fleet summary.
    pub local: &'a mut FleetSummary,
    pub now: UnixNanos,
    pub events: &'a mut Vec<Event>,
    pub effects: &'a mut Vec<Effect>,
    pub next_attempt: &'a mut u64,
    /// Agents with a deadline (DRAINING, HEALING), checked by `tick`.
    pub timed: &'a mut HashSet<String>,
}

impl Ctx<'_> {
    fn fleet(&self) -> &FleetSummary {
        self.external.unwrap_or(self.local)
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

fn nanos(d: Duration) -> u64 {
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
    if matches!(to, Draining | Healing) {
        ctx.timed.insert(id.to_string());
    } else if matches!(from, Draining | Healing) {
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
        transition(id, agent, Suspected, &reason, ctx);
    }
    if evaluation.is_sustained_anomalous() {
        agent.sustained_ticks = agent.sustained_ticks.saturating_add(1);
    }
    match agent.episode.as_mut() {
        Some(ep) => ep.max_deviation = ep.max_deviation.max(evaluation.max_deviation),
        None => confirm(id, agent, evaluation, vitals, counted, ctx),
    }

    // Only the sustained view moves an agent on: a single turn, however
    // extreme, never quarantines by itself.
    let by_ticks = agent.sustained_ticks >= config.suspect_ticks;
    let by_severity = evaluation.max_sustained_deviation > config.severe_sigma;
    if !(by_ticks || by_severity) {
        return;
    }
    let verdict = correlator::correlate(evaluation.anomalies, counted, true, ctx.fleet(), config);
    let shift = ctx.fleet().confidence_shift;
    let link = agent.link();
    let Some(ep) = agent.episode.as_mut() else {
        return;
    };
    if verdict.scope != ep.correlation.scope {
        ep.correlation = verdict;
        ep.hypotheses = diagnosis::diagnose(evaluation.anomalies, &verdict, &shift);
        ep.hypothesis = 0;
        ctx.events
            .push(report::correlation(id, link, &verdict, ctx.now));
        ctx.events
            .push(report::diagnosis(id, link, &ep.hypotheses, ctx.now));
    }
    if verdict.scope == Scope::FleetWide {
        // An external cause: the correlation event is the alert.
        return;
    }
    let reason = if by_ticks {
        format!(
            "sustained view anomalous on {} evaluations",
            agent.sustained_ticks
        )
    } else {
        format!(
            "sustained deviation {:.1}σ beyond severe {}σ",
            evaluation.max_sustained_deviation, config.severe_sigma
        )
    };
    start_drain(id, agent, &reason, ctx);
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
    let verdict = correlator::correlate(evaluation.anomalies, counted, true, ctx.fleet(), config);
    let hypotheses = diagnosis::diagnose(
        evaluation.anomalies,
        &verdict,
        &ctx.fleet().confidence_shift,
    );
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
    let mut chosen = None;
    while let Some(d) = ep.diagnosis() {
        let next = healing::plan(d, &agent.memory, ctx.fleet())
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

/// Deadlines: drain timeout, healing timeout.
pub fn on_tick(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) {
    let config = ctx.config;
    match agent.state {
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
    if !pending(agent) {
        return Err(CommandError::NotPending {
            agent: id.to_string(),
            state: agent.state,
        });
    }
    decide(
        id,
        agent,
        Approval::Approved { at: ctx.now },
        "approved",
        ctx,
    );
    start_healing(id, agent, ctx);
    Ok(())
}

pub fn reject(id: &str, agent: &mut AgentRecord, ctx: &mut Ctx) -> Result<(), CommandError> {
    if !pending(agent) {
        return Err(CommandError::NotPending {
            agent: id.to_string(),
            state: agent.state,
        });
    }
    decide(
        id,
        agent,
        Approval::Rejected { at: ctx.now },
        "rejected",
        ctx,
    );
    transition(
        id,
        agent,
        Exhausted,
        "healing rejected by the operator; stays quarantined until heal-now",
        ctx,
    );
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
                healing::plan(h.diagnosis, &agent.memory, fleet)
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
