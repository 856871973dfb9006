//! Turn assembly: which spans make a turn, what its vitals are, and how
//! the assembler closes traces (root, idle, caps, shutdown, late spans).

use super::config::TurnsConfig;
use super::{TurnAssembler, TurnCounters, turns_of_trace};
use crate::immune::vitals::{UnixNanos, Vitals};
use crate::processors::genai::config::GenaiConfig;
use crate::processors::genai::{Recogniser, SpanFacts};
use crate::testdata::{
    AgentTrace, failed, kv_i64, kv_str, kv_str_array, request, span, span_id, trace_id,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::time::Duration;

const SECOND: UnixNanos = 1_000_000_000;
/// When the test traces are received: after every span of them ended.
const RECEIVED: UnixNanos = 1_800_000_000 * SECOND;

fn facts(request: &ExportTraceServiceRequest) -> Vec<SpanFacts> {
    let mut out = Vec::new();
    Recogniser::new(&GenaiConfig::default()).recognise(request, &mut out);
    out
}

fn turns(spans: Vec<Span>) -> Vec<Vitals> {
    let mut out = Vec::new();
    turns_of_trace(facts(&request("svc", spans)), RECEIVED, &mut out);
    out
}

fn agent(name: &str) -> Vec<KeyValue> {
    vec![
        kv_str("gen_ai.operation.name", "invoke_agent"),
        kv_str("gen_ai.agent.name", name),
    ]
}

fn chat(input: i64, output: i64) -> Vec<KeyValue> {
    vec![
        kv_str("gen_ai.operation.name", "chat"),
        kv_str("gen_ai.response.model", "gpt-4o-mini"),
        kv_i64("gen_ai.usage.input_tokens", input),
        kv_i64("gen_ai.usage.output_tokens", output),
    ]
}

fn tool() -> Vec<KeyValue> {
    vec![kv_str("gen_ai.operation.name", "execute_tool")]
}

fn by_agent<'a>(turns: &'a [Vitals], agent: &str) -> &'a Vitals {
    turns
        .iter()
        .find(|t| t.agent_id == agent)
        .unwrap_or_else(|| panic!("no turn of {agent} in {turns:#?}"))
}

fn assembler(config: TurnsConfig) -> TurnAssembler {
    TurnAssembler::new(&config)
}

/// A small agent trace (agent root + one chat) of trace number `n`.
fn agent_trace(n: u64, name: &str) -> Vec<SpanFacts> {
    facts(&request(
        "svc",
        vec![
            span(n, 2, Some(1), "chat", (10, 20), chat(5, 5)),
            span(n, 1, None, "invoke_agent", (0, 30), agent(name)),
        ],
    ))
}

/// The same trace without its root span.
fn rootless_trace(n: u64) -> Vec<SpanFacts> {
    facts(&request(
        "svc",
        vec![span(n, 2, Some(1), "chat", (10, 20), chat(5, 5))],
    ))
}

#[test]
fn a_multi_agent_trace_gives_one_turn_per_agent() {
    let out = turns(vec![
        span(
            1,
            1,
            None,
            "invoke_agent Planner",
            (0, 1000),
            agent("Planner"),
        ),
        span(1, 2, Some(1), "chat", (10, 100), chat(100, 10)),
        // Same identity nested: still the planner's turn.
        span(
            1,
            3,
            Some(1),
            "invoke_agent Planner",
            (100, 300),
            agent("Planner"),
        ),
        span(1, 4, Some(3), "chat", (110, 200), chat(50, 5)),
        // Another agent nested: its own turn, its tokens its own.
        span(
            1,
            5,
            Some(1),
            "invoke_agent Researcher",
            (300, 900),
            agent("Researcher"),
        ),
        span(1, 6, Some(5), "chat", (310, 500), chat(7, 3)),
        span(1, 7, Some(5), "tool", (500, 600), tool()),
        span(1, 8, Some(5), "tool", (600, 700), tool()),
    ]);
    assert_eq!(out.len(), 2, "{out:#?}");
    let planner = by_agent(&out, "Planner");
    assert_eq!(
        (
            planner.llm_calls,
            planner.input_tokens,
            planner.output_tokens
        ),
        (2, 150, 15)
    );
    assert_eq!(planner.tool_calls, 0);
    assert_eq!(planner.root_span_id, span_id(1));
    assert_eq!(planner.latency_ms, 1000.0);
    let researcher = by_agent(&out, "Researcher");
    assert_eq!(
        (
            researcher.llm_calls,
            researcher.input_tokens,
            researcher.output_tokens
        ),
        (1, 7, 3)
    );
    assert_eq!(researcher.tool_calls, 2);
    assert_eq!(researcher.root_span_id, span_id(5));
    assert_eq!(researcher.latency_ms, 600.0);
    assert_eq!(researcher.trace_id, trace_id(1));
}

