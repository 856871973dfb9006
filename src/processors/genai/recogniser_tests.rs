//! The recogniser on hand-made spans: classification, identity, usage,
//! cost, errors, content, and the bad input it must survive.

use super::config::GenaiConfig;
use super::{Recogniser, SpanClass, SpanFacts};
use crate::testdata::{
    failed, kv, kv_f64, kv_i64, kv_str, kv_str_array, request, request_with_resource, span, span_id,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use sha2::{Digest, Sha256};

fn recognise_with(config: &GenaiConfig, request: &ExportTraceServiceRequest) -> Vec<SpanFacts> {
    let recogniser = Recogniser::new(config);
    let mut out = Vec::new();
    recogniser.recognise(request, &mut out);
    out
}

fn one(attributes: Vec<KeyValue>) -> SpanFacts {
    one_span(span(1, 1, None, "span", (0, 10), attributes))
}

fn one_span(s: Span) -> SpanFacts {
    let mut facts = recognise_with(&GenaiConfig::default(), &request("svc", vec![s]));
    assert_eq!(facts.len(), 1);
    facts.remove(0)
}

fn chat(extra: Vec<KeyValue>) -> Vec<KeyValue> {
    let mut attrs = vec![kv_str("gen_ai.operation.name", "chat")];
    attrs.extend(extra);
    attrs
}

#[test]
fn classes_follow_the_readme_priority_never_the_span_kind() {
    let cases: Vec<(Vec<KeyValue>, SpanClass)> = vec![
        (
            vec![kv_str("gen_ai.operation.name", "chat")],
            SpanClass::Llm,
        ),
        (
            vec![kv_str("gen_ai.operation.name", "generate_content")],
            SpanClass::Llm,
        ),
        (
            vec![kv_str("gen_ai.operation.name", "embeddings")],
            SpanClass::Embeddings,
        ),
        (
            vec![kv_str("gen_ai.operation.name", "invoke_agent")],
            SpanClass::Agent,
        ),
        (
            vec![kv_str("gen_ai.operation.name", "create_agent")],
            SpanClass::Agent,
        ),
        (
            vec![kv_str("gen_ai.operation.name", "execute_tool")],
            SpanClass::Tool,
        ),
        (
            vec![kv_str("gen_ai.operation.name", "invoke_workflow")],
            SpanClass::Workflow,
        ),
        // The operation wins over another convention's marker.
        (
            vec![
                kv_str("openinference.span.kind", "CHAIN"),
                kv_str("gen_ai.operation.name", "chat"),
            ],
            SpanClass::Llm,
        ),
        // "unknown" (openai-agents-v2 turn wrappers) is ignored.
        (
            vec![
                kv_str("gen_ai.operation.name", "unknown"),
                kv_str("gen_ai.agent.name", "OpenAI Agent"),
            ],
            SpanClass::Other,
        ),
        (
            vec![kv_str("openinference.span.kind", "LLM")],
            SpanClass::Llm,
        ),
        (
            vec![kv_str("openinference.span.kind", "AGENT")],
            SpanClass::Agent,
        ),
        (
            vec![kv_str("openinference.span.kind", "TOOL")],
            SpanClass::Tool,
        ),
        (
            vec![kv_str("openinference.span.kind", "CHAIN")],
            SpanClass::Workflow,
        ),
        (
            vec![kv_str("openinference.span.kind", "RETRIEVER")],
            SpanClass::Other,
        ),
        (
            vec![kv_str("traceloop.span.kind", "agent")],
            SpanClass::Agent,
        ),
        (vec![kv_str("traceloop.span.kind", "tool")], SpanClass::Tool),
        (
            vec![kv_str("traceloop.span.kind", "task")],
            SpanClass::Workflow,
        ),
        (vec![kv_str("llm.request.type", "chat")], SpanClass::Llm),
        (
            vec![kv_str("llm.request.type", "completion")],
            SpanClass::Llm,
        ),
        // Weak fallbacks.
        (vec![kv_str("gen_ai.request.model", "m")], SpanClass::Llm),
        (
            vec![kv_i64("gen_ai.usage.prompt_tokens", 3)],
            SpanClass::Llm,
        ),
        (
            vec![
                kv_i64("gen_ai.usage.input_tokens", 84),
                kv_str("gen_ai.agent.name", "x"),
            ],
            SpanClass::Other,
        ),
        (
            vec![kv_str("gen_ai.tool.name", "get_time")],
            SpanClass::Tool,
        ),
        (vec![kv_str("http.request.method", "POST")], SpanClass::Http),
        (vec![kv_str("http.method", "POST")], SpanClass::Http),
        (
            vec![kv_str("server.address", "api.openai.com")],
            SpanClass::Other,
        ),
        (vec![], SpanClass::Other),
    ];
    for (attrs, want) in cases {
        let keys: Vec<String> = attrs.iter().map(|a| a.key.clone()).collect();
        assert_eq!(one(attrs).class, want, "{keys:?}");
    }
}

#[test]
fn malformed_ids_skip_the_span_and_are_counted() {
    let good = span(1, 1, None, "ok", (0, 1), chat(vec![]));
    let mut short_trace = span(1, 2, None, "bad", (0, 1), vec![]);
    short_trace.trace_id.truncate(15);
    let mut long_span = span(1, 3, None, "bad", (0, 1), vec![]);
    long_span.span_id.push(0);
    let mut bad_parent = span(1, 4, Some(1), "bad", (0, 1), vec![]);
    bad_parent.parent_span_id.truncate(7);
    let mut zero_trace = span(1, 5, None, "bad", (0, 1), vec![]);
    zero_trace.trace_id = vec![0; 16];
    let mut zero_parent = span(1, 6, Some(1), "root after all", (0, 1), vec![]);
    zero_parent.parent_span_id = vec![0; 8];
    let mut empty_span_id = span(1, 7, None, "bad", (0, 1), vec![]);
    empty_span_id.span_id.clear();

    let recogniser = Recogniser::new(&GenaiConfig::default());
    let mut out = Vec::new();
    let req = request(
        "svc",
        vec![
            good,
            short_trace,
            long_span,
            bad_parent,
            zero_trace,
            zero_parent,
            empty_span_id,
        ],
    );
    recogniser.recognise(&req, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].span_id, span_id(1));
    assert_eq!(
        out[1].parent_span_id, None,
        "an all-zero parent is no parent"
    );
    let stats = recogniser.stats();
    assert_eq!((stats.spans, stats.invalid_spans), (2, 5));
}

