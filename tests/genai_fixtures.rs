//! Every recorded capture in `shared/fixtures/genai-spans/` goes through
//! the real recogniser and turn assembler, and must give the vitals its
//! README implies. Expectations are written per file below; a capture
//! added without one fails the test.
//!
//! What the fake provider returns: usage 42 in / 17 out per call (10 of
//! the input cached), response model `gpt-4o-mini-2024-07-18` for a
//! request of `gpt-4o-mini`; the system prompt is always PROMPT.

use agent_immune::immune::vitals::Vitals;
use agent_immune::processors::genai::Recogniser;
use agent_immune::processors::genai::config::GenaiConfig;
use agent_immune::processors::turns::TurnAssembler;
use agent_immune::processors::turns::config::TurnsConfig;
use agent_immune::testdata::{Fixture, fixture_paths, fixtures_dir, load_fixture};
use opentelemetry_proto::tonic::trace::v1::Span;
use sha2::{Digest, Sha256};

const PROMPT: &str = "You are WeatherBot. Answer briefly.";
/// The dated model the provider answers with.
const RESPONSE: &str = "gpt-4o-mini-2024-07-18";
/// The model the client asks for (all some instrumentations record).
const REQUEST: &str = "gpt-4o-mini";
/// Service name of every capture: the identity of a turn with no agent.
const SERVICE: &str = "genai-capture";

/// The vitals one turn must have.
#[derive(Debug, Clone)]
struct Turn {
    agent: &'static str,
    /// Name of the span the turn is rooted at (latency is its duration).
    root: &'static str,
    model: &'static str,
    llm_calls: u32,
    input: u64,
    output: u64,
    usage_known: bool,
    tool_calls: u32,
    retries: u32,
    errors: u32,
    error_type: Option<&'static str>,
    /// The system prompt was captured on a span (not only in logs).
    prompt: bool,
}

impl Turn {
    /// One successful chat call, no agent, no content captured.
    fn chat(root: &'static str, model: &'static str) -> Self {
        Turn {
            agent: SERVICE,
            root,
            model,
            llm_calls: 1,
            input: 42,
            output: 17,
            usage_known: true,
            tool_calls: 0,
            retries: 0,
            errors: 0,
            error_type: None,
            prompt: false,
        }
    }
    fn openinference(model: &'static str) -> Self {
        Self::chat("ChatCompletion", model)
    }
    fn otel(model: &'static str) -> Self {
        Self::chat("chat gpt-4o-mini", model)
    }
    fn traceloop(model: &'static str) -> Self {
        Self::chat("openai.chat", model)
    }
    /// The agent scenario: two chat calls around two tool spans.
    fn agent_run(agent: &'static str, root: &'static str, model: &'static str) -> Self {
        Turn {
            agent,
            llm_calls: 2,
            input: 84,
            output: 34,
            tool_calls: 2,
            ..Self::chat(root, model)
        }
    }
    fn prompt(self) -> Self {
        Turn {
            prompt: true,
            ..self
        }
    }
    fn tools(self, tool_calls: u32) -> Self {
        Turn { tool_calls, ..self }
    }
    fn without_usage(self) -> Self {
        Turn {
            input: 0,
            output: 0,
            usage_known: false,
            ..self
        }
    }
    /// The call failed: no tokens (a known zero), one error.
    fn failed_call(self, error_type: &'static str) -> Self {
        Turn {
            input: 0,
            output: 0,
            errors: 1,
            error_type: Some(error_type),
            ..self
        }
    }
    /// A tool span failed; the agent carried on.
    fn failed_tool(self, error_type: &'static str) -> Self {
        Turn {
            errors: 1,
            error_type: Some(error_type),
            ..self
        }
    }
    fn retries(self, retries: u32) -> Self {
        Turn { retries, ..self }
    }
}