#[test]
fn nested_llm_spans_count_once_on_the_innermost() {
    let out = turns(vec![
        span(1, 1, None, "invoke_agent", (0, 100), agent("A")),
        // A framework's LLM span around the client library's LLM span.
        span(1, 2, Some(1), "ChatOpenAI", (1, 90), chat(42, 17)),
        span(1, 3, Some(2), "chat", (2, 80), chat(42, 17)),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].llm_calls, out[0].input_tokens, out[0].output_tokens),
        (1, 42, 17)
    );
}

#[test]
fn agent_spans_carrying_sums_are_not_counted_again() {
    let mut root = agent("A");
    root.push(kv_i64("gen_ai.usage.input_tokens", 84));
    let out = turns(vec![
        span(1, 1, None, "invoke_agent A", (0, 100), root),
        span(1, 2, Some(1), "chat", (1, 40), chat(42, 17)),
        span(1, 3, Some(1), "chat", (50, 90), chat(42, 17)),
    ]);
    assert_eq!(out[0].input_tokens, 84);
}

#[test]
fn retries_are_http_attempts_and_failed_sibling_calls() {
    let http = |id, status| {
        span(
            1,
            id,
            Some(2),
            "POST",
            (1, 2),
            vec![
                kv_str("http.request.method", "POST"),
                kv_i64("http.response.status_code", status),
            ],
        )
    };
    let out = turns(vec![
        span(1, 1, None, "invoke_agent A", (0, 100), agent("A")),
        span(1, 2, Some(1), "chat", (1, 40), chat(42, 17)),
        http(10, 429),
        http(11, 429),
        http(12, 200),
        // An application-level retry: a failed call, then another.
        failed(
            span(
                1,
                3,
                Some(1),
                "chat",
                (41, 50),
                vec![kv_str("gen_ai.operation.name", "chat")],
            ),
            "boom",
        ),
        span(1, 4, Some(1), "chat", (51, 90), chat(42, 17)),
    ]);
    let v = &out[0];
    assert_eq!(v.retries, 2 + 1);
    assert_eq!(v.llm_calls, 3);
    assert_eq!(v.errors, 1);
    assert_eq!(v.error_type.as_deref(), Some("llm_error"));
    assert!(
        v.usage_known,
        "a failed call's missing usage is a known zero"
    );
}

#[test]
fn a_failed_call_is_typed_by_its_last_failed_attempt() {
    let out = turns(vec![
        failed(
            span(
                1,
                1,
                None,
                "chat",
                (0, 100),
                vec![kv_str("gen_ai.operation.name", "chat")],
            ),
            "boom",
        ),
        span(
            1,
            2,
            Some(1),
            "POST",
            (1, 2),
            vec![
                kv_str("http.method", "POST"),
                kv_i64("http.status_code", 503),
            ],
        ),
    ]);
    assert_eq!(out[0].error_type.as_deref(), Some("503"));
    assert_eq!(out[0].retries, 0);
}

#[test]
fn usage_is_unknown_when_a_successful_call_reported_none() {
    let out = turns(vec![
        span(1, 1, None, "invoke_agent A", (0, 100), agent("A")),
        span(1, 2, Some(1), "chat", (1, 40), chat(42, 17)),
        span(
            1,
            3,
            Some(1),
            "chat",
            (50, 90),
            vec![kv_str("gen_ai.operation.name", "chat")],
        ),
    ]);
    assert!(!out[0].usage_known);
    assert_eq!(out[0].input_tokens, 42);
}