#[test]
fn junk_token_counts_are_ignored_never_overflowed() {
    let junk = one(chat(vec![
        kv_i64("gen_ai.usage.input_tokens", -5),
        kv_i64("gen_ai.usage.output_tokens", i64::MAX),
    ]));
    assert_eq!(
        (junk.input_tokens, junk.output_tokens, junk.usage_present),
        (0, 0, false)
    );

    let nan = one(chat(vec![
        kv_f64("gen_ai.usage.input_tokens", f64::NAN),
        kv_str("gen_ai.usage.output_tokens", "lots"),
    ]));
    assert!(!nan.usage_present);

    // An invalid first choice falls back to the next source.
    let fallback = one(chat(vec![
        kv_i64("gen_ai.usage.input_tokens", 200_000_000),
        kv_i64("gen_ai.usage.prompt_tokens", 42),
        kv_f64("gen_ai.usage.output_tokens", 17.0),
    ]));
    assert_eq!((fallback.input_tokens, fallback.output_tokens), (42, 17));
    assert!(fallback.usage_present);
}

#[test]
fn token_sources_are_read_in_readme_order() {
    let current = one(chat(vec![
        kv_i64("llm.token_count.prompt", 1),
        kv_i64("gen_ai.usage.prompt_tokens", 2),
        kv_i64("gen_ai.usage.input_tokens", 3),
        kv_i64("llm.token_count.completion", 4),
        kv_i64("gen_ai.usage.output_tokens", 5),
    ]));
    assert_eq!((current.input_tokens, current.output_tokens), (3, 5));
    let openinference = one(vec![
        kv_str("openinference.span.kind", "LLM"),
        kv_i64("llm.token_count.prompt", 7),
        kv_i64("llm.token_count.completion", 8),
    ]);
    assert_eq!(
        (openinference.input_tokens, openinference.output_tokens),
        (7, 8)
    );
}

#[test]
fn a_span_that_ends_before_it_starts_lasted_zero_and_keeps_its_end() {
    let facts = one_span(span(1, 1, None, "chat", (10, 5), chat(vec![])));
    assert!(facts.end_ns < facts.start_ns, "the turn's check sees it");
    assert_eq!(facts.duration_ns(), 0);
}

