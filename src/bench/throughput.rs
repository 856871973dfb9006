//! Throughput: spans per CPU-second of the process under test, on the same
//! pre-encoded load, with every accepted span checked at the sink.

use super::load::{self, LoadResult, LoadShape, Template};
use super::sink::Sink;
use super::target::Target;
use std::sync::Arc;
use std::time::Duration;

/// Load before measuring: connections open, baselines learned.
const WARMUP: Duration = Duration::from_secs(3);
/// How long forwarded spans may take to reach the sink after the load.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// The target is idle when it used at most `IDLE_CPU` in `IDLE_SAMPLE`
/// (agent-immune's timers use a little).
const IDLE_SAMPLE: Duration = Duration::from_millis(300);
const IDLE_CPU: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct Throughput {
    pub load: LoadResult,
    /// CPU time the target used during the measured load and its drain.
    pub cpu: Duration,
    /// Spans the sink received during the measurement.
    pub received: u64,
    /// Turns the target assembled into vitals during the measurement, when
    /// it reports them (agent-immune's /metrics).
    pub turns: Option<u64>,
    pub rss_after: u64,
}

impl Throughput {
    pub fn spans_per_cpu_second(&self) -> f64 {
        let cpu = self.cpu.as_secs_f64();
        if cpu > 0.0 {
            self.load.spans_accepted as f64 / cpu
        } else {
            0.0
        }
    }

    pub fn spans_per_second(&self) -> f64 {
        self.load.spans_accepted as f64 / self.load.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU used per wall second, in cores.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.load.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs warmup, then the measured load, against `target` forwarding to
/// `sink` (fresh: it has received nothing yet).
pub async fn measure(
    target: &Target,
    sink: &Sink,
    templates: Arc<Vec<Template>>,
    shape: &LoadShape,
) -> anyhow::Result<Throughput> {
    let clients = load::clients(target.grpc, shape.connections)?;
    let warmup = LoadShape {
        duration: WARMUP,
        ..shape.clone()
    };
    let warm = load::run(&clients, templates.clone(), &warmup).await;
    // What the warmup left in the target's queues reaches the (fresh) sink
    // before the measurement starts.
    let settled = sink
        .counts
        .wait_for_spans(
            warm.spans_accepted,
            tokio::time::Instant::now() + DRAIN_DEADLINE,
        )
        .await;
    if !settled {
        tracing::warn!(
            target = %target.name,
            "warmup: sink got {} of {} spans",
            sink.counts.spans(),
            warm.spans_accepted
        );
    }
    wait_idle(target).await?;
    let sink_before = sink.counts.spans();
    let turns_before = turns_judged(target).await;
    let cpu_before = target.cpu()?;
    let result = load::run(&clients, templates, shape).await;
    let expected = sink_before.saturating_add(result.spans_accepted);
    let complete = sink
        .counts
        .wait_for_spans(expected, tokio::time::Instant::now() + DRAIN_DEADLINE)
        .await;
    // Forwarded is not finished: detection may still hold queued spans.
    // The measurement ends when the target has gone quiet.
    wait_idle(target).await?;
    let cpu = target.cpu()?.saturating_sub(cpu_before);
    let received = sink.counts.spans().saturating_sub(sink_before);
    let turns = match (turns_before, turns_judged(target).await) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    if !complete {
        tracing::warn!(
            target = %target.name,
            "sink received {received} of {} accepted spans",
            result.spans_accepted
        );
    }
    Ok(Throughput {
        load: result,
        cpu,
        received,
        turns,
        rss_after: target.rss().unwrap_or(0),
    })
}

/// Waits until the target uses (almost) no CPU: its queues are empty.
/// Only /proc knows, so it is sampled every 300 ms, up to a limit.
async fn wait_idle(target: &Target) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    let mut last = target.cpu()?;
    loop {
        tokio::time::sleep(IDLE_SAMPLE).await;
        let now = target.cpu()?;
        if now.saturating_sub(last) <= IDLE_CPU || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        last = now;
    }
}

/// `agent_immune_turns` from the target's /metrics, when it serves them.
async fn turns_judged(target: &Target) -> Option<u64> {
    let api = target.api?;
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("agent_immune_turns "))
        .and_then(|v| v.trim().parse().ok())
}
