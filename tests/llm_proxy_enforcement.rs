//! The llm_proxy as an enforcement target, over real sockets: quarantine,
//! drain, release, reduce_autonomy, revoke_tools, and the actions it cannot
//! carry out.

mod llm_proxy_support;

use agent_immune::executors::request::ActionRequest;
use agent_immune::executors::target::run_with_timeout;
use agent_immune::immune::action::Action;
use agent_immune::receivers::llm_proxy::config::RevokeToolsMode;
use llm_proxy_support::*;
use serde_json::json;
use std::collections::BTreeMap;

fn no_parameters() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[tokio::test]
async fn quarantine_answers_503_on_the_next_request_and_release_lets_through() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    let body = chat_request("gpt-4o-mini", "s", "u");
    let send = |agent: &'static str| proxy.post(agent, "/v1/chat/completions", &body).send();
    assert_eq!(send("patient-zero").await.unwrap().status(), 200);

    // Through the executors' trait, as the healer will call it.
    let outcome = run_with_timeout(
        &proxy.enforcement,
        &ActionRequest::new("patient-zero", Action::Quarantine),
    )
    .await;
    assert!(outcome.success, "{}", outcome.message);
    assert_eq!(outcome.target, "llm_proxy");
    let refused = send("patient-zero").await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-should-retry"], "false");
    let error = refused.json_body().await;
    assert_eq!(
        error["error"]["message"],
        "agent is quarantined by agent-immune"
    );
    assert_eq!(error["error"]["type"], "agent_quarantined");
    assert_eq!(error["error"]["code"], "agent_quarantined");
    // Other agents are unaffected.
    assert_eq!(send("bystander").await.unwrap().status(), 200);
    assert_eq!(
        upstream.seen().len(),
        2,
        "the quarantined request was not forwarded"
    );

    let outcome = run_with_timeout(
        &proxy.enforcement,
        &ActionRequest::new("patient-zero", Action::Release),
    )
    .await;
    assert!(outcome.success, "{}", outcome.message);
    assert_eq!(send("patient-zero").await.unwrap().status(), 200);
    assert_eq!(proxy.telemetry.llm_proxy.refused_quarantined.get(), 1);
    // Refused requests are not turns: three turns of vitals.
    assert_eq!(proxy.vitals.wait_for(3).await.len(), 3);
}

#[tokio::test]
async fn quarantine_cuts_a_stream_in_flight() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let mut request = chat_request("gated-model", "s", "u");
    request["stream"] = json!(true);
    let mut response = proxy.chat("runaway", &request).await;
    assert!(response.chunk().await.unwrap().is_some());
    assert_eq!(proxy.enforcement.in_flight("runaway"), 1);
    assert_eq!(proxy.enforcement.quarantine("runaway"), 1);
    // The stream ends (cut) without the upstream ever being released.
    let rest = tokio::time::timeout(PATIENCE, async {
        let mut rest = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            rest.extend_from_slice(&chunk);
        }
        rest
    })
    .await
    .expect("the stream was cut");
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("[DONE]"), "{rest}");
    // The stream ends with an OpenAI-shaped error event, not silently.
    assert!(rest.contains("\"type\":\"agent_quarantined\""), "{rest}");
    proxy.vitals.wait_for(1).await;
    assert_eq!(proxy.enforcement.in_flight("runaway"), 0);
    assert_eq!(proxy.telemetry.llm_proxy.cut_streams.get(), 1);
}

