//! Routing received spans to the detection shards.
//!
//! Recognition (genai) runs on the receiving task, where the decoded request
//! already is; the compact span facts are then bucketed by trace id so that
//! all spans of one trace meet in one shard's turn assembler. Each shard
//! sends closed turns on to the shard that owns the agent (by agent id), so
//! every agent has exactly one owner and no lock is shared on the hot path.

use super::budget::Reservation;
use super::consumer::Refused;
use crate::config::service::WhenFull;
use crate::processors::genai::{Recogniser, SpanFacts};
use crate::telemetry::Telemetry;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::sync::Arc;
use tokio::sync::mpsc;

const DETECTION_FULL: &str = "detection queue is full";

/// Which shard owns a trace: its id is random, so its first bytes spread
/// traces evenly without hashing.
pub fn trace_shard(trace_id: &[u8; 16], shards: usize) -> usize {
    let mut head = [0u8; 8];
    head.copy_from_slice(&trace_id[8..]);
    (u64::from_le_bytes(head) % shards as u64) as usize
}

/// Which shard owns an agent: FNV-1a over its id (stable across runs, so a
/// restarted process routes an agent to the same shard).
pub fn agent_shard(agent_id: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent_id.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards as u64) as usize
}

/// Span facts on their way to a shard, holding their request's share of
/// the decoded-data budget until the shard has processed them (a request
/// whose traces go to several shards shares one reservation).
#[derive(Debug, Default)]
pub struct SpanBatch {
    pub facts: Vec<SpanFacts>,
    pub reservation: Option<Arc<Reservation>>,
}

/// What span facts hold in memory, each: the struct and its strings.
const FACTS_BYTES: u64 = std::mem::size_of::<SpanFacts>() as u64 + 128;

/// The receiving side of detection: recognises spans and reserves room in
/// the shard queues.
#[derive(Clone)]
pub struct DetectionRouter {
    recogniser: Arc<Recogniser>,
    shards: Vec<mpsc::Sender<SpanBatch>>,
    when_full: WhenFull,
    telemetry: Arc<Telemetry>,
}

/// Span facts with queue space already reserved for them.
pub struct PreparedDetection<'a> {
    sends: Vec<(mpsc::Permit<'a, SpanBatch>, SpanBatch)>,
}

impl PreparedDetection<'_> {
    pub fn send(self) {
        for (permit, batch) in self.sends {
            permit.send(batch);
        }
    }
}

impl DetectionRouter {
    pub fn new(
        recogniser: Arc<Recogniser>,
        shards: Vec<mpsc::Sender<SpanBatch>>,
        when_full: WhenFull,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            recogniser,
            shards,
            when_full,
            telemetry,
        }
    }

    /// Whether a request could be taken now: with `refuse`, not while any
    /// shard's queue is full (a request of many traces reaches every shard).
    pub fn has_room(&self) -> Result<(), Refused> {
        if self.when_full == WhenFull::Refuse && self.shards.iter().any(|s| s.capacity() == 0) {
            return Err(Refused::Backpressure(DETECTION_FULL.to_string()));
        }
        Ok(())
    }

    /// Recognises the request's spans and reserves room for them in every
    /// shard they go to. With `refuse`, a full shard refuses the request
    /// (retryable); with `drop`, its spans skip detection and are counted.
    /// The request's budget `reservation`, shrunk to what its facts hold,
    /// travels with them.
    pub fn prepare(
        &self,
        request: &ExportTraceServiceRequest,
        reservation: Option<Reservation>,
    ) -> Result<PreparedDetection<'_>, Refused> {
        let mut facts = Vec::new();
        self.recogniser.recognise(request, &mut facts);
        let reservation = reservation.map(|mut r| {
            r.shrink_to((facts.len() as u64).saturating_mul(FACTS_BYTES));
            Arc::new(r)
        });
        let n = self.shards.len();
        let mut buckets: Vec<Vec<SpanFacts>> = (0..n).map(|_| Vec::new()).collect();
        if n == 1 {
            buckets[0] = facts;
        } else {
            for f in facts {
                buckets[trace_shard(&f.trace_id, n)].push(f);
            }
        }
        let mut sends = Vec::new();
        for (shard, batch) in self.shards.iter().zip(buckets) {
            if batch.is_empty() {
                continue;
            }
            let batch = SpanBatch {
                facts: batch,
                reservation: reservation.clone(),
            };
            match shard.try_reserve() {
                Ok(permit) => sends.push((permit, batch)),
                Err(mpsc::error::TrySendError::Full(())) => match self.when_full {
                    WhenFull::Refuse => {
                        return Err(Refused::Backpressure(DETECTION_FULL.to_string()));
                    }
                    WhenFull::Drop => self
                        .telemetry
                        .detection
                        .dropped_spans
                        .add(batch.facts.len() as u64),
                },
                Err(mpsc::error::TrySendError::Closed(())) => return Err(Refused::Unavailable),
            }
        }
        Ok(PreparedDetection { sends })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_shard_is_stable_and_in_range() {
        for shards in 1..8 {
            for id in ["a", "WeatherBot", "agent-7", ""] {
                let s = agent_shard(id, shards);
                assert!(s < shards);
                assert_eq!(s, agent_shard(id, shards));
            }
        }
        // FNV-1a of "a" is a fixed, published value: routing must not change
        // between releases or a restart would move agents between shards.
        assert_eq!(
            agent_shard("a", 1 << 20),
            (0xaf63_dc4c_8601_ec8c_u64 % (1 << 20)) as usize
        );
    }

    #[test]
    fn trace_shard_spreads_ids() {
        let mut counts = [0usize; 4];
        for i in 0u64..4000 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            counts[trace_shard(&id, 4)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    }
}
