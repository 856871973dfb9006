//! The llm_proxy receiver over real sockets: a fake OpenAI server behind
//! it, reqwest and raw TCP in front. Pass-through, streaming, vitals,
//! fingerprinting, discovery and limits.

mod llm_proxy_support;

use agent_immune::receivers::llm_proxy::LlmProxyConfig;
use agent_immune::receivers::llm_proxy::fingerprint::IdentifiedBy;
use llm_proxy_support::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

#[tokio::test]
async fn body_and_end_to_end_headers_pass_intact_hop_by_hop_do_not() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    // Unusual formatting and key order: the upstream must get these bytes.
    let body = "{ \"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9 \u{1F600}\"}] ,\n  \"model\" : \"gpt-4o-mini\", \"temperature\":0.25 }";
    let request = format!(
        "POST /v1/chat/completions?trace=1 HTTP/1.1\r\n\
         Host: proxy.local\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Authorization: Bearer sk-test-key\r\n\
         OpenAI-Organization: org-1\r\n\
         X-Custom: kept\r\n\
         X-Agent-ID: raw-agent\r\n\
         Connection: close, X-Hop-Named\r\n\
         X-Hop-Named: must-not-pass\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         TE: trailers\r\n\
         X-LLM-Provider: default\r\n\
         \r\n{body}",
        body.len()
    );
    let (status, head, response_body) = raw_request(proxy.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{head}");

    let seen = upstream.wait_seen(1).await;
    let got = &seen[0];
    assert_eq!(got.body.as_ref(), body.as_bytes(), "body bytes intact");
    assert_eq!(got.uri, "/v1/chat/completions?trace=1");
    assert_eq!(got.headers["authorization"], "Bearer sk-test-key");
    assert_eq!(got.headers["openai-organization"], "org-1");
    assert_eq!(got.headers["x-custom"], "kept");
    assert_eq!(got.headers["x-agent-id"], "raw-agent");
    for hop in [
        "x-hop-named",
        "keep-alive",
        "proxy-authorization",
        "te",
        "x-llm-provider",
    ] {
        assert!(got.headers.get(hop).is_none(), "{hop} was forwarded");
    }
    assert_ne!(got.headers.get("host").unwrap(), "proxy.local");

    // The answer: upstream's end-to-end headers and body, no hop-by-hop ones.
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-upstream: default"), "{head}");
    assert!(head.contains("x-request-id: req_1"), "{head}");
    assert!(!head.contains("keep-alive: timeout=5"), "{head}");
    let answer: Value = serde_json::from_slice(&response_body).unwrap();
    assert_eq!(answer["id"], "chatcmpl-1");
    // ... while the upstream did send one (the check above is not vacuous).
    let direct = "GET /v1/models HTTP/1.1\r\nHost: u\r\nConnection: close\r\n\r\n";
    let (_, upstream_head, _) = raw_request(upstream.addr, direct.as_bytes()).await;
    assert!(
        upstream_head
            .to_ascii_lowercase()
            .contains("keep-alive: timeout=5")
    );
}

