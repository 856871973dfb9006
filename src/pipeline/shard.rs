//! A detection shard: one task that owns the open traces routed to it (turn
//! assembly) and the agents routed to it (the immune core). It is the edge
//! around the pure core: it reads the clock, passes time in, carries the
//! core's effects out to the executors and brings their results back.

use super::detection::{SpanBatch, agent_shard};
use super::fleet::{
    AgentView, FleetStats, RecentEvents, Reply, ShardCommand, ShardPage, VitalsView,
};
use super::persist::fleet_key;
use crate::executors::{ActionRequest, Executors};
use crate::immune::command::CommandError;
use crate::immune::core::ImmuneCore;
use crate::immune::effect::Effect;
use crate::immune::event::Event;
use crate::immune::fleet::FleetSummary;
use crate::immune::vitals::{UnixNanos, Vitals};
use crate::processors::turns::TurnAssembler;
use crate::state::{Commit, StateWriter, Table};
use crate::telemetry::Telemetry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How long turns wait to be put in order before they are judged: turns of
/// one agent reach its shard out of order when one export batch is split
/// across shards by trace, or a trace closes in a later batch.
const REORDER_DELAY: Duration = Duration::from_millis(100);
/// How often waiting turns are checked.
const REORDER_TICK: Duration = Duration::from_millis(25);
/// Turns waiting to be put in order, at most; beyond, the shard stops
/// taking turns until the oldest are judged, so its queues fill and their
/// senders see it (ingest answers 429).
const REORDER_CAPACITY: usize = 16_384;
/// Turns from other shards each shard may queue. Shards never wait for
/// each other (two shards sending to each other could wait forever): a
/// turn beyond this is counted in `detection_dropped_turns` and skipped.
pub const TURN_QUEUE: usize = 16_384;

/// Wall-clock time as the core takes it.
pub fn now() -> UnixNanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Each shard's share of the fleet summary; the correlator of every shard
/// reads their sum. Touched once per tick per shard, never per span.
pub struct FleetBoard {
    parts: Vec<Mutex<FleetSummary>>,
}

impl FleetBoard {
    pub fn new(shards: usize) -> Self {
        Self {
            parts: (0..shards)
                .map(|_| Mutex::new(FleetSummary::default()))
                .collect(),
        }
    }

    /// Publishes one shard's part and returns the fleet's sum.
    fn exchange(&self, index: usize, part: FleetSummary) -> FleetSummary {
        if let Some(slot) = self.parts.get(index) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = part;
        }
        let mut total = FleetSummary::default();
        for slot in &self.parts {
            total.merge(&slot.lock().unwrap_or_else(|p| p.into_inner()));
        }
        total
    }
}

/// The result of an effect, coming back from an executor.
pub struct ActionResult {
    agent_id: String,
    attempt_id: u64,
    ok: bool,
    message: String,
}

pub struct Shard {
    pub index: usize,
    pub run_id: String,
    pub assembler: TurnAssembler,
    pub core: ImmuneCore,
    /// Span batches routed here by trace id.
    pub spans: mpsc::Receiver<SpanBatch>,
    /// Turns routed here by agent id, from any shard (this one included).
    pub turns: mpsc::Receiver<Vitals>,
    /// Vitals from sources that are not OTLP (JSON ingest, LLM proxy),
    /// routed here by agent id through the fleet handle.
    pub vitals: mpsc::Receiver<Vitals>,
    /// Senders to every shard's turn queue, indexed by shard.
    pub turn_routes: Vec<mpsc::Sender<Vitals>>,
    /// Operator requests for the agents this shard owns.
    pub commands: mpsc::Receiver<ShardCommand>,
    /// Where events go: one queue per events exporter.
    pub events: Vec<mpsc::Sender<Event>>,
    pub recent: Arc<RecentEvents>,
    pub executors: Arc<Executors>,
    pub fleet: Arc<FleetBoard>,
    /// The durable store, when `[state]` is configured.
    pub writer: Option<StateWriter>,
    /// Whether events also go to the store's outbox (an OTLP events
    /// endpoint delivers from it).
    pub outbox: bool,
    /// How often idle traces are closed and time-based transitions run.
    pub tick: Duration,
    pub telemetry: Arc<Telemetry>,
}