/// The turns each capture must give, in the order their traces end.
fn expected(name: &str) -> Option<Vec<Turn>> {
    use Turn as T;
    let turns = match name {
        // OpenInference, OpenAI Agents SDK: AGENT(Agent workflow, the SDK's
        // constant) > CHAIN > AGENT(WeatherBot); llm.model_name is the
        // request model here.
        "openinference-agents_agent" => {
            vec![T::agent_run("WeatherBot", "WeatherBot", REQUEST).prompt()]
        }
        // The failed tool span has no type anywhere (no exception event).
        "openinference-agents_agent_tool_error" => vec![
            T::agent_run("WeatherBot", "WeatherBot", REQUEST)
                .prompt()
                .failed_tool("tool_error"),
        ],
        // OpenInference helper spans: CHAIN > AGENT(agent.name) > LLM/TOOL.
        "openinference_agent" => vec![T::agent_run("WeatherBot", "WeatherBot", RESPONSE).prompt()],
        "openinference_agent_tool_error" => vec![
            T::agent_run("WeatherBot", "WeatherBot", RESPONSE)
                .prompt()
                .failed_tool("TimeoutError"),
        ],
        "openinference_chat_system" => vec![T::openinference(RESPONSE).prompt()],
        "openinference_chat_system_genai-semconv" => vec![T::openinference(RESPONSE).prompt()],
        // Inputs redacted: no llm.input_messages, input.value __REDACTED__.
        "openinference_chat_system_hide-inputs" => vec![T::openinference(RESPONSE)],
        // Two traces: the first call asks for 2 tools (flattened output
        // messages), the second answers; input-side tool calls don't count.
        "openinference_chat_tools" => vec![
            T::openinference(RESPONSE).prompt().tools(2),
            T::openinference(RESPONSE).prompt(),
        ],
        // No error.type: the type is the exception event's. The model is
        // only in llm.invocation_parameters. 3 attempts, but no HTTP spans.
        "openinference_error_429" => vec![
            T::openinference("fail-429")
                .prompt()
                .failed_call("RateLimitError"),
        ],
        "openinference_retry_429_then_ok" => vec![T::openinference(RESPONSE).prompt()],
        "openinference_stream_nousage" => vec![T::openinference(RESPONSE).prompt().without_usage()],
        "openinference_stream_usage" => vec![T::openinference(RESPONSE).prompt()],

        // openai-agents-v2: every child says agent id "agent" and name
        // "OpenAI Agent" (placeholders); the real name is on the
        // invoke_agent span only; chat spans carry the request model only.
        "otel-agents-v2_agent_span-only" => {
            vec![T::agent_run("WeatherBot", "invoke_agent WeatherBot", REQUEST).prompt()]
        }
        // Content defaults to SPAN_AND_EVENT; the failed tool has only a
        // prose status description.
        "otel-agents-v2_agent_tool_error" => vec![
            T::agent_run("WeatherBot", "invoke_agent WeatherBot", REQUEST)
                .prompt()
                .failed_tool("tool_error"),
        ],

        // httpx child spans: one per attempt, retries = attempts - 1.
        "otel-v2+httpx_error_429" => vec![
            T::chat("chat fail-429", "fail-429")
                .failed_call("RateLimitError")
                .retries(2),
        ],
        "otel-v2+httpx_retry_429_then_ok" => vec![T::chat("chat flaky-429", RESPONSE).retries(1)],
        // util-genai: invoke_workflow > invoke_agent (a real gen_ai.agent.id,
        // usage = sum of children, not counted again) > chat/execute_tool.
        "otel-v2_agent_span-only" => {
            vec![T::agent_run("agent-weatherbot", "invoke_agent WeatherBot", RESPONSE).prompt()]
        }
        "otel-v2_agent_tool_error" => vec![
            T::agent_run("agent-weatherbot", "invoke_agent WeatherBot", RESPONSE)
                .failed_tool("TimeoutError"),
        ],
        // CAPTURE_MESSAGE_CONTENT=true silently means no content with 1.x.
        "otel-v2_chat_system_capture-true" => vec![T::otel(RESPONSE)],
        // event_only: the content went to the logs signal.
        "otel-v2_chat_system_event-only" => vec![T::otel(RESPONSE)],
        "otel-v2_chat_system_nocontent" => vec![T::otel(RESPONSE)],
        "otel-v2_chat_system_span-only" => vec![T::otel(RESPONSE).prompt()],
        "otel-v2_chat_tools_span-only" => vec![
            T::otel(RESPONSE).prompt().tools(2),
            T::otel(RESPONSE).prompt(),
        ],
        "otel-v2_error_429" => {
            vec![T::chat("chat fail-429", "fail-429").failed_call("RateLimitError")]
        }
        "otel-v2_error_500" => {
            vec![T::chat("chat fail-500", "fail-500").failed_call("InternalServerError")]
        }
        // The retry happened inside the span; nothing on it shows it.
        "otel-v2_retry_429_then_ok" => vec![T::chat("chat flaky-429", RESPONSE)],
        "otel-v2_stream_nousage" => vec![T::otel(RESPONSE).without_usage()],
        // Streaming: no finish_reasons attribute, but the output message
        // holds one tool_call part.
        "otel-v2_stream_tools_span-only" => vec![T::otel(RESPONSE).prompt().tools(1)],
        "otel-v2_stream_usage" => vec![T::otel(RESPONSE)],

        // Legacy path: content (and tool-call detail) is in log records,
        // which a traces pipeline never sees; only finish_reasons remain.
        "otel-v2legacy_chat_system_capture-true" => vec![T::otel(RESPONSE)],
        "otel-v2legacy_chat_system_nocontent" => vec![T::otel(RESPONSE)],
        "otel-v2legacy_chat_system_optin-latest_span-only" => vec![T::otel(RESPONSE).prompt()],
        "otel-v2legacy_chat_tools_capture-true" => {
            vec![T::otel(RESPONSE).tools(1), T::otel(RESPONSE)]
        }
        "otel-v2legacy_chat_tools_nocontent" => vec![T::otel(RESPONSE).tools(1), T::otel(RESPONSE)],
        "otel-v2legacy_error_429" => {
            vec![T::chat("chat fail-429", "fail-429").failed_call("RateLimitError")]
        }
        "otel-v2legacy_stream_nousage" => vec![T::otel(RESPONSE).without_usage()],
        "otel-v2legacy_stream_usage" => vec![T::otel(RESPONSE)],

        // Traceloop <= 0.47: prompt_tokens/completion_tokens, flattened
        // gen_ai.prompt.{i} content.
        "traceloop-0.47_chat_system" => vec![T::traceloop(RESPONSE).prompt()],
        "traceloop-0.47_stream_usage" => vec![T::traceloop(RESPONSE).prompt()],
        "traceloop-0.52_chat_system" => vec![T::traceloop(RESPONSE).prompt()],
        // Flattened gen_ai.completion.0.tool_calls.{j}.
        "traceloop-0.52_chat_tools" => vec![
            T::traceloop(RESPONSE).prompt().tools(2),
            T::traceloop(RESPONSE).prompt(),
        ],
        "traceloop-0.52_error_429" => vec![
            T::traceloop("fail-429")
                .prompt()
                .failed_call("RateLimitError"),
        ],
        "traceloop-0.52_stream_nousage" => vec![T::traceloop(RESPONSE).prompt().without_usage()],
        "traceloop-0.52_stream_usage" => vec![T::traceloop(RESPONSE).prompt()],
        // Traceloop 0.62: JSON gen_ai.input/output.messages, tool_call.
        "traceloop-0.62_chat_system" => vec![T::traceloop(RESPONSE).prompt()],
        "traceloop-0.62_chat_system_trace-content-false" => vec![T::traceloop(RESPONSE)],
        "traceloop-0.62_chat_tools" => vec![
            T::traceloop(RESPONSE).prompt().tools(2),
            T::traceloop(RESPONSE).prompt(),
        ],
        "traceloop-0.62_error_429" => vec![
            T::traceloop("fail-429")
                .prompt()
                .failed_call("RateLimitError"),
        ],
        "traceloop-0.62_retry_429_then_ok" => vec![T::traceloop(RESPONSE).prompt()],
        "traceloop-0.62_stream_nousage" => vec![T::traceloop(RESPONSE).prompt().without_usage()],
        "traceloop-0.62_stream_tools" => vec![T::traceloop(RESPONSE).prompt().tools(1)],
        "traceloop-0.62_stream_usage" => vec![T::traceloop(RESPONSE).prompt()],
        // Traceloop SDK decorators: workflow > agent > chat/tool, with
        // gen_ai.agent.name copied to every child.
        "traceloop-sdk-0.62_agent" => {
            vec![T::agent_run("WeatherBot", "WeatherBot.agent", RESPONSE).prompt()]
        }
        "traceloop-sdk-0.62_agent_tool_error" => vec![
            T::agent_run("WeatherBot", "WeatherBot.agent", RESPONSE)
                .prompt()
                .failed_tool("TimeoutError"),
        ],
        _ => return None,
    };
    Some(turns)
}