#[test]
fn tool_calls_fall_back_to_requested_then_finish_reasons() {
    let mut asks = chat(1, 1);
    asks.push(kv_str(
        "gen_ai.output.messages",
        r#"[{"role":"assistant","parts":[{"type":"tool_call"},{"type":"tool_call"},{"type":"tool_call"}]}]"#,
    ));
    let mut finish = chat(1, 1);
    finish.push(kv_str_array(
        "gen_ai.response.finish_reasons",
        &["tool_calls"],
    ));
    let requested = turns(vec![span(1, 1, None, "chat", (0, 1), asks)]);
    assert_eq!(requested[0].tool_calls, 3);
    let finish_only = turns(vec![span(1, 1, None, "chat", (0, 1), finish.clone())]);
    assert_eq!(finish_only[0].tool_calls, 1);
    // Tool spans win over what the model asked for.
    let spans = turns(vec![
        span(1, 1, None, "invoke_agent A", (0, 10), agent("A")),
        span(1, 2, Some(1), "chat", (1, 2), finish),
        span(1, 3, Some(1), "t", (2, 3), tool()),
        span(1, 4, Some(1), "t", (3, 4), tool()),
    ]);
    assert_eq!(spans[0].tool_calls, 2);
}

#[test]
fn the_model_is_the_most_used_then_the_last() {
    let with_model = |model: &str| {
        vec![
            kv_str("gen_ai.operation.name", "chat"),
            kv_str("gen_ai.response.model", model),
        ]
    };
    let out = turns(vec![
        span(1, 1, None, "invoke_agent A", (0, 100), agent("A")),
        span(1, 2, Some(1), "chat", (1, 2), with_model("small")),
        span(1, 3, Some(1), "chat", (3, 4), with_model("big")),
        span(1, 4, Some(1), "chat", (5, 6), with_model("big")),
        span(1, 5, Some(1), "chat", (7, 8), with_model("small")),
        span(1, 6, Some(1), "chat", (9, 10), with_model("tiny")),
    ]);
    // small and big tie at 2; small was used last.
    assert_eq!(out[0].model.as_deref(), Some("small"));
}

#[test]
fn spans_under_no_agent_form_the_trace_level_turn() {
    let mut with_agent_name = chat(1, 1);
    with_agent_name.push(kv_str("gen_ai.agent.name", "CopiedDown"));
    let named = turns(vec![span(1, 1, None, "chat", (0, 5), with_agent_name)]);
    assert_eq!(named[0].agent_id, "CopiedDown");

    let mut in_workflow = chat(1, 1);
    in_workflow.push(kv_str("traceloop.workflow.name", "weather_workflow"));
    let workflow = turns(vec![span(1, 1, None, "chat", (0, 5), in_workflow)]);
    assert_eq!(workflow[0].agent_id, "weather_workflow");

    let plain = turns(vec![span(1, 1, None, "chat", (0, 5), chat(1, 1))]);
    assert_eq!(plain[0].agent_id, "svc");
    assert_eq!(plain[0].root_span_id, span_id(1));

    // A trace of plain HTTP traffic has no turn at all.
    let none = turns(vec![span(
        1,
        1,
        None,
        "GET /",
        (0, 5),
        vec![kv_str("http.request.method", "GET")],
    )]);
    assert!(none.is_empty());
}

#[test]
fn a_rootless_turn_spans_its_first_start_to_its_last_end() {
    let out = turns(vec![
        span(1, 2, Some(99), "chat", (10, 20), chat(1, 1)),
        span(1, 3, Some(99), "chat", (30, 70), chat(1, 1)),
    ]);
    assert_eq!(out[0].latency_ms, 60.0);
    assert_eq!(out[0].root_span_id, span_id(2));
    assert_eq!(out[0].llm_calls, 2);
}

