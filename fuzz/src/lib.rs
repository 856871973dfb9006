//! What the fuzz targets check beyond "no panic", shared by the targets
//! that reach the same stage from different decoders.

use agent_immune::immune::vitals::Vitals;
use agent_immune::pipeline::consumer::{Received, Signal};
use agent_immune::processors::genai::config::GenaiConfig;
use agent_immune::processors::genai::{MAX_TOKENS, Recogniser};
use agent_immune::processors::turns::TurnAssembler;
use agent_immune::processors::turns::config::TurnsConfig;
use agent_immune::receivers::otlp::protowalk;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::time::Duration;

/// A fixed "now" (2027-01-15), so a run is reproducible.
pub const NOW: u64 = 1_800_000_000_000_000_000;

/// A decoded request's item count agrees with the byte walk the receiver
/// uses to count what it refuses. The walk may give up on bytes prost
/// accepts (groups in unknown fields), never count differently.
pub fn check_walk_agrees(received: &Received) {
    if let Some(walked) = protowalk::count_items(received.signal, &received.protobuf) {
        assert_eq!(
            walked, received.items,
            "{:?}: the walk and the decoder count different items",
            received.signal
        );
    }
    assert_eq!(received.traces.is_some(), received.signal == Signal::Traces);
}

/// A decoded trace request through the genai recogniser and the turns
/// assembler, as detection runs it, with the default caps and with tiny
/// ones (so eviction and the per-trace limit are reached).
pub fn check_detection(request: &ExportTraceServiceRequest, spans: u64) {
    let recogniser = Recogniser::new(&GenaiConfig::default());
    let mut facts = Vec::new();
    recogniser.recognise(request, &mut facts);
    let stats = recogniser.stats();
    assert_eq!(stats.spans, facts.len() as u64);
    assert_eq!(
        stats.spans + stats.invalid_spans,
        spans,
        "every span is kept or counted"
    );
    for f in &facts {
        // A span's end is kept as sent (even before its start): the turn's
        // timing check (immune::timing) decides what is believed, and
        // check_vitals asserts its outcome.
        assert!(f.input_tokens <= MAX_TOKENS && f.output_tokens <= MAX_TOKENS);
        assert!(
            f.cost_usd.is_finite() && f.cost_usd >= 0.0,
            "cost {}",
            f.cost_usd
        );
    }
    let tiny = TurnsConfig {
        idle_timeout: Duration::from_secs(1),
        max_open_traces: 2,
        max_spans_per_trace: 3,
        max_buffered_spans: 4,
        closed_trace_cache: 2,
    };
    for config in [TurnsConfig::default(), tiny] {
        assemble(&config, facts.clone());
    }
}

fn assemble(config: &TurnsConfig, facts: Vec<agent_immune::processors::genai::SpanFacts>) {
    let mut assembler = TurnAssembler::new(config);
    let mut out: Vec<Vitals> = Vec::new();
    let n = facts.len() as u64;
    // Two batches, the second late, so idle flushing and late spans run.
    let half = facts.len() / 2;
    let mut facts = facts;
    let second = facts.split_off(half);
    assembler.add_batch(facts, NOW, &mut out);
    check_caps(&assembler, config);
    assembler.flush_idle(NOW + 1, &mut out);
    assembler.add_batch(second, NOW + 2, &mut out);
    check_caps(&assembler, config);
    assembler.flush_idle(NOW + 10_000_000_000, &mut out);
    assembler.drain(&mut out);
    assert_eq!(assembler.open_traces(), 0);
    assert_eq!(assembler.buffered_spans(), 0);
    let counters = assembler.counters();
    assert_eq!(counters.spans, n);
    assert_eq!(counters.turns, out.len() as u64);
    for v in &out {
        check_vitals(v);
    }
}

fn check_caps(assembler: &TurnAssembler, config: &TurnsConfig) {
    assert!(assembler.open_traces() <= config.max_open_traces);
    assert!(assembler.buffered_spans() <= config.max_buffered_spans);
}

/// What every vitals record must satisfy, however it was made.
pub fn check_vitals(v: &Vitals) {
    assert!(!v.agent_id.is_empty(), "a turn always has an agent");
    // NaN is "unknown": a turn whose timestamps cannot be believed
    // (immune::timing) is judged without a latency, never with a bogus one.
    assert!(
        v.latency_ms.is_nan() || (v.latency_ms.is_finite() && v.latency_ms >= 0.0),
        "latency {}",
        v.latency_ms
    );
    assert!(
        !v.latency_ms.is_nan() || v.end_time == 0,
        "an unknown latency comes with an unknown end"
    );
    assert!(
        v.cost_usd.is_finite() && v.cost_usd >= 0.0,
        "cost {}",
        v.cost_usd
    );
}