/// Recognise the capture and assemble its turns, all spans in one batch
/// (as one export request arrives).
fn run_one_batch(fixture: &Fixture) -> Vec<Vitals> {
    let recogniser = Recogniser::new(&GenaiConfig::default());
    let mut assembler = TurnAssembler::new(&TurnsConfig::default());
    let mut facts = Vec::new();
    recogniser.recognise(&fixture.request, &mut facts);
    assert_eq!(recogniser.stats().invalid_spans, 0, "{}", fixture.name);
    let mut out = Vec::new();
    // Received now: after every captured span ended (turns far from their
    // receipt are not believed, see `immune::timing`).
    assembler.add_batch(facts, agent_immune::pipeline::shard::now(), &mut out);
    assert_eq!(
        assembler.open_traces(),
        0,
        "{}: every trace's root arrived, so every trace closed",
        fixture.name
    );
    out
}

/// The same, one span per batch: children before their parents, as SDKs
/// export them, so the turn must wait for its root across batches.
fn run_span_by_span(fixture: &Fixture) -> Vec<Vitals> {
    let recogniser = Recogniser::new(&GenaiConfig::default());
    let mut assembler = TurnAssembler::new(&TurnsConfig::default());
    let mut facts = Vec::new();
    recogniser.recognise(&fixture.request, &mut facts);
    let mut out = Vec::new();
    for (i, f) in facts.into_iter().enumerate() {
        let received = agent_immune::pipeline::shard::now() + i as u64;
        assembler.add_batch([f], received, &mut out);
    }
    assembler.drain(&mut out);
    out
}

