//! Detection latency: from the export of an anomalous turn (its last span,
//! the root, is in the request) to the `agent_immune.infection` log at the
//! downstream receiver, while background load runs.

use super::events::{SeenEvent, is_baseline_ready, observer};
use super::load::{self, LoadResult, LoadShape, Template};
use super::sink::Sink;
use super::target::Target;
use super::wall_clock;
use crate::exporters::otlp_client::{OtlpClient, SendError};
use crate::pipeline::consumer::Signal;
use crate::simulator::{InfectionKind, Personality, Rng, SimAgent};
use crate::testdata::AgentTrace;
use anyhow::bail;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Turns each probe agent learns from before its anomaly.
const WARMUP_TURNS: usize = 20;
/// How long one infection may take to arrive before it counts as missed.
const DETECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between probes, so they do not queue behind each other.
const PROBE_GAP: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct Latency {
    pub probes: usize,
    /// Latencies of the probes whose infection arrived, sorted.
    pub latencies: Vec<Duration>,
    pub background: LoadResult,
}

impl Latency {
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies
            .get(rank.clamp(1, self.latencies.len()) - 1)
            .copied()
    }
}

/// The observer the latency run's sink needs (events of `probe-*`).
pub fn sink_observer() -> (super::sink::LogObserver, mpsc::UnboundedReceiver<SeenEvent>) {
    observer("probe-")
}

pub async fn measure(
    target: &Target,
    _sink: &Sink,
    mut events: mpsc::UnboundedReceiver<SeenEvent>,
    templates: Arc<Vec<Template>>,
    background: &LoadShape,
    probes: usize,
) -> anyhow::Result<Latency> {
    // Background load, in one-second slices until the probes are done.
    let clients = load::clients(target.grpc, background.connections)?;
    let done = Arc::new(AtomicBool::new(false));
    let load_task = {
        let done = done.clone();
        let shape = LoadShape {
            duration: Duration::from_secs(1),
            ..background.clone()
        };
        tokio::spawn(async move {
            let mut total = LoadResult::default();
            while !done.load(Ordering::Relaxed) {
                let r = load::run(&clients, templates.clone(), &shape).await;
                total.requests += r.requests;
                total.spans_accepted += r.spans_accepted;
                total.turns_accepted += r.turns_accepted;
                total.refused += r.refused;
                total.failed += r.failed;
                total.elapsed += r.elapsed;
                total.last_error = r.last_error.or(total.last_error);
            }
            total
        })
    };

    let client = load::clients(target.grpc, 1)?.remove(0);
    let mut agents: Vec<SimAgent> = (0..probes)
        .map(|i| {
            let mut p = Personality::draw(i, probes, 77);
            p.id = format!("probe-{i:04}");
            SimAgent::new(p, Rng::stream(77, i as u64))
        })
        .collect();
    let mut seed = wall_clock();
    // Warmup: every probe learns its baseline.
    for _round in 0..WARMUP_TURNS {
        let now = wall_clock();
        let turns: Vec<AgentTrace> = agents
            .iter_mut()
            .map(|a| {
                seed += 1;
                a.next_turn(Duration::ZERO, now, seed)
            })
            .collect();
        for chunk in turns.chunks(200) {
            send(&client, load::encode(chunk).0).await?;
        }
    }
    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready < probes {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if is_baseline_ready(&e) => ready += 1,
            Ok(Some(_)) => {}
            _ => bail!("only {ready} of {probes} probe agents learned a baseline within 60 s"),
        }
    }

    let mut latencies = Vec::with_capacity(probes);
    for agent in &mut agents {
        agent.infect(InfectionKind::InfiniteLoop, Duration::ZERO, None);
        seed += 1;
        let turn = agent.next_turn(Duration::ZERO, wall_clock(), seed);
        let body = load::encode(std::slice::from_ref(&turn)).0;
        let sent = send(&client, body).await?;
        let id = agent.id().to_string();
        let deadline = Instant::now() + DETECTION_DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(e)) if e.name == "agent_immune.infection" && e.agent == id => {
                    latencies.push(e.arrived.saturating_duration_since(sent.into_std()));
                    break;
                }
                Ok(Some(_)) => {}
                _ => {
                    tracing::warn!("no infection for {id} within {DETECTION_DEADLINE:?}");
                    break;
                }
            }
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
    done.store(true, Ordering::Relaxed);
    let background = load_task.await.unwrap_or_default();
    latencies.sort();
    Ok(Latency {
        probes,
        latencies,
        background,
    })
}

/// Sends one request, again while the target asks to retry (it is under
/// load); returns when the accepted attempt started.
async fn send(client: &OtlpClient, body: bytes::Bytes) -> anyhow::Result<Instant> {
    for _ in 0..200 {
        let started = Instant::now();
        match client.send(Signal::Traces, body.clone()).await {
            Ok(()) => return Ok(started),
            Err(SendError::Retryable { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => bail!("probe request failed: {e}"),
        }
    }
    bail!("probe request refused 200 times")
}