#[test]
fn duplicate_spans_count_once_and_parent_cycles_do_not_hang() {
    let dup = span(1, 2, Some(1), "chat", (1, 2), chat(42, 17));
    let out = turns(vec![
        span(1, 1, None, "invoke_agent A", (0, 10), agent("A")),
        dup.clone(),
        dup,
    ]);
    assert_eq!(out[0].input_tokens, 42);

    let cycle = turns(vec![
        span(1, 1, Some(2), "chat", (0, 1), chat(1, 1)),
        span(1, 2, Some(3), "chat", (0, 1), chat(1, 1)),
        span(1, 3, Some(1), "invoke_agent", (0, 1), agent("Loop")),
        span(1, 4, Some(4), "chat", (0, 1), chat(1, 1)),
    ]);
    assert!(!cycle.is_empty());
    let total: u64 = cycle.iter().map(|v| v.input_tokens).sum();
    assert!(total <= 3, "each call counted at most once: {cycle:#?}");
}

#[test]
fn the_root_closes_the_trace_even_across_batches() {
    let mut a = assembler(TurnsConfig::default());
    let mut out = Vec::new();
    let mut spans = agent_trace(1, "A");
    let root = spans.pop().unwrap();
    a.add_batch(spans, 0, &mut out);
    assert!(out.is_empty());
    assert_eq!(a.open_traces(), 1);
    assert_eq!(a.buffered_spans(), 1);
    a.add_batch([root], SECOND, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].agent_id, "A");
    assert_eq!(out[0].llm_calls, 1);
    assert_eq!((a.open_traces(), a.buffered_spans()), (0, 0));
    assert_eq!(a.counters().closed_on_root, 1);
}

#[test]
fn spans_after_the_trace_closed_are_late() {
    let mut a = assembler(TurnsConfig::default());
    let mut out = Vec::new();
    a.add_batch(agent_trace(1, "A"), 0, &mut out);
    assert_eq!(out.len(), 1);
    a.add_batch(rootless_trace(1), 1, &mut out);
    assert_eq!(out.len(), 1, "no second, partial turn");
    assert_eq!(a.open_traces(), 0);
    assert_eq!(a.counters().late_spans, 1);
}

#[test]
fn the_closed_trace_cache_is_bounded() {
    let mut a = assembler(TurnsConfig {
        closed_trace_cache: 2,
        ..TurnsConfig::default()
    });
    let mut out = Vec::new();
    for n in 1..=3 {
        a.add_batch(agent_trace(n, "A"), 0, &mut out);
    }
    // Trace 1 has been forgotten: its late span opens a new (partial)
    // trace rather than being counted late.
    a.add_batch(rootless_trace(1), 0, &mut out);
    a.add_batch(rootless_trace(3), 0, &mut out);
    assert_eq!(a.counters().late_spans, 1);
    assert_eq!(a.open_traces(), 1);
}

#[test]
fn the_oldest_trace_is_evicted_at_the_cap() {
    let mut a = assembler(TurnsConfig {
        max_open_traces: 2,
        ..TurnsConfig::default()
    });
    let mut out = Vec::new();
    for n in 1..=3 {
        a.add_batch(rootless_trace(n), n, &mut out);
    }
    assert_eq!(a.counters().evicted, 1);
    assert_eq!(a.open_traces(), 2);
    assert_eq!(out.len(), 1, "the evicted trace's turn is emitted");
    assert_eq!(out[0].trace_id, trace_id(1));
    // Its late spans are then counted, not reopened.
    a.add_batch(rootless_trace(1), 9, &mut out);
    assert_eq!(a.counters().late_spans, 1);
}

#[test]
fn buffered_spans_are_capped_too() {
    let mut a = assembler(TurnsConfig {
        max_buffered_spans: 3,
        ..TurnsConfig::default()
    });
    let mut out = Vec::new();
    for n in 1..=5 {
        a.add_batch(rootless_trace(n), n, &mut out);
    }
    assert!(a.buffered_spans() <= 3);
    assert_eq!(a.counters().evicted, 2);
    assert_eq!(out.len(), 2);
}