fn spans(fixture: &Fixture) -> impl Iterator<Item = &Span> {
    fixture
        .request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
}

fn check(fixture: &Fixture, got: &[Vitals], want: &[Turn]) -> Result<(), String> {
    let prompt_hash = hex::encode(Sha256::digest(PROMPT.as_bytes()));
    if got.len() != want.len() {
        return Err(format!(
            "{} turns, expected {}: {got:#?}",
            got.len(),
            want.len()
        ));
    }
    let mut got: Vec<&Vitals> = got.iter().collect();
    got.sort_by_key(|v| v.end_time);
    for (i, (v, w)) in got.iter().zip(want).enumerate() {
        let at = |field: &str| format!("turn {i}: {field}");
        let eq = |field: &str, got: String, want: String| {
            if got == want {
                Ok(())
            } else {
                Err(format!("{}: got {got}, expected {want}", at(field)))
            }
        };
        eq("agent_id", v.agent_id.clone(), w.agent.to_string())?;
        eq(
            "model",
            format!("{:?}", v.model),
            format!("{:?}", Some(w.model)),
        )?;
        eq(
            "llm_calls",
            v.llm_calls.to_string(),
            w.llm_calls.to_string(),
        )?;
        eq(
            "input_tokens",
            v.input_tokens.to_string(),
            w.input.to_string(),
        )?;
        eq(
            "output_tokens",
            v.output_tokens.to_string(),
            w.output.to_string(),
        )?;
        eq(
            "usage_known",
            v.usage_known.to_string(),
            w.usage_known.to_string(),
        )?;
        eq(
            "tool_calls",
            v.tool_calls.to_string(),
            w.tool_calls.to_string(),
        )?;
        eq("retries", v.retries.to_string(), w.retries.to_string())?;
        eq("errors", v.errors.to_string(), w.errors.to_string())?;
        eq(
            "error_type",
            format!("{:?}", v.error_type),
            format!("{:?}", w.error_type.map(str::to_string)),
        )?;
        let want_hash = w.prompt.then(|| prompt_hash.clone());
        eq(
            "prompt_hash",
            format!("{:?}", v.prompt_hash),
            format!("{want_hash:?}"),
        )?;

        // The turn is rooted at the named span of its own trace, and its
        // latency and end are that span's.
        let root = spans(fixture)
            .find(|s| s.trace_id == v.trace_id && s.name == w.root)
            .ok_or_else(|| at(&format!("no span {:?} in the turn's trace", w.root)))?;
        eq(
            "root_span_id",
            hex::encode(v.root_span_id),
            hex::encode(&root.span_id),
        )?;
        eq(
            "end_time",
            v.end_time.to_string(),
            root.end_time_unix_nano.to_string(),
        )?;
        let latency = (root.end_time_unix_nano - root.start_time_unix_nano) as f64 / 1e6;
        if (v.latency_ms - latency).abs() > 1e-6 || v.latency_ms <= 0.0 {
            return Err(format!(
                "{}: got {}, expected {latency}",
                at("latency_ms"),
                v.latency_ms
            ));
        }

        // Cost: tokens x the gpt-4o-mini price (cached input at half price
        // where reported); nothing for a model with no price.
        let priced = w.model.starts_with("gpt-4o-mini");
        let (low, high) = (
            (w.input as f64 * 0.075 + w.output as f64 * 0.6) / 1e6,
            (w.input as f64 * 0.15 + w.output as f64 * 0.6) / 1e6,
        );
        let cost_ok = if priced {
            v.cost_usd >= low - 1e-12 && v.cost_usd <= high + 1e-12
        } else {
            v.cost_usd == 0.0
        };
        if !cost_ok {
            return Err(format!(
                "{}: got {}, expected {low}..={high}",
                at("cost_usd"),
                v.cost_usd
            ));
        }
    }
    Ok(())
}

