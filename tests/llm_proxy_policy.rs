//! The llm_proxy's policy engine and routing over real sockets: throttles,
//! model lists, alert-only rules, runtime rules, the provider allowlist.

mod llm_proxy_support;

use agent_immune::receivers::llm_proxy::config::{PolicyRule, RouteConfig};
use llm_proxy_support::*;
use serde_json::Value;

fn rule(name: &str, agents: &str) -> PolicyRule {
    PolicyRule {
        name: name.into(),
        agents: agents.into(),
        ..Default::default()
    }
}

/// A proxy with these policy rules in front of a fresh fake upstream.
async fn with_policies(policies: Vec<PolicyRule>) -> (FakeUpstream, Proxy) {
    Proxy::with_upstream_config(|cfg| cfg.policies = policies).await
}

#[tokio::test]
async fn requests_per_minute_throttle_with_retry_after() {
    let (upstream, proxy) = with_policies(vec![PolicyRule {
        requests_per_minute: Some(2),
        ..rule("two-a-minute", "limited-*")
    }])
    .await;
    let body = chat_request("gpt-4o-mini", "s", "u");
    for _ in 0..2 {
        let r = proxy.chat("limited-1", &body).await;
        assert_eq!(r.status(), 200);
    }
    let throttled = proxy.chat("limited-1", &body).await;
    assert_eq!(throttled.status(), 429);
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (29..=30).contains(&retry_after),
        "one request refills in 30 s: {retry_after}"
    );
    assert_eq!(
        throttled.headers()["x-agent-immune-error"],
        "rate_limit_exceeded"
    );
    let error = throttled.json_body().await;
    assert_eq!(error["error"]["type"], "rate_limit_exceeded");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("two-a-minute")
    );
    // Another agent, and agents outside the glob, are not affected.
    for agent in ["limited-2", "free"] {
        let r = proxy.chat(agent, &body).await;
        assert_eq!(r.status(), 200, "{agent}");
    }
    assert_eq!(
        upstream.seen().len(),
        4,
        "the throttled request was not forwarded"
    );
    assert_eq!(proxy.telemetry.llm_proxy.refused_throttled.get(), 1);
    assert_eq!(proxy.registry.get("limited-1").unwrap().refused, 1);
}

#[tokio::test]
async fn tokens_per_minute_from_the_responses_usage() {
    // One response (42 + 7 tokens) spends it.
    let (_upstream, proxy) = with_policies(vec![PolicyRule {
        tokens_per_minute: Some(40),
        ..rule("token-budget", "*")
    }])
    .await;
    let body = chat_request("gpt-4o-mini", "s", "u");
    let first = proxy.chat("spender", &body).await;
    assert_eq!(first.status(), 200);
    first.text().await.unwrap();
    // Tokens are charged when the turn ends, after the body was read.
    proxy.vitals.wait_for(1).await;
    let second = proxy.chat("spender", &body).await;
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let error = second.json_body().await;
    assert_eq!(error["error"]["code"], "tokens_per_minute_exceeded");
}

#[tokio::test]
async fn model_block_and_allow_lists() {
    let (upstream, proxy) = with_policies(vec![
        PolicyRule {
            block_models: vec!["o1*".into(), "gpt-5".into()],
            ..rule("no-expensive", "*")
        },
        PolicyRule {
            allow_models: vec!["gpt-4o-mini*".into()],
            ..rule("support-cheap", "support-*")
        },
    ])
    .await;
    let status = |agent: &'static str, model: &'static str| {
        let request = proxy.post(
            agent,
            "/v1/chat/completions",
            &chat_request(model, "s", "u"),
        );
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json_body().await)
        }
    };
    let (code, body) = status("any", "O1-preview").await;
    assert_eq!(code, 403);
    assert_eq!(body["error"]["type"], "policy_violation");
    assert_eq!(body["error"]["code"], "model_blocked");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-expensive")
    );
    assert_eq!(status("any", "gpt-5").await.0, 403);
    assert_eq!(status("any", "gpt-4o").await.0, 200);
    let (code, body) = status("support-1", "gpt-4o").await;
    assert_eq!(code, 403);
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert_eq!(status("support-1", "gpt-4o-mini").await.0, 200);
    assert_eq!(upstream.seen().len(), 2);
    assert_eq!(proxy.telemetry.llm_proxy.refused_model.get(), 3);
}

