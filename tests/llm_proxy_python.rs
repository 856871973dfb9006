//! The official `openai` Python client talking through the llm_proxy to a
//! fake OpenAI server: chat (plain, streamed, with tools), an error, the
//! Responses API, and a quarantine decided while the agent runs.

mod llm_proxy_support;

use llm_proxy_support::*;
use serde_json::Value;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SYSTEM: &str = "You are a weather agent. Answer briefly.";

/// Every call the agent makes; prints one JSON object with what the client
/// saw.
const AGENT: &str = r#"
import json, sys, openai
base, system = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key="sk-python-agent", max_retries=0,
                       default_headers={"X-Agent-ID": "py-agent"})
messages = [{"role": "system", "content": system}, {"role": "user", "content": "weather in Paris?"}]
tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}]
out = {}
r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
out["chat"] = {"prompt": r.usage.prompt_tokens, "completion": r.usage.completion_tokens, "model": r.model,
               "content": r.choices[0].message.content}
text, usage = "", None
for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                            stream_options={"include_usage": True}):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
out["stream"] = {"text": text, "prompt": usage.prompt_tokens, "completion": usage.completion_tokens}
with_tools = messages[:1] + [{"role": "user", "content": "look it up [tools=2]"}]
r = client.chat.completions.create(model="gpt-4o-mini", messages=with_tools, tools=tools)
out["tools"] = len(r.choices[0].message.tool_calls)
try:
    client.chat.completions.create(model="error-429", messages=messages)
    out["error"] = None
except openai.RateLimitError as e:
    out["error"] = {"status": e.status_code, "type": e.type, "code": e.code}
r = client.responses.create(model="gpt-4.1", instructions=system, input="weather? [tools=1]",
                            tools=[{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}])
out["responses"] = {"input": r.usage.input_tokens, "output": r.usage.output_tokens,
                    "calls": sum(1 for item in r.output if item.type == "function_call")}
print(json.dumps(out), flush=True)
"#;

/// Calls, waits for a line on stdin, calls again, and so on; one JSON line
/// per call. Default retries: the proxy's `x-should-retry: false` must stop
/// the SDK from retrying a quarantined call.
const QUARANTINED_AGENT: &str = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-python-agent",
                       default_headers={"X-Agent-ID": "py-quarantined"})
def call():
    try:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        return {"status": 200, "content": r.choices[0].message.content}
    except openai.APIStatusError as e:
        return {"status": e.status_code, "type": e.type, "message": e.body.get("message")}
for _ in range(3):
    print(json.dumps(call()), flush=True)
    sys.stdin.readline()
"#;

#[tokio::test]
async fn the_openai_python_client_works_through_the_proxy_and_vitals_match() {
    let upstream = FakeUpstream::start("default").await;
    let proxy = Proxy::start(Proxy::config(&upstream)).await;
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(python())
            .args(["-c", AGENT, &format!("http://{}", proxy.addr), SYSTEM])
            .output(),
    )
    .await
    .expect("the Python agent finished in time")
    .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["chat"]["prompt"], CHAT_USAGE.0);
    assert_eq!(seen["chat"]["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(seen["stream"]["text"], "It is raining in Paris.");
    assert_eq!(seen["stream"]["completion"], STREAM_USAGE.1);
    assert_eq!(seen["tools"], 2);
    assert_eq!(seen["error"]["status"], 429);
    assert_eq!(seen["error"]["code"], "rate_limit_exceeded");
    assert_eq!(seen["responses"]["calls"], 1);

    // The vitals say what the client saw.
    let vitals = proxy.vitals.wait_for(5).await;
    assert!(vitals.iter().all(|v| v.agent_id == "py-agent"));
    let (chat, stream, tools, error, responses) =
        (&vitals[0], &vitals[1], &vitals[2], &vitals[3], &vitals[4]);
    assert_eq!((chat.input_tokens, chat.output_tokens), CHAT_USAGE);
    assert_eq!(chat.prompt_hash, Some(sha256_hex(SYSTEM)));
    assert_eq!((stream.input_tokens, stream.output_tokens), STREAM_USAGE);
    assert!(stream.usage_known);
    assert_eq!(tools.tool_calls, 2);
    assert_eq!(
        (error.errors, error.error_type.as_deref()),
        (1, Some("requests"))
    );
    assert_eq!(
        (
            responses.input_tokens,
            responses.output_tokens,
            responses.tool_calls
        ),
        (RESPONSES_USAGE.0, RESPONSES_USAGE.1, 1)
    );
    // Chat and Responses hash the same instructions the same way.
    assert_eq!(responses.prompt_hash, chat.prompt_hash);
    let agent = proxy.registry.get("py-agent").unwrap();
    assert_eq!(agent.agent_type, "openai-python");
    assert_eq!(agent.requests, 5);
    // The SDK's own headers reached the upstream.
    let first = &upstream.seen()[0];
    assert!(
        first.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("OpenAI/Python")
    );
    assert_eq!(first.headers["authorization"], "Bearer sk-python-agent");
}

#[tokio::test]
async fn a_quarantined_python_agent_gets_503_at_once_and_recovers_on_release() {
    let upstream = FakeUpstream::start("default").await;
    let proxy = Proxy::start(Proxy::config(&upstream)).await;
    let mut child = tokio::process::Command::new(python())
        .args(["-c", QUARANTINED_AGENT, &format!("http://{}", proxy.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_call = async || -> Value {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the agent answered in time")
            .unwrap()
            .expect("a line from the agent");
        serde_json::from_str(&line).unwrap()
    };

    assert_eq!(next_call().await["status"], 200);
    // The decision lands between two calls: the very next one is refused.
    proxy.enforcement.quarantine("py-quarantined");
    stdin.write_all(b"go\n").await.unwrap();
    let refused = next_call().await;
    assert_eq!(refused["status"], 503);
    assert_eq!(refused["type"], "agent_quarantined");
    assert_eq!(refused["message"], "agent is quarantined by agent-immune");
    // The SDK did not retry the refusal (x-should-retry: false).
    assert_eq!(proxy.telemetry.llm_proxy.refused_quarantined.get(), 1);

    proxy.enforcement.release("py-quarantined");
    stdin.write_all(b"go\n").await.unwrap();
    let released = next_call().await;
    assert_eq!(released["status"], 200);
    assert_eq!(released["content"], "It is raining in Paris.");
    stdin.write_all(b"go\n").await.unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(upstream.seen().len(), 2);
}
