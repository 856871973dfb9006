//! One proxied generation request is one turn: its vitals are assembled
//! from the request, the response facts and the clock.
//!
//! Trace ids: when the agent sends a W3C `traceparent`, the turn carries
//! that trace id and, as root span id, the caller's span (so events link to
//! the agent's own trace). Otherwise both are derived from a per-process
//! random seed, a sequence number and the time (SHA-256), unique per request.

use super::price::{ModelPrice, cost_usd};
use super::request::RequestInfo;
use super::response::ResponseFacts;
use crate::immune::vitals::{SpanId, TraceId, UnixNanos, Vitals, VitalsSource};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Mints trace and span ids for turns without a `traceparent`.
#[derive(Debug)]
pub struct TurnIds {
    seed: [u8; 16],
    sequence: AtomicU64,
}

impl Default for TurnIds {
    fn default() -> Self {
        // RandomState is seeded from the OS's randomness once per process.
        let mut seed = [0u8; 16];
        for (i, half) in seed.chunks_mut(8).enumerate() {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(i);
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
        Self {
            seed,
            sequence: AtomicU64::new(0),
        }
    }
}

impl TurnIds {
    /// The ids of a turn: from `traceparent` when valid, else minted.
    pub fn ids(&self, headers: &HeaderMap, now: UnixNanos) -> (TraceId, SpanId) {
        if let Some(ids) = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
        {
            return ids;
        }
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut hasher = Sha256::new();
        hasher.update(self.seed);
        hasher.update(sequence.to_le_bytes());
        hasher.update(now.to_le_bytes());
        let digest = hasher.finalize();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&digest[..16]);
        span_id.copy_from_slice(&digest[16..24]);
        (trace_id, span_id)
    }
}

/// `version-traceid-parentid-flags`, ids non-zero hex (W3C Trace Context).
fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let _flags = parts.next()?;
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    hex::decode_to_slice(span, &mut span_id).ok()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id))
}

pub fn unix_nanos(time: SystemTime) -> UnixNanos {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Everything known about one proxied turn when it ends.
#[derive(Debug)]
pub struct FinishedTurn<'a> {
    pub agent_id: &'a str,
    pub ids: (TraceId, SpanId),
    pub started: UnixNanos,
    pub duration: Duration,
    pub request: &'a RequestInfo,
    /// HTTP status the client got (the upstream's, or the proxy's 502/504).
    pub status: u16,
    pub facts: ResponseFacts,
    /// Why the turn failed outside the response body (upstream timeout,
    /// connection lost mid-stream).
    pub transport_error: Option<&'static str>,
    /// Attempts the client says preceded this one (`x-stainless-retry-count`).
    pub retries: u32,
}

impl FinishedTurn<'_> {
    pub fn vitals(self, prices: &BTreeMap<String, ModelPrice>) -> Vitals {
        let facts = self.facts;
        let error_type = facts
            .error_type
            .or_else(|| self.transport_error.map(str::to_string))
            .or_else(|| (self.status >= 400).then(|| format!("http_{}", self.status)));
        let model = facts.model.or_else(|| self.request.model.clone());
        let cost = match (&model, facts.usage_known) {
            (Some(model), true) => cost_usd(
                prices,
                model,
                facts.input_tokens,
                facts.cached_input_tokens,
                facts.output_tokens,
            ),
            _ => 0.0,
        };
        let duration_ns = u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX);
        Vitals {
            agent_id: self.agent_id.to_string(),
            trace_id: self.ids.0,
            root_span_id: self.ids.1,
            end_time: self.started.saturating_add(duration_ns),
            latency_ms: self.duration.as_secs_f64() * 1000.0,
            input_tokens: facts.input_tokens,
            output_tokens: facts.output_tokens,
            usage_known: facts.usage_known,
            llm_calls: 1,
            tool_calls: facts.tool_calls,
            retries: self.retries,
            errors: u32::from(error_type.is_some()),
            error_type,
            cost_usd: cost,
            model,
            prompt_hash: self.request.prompt_hash.clone(),
            resource: Vec::new(),
            source: VitalsSource::LlmProxy,
        }
    }
}

/// The retry count the OpenAI SDKs report on each attempt.
pub fn client_retries(headers: &HeaderMap) -> u32 {
    headers
        .get("x-stainless-retry-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
        .min(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::llm_proxy::price::default_prices;

    #[test]
    fn traceparent_is_used_when_valid() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let ids = TurnIds::default();
        let (trace, span) = ids.ids(&headers, 1);
        assert_eq!(hex::encode(trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(span), "00f067aa0ba902b7");
        headers.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_ne!(ids.ids(&headers, 1).0, [0; 16]);
    }

    #[test]
    fn minted_ids_are_unique() {
        let ids = TurnIds::default();
        let headers = HeaderMap::new();
        let a = ids.ids(&headers, 5);
        let b = ids.ids(&headers, 5);
        assert_ne!(a, b);
        assert_ne!(a.0, [0; 16]);
    }

    #[test]
    fn vitals_of_a_turn() {
        let request = RequestInfo {
            model: Some("gpt-4o-mini".into()),
            prompt_hash: Some("abc".into()),
            ..Default::default()
        };
        let turn = FinishedTurn {
            agent_id: "a",
            ids: ([1; 16], [2; 8]),
            started: 1_000,
            duration: Duration::from_millis(250),
            request: &request,
            status: 200,
            facts: ResponseFacts {
                model: Some("gpt-4o-mini-2024-07-18".into()),
                input_tokens: 1_000_000,
                cached_input_tokens: 0,
                output_tokens: 0,
                usage_known: true,
                tool_calls: 2,
                error_type: None,
            },
            transport_error: None,
            retries: 1,
        };
        let v = turn.vitals(&default_prices());
        assert_eq!(v.end_time, 1_000 + 250_000_000);
        assert!((v.latency_ms - 250.0).abs() < 1e-9);
        assert!((v.cost_usd - 0.15).abs() < 1e-9);
        assert_eq!(
            (v.llm_calls, v.tool_calls, v.retries, v.errors),
            (1, 2, 1, 0)
        );
        assert_eq!(v.prompt_hash.as_deref(), Some("abc"));

        let failed = FinishedTurn {
            agent_id: "a",
            ids: ([1; 16], [2; 8]),
            started: 0,
            duration: Duration::ZERO,
            request: &request,
            status: 502,
            facts: ResponseFacts::default(),
            transport_error: None,
            retries: 0,
        }
        .vitals(&default_prices());
        assert_eq!(failed.error_type.as_deref(), Some("http_502"));
        assert_eq!(failed.errors, 1);
        assert_eq!(failed.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(failed.cost_usd, 0.0);
    }
}
