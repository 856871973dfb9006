//! The fleet as operators see and steer it: a handle that asks the shard
//! owning an agent (by message, never by lock) and gathers the answers.
//! The management API, the CLI (through the API) and the JSON ingest use it.

use super::detection::agent_shard;
use crate::immune::baseline::BaselineSummary;
use crate::immune::command::CommandError;
use crate::immune::core::ApprovalRequest;
use crate::immune::diagnosis::{Diagnosis, Feedback};
use crate::immune::episode::Episode;
use crate::immune::event::{AttrValue, Event};
use crate::immune::fleet::HealingStat;
use crate::immune::lifecycle::LifecycleState;
use crate::immune::vitals::{UnixNanos, Vitals};
use crate::telemetry::Telemetry;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Last vitals of an agent, as the API shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VitalsView {
    pub trace_id: String,
    pub root_span_id: String,
    pub end_time: UnixNanos,
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub usage_known: bool,
    pub llm_calls: u32,
    pub tool_calls: u32,
    pub retries: u32,
    pub errors: u32,
    pub error_type: Option<String>,
    pub cost_usd: f64,
    pub model: Option<String>,
    pub prompt_hash: Option<String>,
}

impl From<&Vitals> for VitalsView {
    fn from(v: &Vitals) -> Self {
        Self {
            trace_id: hex::encode(v.trace_id),
            root_span_id: hex::encode(v.root_span_id),
            end_time: v.end_time,
            latency_ms: v.latency_ms,
            input_tokens: v.input_tokens,
            output_tokens: v.output_tokens,
            usage_known: v.usage_known,
            llm_calls: v.llm_calls,
            tool_calls: v.tool_calls,
            retries: v.retries,
            errors: v.errors,
            error_type: v.error_type.clone(),
            cost_usd: v.cost_usd,
            model: v.model.clone(),
            prompt_hash: v.prompt_hash.clone(),
        }
    }
}

/// One agent, as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentView {
    pub agent_id: String,
    pub state: LifecycleState,
    /// Since when (Unix nanoseconds) the agent is in this state.
    pub since: UnixNanos,
    /// Largest deviation (σ) of the last evaluation.
    pub deviation: Option<f64>,
    pub baseline: Option<BaselineSummary>,
    pub last_vitals: Option<VitalsView>,
    /// The infection episode under way, if any.
    pub episode: Option<Episode>,
}

/// Which agents a page of the fleet listing holds: those matching `state`
/// (all when `None`), with ids after `after` (compared as UTF-8 bytes, the
/// order of `str`), the first `limit` by id.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentQuery {
    pub after: Option<Vec<u8>>,
    pub state: Option<LifecycleState>,
    pub limit: usize,
}

/// One shard's part of a page.
#[derive(Debug, Default)]
pub struct ShardPage {
    /// Up to `limit` agents, sorted by id.
    pub agents: Vec<AgentView>,
    /// Agents matching the state filter, any id.
    pub matching: usize,
    /// Of those, the ones after the cursor (this page and the rest).
    pub remaining: usize,
}

/// One page of the fleet listing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentPage {
    pub agents: Vec<AgentView>,
    /// Agents matching the filter, on every page.
    pub total: usize,
    /// The id of the page's last agent, when more agents follow it.
    #[serde(skip)]
    pub last_id_if_more: Option<String>,
}

impl ShardPage {
    /// The `limit` smallest ids after `query.after` among `ids` in the
    /// wanted state (`state_of`), without materialising the others: a
    /// bounded max-heap over one pass.
    pub fn select<'a>(
        ids: impl Iterator<Item = &'a str>,
        state_of: impl Fn(&str) -> Option<LifecycleState>,
        query: &AgentQuery,
    ) -> (Vec<&'a str>, usize, usize) {
        let mut heap = std::collections::BinaryHeap::with_capacity(query.limit.saturating_add(1));
        let (mut matching, mut remaining) = (0, 0);
        for id in ids {
            if query.state.is_some() && state_of(id) != query.state {
                continue;
            }
            matching += 1;
            if query
                .after
                .as_deref()
                .is_some_and(|after| id.as_bytes() <= after)
            {
                continue;
            }
            remaining += 1;
            heap.push(id);
            if heap.len() > query.limit {
                heap.pop();
            }
        }
        (heap.into_sorted_vec(), matching, remaining)
    }
}

/// What one shard counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FleetStats {
    pub agents: usize,
    pub by_state: BTreeMap<String, usize>,
    pub pending_approvals: usize,
    pub rejected_approvals: usize,
    pub healing: Vec<HealingStat>,
}

pub type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// A request to the shard that owns an agent (or to every shard).
pub enum ShardCommand {
    Agents(AgentQuery, oneshot::Sender<ShardPage>),
    Agent(String, oneshot::Sender<Option<AgentView>>),
    Approvals(oneshot::Sender<(Vec<ApprovalRequest>, Vec<ApprovalRequest>)>),
    Stats(oneshot::Sender<FleetStats>),
    /// Operator decisions, answered with the agent as the decision left
    /// it, once the decision is durable.
    Approve(String, Reply<AgentView>),
    Reject(String, Reply<AgentView>),
    HealNow(String, Reply<AgentView>),
    ResetBaseline(String, Reply<AgentView>),
    Feedback(String, Feedback, Reply<Diagnosis>),
}