#[test]
fn ten_thousand_attributes_are_just_slower() {
    let mut attrs: Vec<KeyValue> = (0..10_000)
        .map(|i| kv_str(&format!("app.noise.{i}"), "x"))
        .collect();
    // Flattened messages by the thousand, all "system": still bounded.
    attrs.extend(
        (0..5_000).map(|i| kv_str(&format!("llm.input_messages.{i}.message.role"), "system")),
    );
    attrs.extend(
        (0..5_000).map(|i| kv_str(&format!("llm.input_messages.{i}.message.content"), "p")),
    );
    attrs.push(kv_str("openinference.span.kind", "LLM"));
    attrs.push(kv_i64("llm.token_count.prompt", 9));
    let facts = one(attrs);
    assert_eq!(facts.class, SpanClass::Llm);
    assert_eq!(facts.input_tokens, 9);
    assert!(facts.prompt_hash.is_some());
}

#[test]
fn invalid_message_json_is_not_content() {
    for junk in [
        "{",
        "[{\"role\":\"system\",\"parts\":[{\"content\":",
        "null",
        "[1,2",
        "\u{0}",
    ] {
        let facts = one(chat(vec![
            kv_str("gen_ai.input.messages", junk),
            kv_str("gen_ai.output.messages", &format!("{junk}tool_call")),
            kv_str("gen_ai.system_instructions", "[oops"),
        ]));
        assert_eq!(facts.prompt_hash, None, "{junk}");
        assert_eq!(facts.tool_calls_requested, 0, "{junk}");
    }
}

#[test]
fn placeholders_are_not_agents() {
    let child = one(chat(vec![
        kv_str("gen_ai.agent.id", "agent"),
        kv_str("gen_ai.agent.name", "OpenAI Agent"),
    ]));
    assert_eq!(child.agent, None);
    assert!(child.agent_placeholder);

    let agent = one_span(span(
        1,
        1,
        None,
        "invoke_agent WeatherBot",
        (0, 1),
        vec![
            kv_str("gen_ai.operation.name", "invoke_agent"),
            kv_str("gen_ai.agent.id", "agent"),
            kv_str("gen_ai.agent.name", "WeatherBot"),
        ],
    ));
    assert_eq!(agent.agent.as_deref(), Some("WeatherBot"));
    assert!(agent.is_named_agent());

    // No identity attribute at all: the span name names the agent...
    let named_by_span = one_span(span(
        1,
        1,
        None,
        "invoke_agent Planner",
        (0, 1),
        vec![kv_str("gen_ai.operation.name", "invoke_agent")],
    ));
    assert_eq!(named_by_span.agent.as_deref(), Some("Planner"));
    // ...but a workflow root named after its workflow is no agent, whatever
    // the app named the workflow.
    for root_name in ["Agent workflow", "Customer support"] {
        let workflow_root = one_span(span(
            1,
            1,
            None,
            root_name,
            (0, 1),
            vec![kv_str("gen_ai.operation.name", "invoke_agent")],
        ));
        assert_eq!(workflow_root.class, SpanClass::Agent);
        assert!(!workflow_root.is_named_agent(), "{root_name}");
    }
    let bare = one_span(span(
        1,
        1,
        None,
        "invoke_agent",
        (0, 1),
        vec![kv_str("gen_ai.operation.name", "invoke_agent")],
    ));
    assert_eq!(bare.agent, None);
    let traceloop = one_span(span(
        1,
        1,
        None,
        "Helper.agent",
        (0, 1),
        vec![kv_str("traceloop.span.kind", "agent")],
    ));
    assert_eq!(traceloop.agent.as_deref(), Some("Helper"));
}

#[test]
fn configured_identity_attributes_come_after_the_genai_ones() {
    let config = GenaiConfig {
        agent_id_attributes: vec!["app.agent".into()],
        ..GenaiConfig::default()
    };
    let spans = vec![
        span(
            1,
            1,
            None,
            "a",
            (0, 1),
            chat(vec![kv_str("app.agent", "from-span")]),
        ),
        span(
            1,
            2,
            None,
            "b",
            (0, 1),
            chat(vec![
                kv_str("app.agent", "from-span"),
                kv_str("gen_ai.agent.name", "named"),
            ]),
        ),
    ];
    let req = request_with_resource(
        vec![
            kv_str("service.name", "svc"),
            kv_str("app.agent", "from-resource"),
        ],
        spans,
    );
    let facts = recognise_with(&config, &req);
    assert_eq!(facts[0].agent.as_deref(), Some("from-span"));
    assert_eq!(facts[1].agent.as_deref(), Some("named"));
    assert_eq!(facts[0].resource.agent.as_deref(), Some("from-resource"));
    assert_eq!(&*facts[0].resource.service_name, "svc");

    let no_service = recognise_with(
        &config,
        &request_with_resource(vec![], vec![span(1, 1, None, "a", (0, 1), vec![])]),
    );
    assert_eq!(&*no_service[0].resource.service_name, "unknown_service");
}