/// An operator decision's answer, sent once the decision is durable, or
/// with the reason it could not be made durable (then it is not
/// acknowledged).
type Ack = Box<dyn FnOnce(&Shard, Result<(), CommandError>) + Send>;

/// Events held while the store refuses commits; beyond this the oldest are
/// dropped (and counted as not exported).
const MAX_HELD_EVENTS: usize = 10_000;
/// Least time between two log lines about the agent table being full.
const TABLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the core counted, as last added to the pipeline's telemetry.
#[derive(Default)]
struct Reported {
    agents: i64,
    shadowed: u64,
    skipped: u64,
    evicted: u64,
    refused: u64,
    bad_timestamps: u64,
    /// Evictions and refusals as of the last log line, and when it was.
    logged: (u64, u64, Option<tokio::time::Instant>),
}

struct Loop {
    sequence: u64,
    events: Vec<Event>,
    closed_turns: Vec<Vitals>,
    /// Turns waiting to be put in order, with their arrival time.
    reorder: Vec<(tokio::time::Instant, Vitals)>,
    reported: Reported,
    /// The last commit failed: decisions (effects, events, answers) are
    /// held until a retry on the tick succeeds.
    unwritable: bool,
    /// Agents changed since the last successful commit.
    unsaved: HashSet<String>,
    results_tx: mpsc::UnboundedSender<ActionResult>,
    /// Each agent's latest effect under way: the next one waits for it, so
    /// an agent's target sees drain, quarantine, heal and release in the
    /// order they were decided.
    in_flight: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Agents that learned since they were last staged for the store:
    /// staged once a tick, not once a turn (a snapshot is encoded each
    /// time).
    learned: HashSet<String>,
}

