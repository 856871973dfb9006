//! The proxy's own counters, and a histogram of the latency it adds: the
//! time a request spends in the proxy before it is sent upstream, plus the
//! time from the upstream's response headers to the client's (the upstream's
//! own time excluded).

use crate::telemetry::Counter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (Prometheus `le`).
pub const ADDED_LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// A fixed-bucket histogram of durations, lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Count per bucket, the last one for everything above the largest bound.
    buckets: [AtomicU64; ADDED_LATENCY_BUCKETS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, duration: Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let index = ADDED_LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(ADDED_LATENCY_BUCKETS_US.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed))
    }

    /// Cumulative counts per bound (`le`), the last entry being `+Inf`.
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            out.push((ADDED_LATENCY_BUCKETS_US.get(i).copied(), total));
        }
        out
    }

    /// The bucket bound under which `q` (0..=1) of the samples fall; `None`
    /// without samples or when it is above the largest bound.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        self.cumulative()
            .into_iter()
            .find(|(_, total)| *total >= rank)
            .and_then(|(bound, _)| bound)
    }
}

/// Counters of the llm_proxy receiver.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Requests received.
    pub requests: Counter,
    /// Requests forwarded upstream.
    pub forwarded: Counter,
    /// Upstream answers with status >= 400 (passed through).
    pub upstream_errors: Counter,
    /// Upstream unreachable or too slow (answered 502/504 by the proxy).
    pub upstream_failures: Counter,
    /// Refused: agent quarantined.
    pub refused_quarantined: Counter,
    /// Refused: agent draining.
    pub refused_draining: Counter,
    /// Refused by a rate budget (429).
    pub refused_throttled: Counter,
    /// Refused by a model allow/block list (403).
    pub refused_model: Counter,
    /// Refused because the agent's tools are revoked (refuse mode).
    pub refused_tools: Counter,
    /// Refused as invalid (path, oversized body, unreadable body).
    pub refused_invalid: Counter,
    /// Refused by gateway identity: no or unknown key in strict mode (401),
    /// or a key and agent id that do not belong together (403).
    pub refused_identity: Counter,
    /// Requests served under an unbound key because the binding table was
    /// full (`max_bound_keys`).
    pub identity_unbound: Counter,
    /// Violations of alert-only rules (logged, not enforced).
    pub policy_alerts: Counter,
    /// Requests whose tools were stripped (revoke_tools, strip mode).
    pub tools_stripped: Counter,
    /// `X-LLM-Provider` values that named no allowlisted provider.
    pub unknown_provider_headers: Counter,
    /// Streams cut because their agent was quarantined.
    pub cut_streams: Counter,
    /// Response parts too large to read for vitals (a stream event over
    /// 4 MiB, a JSON body over 16 MiB): passed through, their usage unknown.
    pub response_oversized: Counter,
    /// Vitals handed to detection.
    pub vitals: Counter,
    /// Vitals dropped because detection refused them (backpressure).
    pub vitals_dropped: Counter,
    /// Latency added by the proxy.
    pub added_latency: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = LatencyHistogram::default();
        for us in [10, 60, 60, 700, 400_000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum(), Duration::from_micros(400_830));
        let cumulative = h.cumulative();
        assert_eq!(cumulative[0], (Some(50), 1));
        assert_eq!(cumulative[1], (Some(100), 3));
        assert_eq!(cumulative.last(), Some(&(None, 5)));
        assert_eq!(h.quantile_bound_us(0.5), Some(100));
        assert_eq!(h.quantile_bound_us(0.8), Some(1_000));
        assert_eq!(h.quantile_bound_us(1.0), None);
    }
}
