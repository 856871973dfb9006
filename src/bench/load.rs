//! The load generator: realistic GenAI trace requests (the simulator's
//! agents, each turn a whole trace), encoded once, sent many times with
//! fresh trace ids patched into the bytes, many requests in flight over
//! several connections.

use super::wall_clock;
use crate::exporters::otlp_client::{OtlpClient, OtlpClientConfig, Protocol, SendError};
use crate::pipeline::consumer::Signal;
use crate::receivers::otlp::decode::count_spans;
use crate::simulator::{Personality, Rng, SimAgent};
use crate::testdata::{AgentTrace, request_of};
use bytes::{Bytes, BytesMut};
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// One encoded request and where its trace ids sit in it.
pub struct Template {
    bytes: Bytes,
    /// Offsets of every trace id (16 bytes) in `bytes`.
    trace_ids: Vec<usize>,
    pub spans: u64,
    pub turns: u64,
}

impl Template {
    /// The request again with trace ids unique to `n`: the first 8 bytes
    /// of each id become `n` (routing uses the last 8, so turns spread over
    /// the shards as the originals did).
    pub fn instance(&self, n: u64) -> Bytes {
        let mut bytes = BytesMut::from(&self.bytes[..]);
        let stamp = (n | 1 << 63).to_be_bytes();
        for &at in &self.trace_ids {
            bytes[at..at + 8].copy_from_slice(&stamp);
        }
        bytes.freeze()
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }
}

/// `count` requests of about `spans_per_request` spans each, from a fleet
/// of `agents` simulated agents taking turns in order.
pub fn templates(
    count: usize,
    spans_per_request: usize,
    agents: usize,
    seed: u64,
) -> Vec<Template> {
    let agents = agents.max(1);
    let mut fleet: Vec<SimAgent> = (0..agents)
        .map(|i| {
            SimAgent::new(
                Personality::draw(i, agents, seed),
                Rng::stream(seed, i as u64),
            )
        })
        .collect();
    let end = wall_clock();
    let mut next_agent = 0usize;
    let mut turn_seed = seed.wrapping_mul(0x9e37_79b9);
    (0..count)
        .map(|_| {
            let mut turns: Vec<AgentTrace> = Vec::new();
            let mut spans = 0usize;
            while spans < spans_per_request {
                turn_seed = turn_seed.wrapping_add(1);
                let turn = fleet[next_agent % agents].next_turn(Duration::ZERO, end, turn_seed);
                next_agent += 1;
                spans += turn.spans().len();
                turns.push(turn);
            }
            build(&turns)
        })
        .collect()
}

/// Encodes `turns` as one request as they are (their own trace ids), with
/// its span count: for requests sent once.
pub fn encode(turns: &[AgentTrace]) -> (Bytes, u64) {
    let request = request_of(turns);
    let spans = count_spans(&request);
    (Bytes::from(request.encode_to_vec()), spans)
}