impl Shard {
    /// Runs until every receiver has gone (its span queue is closed) and
    /// every shard has handed over its last turns.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reorder = tokio::time::interval(REORDER_TICK);
        reorder.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (results_tx, mut results) = mpsc::unbounded_channel();
        let mut state = Loop {
            sequence: 0,
            events: Vec::new(),
            closed_turns: Vec::new(),
            reorder: Vec::new(),
            reported: Reported::default(),
            unwritable: false,
            unsaved: HashSet::new(),
            results_tx,
            in_flight: HashMap::new(),
            learned: HashSet::new(),
        };
        let mut spans_open = true;
        let mut commands_open = true;
        let mut turns_open = true;
        let mut vitals_open = true;
        loop {
            tokio::select! {
                biased;
                // Executor results first: they unblock agents in HEALING,
                // DRAINING or QUARANTINED.
                Some(result) = results.recv() => {
                    let now = now();
                    if let Err(e) = self.core.action_result(
                        &result.agent_id, result.attempt_id, result.ok, &result.message, now, &mut state.events,
                    ) {
                        tracing::debug!(agent = %result.agent_id, "late action result ignored: {e}");
                    }
                    self.after_core(&mut state, false).await;
                }
                // Operator requests: a person is waiting for the answer.
                command = self.commands.recv(), if commands_open => {
                    match command {
                        Some(command) => {
                            // While the store refuses writes, a decision is
                            // refused before it is made.
                            let refuse = state.unwritable.then(|| self.not_durable());
                            let ack = self.command(command, refuse, &mut state.events);
                            let durable = self.after_core(&mut state, false).await;
                            // Acknowledged once durable, with the agent as
                            // the command left it.
                            if let Some(ack) = ack {
                                let durable = if durable { Ok(()) } else { Err(self.not_durable()) };
                                ack(&self, durable);
                            }
                        }
                        None => commands_open = false,
                    }
                }
                // Turns next: finished work from other shards, and vitals
                // from ingest and the proxy. They wait for the reorder tick,
                // because one export batch is split across shards by trace
                // and its turns arrive interleaved; while too many wait, the
                // queues fill instead.
                turn = self.turns.recv(), if turns_open && state.reorder.len() < REORDER_CAPACITY => {
                    match turn {
                        Some(vitals) => state.reorder.push((tokio::time::Instant::now(), vitals)),
                        None => turns_open = false,
                    }
                }
                vitals = self.vitals.recv(), if vitals_open && state.reorder.len() < REORDER_CAPACITY => {
                    match vitals {
                        Some(vitals) => state.reorder.push((tokio::time::Instant::now(), vitals)),
                        None => vitals_open = false,
                    }
                }
                // Judge the turns gathered since the last reorder tick, in
                // the order the agents lived them.
                _ = reorder.tick(), if !state.reorder.is_empty() => {
                    self.judge_turns(&mut state, false).await;
                }
                // New spans: assemble, and route the turns that closed.
                batch = self.spans.recv(), if spans_open => {
                    let before = self.assembler.open_traces();
                    match batch {
                        // The batch's budget reservation is released here,
                        // once its facts are assembled.
                        Some(batch) => self.assembler.add_batch(batch.facts, now(), &mut state.closed_turns),
                        None => {
                            // Shutdown: every receiver is gone. Close what is
                            // open, hand it over, then stop routing so the
                            // turn queues close once every shard is done.
                            spans_open = false;
                            self.assembler.drain(&mut state.closed_turns);
                        }
                    }
                    self.account(before);
                    self.route(&mut state.closed_turns);
                    if !spans_open {
                        self.turn_routes.clear();
                    }
                }
                // Time passes: close idle traces, run deadlines, share the
                // fleet summary.
                _ = ticker.tick() => {
                    let now = now();
                    let before = self.assembler.open_traces();
                    self.assembler.flush_idle(now, &mut state.closed_turns);
                    self.account(before);
                    self.route(&mut state.closed_turns);
                    let part = self.core.summary();
                    if let Some(writer) = &self.writer
                        && let Err(e) = writer.stage(Table::ImmuneMemory, &fleet_key(self.index), &part)
                    {
                        tracing::warn!("fleet experience not staged for the store: {e}");
                    }
                    let fleet = self.fleet.exchange(self.index, part);
                    self.core.set_fleet(fleet);
                    self.core.tick(now, &mut state.events);
                    state.in_flight.retain(|_, task| !task.is_finished());
                    self.after_core(&mut state, true).await;
                    self.stage_learned(&mut state);
                }
            }
            if !turns_open && !vitals_open {
                self.judge_turns(&mut state, true).await;
                break;
            }
        }
        self.stage_learned(&mut state);
    }

    /// Stages what agents learned since the last tick for the store's next
    /// flush.
    fn stage_learned(&mut self, state: &mut Loop) {
        let Some(writer) = &self.writer else {
            state.learned.clear();
            return;
        };
        for id in state.learned.drain() {
            if let Some(snapshot) = self.core.snapshot(&id)
                && let Err(e) = writer.stage_agent(&id, &snapshot)
            {
                tracing::warn!(agent = %id, "baseline not staged for the store: {e}");
            }
        }
    }

    /// Judges the turns that have waited `REORDER_DELAY` (all of them when
    /// `all`), oldest lived first.
    async fn judge_turns(&mut self, state: &mut Loop, all: bool) {
        let ripe = tokio::time::Instant::now() - REORDER_DELAY;
        let (mut ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.reorder)
            .into_iter()
            .partition(|(arrived, _)| all || *arrived <= ripe);
        state.reorder = waiting;
        if ready.is_empty() {
            return;
        }
        ready.sort_by_key(|(_, v)| v.end_time);
        let now = now();
        for (_, vitals) in ready {
            self.core.observe(&vitals, now, &mut state.events);
        }
        self.after_core(state, false).await;
    }

    fn not_durable(&self) -> CommandError {
        CommandError::NotDurable {
            reason: self
                .telemetry
                .state
                .unwritable()
                .unwrap_or_else(|| "commit failed".to_string()),
        }
    }

    /// Answers reads at once; runs an operator decision (unless `refuse`
    /// says why not) and returns its acknowledgement, to be sent after the
    /// decision is made durable.
    fn command(
        &mut self,
        command: ShardCommand,
        refuse: Option<CommandError>,
        events: &mut Vec<Event>,
    ) -> Option<Ack> {
        let now = now();
        let ack_view = |id: String, reply: Reply<AgentView>, result: Result<(), CommandError>| {
            Some(
                Box::new(move |shard: &Shard, durable: Result<(), CommandError>| {
                    let answer = result.and(durable).and_then(|()| {
                        shard
                            .view(&id)
                            .ok_or(CommandError::UnknownAgent(id.clone()))
                    });
                    let _ = reply.send(answer);
                }) as Ack,
            )
        };
        if let Some(refused) = refuse {
            match command {
                ShardCommand::Approve(_, reply)
                | ShardCommand::Reject(_, reply)
                | ShardCommand::HealNow(_, reply)
                | ShardCommand::ResetBaseline(_, reply) => {
                    let _ = reply.send(Err(refused));
                    return None;
                }
                ShardCommand::Feedback(_, _, reply) => {
                    let _ = reply.send(Err(refused));
                    return None;
                }
                // Reads are answered.
                read => return self.command(read, None, events),
            }
        }
        // A dropped reply means the requester gave up; nothing to do.
        match command {
            ShardCommand::Agents(query, reply) => {
                let (ids, matching, remaining) =
                    ShardPage::select(self.core.agent_ids(), |id| self.core.state(id), &query);
                let _ = reply.send(ShardPage {
                    agents: ids.into_iter().filter_map(|id| self.view(id)).collect(),
                    matching,
                    remaining,
                });
            }
            ShardCommand::Agent(id, reply) => {
                let _ = reply.send(self.view(&id));
            }
            ShardCommand::Approvals(reply) => {
                let _ = reply.send((
                    self.core.pending_approvals(),
                    self.core.rejected_approvals(),
                ));
            }
            ShardCommand::Stats(reply) => {
                let (pending_approvals, rejected_approvals) = self.core.approval_counts();
                let mut stats = FleetStats {
                    agents: self.core.agent_count(),
                    pending_approvals,
                    rejected_approvals,
                    healing: self.core.fleet().action_stats(),
                    ..FleetStats::default()
                };
                for id in self.core.agent_ids() {
                    if let Some(state) = self.core.state(id) {
                        *stats
                            .by_state
                            .entry(state.as_str().to_string())
                            .or_default() += 1;
                    }
                }
                let _ = reply.send(stats);
            }
            ShardCommand::Approve(id, reply) => {
                let result = self.core.approve(&id, now, events);
                return ack_view(id, reply, result);
            }
            ShardCommand::Reject(id, reply) => {
                let result = self.core.reject(&id, now, events);
                return ack_view(id, reply, result);
            }
            ShardCommand::HealNow(id, reply) => {
                let result = self.core.heal_now(&id, now, events);
                return ack_view(id, reply, result);
            }
            ShardCommand::ResetBaseline(id, reply) => {
                let result = self.core.reset_baseline(&id, now, events);
                return ack_view(id, reply, result);
            }
            ShardCommand::Feedback(id, kind, reply) => {
                let result = self.core.feedback(&id, kind, now, events);
                return Some(Box::new(
                    move |_: &Shard, durable: Result<(), CommandError>| {
                        let _ = reply.send(durable.and(result));
                    },
                ));
            }
        }
        None
    }

    fn view(&self, id: &str) -> Option<AgentView> {
        Some(AgentView {
            agent_id: id.to_string(),
            state: self.core.state(id)?,
            since: self.core.state_since(id).unwrap_or(0),
            deviation: self.core.last_deviation(id),
            baseline: self.core.baseline(id),
            last_vitals: self.core.last_vitals(id).map(VitalsView::from),
            episode: self.core.episode(id).cloned(),
        })
    }

    /// Carries out what the core decided: first makes it durable (state
    /// transitions, approvals and events are committed before anything
    /// acts on them), then effects to the executors (never awaited here: a
    /// slow target must not stall detection), then events out. When the
    /// commit fails nothing is carried out: effects wait in the core,
    /// events here, until a commit succeeds (retried when `retry`, on the
    /// tick). Returns whether what was decided is durable.
    async fn after_core(&mut self, state: &mut Loop, retry: bool) -> bool {
        for event in state.events.iter_mut().filter(|e| e.id.is_empty()) {
            state.sequence += 1;
            event.id = format!("{}-{}-{}", self.run_id, self.index, state.sequence);
        }
        self.forget_evicted(state);
        let durable = self.persist(state, retry).await;
        if durable {
            let effects: Vec<Effect> = self.core.drain_effects().collect();
            for effect in effects {
                self.execute(effect, state);
            }
            self.publish(state).await;
        } else if state.events.len() > MAX_HELD_EVENTS {
            let extra = state.events.len() - MAX_HELD_EVENTS;
            state.events.drain(..extra);
            self.telemetry.events.send_failed.add(extra as u64);
        }
        self.report(state);
        durable
    }

    /// Evicted agents' stored state is deleted with the next flush, so a
    /// restart does not bring them back.
    fn forget_evicted(&mut self, state: &mut Loop) {
        for id in self.core.drain_evicted() {
            state.learned.remove(&id);
            state.unsaved.remove(&id);
            if let Some(writer) = &self.writer
                && let Err(e) = writer.stage_forget_agent(&id)
            {
                tracing::warn!(agent = %id, "evicted agent's state not deleted: {e}");
            }
        }
    }

    /// Changed agents: staged for the next batched flush when nothing was
    /// decided, committed at once with the events when something was.
    /// Returns whether the decisions are durable (always, without a store).
    async fn persist(&mut self, state: &mut Loop, retry: bool) -> bool {
        let changed: Vec<String> = self.core.drain_changed().collect();
        let Some(writer) = &self.writer else {
            return true;
        };
        let decided = self.core.pending_effects() > 0 || !state.events.is_empty();
        if !decided && !state.unwritable {
            // Learning only: staged on the next tick.
            state.learned.extend(changed);
            return true;
        }
        state.unsaved.extend(changed);
        if state.unwritable && !retry {
            return false;
        }
        let mut commit = Commit::new();
        for id in &state.unsaved {
            state.learned.remove(id);
            if let Some(snapshot) = self.core.snapshot(id)
                && let Err(e) = commit.put(Table::Agents, id, &snapshot)
            {
                tracing::warn!(agent = %id, "agent state not committed: {e}");
            }
        }
        if self.outbox {
            commit.events(state.events.iter().cloned());
        }
        let health = &self.telemetry.state;
        match writer.commit_now(commit).await {
            Ok(_) => {
                state.unsaved.clear();
                if state.unwritable {
                    state.unwritable = false;
                    health.recovered(self.index);
                    tracing::info!(
                        shard = self.index,
                        "state store writes again; held decisions carried out"
                    );
                }
                true
            }
            Err(e) => {
                if !state.unwritable {
                    tracing::error!(
                        shard = self.index,
                        "state transition could not be made durable; nothing is acted on until it is (retried every tick): {e}"
                    );
                }
                state.unwritable = true;
                health.failed(self.index, e.to_string());
                false
            }
        }
    }

    fn execute(&self, effect: Effect, state: &mut Loop) {
        let results = state.results_tx.clone();
        let agent_id = effect.agent_id().to_string();
        let mut request = ActionRequest::new(agent_id.clone(), effect.action());
        if let Effect::Heal { diagnosis, .. } = &effect {
            request.diagnosis = Some(diagnosis.as_str().to_string());
        }
        if let Some(vitals) = self.core.last_vitals(&agent_id) {
            request.resource = vitals.resource.iter().cloned().collect();
        }
        request.reason = format!("{} by agent-immune", effect.action());
        request.event_id = format!(
            "{}-{}-attempt-{}",
            self.run_id,
            self.index,
            effect.attempt_id()
        );
        let executors = self.executors.clone();
        let attempt_id = effect.attempt_id();
        let previous = state.in_flight.remove(&agent_id);
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                // Targets time out, so this wait is bounded.
                let _ = previous.await;
            }
            let outcome = executors.execute(&request).await;
            tracing::info!(
                agent = %request.agent_id, action = %request.action, target = %outcome.target,
                success = outcome.success, "{}", outcome.message
            );
            // The shard has stopped only at shutdown; the result is moot.
            let _ = results.send(ActionResult {
                agent_id: request.agent_id,
                attempt_id,
                ok: outcome.success,
                message: outcome.message,
            });
        });
        state.in_flight.insert(agent_id, task);
    }

    /// Moves the assembler's counts into the pipeline's telemetry.
    fn account(&mut self, open_before: usize) {
        let open_now = self.assembler.open_traces();
        let detection = &self.telemetry.detection;
        detection
            .open_traces
            .add(open_now as i64 - open_before as i64);
        let counts = self.assembler.take_counters();
        detection.evicted_traces.add(counts.evicted);
        detection.late_spans.add(counts.late_spans);
        detection.bad_timestamps.add(counts.bad_timestamps);
    }

    fn route(&mut self, closed: &mut Vec<Vitals>) {
        // Turns that close together (one export batch, an idle flush) reach
        // the core in the order the agent lived them: its window and its
        // "3 anomalous evaluations in a row" are about that order.
        closed.sort_by_key(|v| v.end_time);
        let n = self.turn_routes.len();
        for vitals in closed.drain(..) {
            self.telemetry.detection.turns.inc();
            if n == 0 {
                continue;
            }
            let target = agent_shard(&vitals.agent_id, n);
            match self.turn_routes[target].try_send(vitals) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.telemetry.detection.dropped_turns.inc();
                }
                // The target shard has stopped, which happens after
                // shutdown has begun; the turn is then moot.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    async fn publish(&mut self, state: &mut Loop) {
        for event in state.events.drain(..) {
            if event.name == crate::immune::report::INFECTION {
                self.telemetry.detection.infections.inc();
            }
            self.recent.push(&event);
            for queue in &self.events {
                // Waiting here slows detection, never the forward path:
                // receivers only ever try_reserve on the shard queues.
                if queue.send(event.clone()).await.is_err() {
                    tracing::warn!(
                        event = event.name,
                        "events exporter has stopped; event not exported"
                    );
                }
            }
        }
    }

    /// Adds what the core counted since the last call to the pipeline's
    /// telemetry, and says when the agent table is full (at most once per
    /// `TABLE_LOG_EVERY`).
    fn report(&mut self, state: &mut Loop) {
        let core = &self.core;
        let detection = &self.telemetry.detection;
        let r = &mut state.reported;
        let agents = core.agent_count() as i64;
        detection.monitored_agents.add(agents - r.agents);
        r.agents = agents;
        for (counter, now, before) in [
            (
                &detection.shadowed_turns,
                core.shadowed_turns(),
                &mut r.shadowed,
            ),
            (
                &detection.skipped_turns,
                core.skipped_turns(),
                &mut r.skipped,
            ),
            (
                &detection.evicted_agents,
                core.evicted_agents(),
                &mut r.evicted,
            ),
            (
                &detection.refused_turns,
                core.refused_turns(),
                &mut r.refused,
            ),
            (
                &detection.bad_timestamps,
                core.bad_timestamps(),
                &mut r.bad_timestamps,
            ),
        ] {
            counter.add(now.saturating_sub(*before));
            *before = now;
        }
        let (evicted, refused, at) = r.logged;
        if (r.evicted, r.refused) == (evicted, refused) {
            return;
        }
        let now = tokio::time::Instant::now();
        if at.is_some_and(|at| now.duration_since(at) < TABLE_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            shard = self.index,
            agents,
            evicted = r.evicted - evicted,
            refused_turns = r.refused - refused,
            "agent table full: least recently seen agents evicted for new ones; turns of new agents refused when every agent must be kept"
        );
        r.logged = (r.evicted, r.refused, Some(now));
    }
}