#[test]
fn every_capture_gives_the_vitals_its_readme_implies() {
    let dir = fixtures_dir();
    let paths = fixture_paths(&dir).unwrap();
    assert!(
        paths.len() >= 50,
        "expected the recorded captures in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in &paths {
        let fixture = load_fixture(path).unwrap();
        let Some(want) = expected(&fixture.name) else {
            failures.push(format!(
                "{}: no expectation written for this capture",
                fixture.name
            ));
            continue;
        };
        let batch = run_one_batch(&fixture);
        if let Err(e) = check(&fixture, &batch, &want) {
            failures.push(format!("{} (one batch): {e}", fixture.name));
        }
        let split = run_span_by_span(&fixture);
        if let Err(e) = check(&fixture, &split, &want) {
            failures.push(format!("{} (span by span): {e}", fixture.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The check above can fail: a wrong expectation is caught.
#[test]
fn a_wrong_expectation_is_reported() {
    let fixture = load_fixture(&fixtures_dir().join("otel-v2_agent_span-only.json")).unwrap();
    let got = run_one_batch(&fixture);
    let right = expected(&fixture.name).unwrap();
    assert!(check(&fixture, &got, &right).is_ok());
    let wrong_agent = vec![Turn {
        agent: "WeatherBot",
        ..right[0].clone()
    }];
    assert!(
        check(&fixture, &got, &wrong_agent)
            .unwrap_err()
            .contains("agent_id")
    );
    let double_counted = vec![Turn {
        input: 168,
        ..right[0].clone()
    }];
    assert!(
        check(&fixture, &got, &double_counted)
            .unwrap_err()
            .contains("input_tokens")
    );
    let no_prompt = vec![Turn {
        prompt: false,
        ..right[0].clone()
    }];
    assert!(
        check(&fixture, &got, &no_prompt)
            .unwrap_err()
            .contains("prompt_hash")
    );
}

/// The same system prompt gives the same hash whatever carried it.
#[test]
fn one_prompt_one_hash_across_conventions() {
    let mut hashes = std::collections::BTreeMap::new();
    for name in [
        "otel-v2_chat_system_span-only",
        "otel-agents-v2_agent_span-only",
        "openinference_chat_system",
        "openinference-agents_agent",
        "traceloop-0.47_chat_system",
        "traceloop-0.62_chat_system",
    ] {
        let fixture = load_fixture(&fixtures_dir().join(format!("{name}.json"))).unwrap();
        let turns = run_one_batch(&fixture);
        hashes.insert(name, turns[0].prompt_hash.clone().unwrap());
    }
    let distinct: std::collections::BTreeSet<_> = hashes.values().collect();
    assert_eq!(distinct.len(), 1, "{hashes:#?}");
}