/// Why a fleet request could not be answered at all.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Command(#[from] CommandError),
    #[error("the pipeline is shutting down")]
    Stopped,
    /// Retryable: the detection queue of vitals is full.
    #[error("the detection queue is full ([service] vitals_queue); retry later")]
    Full,
    /// Permanent: more records for one shard than its whole queue holds.
    #[error(
        "{records} records for one detection shard; its queue holds {capacity} ([service] vitals_queue): split the batch"
    )]
    TooLarge { records: usize, capacity: usize },
}

/// Recent events, kept in memory for the API's timeline (bounded).
pub struct RecentEvents {
    capacity: usize,
    events: Mutex<VecDeque<Event>>,
}

impl RecentEvents {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            events: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
        }
    }

    pub fn push(&self, event: &Event) {
        // A poisoned lock only means a panic elsewhere mid-push; the queue
        // itself is still a valid queue.
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() >= self.capacity {
            events.pop_front();
        }
        events.push_back(event.clone());
    }

    /// Events newer than `since`, optionally of one agent, oldest first,
    /// at most `limit`.
    pub fn query(&self, agent: Option<&str>, since: UnixNanos, limit: usize) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Event> = events
            .iter()
            .rev()
            .filter(|e| e.time > since && agent.is_none_or(|a| e.agent_id == a))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// Handle to the running fleet.
#[derive(Clone)]
pub struct Fleet {
    shards: Vec<mpsc::Sender<ShardCommand>>,
    /// Each shard's queue of vitals from sources that are not OTLP.
    vitals: Vec<mpsc::Sender<Vitals>>,
    pub events: Arc<RecentEvents>,
    telemetry: Arc<Telemetry>,
}