#[tokio::test]
async fn alert_only_rules_forward_and_count() {
    let (upstream, proxy) = with_policies(vec![PolicyRule {
        requests_per_minute: Some(1),
        block_models: vec!["gpt-4o".into()],
        alert_only: true,
        ..rule("watch-only", "*")
    }])
    .await;
    for _ in 0..2 {
        let r = proxy
            .chat("watched", &chat_request("gpt-4o", "s", "u"))
            .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(upstream.seen().len(), 2);
    // Two model alerts, and the second request's rate alert.
    assert_eq!(proxy.telemetry.llm_proxy.policy_alerts.get(), 3);
}

#[tokio::test]
async fn rules_added_and_removed_at_runtime_apply_to_the_next_request() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let body = chat_request("gpt-4o", "s", "u");
    let send = || proxy.post("runtime", "/v1/chat/completions", &body).send();
    assert_eq!(send().await.unwrap().status(), 200);
    proxy
        .policies
        .add(PolicyRule {
            block_models: vec!["gpt-4o".into()],
            ..rule("late-block", "run*")
        })
        .unwrap();
    assert_eq!(proxy.policies.list().len(), 1);
    assert_eq!(send().await.unwrap().status(), 403);
    assert!(proxy.policies.remove("late-block"));
    assert_eq!(send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn routing_only_reaches_allowlisted_providers() {
    let default = FakeUpstream::start("default").await;
    let second = FakeUpstream::start("second").await;
    // Never allowlisted: nothing may reach it.
    let forbidden = FakeUpstream::start("forbidden").await;
    let mut cfg = Proxy::config(&default);
    cfg.providers = [("second".to_string(), second.url())].into();
    cfg.routes = vec![RouteConfig {
        agents: "routed-*".into(),
        provider: "second".into(),
    }];
    let proxy = Proxy::start(cfg).await;
    let body = chat_request("gpt-4o-mini", "s", "u");
    let upstream_of = |agent: &'static str, header: Option<String>| {
        let mut request = proxy.post(agent, "/v1/chat/completions", &body);
        if let Some(h) = header {
            request = request.header("x-llm-provider", h);
        }
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-upstream"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(upstream_of("plain", None).await, "default");
    assert_eq!(upstream_of("routed-1", None).await, "second");
    assert_eq!(upstream_of("plain", Some("second".into())).await, "second");
    assert_eq!(
        upstream_of("routed-1", Some("default".into())).await,
        "default"
    );
    // Attempts to name a URL or an unknown provider fall to the default.
    assert_eq!(upstream_of("plain", Some(forbidden.url())).await, "default");
    assert_eq!(
        upstream_of("plain", Some(forbidden.addr.to_string())).await,
        "default"
    );
    assert_eq!(
        upstream_of("plain", Some("forbidden".into())).await,
        "default"
    );
    assert_eq!(upstream_of("routed-2", Some("nope".into())).await, "second");
    assert!(
        forbidden.seen().is_empty(),
        "a non-allowlisted upstream was reached"
    );
    assert_eq!(proxy.telemetry.llm_proxy.unknown_provider_headers.get(), 4);
    // The routing header never leaves the proxy.
    let all: Vec<Seen> = default.seen().into_iter().chain(second.seen()).collect();
    assert_eq!(all.len(), 8);
    assert!(
        all.iter()
            .all(|s| s.headers.get("x-llm-provider").is_none())
    );
}

#[tokio::test]
async fn a_provider_base_path_is_kept_and_cannot_be_climbed_out_of() {
    let upstream = FakeUpstream::start("default").await;
    let mut cfg = Proxy::config(&upstream);
    cfg.upstream = format!("{}/openai", upstream.url());
    let proxy = Proxy::start(cfg).await;
    let r = proxy
        .post(
            "pathy",
            "/v1/chat/completions?api-version=2024-10-21",
            &chat_request("gpt-4o-mini", "s", "u"),
        )
        .send()
        .await
        .unwrap();
    // The fake only serves /v1/...: it answers 404 for /openai/v1/..., which
    // the proxy passes through, proving where the request went.
    assert_eq!(r.status(), 404);
    let seen = upstream.wait_seen(1).await;
    assert_eq!(
        seen[0].uri,
        "/openai/v1/chat/completions?api-version=2024-10-21"
    );
    let body: Value = r.json_body().await;
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let request = "GET /v1/%2e%2e/%2e%2e/admin HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
    let (status, _, _) = raw_request(proxy.addr, request.as_bytes()).await;
    assert_eq!(status, 404);
    assert_eq!(
        upstream.seen().len(),
        1,
        "nothing else reached the upstream"
    );
}