#[test]
fn models_follow_the_readme_order() {
    let both = one(chat(vec![
        kv_str("gen_ai.request.model", "gpt-4o-mini"),
        kv_str("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
    ]));
    assert_eq!(both.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    let invocation = one(vec![
        kv_str("openinference.span.kind", "LLM"),
        kv_str("llm.invocation_parameters", r#"{"model": "fail-429"}"#),
    ]);
    assert_eq!(invocation.model.as_deref(), Some("fail-429"));
    let from_name = one_span(span(
        1,
        1,
        None,
        "chat claude-3-5-haiku",
        (0, 1),
        chat(vec![]),
    ));
    assert_eq!(from_name.model.as_deref(), Some("claude-3-5-haiku"));
    let tool = one(vec![
        kv_str("gen_ai.operation.name", "execute_tool"),
        kv_str("gen_ai.request.model", "m"),
    ]);
    assert_eq!(tool.model, None, "only calls (and agents) keep a model");
}

#[test]
fn cost_is_reported_else_priced() {
    let priced = one(chat(vec![
        kv_str("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
        kv_i64("gen_ai.usage.input_tokens", 1_000_000),
        kv_i64("gen_ai.usage.output_tokens", 1_000_000),
    ]));
    assert!((priced.cost_usd - 0.75).abs() < 1e-9, "{}", priced.cost_usd);
    let reported = one(chat(vec![
        kv_str("gen_ai.response.model", "gpt-4o-mini"),
        kv_i64("gen_ai.usage.input_tokens", 1_000_000),
        kv_f64("llm.cost.total", 0.5),
        kv_f64("gen_ai.usage.cost", 9.0),
    ]));
    assert_eq!(reported.cost_usd, 0.5);
    let negative = one(chat(vec![
        kv_str("gen_ai.response.model", "unpriced-model"),
        kv_i64("gen_ai.usage.input_tokens", 10),
        kv_f64("gen_ai.usage.cost", -1.0),
    ]));
    assert_eq!(negative.cost_usd, 0.0);
}

#[test]
fn errors_are_typed_from_the_best_source() {
    let typed = one_span(failed(
        span(
            1,
            1,
            None,
            "chat",
            (0, 1),
            chat(vec![kv_str(
                "error.type",
                "<class 'openai.RateLimitError'>",
            )]),
        ),
        "Error code: 429 - {}",
    ));
    assert!(typed.failed);
    assert_eq!(typed.error_type.as_deref(), Some("RateLimitError"));
    assert_eq!(typed.http_status, Some(429));

    let mut with_event = failed(
        span(
            1,
            1,
            None,
            "tool",
            (0, 1),
            vec![kv_str("openinference.span.kind", "TOOL")],
        ),
        "boom",
    );
    with_event.events.push(Event {
        name: "exception".into(),
        attributes: vec![
            kv_str("exception.type", "builtins.TimeoutError"),
            kv_str("exception.escaped", "False"),
        ],
        ..Default::default()
    });
    assert_eq!(
        one_span(with_event).error_type.as_deref(),
        Some("TimeoutError")
    );

    let status_only = one_span(failed(
        span(1, 1, None, "chat", (0, 1), chat(vec![])),
        "Error code: 503 - {}",
    ));
    assert_eq!(status_only.error_type.as_deref(), Some("503"));

    let prose = one_span(failed(
        span(1, 1, None, "tool", (0, 1), vec![]),
        "Error running tool (non-fatal)",
    ));
    assert!(prose.failed);
    assert_eq!(prose.error_type, None);

    // OK with an error.type is not a failure; UNSET with one is.
    let mut ok = span(
        1,
        1,
        None,
        "chat",
        (0, 1),
        chat(vec![kv_str("error.type", "x")]),
    );
    ok.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 1,
        message: String::new(),
    });
    assert!(!one_span(ok).failed);
    assert!(one(chat(vec![kv_str("error.type", "x")])).failed);

    let http = one(vec![
        kv_str("http.request.method", "POST"),
        kv_i64("http.response.status_code", 429),
    ]);
    assert_eq!(http.http_status, Some(429));
    assert!(!http.failed);
}

#[test]
fn tool_calls_come_from_the_output_and_finish_reasons() {
    let finish_only = one(chat(vec![kv_str_array(
        "gen_ai.response.finish_reasons",
        &["tool_calls"],
    )]));
    assert_eq!(
        (
            finish_only.tool_calls_requested,
            finish_only.finish_tool_calls
        ),
        (0, true)
    );
    let traceloop = one(chat(vec![kv_str_array(
        "gen_ai.response.finish_reasons",
        &["tool_call"],
    )]));
    assert!(traceloop.finish_tool_calls);
    let stop = one(chat(vec![kv_str_array(
        "gen_ai.response.finish_reasons",
        &["stop"],
    )]));
    assert!(!stop.finish_tool_calls);
    let input_only = one(chat(vec![kv_str(
        "gen_ai.input.messages",
        r#"[{"role":"assistant","parts":[{"type":"tool_call","name":"x"}]}]"#,
    )]));
    assert_eq!(
        input_only.tool_calls_requested, 0,
        "input tool calls are the previous turn's"
    );
}

#[test]
fn system_prompt_sources_agree() {
    let want = Some(<[u8; 32]>::from(Sha256::digest(b"Be brief.")));
    let flattened = one(vec![
        kv_str("llm.request.type", "chat"),
        kv_str("gen_ai.prompt.0.role", "system"),
        kv_str("gen_ai.prompt.0.content", "Be brief."),
        kv_str("gen_ai.prompt.1.role", "user"),
        kv_str("gen_ai.prompt.1.content", "hi"),
    ]);
    assert_eq!(flattened.prompt_hash, want);
    let oi_contents = one(vec![
        kv_str("openinference.span.kind", "LLM"),
        kv_str("llm.input_messages.0.message.role", "system"),
        kv_str(
            "llm.input_messages.0.message.contents.0.message_content.type",
            "text",
        ),
        kv_str(
            "llm.input_messages.0.message.contents.0.message_content.text",
            "Be brief.",
        ),
    ]);
    assert_eq!(oi_contents.prompt_hash, want);
    let mut event = span(1, 1, None, "chat", (0, 1), chat(vec![]));
    event.events.push(Event {
        name: "gen_ai.system.message".into(),
        attributes: vec![kv_str("content", "Be brief.")],
        ..Default::default()
    });
    assert_eq!(one_span(event).prompt_hash, want);
    let input_value = one(vec![
        kv_str("openinference.span.kind", "LLM"),
        kv_str(
            "input.value",
            r#"{"messages": [{"role": "system", "content": "Be brief."}]}"#,
        ),
    ]);
    assert_eq!(input_value.prompt_hash, want);
    let structured = one(chat(vec![kv(
        "gen_ai.system_instructions",
        Value::StringValue(r#"[{"type":"text","content":"Be brief."}]"#.into()),
    )]));
    assert_eq!(structured.prompt_hash, want);
    let tool = one(vec![
        kv_str("gen_ai.operation.name", "execute_tool"),
        kv_str("gen_ai.system_instructions", "Be brief."),
    ]);
    assert_eq!(
        tool.prompt_hash, None,
        "only calls and agents carry a prompt"
    );
}

#[test]
fn resource_attributes_enforcement_reads_are_kept_as_text_and_nothing_else() {
    let req = request_with_resource(
        vec![
            kv_str("service.name", "svc"),
            kv_i64("process.pid", 4242),
            kv_str("k8s.deployment.name", &"d".repeat(1000)),
            kv_str("host.name", "   "),
            kv_str("not.asked", "x"),
        ],
        vec![span(1, 1, None, "a", (0, 1), vec![])],
    );
    let recogniser = Recogniser::new(&GenaiConfig::default()).keeping_resource(
        ["process.pid", "k8s.deployment.name", "host.name", "absent"].map(String::from),
    );
    let mut facts = Vec::new();
    recogniser.recognise(&req, &mut facts);
    let kept: Vec<(&str, &str)> = facts[0]
        .resource
        .kept
        .iter()
        .map(|(k, v)| (&**k, &**v))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0], ("process.pid", "4242"));
    assert_eq!(kept[1].0, "k8s.deployment.name");
    assert_eq!(kept[1].1.len(), 256, "cut like every name");
    // By default nothing is kept.
    assert!(
        recognise_with(&GenaiConfig::default(), &req)[0]
            .resource
            .kept
            .is_empty()
    );
}
