//! Memory per monitored agent: resident memory of agent-immune before and
//! after `agents` agents have each sent `turns` turns and have a ready
//! baseline.

use super::events::{SeenEvent, is_baseline_ready, observer};
use super::load;
use super::target::Target;
use super::wall_clock;
use crate::exporters::otlp_client::{OtlpClient, SendError};
use crate::pipeline::consumer::Signal;
use crate::simulator::Rng;
use crate::testdata::AgentTrace;
use anyhow::bail;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Turns per request (3 spans each).
const TURNS_PER_REQUEST: usize = 300;
const IN_FLIGHT: usize = 4;

#[derive(Debug, Clone)]
pub struct Memory {
    pub agents: usize,
    pub turns_per_agent: usize,
    pub spans_sent: u64,
    pub ready: usize,
    pub rss_idle: u64,
    pub rss_after: u64,
    pub elapsed: Duration,
    /// Time to send every turn (the rest is waiting for the baselines).
    pub fed: Duration,
}

impl Memory {
    pub fn bytes_per_agent(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_idle) as f64 / self.agents.max(1) as f64
    }
}

/// The observer the memory run's sink needs (events of `mem-*`).
pub fn sink_observer() -> (super::sink::LogObserver, mpsc::UnboundedReceiver<SeenEvent>) {
    observer("mem-")
}

pub async fn measure(
    target: &Target,
    mut events: mpsc::UnboundedReceiver<SeenEvent>,
    agents: usize,
    turns: usize,
) -> anyhow::Result<Memory> {
    let started = Instant::now();
    let rss_idle = target.rss()?;
    let client = load::clients(target.grpc, 1)?.remove(0);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut rng = Rng::new(5);
    // Each agent's own scale, so baselines differ.
    let scales: Vec<f64> = (0..agents).map(|_| rng.range(0.5, 2.0)).collect();
    let mut seed = wall_clock();
    let mut spans_sent = 0u64;
    let mut sends = Vec::new();
    for _round in 0..turns {
        for first in (0..agents).step_by(TURNS_PER_REQUEST) {
            let now = wall_clock();
            let batch: Vec<AgentTrace> = (first..(first + TURNS_PER_REQUEST).min(agents))
                .map(|i| {
                    seed += 1;
                    let id = format!("mem-{i:06}");
                    let s = scales[i];
                    AgentTrace::new(id.clone())
                        .agent_id(id)
                        .service("memory-bench")
                        .llm_calls(1)
                        .tool_calls(1)
                        .tokens(
                            rng.lognormal(800.0 * s, 0.25).round() as u64,
                            rng.lognormal(150.0 * s, 0.3).round() as u64,
                        )
                        .latency_ms(rng.lognormal(900.0 * s, 0.3), rng.lognormal(40.0, 0.4))
                        .system_prompt(format!("You are agent {i} of the memory benchmark."))
                        .seed(seed)
                        .start(now)
                })
                .collect();
            let (body, spans) = load::encode(&batch);
            spans_sent += spans;
            let permit = in_flight.clone().acquire_owned().await?;
            let client = client.clone();
            sends.push(tokio::spawn(async move {
                let r = send(&client, body).await;
                drop(permit);
                r
            }));
        }
        // Finished sends are collected as we go, so the list stays short.
        let mut pending = Vec::new();
        for s in sends.drain(..) {
            if s.is_finished() {
                s.await??;
            } else {
                pending.push(s);
            }
        }
        sends = pending;
    }
    for s in sends {
        s.await??;
    }
    let fed = started.elapsed();
    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while ready < agents {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if is_baseline_ready(&e) => ready += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    Ok(Memory {
        agents,
        turns_per_agent: turns,
        spans_sent,
        ready,
        rss_idle,
        rss_after: target.rss()?,
        elapsed: started.elapsed(),
        fed,
    })
}

async fn send(client: &OtlpClient, body: Bytes) -> anyhow::Result<()> {
    for _ in 0..1000 {
        match client.send(Signal::Traces, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(SendError::Retryable { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => bail!("memory load request failed: {e}"),
        }
    }
    bail!("memory load request refused 1000 times")
}