impl Fleet {
    pub fn new(
        shards: Vec<mpsc::Sender<ShardCommand>>,
        vitals: Vec<mpsc::Sender<Vitals>>,
        events: Arc<RecentEvents>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            shards,
            vitals,
            events,
            telemetry,
        }
    }

    fn owner(&self, agent_id: &str) -> Option<&mpsc::Sender<ShardCommand>> {
        self.shards
            .get(agent_shard(agent_id, self.shards.len().max(1)))
    }

    async fn ask<T>(
        shard: Option<&mpsc::Sender<ShardCommand>>,
        make: impl FnOnce(oneshot::Sender<T>) -> ShardCommand,
    ) -> Result<T, FleetError> {
        let shard = shard.ok_or(FleetError::Stopped)?;
        let (tx, rx) = oneshot::channel();
        shard
            .send(make(tx))
            .await
            .map_err(|_| FleetError::Stopped)?;
        rx.await.map_err(|_| FleetError::Stopped)
    }

    async fn command<T>(
        &self,
        agent_id: &str,
        make: impl FnOnce(Reply<T>) -> ShardCommand,
    ) -> Result<T, FleetError> {
        Ok(Self::ask(self.owner(agent_id), make).await??)
    }

    /// One page of the monitored agents, sorted by id: each shard sends
    /// at most `limit` of its own, so a page costs the same in a fleet of
    /// any size.
    pub async fn agents(&self, query: AgentQuery) -> Result<AgentPage, FleetError> {
        let mut agents = Vec::new();
        let (mut total, mut remaining) = (0, 0);
        for shard in &self.shards {
            let part = Self::ask(Some(shard), |tx| ShardCommand::Agents(query.clone(), tx)).await?;
            agents.extend(part.agents);
            total += part.matching;
            remaining += part.remaining;
        }
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        agents.truncate(query.limit);
        let last_id_if_more = (remaining > agents.len())
            .then(|| agents.last().map(|a| a.agent_id.clone()))
            .flatten();
        Ok(AgentPage {
            agents,
            total,
            last_id_if_more,
        })
    }

    pub async fn agent(&self, agent_id: &str) -> Result<Option<AgentView>, FleetError> {
        let id = agent_id.to_string();
        Self::ask(self.owner(agent_id), |tx| ShardCommand::Agent(id, tx)).await
    }

    /// Pending and rejected approvals across the fleet.
    pub async fn approvals(
        &self,
    ) -> Result<(Vec<ApprovalRequest>, Vec<ApprovalRequest>), FleetError> {
        let (mut pending, mut rejected) = (Vec::new(), Vec::new());
        for shard in &self.shards {
            let (p, r) = Self::ask(Some(shard), ShardCommand::Approvals).await?;
            pending.extend(p);
            rejected.extend(r);
        }
        Ok((pending, rejected))
    }

    pub async fn stats(&self) -> Result<FleetStats, FleetError> {
        let mut total = FleetStats::default();
        for shard in &self.shards {
            let s = Self::ask(Some(shard), ShardCommand::Stats).await?;
            total.agents += s.agents;
            for (state, n) in s.by_state {
                *total.by_state.entry(state).or_default() += n;
            }
            total.pending_approvals += s.pending_approvals;
            total.rejected_approvals += s.rejected_approvals;
            // Healing statistics are fleet-wide already (every shard holds
            // the merged summary); one shard's copy is the fleet's.
            if total.healing.is_empty() {
                total.healing = s.healing;
            }
        }
        Ok(total)
    }

    pub async fn approve(&self, agent_id: &str) -> Result<AgentView, FleetError> {
        let id = agent_id.to_string();
        self.command(agent_id, |tx| ShardCommand::Approve(id, tx))
            .await
    }

    pub async fn reject(&self, agent_id: &str) -> Result<AgentView, FleetError> {
        let id = agent_id.to_string();
        self.command(agent_id, |tx| ShardCommand::Reject(id, tx))
            .await
    }

    pub async fn heal_now(&self, agent_id: &str) -> Result<AgentView, FleetError> {
        let id = agent_id.to_string();
        self.command(agent_id, |tx| ShardCommand::HealNow(id, tx))
            .await
    }

    pub async fn reset_baseline(&self, agent_id: &str) -> Result<AgentView, FleetError> {
        let id = agent_id.to_string();
        self.command(agent_id, |tx| ShardCommand::ResetBaseline(id, tx))
            .await
    }

    pub async fn feedback(&self, agent_id: &str, kind: Feedback) -> Result<Diagnosis, FleetError> {
        let id = agent_id.to_string();
        self.command(agent_id, |tx| ShardCommand::Feedback(id, kind, tx))
            .await
    }

    /// Vitals from a source that is not OTLP (JSON ingest, LLM proxy):
    /// straight to each agent's owner, registered on first report like any
    /// other agent. All or nothing: room is reserved in every owner's queue
    /// before any record is sent, so a refused batch can be sent again
    /// whole.
    pub fn ingest(&self, batch: Vec<Vitals>) -> Result<(), FleetError> {
        let n = self.vitals.len();
        if n == 0 {
            return Err(FleetError::Stopped);
        }
        let owners: Vec<usize> = batch.iter().map(|v| agent_shard(&v.agent_id, n)).collect();
        let mut wanted = vec![0usize; n];
        for owner in &owners {
            wanted[*owner] += 1;
        }
        let mut permits = Vec::with_capacity(n);
        for (queue, records) in self.vitals.iter().zip(wanted) {
            if records == 0 {
                permits.push(None);
                continue;
            }
            let capacity = queue.max_capacity();
            if records > capacity {
                return Err(FleetError::TooLarge { records, capacity });
            }
            match queue.try_reserve_many(records) {
                Ok(reserved) => permits.push(Some(reserved)),
                Err(mpsc::error::TrySendError::Full(())) => {
                    self.telemetry
                        .detection
                        .refused_vitals
                        .add(batch.len() as u64);
                    return Err(FleetError::Full);
                }
                Err(mpsc::error::TrySendError::Closed(())) => return Err(FleetError::Stopped),
            }
        }
        for (vitals, owner) in batch.into_iter().zip(owners) {
            if let Some(Some(reserved)) = permits.get_mut(owner)
                && let Some(permit) = reserved.next()
            {
                permit.send(vitals);
            }
        }
        Ok(())
    }
}

/// The attribute value of an event, for filters in the API.
pub fn event_attr<'a>(event: &'a Event, key: &str) -> Option<&'a AttrValue> {
    event
        .attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The LLM proxy (and any other vitals source) feeds detection through the
/// fleet: each vitals record goes to the shard that owns its agent.
impl super::consumer::VitalsConsumer for Fleet {
    fn consume_vitals(&self, vitals: Vitals) -> Result<(), super::consumer::Refused> {
        use super::consumer::Refused;
        self.ingest(vec![vitals]).map_err(|e| match e {
            FleetError::Full => Refused::Backpressure(e.to_string()),
            _ => Refused::Unavailable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_the_first_ids_after_the_cursor_in_the_state() {
        let ids = ["d", "a", "e", "c", "b", "f"];
        let state_of = |id: &str| {
            Some(if id == "c" {
                LifecycleState::Quarantined
            } else {
                LifecycleState::Healthy
            })
        };
        let query = |after: Option<&str>, state, limit| AgentQuery {
            after: after.map(|a: &str| a.as_bytes().to_vec()),
            state,
            limit,
        };
        let pick = |q: &AgentQuery| ShardPage::select(ids.iter().copied(), state_of, q);
        assert_eq!(pick(&query(None, None, 2)), (vec!["a", "b"], 6, 6));
        assert_eq!(
            pick(&query(Some("b"), None, 3)),
            (vec!["c", "d", "e"], 6, 4)
        );
        assert_eq!(
            pick(&query(None, Some(LifecycleState::Healthy), 3)),
            (vec!["a", "b", "d"], 5, 5)
        );
        assert_eq!(
            pick(&query(Some("a"), Some(LifecycleState::Quarantined), 3)),
            (vec!["c"], 1, 1)
        );
        assert_eq!(pick(&query(Some("f"), None, 3)), (vec![], 6, 0));
    }
}