#[test]
fn spans_beyond_the_per_trace_limit_are_dropped_but_the_root_is_kept() {
    let mut a = assembler(TurnsConfig {
        max_spans_per_trace: 3,
        ..TurnsConfig::default()
    });
    let spans: Vec<Span> = (2..=6)
        .map(|id| span(1, id, Some(1), "chat", (id, id + 1), chat(1, 1)))
        .chain([span(1, 1, None, "invoke_agent", (0, 10), agent("A"))])
        .collect();
    let mut out = Vec::new();
    a.add_batch(facts(&request("svc", spans)), 0, &mut out);
    assert_eq!(a.counters().spans_over_limit, 2);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].llm_calls, 3);
    assert_eq!(out[0].root_span_id, span_id(1));
}

#[test]
fn idle_traces_close_after_the_idle_timeout() {
    let mut a = assembler(TurnsConfig {
        idle_timeout: Duration::from_secs(2),
        ..TurnsConfig::default()
    });
    let mut out = Vec::new();
    a.add_batch(rootless_trace(1), 10 * SECOND, &mut out);
    a.add_batch(rootless_trace(2), 11 * SECOND, &mut out);
    a.flush_idle(11 * SECOND, &mut out);
    assert!(out.is_empty());
    a.flush_idle(12 * SECOND, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].trace_id, trace_id(1));
    assert_eq!(a.open_traces(), 1);
    // A new span keeps a trace alive.
    a.add_batch(
        facts(&request(
            "svc",
            vec![span(2, 3, Some(1), "t", (20, 21), tool())],
        )),
        12 * SECOND,
        &mut out,
    );
    a.flush_idle(13 * SECOND + SECOND / 2, &mut out);
    assert_eq!(a.open_traces(), 1);
    a.flush_idle(14 * SECOND, &mut out);
    assert_eq!(a.open_traces(), 0);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].tool_calls, 1);
    assert_eq!(a.counters().closed_idle, 2);
}

#[test]
fn drain_flushes_partial_traces_at_shutdown() {
    let mut a = assembler(TurnsConfig::default());
    let mut out = Vec::new();
    a.add_batch(rootless_trace(1), 0, &mut out);
    a.add_batch(rootless_trace(2), 0, &mut out);
    let mut plain_http = facts(&request(
        "svc",
        vec![span(
            3,
            2,
            Some(1),
            "GET",
            (0, 1),
            vec![kv_str("http.method", "GET")],
        )],
    ));
    a.add_batch(plain_http.drain(..), 0, &mut out);
    a.drain(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].trace_id, trace_id(1), "oldest first");
    assert_eq!(a.open_traces(), 0);
    let counters = a.take_counters();
    assert_eq!(counters.closed_at_drain, 3);
    assert_eq!(counters.traces_without_turn, 1);
    assert_eq!(counters.turns, 2);
    assert_eq!(counters.spans, 3);
    assert_eq!(a.take_counters(), TurnCounters::default(), "taking resets");
}