#[tokio::test]
async fn non_streamed_chat_vitals_match_the_upstream() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let system = "You are a careful billing assistant.";
    let response = proxy
        .post(
            "billing",
            "/v1/chat/completions",
            &chat_request("gpt-4o-mini", system, "hi"),
        )
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json_body().await;
    let v = &proxy.vitals.wait_for(1).await[0];
    assert_eq!(v.agent_id, "billing");
    assert_eq!((v.input_tokens, v.output_tokens), CHAT_USAGE);
    assert_eq!(answer["usage"]["prompt_tokens"], CHAT_USAGE.0);
    assert!(v.usage_known);
    assert_eq!(v.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(v.prompt_hash, Some(sha256_hex(system)));
    assert_eq!((v.llm_calls, v.tool_calls, v.errors), (1, 0, 0));
    assert_eq!(v.error_type, None);
    assert_eq!(hex::encode(v.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex::encode(v.root_span_id), "00f067aa0ba902b7");
    assert!(v.latency_ms > 0.0);
    // 42 input and 7 output tokens of gpt-4o-mini at 0.15 / 0.60 per million.
    let expected = (42.0 * 0.15 + 7.0 * 0.60) / 1e6;
    assert!((v.cost_usd - expected).abs() < 1e-12, "{}", v.cost_usd);
    // The proxy measured its own added latency for the request.
    assert_eq!(proxy.telemetry.llm_proxy.added_latency.count(), 1);
    assert_eq!(proxy.telemetry.llm_proxy.vitals.get(), 1);
}

#[tokio::test]
async fn tool_calls_are_counted_streamed_or_not() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let mut request = chat_request("gpt-4o-mini", "sys", "look it up [tools=3]");
    request["tools"] = tools();
    let answer: Value = proxy.chat("tooler", &request).await.json_body().await;
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    request["stream"] = json!(true);
    let streamed = proxy.chat("tooler", &request).await.text().await.unwrap();
    assert!(streamed.contains("call_2_2"));
    let vitals = proxy.vitals.wait_for(2).await;
    assert_eq!(vitals[0].tool_calls, 3);
    assert_eq!(vitals[1].tool_calls, 3);
}

#[tokio::test]
async fn sse_chunks_reach_the_client_before_the_upstream_finishes() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    let request = streamed_chat_request("gated-model", "sys", "stream please");
    let mut response = proxy.chat("streamer", &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    // The upstream holds everything after its first event until released:
    // seeing that event now proves the proxy did not wait for the end.
    let first = response.chunk().await.unwrap().expect("a first chunk");
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("data: {"), "{first}");
    assert!(first.contains("\"role\":\"assistant\""), "{first}");
    assert!(proxy.vitals.all().is_empty(), "the turn is not over yet");
    upstream.release_gate();
    let mut rest = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("\"usage\""), "{rest}");
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    let v = &proxy.vitals.wait_for(1).await[0];
    assert!(v.usage_known);
    assert_eq!((v.input_tokens, v.output_tokens), STREAM_USAGE);
    assert_eq!(v.model.as_deref(), Some("gated-model-2024-07-18"));
}

#[tokio::test]
async fn a_stream_without_usage_says_so() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let mut request = chat_request("gpt-4o-mini", "sys", "stream please");
    request["stream"] = json!(true);
    let text = proxy.chat("no-usage", &request).await.text().await.unwrap();
    assert!(text.contains("raining") && !text.contains("\"usage\""));
    let v = &proxy.vitals.wait_for(1).await[0];
    assert!(!v.usage_known);
    assert_eq!((v.input_tokens, v.output_tokens, v.cost_usd), (0, 0, 0.0));
    assert_eq!(v.errors, 0);
    assert_eq!(v.prompt_hash, Some(sha256_hex("sys")));
}

#[tokio::test]
async fn responses_api_streamed_and_not() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let request = json!({
        "model": "gpt-4.1",
        "instructions": "Answer in one word.",
        "input": [{"role": "user", "content": "weather? [tools=2]"}],
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    });
    let answer: Value = proxy
        .post("responder", "/v1/responses", &request)
        .send()
        .await
        .unwrap()
        .json_body()
        .await;
    assert_eq!(answer["object"], "response");
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let text = proxy
        .post("responder", "/v1/responses", &streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: response.completed"));
    let vitals = proxy.vitals.wait_for(2).await;
    for v in &vitals {
        assert_eq!((v.input_tokens, v.output_tokens), RESPONSES_USAGE);
        assert!(v.usage_known);
        assert_eq!(v.tool_calls, 2);
        assert_eq!(v.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(v.prompt_hash, Some(sha256_hex("Answer in one word.")));
    }
}

#[tokio::test]
async fn upstream_errors_pass_through_with_their_status_and_body() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let r429 = proxy
        .chat("erring", &chat_request("error-429", "s", "u"))
        .await;
    assert_eq!(r429.status(), 429);
    assert_eq!(r429.headers()["retry-after"], "7");
    assert!(r429.headers().get("x-agent-immune-error").is_none());
    assert_eq!(r429.text().await.unwrap(), ERROR_429_BODY);
    let r500 = proxy
        .chat("erring", &chat_request("error-500", "s", "u"))
        .await;
    assert_eq!(r500.status(), 500);
    assert_eq!(r500.text().await.unwrap(), ERROR_500_BODY);
    let vitals = proxy.vitals.wait_for(2).await;
    assert_eq!(vitals[0].error_type.as_deref(), Some("requests"));
    assert_eq!(vitals[1].error_type.as_deref(), Some("server_error"));
    assert!(vitals.iter().all(|v| v.errors == 1 && !v.usage_known));
    assert_eq!(proxy.telemetry.llm_proxy.upstream_errors.get(), 2);
}