#[tokio::test]
async fn drain_refuses_new_requests_while_in_flight_ones_finish() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    let request = streamed_chat_request("gated-model", "s", "u");
    let mut in_flight = proxy.chat("drained", &request).await;
    assert!(in_flight.chunk().await.unwrap().is_some());

    let no_parameters = no_parameters();
    let drain = proxy
        .enforcement
        .apply("drained", Action::Drain, &no_parameters);
    tokio::pin!(drain);
    // One poll starts the drain (new requests refused from here on) and
    // leaves it waiting for the stream in flight.
    tokio::select! {
        biased;
        result = &mut drain => panic!("drain finished with a stream in flight: {result:?}"),
        () = std::future::ready(()) => {}
    }
    assert!(proxy.enforcement.restrictions("drained").draining);
    let refused = proxy
        .chat("drained", &chat_request("gpt-4o-mini", "s", "u"))
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json_body().await["error"]["type"], "agent_draining");

    // The in-flight stream finishes whole.
    upstream.release_gate();
    let mut rest = String::new();
    while let Some(chunk) = in_flight.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.ends_with("data: [DONE]\n\n"));
    let result = tokio::time::timeout(PATIENCE, drain).await.unwrap();
    assert!(result.success, "{}", result.message);
    let v = &proxy.vitals.wait_for(1).await[0];
    assert_eq!((v.input_tokens, v.output_tokens), STREAM_USAGE);

    assert!(proxy.enforcement.release("drained"));
    let again = proxy
        .chat("drained", &chat_request("gpt-4o-mini", "s", "u"))
        .await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn reduce_autonomy_caps_output_tokens_and_rate() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    let parameters: BTreeMap<String, String> = [
        ("requests_per_minute".to_string(), "1".to_string()),
        ("max_tokens".to_string(), "64".to_string()),
    ]
    .into();
    let result = proxy
        .enforcement
        .apply("reduced", Action::ReduceAutonomy, &parameters)
        .await;
    assert!(result.success, "{}", result.message);
    let mut request = chat_request("gpt-4o-mini", "s", "u");
    request["max_tokens"] = json!(4096);
    let r = proxy.chat("reduced", &request).await;
    assert_eq!(r.status(), 200);
    let forwarded = upstream.wait_seen(1).await[0].json();
    assert_eq!(forwarded["max_tokens"], 64);
    assert_eq!(forwarded["messages"], request["messages"]);
    let throttled = proxy.chat("reduced", &request).await;
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    // Another agent keeps its autonomy and its body untouched.
    let free = proxy.chat("free", &request).await;
    assert_eq!(free.status(), 200);
    assert_eq!(upstream.wait_seen(2).await[1].json()["max_tokens"], 4096);
    // Restored, the agent is free again.
    assert!(proxy.enforcement.restore("reduced"));
    let r = proxy.chat("reduced", &request).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn revoke_tools_strips_them_by_default() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    let mut request = chat_request("gpt-4o-mini", "s", "use tools [tools=2]");
    request["tools"] = tools();
    request["tool_choice"] = json!("auto");
    let result = proxy
        .enforcement
        .apply("infected", Action::RevokeTools, &no_parameters())
        .await;
    assert!(result.success);
    let answer = proxy.chat("infected", &request).await.json_body().await;
    assert!(answer["choices"][0]["message"]["tool_calls"].is_null());
    let forwarded = upstream.wait_seen(1).await[0].json();
    assert!(forwarded.get("tools").is_none() && forwarded.get("tool_choice").is_none());
    assert_eq!(forwarded["messages"], request["messages"]);
    assert_eq!(proxy.vitals.wait_for(1).await[0].tool_calls, 0);
    assert_eq!(proxy.telemetry.llm_proxy.tools_stripped.get(), 1);
}

#[tokio::test]
async fn restrictions_cannot_be_dodged_by_the_body_s_form() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    proxy.enforcement.revoke_tools("infected");
    // Tools under an escaped key, in a duplicate, in a body that says it
    // is not JSON: all stripped, every other byte as sent.
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x [tools=1]"}],"tool\u0073":[{"type":"function","function":{"name":"f"}}],"tools":[]}"#;
    let r = proxy
        .post("infected", "/v1/chat/completions", &json!(null))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let forwarded = upstream.wait_seen(1).await[0].body.clone();
    assert_eq!(
        &forwarded[..],
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x [tools=1]"}]}"#
    );
    // A body the proxy cannot read is not forwarded blind.
    for unreadable in ["{\"tools\": [1], \"x\": NaN}", "[1]"] {
        let r = proxy
            .post("infected", "/v1/chat/completions", &json!(null))
            .body(unreadable)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{unreadable}");
        assert_eq!(r.json_body().await["error"]["code"], "unreadable_body");
    }
    assert_eq!(upstream.seen().len(), 1);
    // An unrestricted agent's unreadable body passes untouched.
    let r = proxy
        .post("healthy", "/v1/chat/completions", &json!(null))
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn revoke_tools_can_refuse_tool_requests_instead() {
    let (upstream, proxy) = Proxy::with_upstream_config(|cfg| {
        cfg.revoke_tools_mode = RevokeToolsMode::Refuse;
    })
    .await;
    proxy.enforcement.revoke_tools("infected");
    let mut request = chat_request("gpt-4o-mini", "s", "u");
    request["tools"] = tools();
    let refused = proxy.chat("infected", &request).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json_body().await["error"]["type"], "tools_revoked");
    // Without tools, the agent still works.
    let plain = chat_request("gpt-4o-mini", "s", "u");
    let r = proxy.chat("infected", &plain).await;
    assert_eq!(r.status(), 200);
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn actions_the_proxy_cannot_take_are_reported_unsupported() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    for action in [
        Action::ResetMemory,
        Action::RollbackPrompt,
        Action::ResetAgent,
    ] {
        let result = proxy.enforcement.apply("a", action, &no_parameters()).await;
        assert!(!result.success, "{action}");
        assert!(result.message.contains("cannot"), "{}", result.message);
    }
    assert!(proxy.enforcement.restricted_agents().is_empty());
}