#[test]
fn synthetic_traces_give_the_vitals_they_describe() {
    let prompt_hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(b"You are a planner."))
    };
    let trace = AgentTrace::new("planner")
        .agent_id("planner-1")
        .service("fleet")
        .llm_calls(3)
        .tool_calls(4)
        .tokens(100, 20)
        .http_attempts(2)
        .latency_ms(300.0, 10.0)
        .system_prompt("You are a planner.")
        .seed(7);
    let mut out = Vec::new();
    let mut a = assembler(TurnsConfig::default());
    a.add_batch(facts(&trace.request()), trace.end(), &mut out);
    assert_eq!(out.len(), 1);
    let v = &out[0];
    assert_eq!(v.agent_id, "planner-1");
    assert_eq!(v.trace_id, trace.trace_id());
    assert_eq!(v.root_span_id, trace.span_id(0));
    assert_eq!(v.end_time, trace.end());
    assert_eq!((v.llm_calls, v.input_tokens, v.output_tokens), (3, 300, 60));
    assert_eq!(v.tool_calls, 4);
    assert_eq!(v.retries, 3, "one extra attempt per call");
    assert_eq!(v.errors, 0);
    assert_eq!(v.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(v.prompt_hash.as_deref(), Some(prompt_hash.as_str()));
    assert!(v.cost_usd > 0.0);
    // 3 x 300 ms calls + 4 x 10 ms tools + 8 x 1 ms gaps.
    assert!((v.latency_ms - 948.0).abs() < 1e-9, "{}", v.latency_ms);

    let failing = AgentTrace::new("bot")
        .llm_calls(2)
        .tool_calls(1)
        .llm_error("RateLimitError")
        .tool_error("TimeoutError")
        .seed(8);
    let mut out = Vec::new();
    a.add_batch(facts(&failing.request()), 0, &mut out);
    let v = &out[0];
    assert_eq!(v.agent_id, "bot");
    assert_eq!(v.errors, 2);
    assert_eq!(
        v.error_type.as_deref(),
        Some("TimeoutError"),
        "the tool failed first"
    );
    assert_eq!((v.input_tokens, v.prompt_hash.clone()), (42, None));

    let plain = AgentTrace::new("ignored")
        .without_agent_span()
        .service("app")
        .llm_calls(1)
        .tool_calls(0)
        .without_usage()
        .seed(9);
    let mut out = Vec::new();
    a.add_batch(facts(&plain.request()), 0, &mut out);
    assert_eq!(out[0].agent_id, "app");
    assert!(!out[0].usage_known);
}

#[test]
fn a_turn_carries_the_resource_attributes_enforcement_reads() {
    let req = crate::testdata::request_with_resource(
        vec![kv_str("service.name", "svc"), kv_i64("process.pid", 77)],
        vec![
            span(1, 2, Some(1), "chat", (10, 20), chat(5, 5)),
            span(1, 1, None, "invoke_agent", (0, 30), agent("pid-agent")),
        ],
    );
    let mut spans = Vec::new();
    Recogniser::new(&GenaiConfig::default())
        .keeping_resource(["process.pid".to_string()])
        .recognise(&req, &mut spans);
    let mut out = Vec::new();
    turns_of_trace(spans, RECEIVED, &mut out);
    assert_eq!(
        by_agent(&out, "pid-agent").resource,
        [("process.pid".to_string(), "77".to_string())]
    );
}

#[test]
fn turns_with_unbelievable_timestamps_have_unknown_latency_and_end_and_are_counted() {
    let traced = |trace: u64, start: u64, end: u64| {
        let mut root = span(trace, 1, None, "invoke_agent", (0, 30), agent("clock"));
        root.start_time_unix_nano = start;
        root.end_time_unix_nano = end;
        vec![span(trace, 2, Some(1), "chat", (10, 20), chat(5, 5)), root]
    };
    let with_times = |start: u64, end: u64| traced(1, start, end);
    let good = turns(with_times(RECEIVED - 2 * SECOND, RECEIVED - SECOND));
    assert_eq!(good[0].latency_ms, 1000.0);
    assert_eq!(good[0].end_time, RECEIVED - SECOND);
    // The issue's inputs: start 0; start 0 and end u64::MAX; both
    // u64::MAX; and an end before the start.
    for (start, end) in [
        (0, RECEIVED),
        (0, u64::MAX),
        (u64::MAX, u64::MAX),
        (RECEIVED, RECEIVED - SECOND),
    ] {
        let out = turns(with_times(start, end));
        assert!(
            out[0].latency_ms.is_nan(),
            "{start}..{end}: {}",
            out[0].latency_ms
        );
        assert_eq!(out[0].end_time, 0, "{start}..{end}");
        // Everything else is still read.
        assert_eq!((out[0].input_tokens, out[0].output_tokens), (5, 5));
    }
    let mut a = assembler(TurnsConfig::default());
    let mut out = Vec::new();
    a.add_batch(
        facts(&request("svc", traced(1, 0, u64::MAX))),
        RECEIVED,
        &mut out,
    );
    let fine = traced(2, RECEIVED - 2 * SECOND, RECEIVED - SECOND);
    a.add_batch(facts(&request("svc", fine)), RECEIVED, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(a.counters().bad_timestamps, 1);
}