#[tokio::test]
async fn unreachable_or_silent_upstreams_are_gateway_errors() {
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::start(LlmProxyConfig {
        endpoint: "127.0.0.1:0".into(),
        upstream: dead,
        ..Default::default()
    })
    .await;
    let response = proxy
        .chat("lonely", &chat_request("gpt-4o-mini", "s", "u"))
        .await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json_body().await;
    assert_eq!(body["error"]["type"], "upstream_unreachable");
    let v = &proxy.vitals.wait_for(1).await[0];
    assert_eq!(v.error_type.as_deref(), Some("upstream_unreachable"));

    let (_upstream, proxy) = Proxy::with_upstream_config(|cfg| {
        cfg.upstream_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let response = proxy.chat("patient", &chat_request("hang", "s", "u")).await;
    assert_eq!(response.status(), 504);
    let body: Value = response.json_body().await;
    assert_eq!(body["error"]["type"], "upstream_timeout");
    let v = &proxy.vitals.wait_for(1).await[0];
    assert_eq!(v.error_type.as_deref(), Some("upstream_timeout"));
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (upstream, proxy) = Proxy::with_upstream_config(|cfg| {
        cfg.max_request_body_mib = 1;
    })
    .await;
    let big = chat_request("gpt-4o-mini", "s", &"x".repeat(1024 * 1024 + 1));
    let response = proxy.chat("big", &big).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json_body().await;
    assert_eq!(body["error"]["code"], "request_too_large");
    // Without Content-Length (chunked), the limit holds while reading.
    let chunk = "x".repeat(600 * 1024);
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let (status, _, _) = raw_request(proxy.addr, chunked.as_bytes()).await;
    assert_eq!(status, 413);
    assert!(upstream.seen().is_empty(), "nothing was forwarded");
    assert_eq!(proxy.telemetry.llm_proxy.refused_invalid.get(), 2);
}

#[tokio::test]
async fn only_v1_paths_without_dot_segments_are_proxied() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    for path in [
        "/admin",
        "/v1/../admin",
        "/v1/%2e%2e/admin",
        "/v1/.%2E/secret",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
        let (status, head, body) = raw_request(proxy.addr, request.as_bytes()).await;
        assert_eq!(status, 404, "{path}: {head}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    assert!(upstream.seen().is_empty());
    // Other /v1 endpoints pass, without vitals.
    let models = reqwest::get(proxy.url("/v1/models")).await.unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(upstream.wait_seen(1).await[0].uri, "/v1/models");
    assert_eq!(proxy.telemetry.llm_proxy.vitals.get(), 0);
}

#[tokio::test]
async fn agents_are_fingerprinted_header_then_key_then_client() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let client = reqwest::Client::new();
    let body = chat_request("gpt-4o-mini", "s", "u").to_string();
    let send = |builder: reqwest::RequestBuilder| {
        let body = body.clone();
        async move {
            let r = builder
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let url = proxy.url("/v1/chat/completions");
    send(
        client
            .post(&url)
            .header("x-agent-id", "named-agent")
            .header("x-agent-type", "planner")
            .header("authorization", "Bearer sk-named"),
    )
    .await;
    send(
        client
            .post(&url)
            .header("authorization", "Bearer sk-abc")
            .header("user-agent", "langchain-openai/0.3 OpenAI/Python 1.60"),
    )
    .await;
    send(client.post(&url).header("api-key", "azure-key-1")).await;
    send(client.post(&url).header("user-agent", "CrewAI/0.100")).await;

    let vitals = proxy.vitals.wait_for(4).await;
    let key_id = format!("key-{}", &sha256_hex("sk-abc")[..12]);
    let azure_id = format!("key-{}", &sha256_hex("azure-key-1")[..12]);
    let anon_id = format!("anon-{}", &sha256_hex("127.0.0.1|CrewAI/0.100")[..12]);
    let ids: Vec<&str> = vitals.iter().map(|v| v.agent_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "named-agent",
            key_id.as_str(),
            azure_id.as_str(),
            anon_id.as_str()
        ]
    );

    let named = proxy.registry.get("named-agent").unwrap();
    assert_eq!(named.agent_type, "planner");
    assert_eq!(named.identified_by, IdentifiedBy::Header);
    let keyed = proxy.registry.get(&key_id).unwrap();
    assert_eq!(keyed.agent_type, "langchain");
    assert_eq!(keyed.identified_by, IdentifiedBy::ApiKey);
    assert_eq!(keyed.models, ["gpt-4o-mini"]);
    assert_eq!(keyed.source_ips, ["127.0.0.1"]);
    assert_eq!(keyed.tokens, CHAT_USAGE.0 + CHAT_USAGE.1);
    let anon = proxy.registry.get(&anon_id).unwrap();
    assert_eq!(
        (anon.agent_type.as_str(), anon.identified_by),
        ("crewai", IdentifiedBy::Client)
    );
    assert_eq!(proxy.registry.agents().len(), 4);
    // Serializable for the management API, and the keys are nowhere in it.
    let listed = serde_json::to_string(&proxy.registry.agents()).unwrap();
    assert!(listed.contains("\"identified_by\":\"api_key\""));
    assert!(!listed.contains("sk-abc") && !listed.contains("azure-key-1"));
}

#[tokio::test]
async fn refused_vitals_never_cost_the_client_its_answer() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    proxy.vitals.refuse.store(true, Ordering::SeqCst);
    let response = proxy
        .chat("pressured", &chat_request("gpt-4o-mini", "s", "u"))
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json_body().await;
    assert_eq!(answer["object"], "chat.completion");
    // The vitals are dropped (counted) once the response has ended.
    proxy.vitals.wait_refused(1).await;
    assert_eq!(proxy.telemetry.llm_proxy.vitals_dropped.get(), 1);
    assert_eq!(proxy.telemetry.llm_proxy.vitals.get(), 0);
}

#[tokio::test]
async fn bind_rejects_bad_config_and_serve_stops_on_cancel() {
    use agent_immune::receivers::llm_proxy::{LlmProxy, LlmProxyError};
    let bad = LlmProxyConfig {
        endpoint: "127.0.0.1:0".into(),
        upstream: "file:///etc/passwd".into(),
        ..Default::default()
    };
    match LlmProxy::bind(&bad).await {
        Err(LlmProxyError::Config(message)) => {
            assert!(message.starts_with("upstream:"), "{message}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }

    let upstream = FakeUpstream::start("default").await;
    let proxy = LlmProxy::bind(&Proxy::config(&upstream)).await.unwrap();
    let addr = proxy.addr();
    assert_ne!(addr.port(), 0);
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = proxy.serve(
        std::sync::Arc::new(Recorder::default()),
        std::sync::Arc::default(),
        cancel.clone(),
    );
    let models = reqwest::get(format!("http://{addr}/v1/models"))
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    cancel.cancel();
    let stopped = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("stopped in time");
    assert!(stopped.unwrap().is_ok());
    // The port is free again.
    std::net::TcpListener::bind(addr).expect("the proxy released its port");
}
