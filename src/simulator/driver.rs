//! The run loop: agents take turns at their own pace (Poisson arrivals at
//! the fleet's rate), scheduled infections start and end on time, and the
//! turns go out as OTLP requests, several in flight, as SDK exporters send.

use super::fleet::SimFleet;
use super::injection::Injection;
use super::random::Rng;
use crate::exporters::otlp_client::OtlpClient;
use crate::pipeline::consumer::Signal;
use crate::testdata::{AgentTrace, request_of};
use bytes::Bytes;
use prost::Message;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often due turns are gathered and sent.
const TICK: Duration = Duration::from_millis(20);
/// Spans per request at most (SDK batch exporters send 512 by default;
/// a simulated fleet is many processes at once).
const MAX_SPANS_PER_REQUEST: usize = 2048;
/// Requests in flight at once; beyond it the loop waits (backpressure).
const MAX_IN_FLIGHT: usize = 16;
/// How long sends still in flight may finish once the run is over.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Counts of a run, updated as it goes.
#[derive(Debug, Default)]
pub struct SimStats {
    pub turns: AtomicU64,
    pub spans: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    pub failed_spans: AtomicU64,
    pub skipped_turns: AtomicU64,
}

/// A snapshot of [`SimStats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Turns sent (in requests the endpoint accepted or not).
    pub turns: u64,
    /// Spans the endpoint accepted.
    pub spans: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub failed_spans: u64,
    /// Turns not taken because the agent was quarantined or draining.
    pub skipped_turns: u64,
}

impl SimStats {
    pub fn report(&self) -> Report {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Report {
            turns: get(&self.turns),
            spans: get(&self.spans),
            requests: get(&self.requests),
            failed_requests: get(&self.failed_requests),
            failed_spans: get(&self.failed_spans),
            skipped_turns: get(&self.skipped_turns),
        }
    }
}

/// Everything the loop needs.
pub struct Driver {
    pub fleet: Arc<Mutex<SimFleet>>,
    pub client: Arc<OtlpClient>,
    pub stats: Arc<SimStats>,
    /// Injections with the agents each hits, earliest first.
    pub schedule: Vec<(Injection, Vec<usize>)>,
    pub rate: f64,
    pub duration: Duration,
    pub seed: u64,
    pub started: Instant,
    /// Stops the run early.
    pub stop: CancellationToken,
}

impl Driver {
    pub async fn run(mut self) {
        let started_wall = wall_clock();
        let agents = {
            let fleet = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
            if fleet.is_empty() {
                return;
            }
            fleet.len()
        };
        let mut rng = Rng::stream(self.seed, u64::MAX);
        // Each agent takes turns at rate/agents on average.
        let mean_gap = agents as f64 / self.rate;
        let mut due: BinaryHeap<Reverse<(Duration, usize)>> = (0..agents)
            .map(|i| Reverse((secs(rng.exponential(mean_gap)), i)))
            .collect();
        // Trace ids differ between runs even with the same --seed.
        let mut id_seed = started_wall ^ self.seed.rotate_left(32);
        self.schedule.sort_by_key(|(i, _)| i.at);
        let mut schedule = self.schedule.into_iter().peekable();
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let abandon = CancellationToken::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.stop.cancelled() => break,
            }
            let now = self.started.elapsed().min(self.duration);
            let mut turns: Vec<AgentTrace> = Vec::new();
            {
                let mut fleet = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
                while let Some((injection, hit)) = schedule.next_if(|(i, _)| i.at <= now) {
                    let ids = fleet.infect(&hit, injection.kind, now, injection.lasts);
                    tracing::info!(
                        injection = %injection, agents = ids.len(),
                        "injected {} into {}", injection.kind, summarise(&ids)
                    );
                }
                for i in 0..fleet.len() {
                    if let Some(agent) = fleet.agent_mut(i) {
                        for ended in agent.expire(now) {
                            tracing::info!(agent = agent.id(), "{ended} ended");
                        }
                    }
                }
                while let Some(Reverse((at, i))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    due.push(Reverse((at + secs(rng.exponential(mean_gap)), i)));
                    let Some(agent) = fleet.agent_mut(i) else {
                        continue;
                    };
                    if agent.pause.is_some() {
                        agent.skipped_turns += 1;
                        self.stats.skipped_turns.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    id_seed = id_seed.wrapping_add(1);
                    let end = started_wall.saturating_add(nanos(at));
                    turns.push(agent.next_turn(at, end, id_seed));
                }
            }
            self.stats
                .turns
                .fetch_add(turns.len() as u64, Ordering::Relaxed);
            for chunk in chunks(turns) {
                let spans: usize = chunk.iter().map(span_count).sum();
                let body = Bytes::from(request_of(&chunk).encode_to_vec());
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let client = self.client.clone();
                let stats = self.stats.clone();
                let abandon = abandon.clone();
                tokio::spawn(async move {
                    let result = client.send_with_retry(Signal::Traces, body, &abandon).await;
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(()) => {
                            stats.spans.fetch_add(spans as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                            stats
                                .failed_spans
                                .fetch_add(spans as u64, Ordering::Relaxed);
                            tracing::warn!(
                                "sending {spans} spans to {} failed: {e}",
                                client.endpoint()
                            );
                        }
                    }
                    drop(permit);
                });
            }
            if now >= self.duration {
                break;
            }
        }
        // Let what is in flight finish, then give up on retries.
        let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
        if tokio::time::timeout(FLUSH_DEADLINE, in_flight.acquire_many(all))
            .await
            .is_err()
        {
            abandon.cancel();
            let _ = in_flight.acquire_many(all).await;
        }
    }
}

/// Turns grouped into requests of at most `MAX_SPANS_PER_REQUEST` spans
/// (a single larger turn goes alone).
fn chunks(turns: Vec<AgentTrace>) -> Vec<Vec<AgentTrace>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut spans = 0;
    for turn in turns {
        let n = span_count(&turn);
        if !current.is_empty() && spans + n > MAX_SPANS_PER_REQUEST {
            out.push(std::mem::take(&mut current));
            spans = 0;
        }
        spans += n;
        current.push(turn);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Spans a turn will have, without building them.
fn span_count(t: &AgentTrace) -> usize {
    let chats = t.llm_calls as usize * (1 + t.http_attempts as usize);
    chats + t.tool_calls as usize + usize::from(t.with_agent_span)
}

fn summarise(ids: &[String]) -> String {
    match ids {
        [] => "no agent".to_string(),
        [one] => one.clone(),
        many if many.len() <= 5 => many.join(", "),
        many => format!("{} agents ({}, ...)", many.len(), many[..3].join(", ")),
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn wall_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_count_matches_the_built_trace() {
        let t = AgentTrace::new("a")
            .llm_calls(3)
            .tool_calls(4)
            .http_attempts(2);
        assert_eq!(span_count(&t), t.spans().len());
        let t = AgentTrace::new("a").llm_calls(1).tool_calls(0);
        assert_eq!(span_count(&t), t.spans().len());
    }

    #[test]
    fn requests_stay_under_the_span_limit() {
        let turns: Vec<AgentTrace> = (0..1000)
            .map(|i| AgentTrace::new("a").llm_calls(2).tool_calls(3).seed(i))
            .collect();
        let requests = chunks(turns);
        assert_eq!(requests.iter().map(Vec::len).sum::<usize>(), 1000);
        assert!(
            requests
                .iter()
                .all(|r| r.iter().map(span_count).sum::<usize>() <= MAX_SPANS_PER_REQUEST)
        );
        assert_eq!(requests.len(), 3);
    }
}