/// Encodes `turns` as one request and finds its trace ids (a search per
/// turn: for templates built once, not for every request).
pub fn build(turns: &[AgentTrace]) -> Template {
    let request = request_of(turns);
    let bytes = request.encode_to_vec();
    let mut trace_ids = Vec::new();
    for turn in turns {
        let id = turn.trace_id();
        let mut from = 0;
        while let Some(at) = find(&bytes[from..], &id) {
            trace_ids.push(from + at);
            from += at + id.len();
        }
    }
    let spans = count_spans(&request);
    Template {
        bytes: Bytes::from(bytes),
        trace_ids,
        spans,
        turns: turns.len() as u64,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How to push.
#[derive(Debug, Clone)]
pub struct LoadShape {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// gRPC connections they share.
    pub connections: usize,
    pub duration: Duration,
    /// Spans per second to offer; None: as fast as the target answers.
    pub rate: Option<f64>,
}

/// What a load run did.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub spans_accepted: u64,
    pub turns_accepted: u64,
    /// Requests the target refused as retryable (backpressure) or failed.
    pub refused: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Last error seen, for the report.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    spans: AtomicU64,
    turns: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// Wait after a refusal without a RetryInfo delay, and the most waited.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Request numbers: each one unique across every run of the process, so
/// no trace id is ever sent twice.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// Clients on `connections` separate gRPC connections to `target`.
pub fn clients(target: SocketAddr, connections: usize) -> anyhow::Result<Vec<Arc<OtlpClient>>> {
    (0..connections.max(1))
        .map(|_| {
            let mut cfg = OtlpClientConfig::new(format!("http://{target}"), Protocol::Grpc);
            cfg.timeout = Duration::from_secs(30);
            Ok(Arc::new(OtlpClient::new(&cfg)?))
        })
        .collect()
}

/// Sends the templates round-robin for `shape.duration`.
pub async fn run(
    clients: &[Arc<OtlpClient>],
    templates: Arc<Vec<Template>>,
    shape: &LoadShape,
) -> LoadResult {
    let counters = Arc::new(Counters::default());
    let last_error = Arc::new(std::sync::Mutex::new(None));
    let started = Instant::now();
    let stop_at = started + shape.duration;
    let spans_per_request =
        templates.iter().map(|t| t.spans).sum::<u64>() as f64 / templates.len().max(1) as f64;
    // With a rate, request k of the run is due at k / (rate / spans).
    let gap = shape
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(spans_per_request / r));
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..shape.concurrency.max(1) {
        let client = clients[w % clients.len()].clone();
        let templates = templates.clone();
        let counters = counters.clone();
        let last_error = last_error.clone();
        let issued = issued.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let k = issued.fetch_add(1, Ordering::Relaxed);
                if let Some(gap) = gap {
                    let due = started + gap.mul_f64(k as f64);
                    if due >= stop_at {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                } else if Instant::now() >= stop_at {
                    break;
                }
                let n = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
                let template = &templates[(n as usize) % templates.len()];
                let body = template.instance(n);
                let result = client.send(Signal::Traces, body).await;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(()) => {
                        counters.spans.fetch_add(template.spans, Ordering::Relaxed);
                        counters.turns.fetch_add(template.turns, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let backoff = match &e {
                            SendError::Retryable { retry_after, .. } => {
                                counters.refused.fetch_add(1, Ordering::Relaxed);
                                // As OTLP exporters do: wait as the server
                                // asks before the next request, instead of
                                // hammering a full pipeline.
                                Some(retry_after.unwrap_or(DEFAULT_BACKOFF).min(MAX_BACKOFF))
                            }
                            SendError::Permanent { .. } => {
                                counters.failed.fetch_add(1, Ordering::Relaxed);
                                None
                            }
                        };
                        *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        if let Some(backoff) = backoff {
                            let left = stop_at.saturating_duration_since(Instant::now());
                            tokio::time::sleep(backoff.min(left)).await;
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let last_error = last_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    LoadResult {
        requests: get(&counters.requests),
        spans_accepted: get(&counters.spans),
        turns_accepted: get(&counters.turns),
        refused: get(&counters.refused),
        failed: get(&counters.failed),
        elapsed: started.elapsed(),
        last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn instances_differ_only_in_trace_ids() {
        let templates = templates(2, 300, 50, 3);
        let t = &templates[0];
        assert!(t.spans >= 300 && t.spans < 400, "{}", t.spans);
        assert_eq!(t.trace_ids.len() as u64, t.spans, "one trace id per span");
        let a = ExportTraceServiceRequest::decode(t.instance(5)).unwrap();
        let b = ExportTraceServiceRequest::decode(t.instance(6)).unwrap();
        let spans = |r: &ExportTraceServiceRequest| {
            r.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| ss.spans.clone())
                .collect::<Vec<_>>()
        };
        let (sa, sb) = (spans(&a), spans(&b));
        assert_eq!(sa.len() as u64, t.spans);
        for (x, y) in sa.iter().zip(&sb) {
            assert_ne!(x.trace_id, y.trace_id);
            assert_eq!(x.trace_id[8..], y.trace_id[8..]);
            assert_eq!(x.attributes, y.attributes);
            assert_eq!(x.span_id, y.span_id);
        }
        // Spans of one turn still share their trace id.
        assert_eq!(sa[0].trace_id, sa[1].trace_id);
    }
}
