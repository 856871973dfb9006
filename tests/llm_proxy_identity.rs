//! Gateway identity over real sockets: the credential, not `X-Agent-ID`,
//! decides who is calling, so a quarantine cannot be left by renaming or
//! dropping the header, one agent cannot speak as another, strict mode
//! admits only configured keys, and a configured agent's requests carry
//! the proxy's own provider key.

mod llm_proxy_support;

use agent_immune::receivers::llm_proxy::config::{AgentKeyConfig, IdentityMode, KeyHashes, Secret};
use agent_immune::receivers::llm_proxy::fingerprint::IdentifiedBy;
use llm_proxy_support::*;
use serde_json::Value;

const CHAT: &str = "/v1/chat/completions";

/// A chat request with exactly these headers (no helper defaults).
async fn send(proxy: &Proxy, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(proxy.url(CHAT))
        .header("content-type", "application/json")
        .body(chat_request("gpt-4o-mini", "s", "u").to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn a_quarantined_agent_stays_quarantined_whatever_it_claims() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    let key = ("authorization", "Bearer sk-patient-zero");
    assert_eq!(send(&proxy, &[key, ("x-agent-id", "patient")]).await.0, 200);
    assert_eq!(
        send(
            &proxy,
            &[
                ("authorization", "Bearer sk-bystander"),
                ("x-agent-id", "bystander")
            ]
        )
        .await
        .0,
        200
    );
    proxy.enforcement.quarantine("patient");

    // Its own id: 503, as before.
    let (status, body) = send(&proxy, &[key, ("x-agent-id", "patient")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("agent_quarantined"))
    );
    // Header renamed (so absent) or removed: still the key's agent.
    for headers in [vec![key, ("x-agent-name", "patient")], vec![key]] {
        let (status, body) = send(&proxy, &headers).await;
        assert_eq!(status, 503, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], "agent_quarantined");
    }
    // Another agent's id (or a fresh one) with its key: refused, saying why.
    for other in ["bystander", "someone-new"] {
        let (status, body) = send(&proxy, &[key, ("x-agent-id", other)]).await;
        assert_eq!(status, 403, "{other}: {body}");
        assert_eq!(body["error"]["code"], "identity_mismatch");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("bound to agent \"patient\""), "{message}");
        assert!(
            !message.contains("sk-patient"),
            "no part of the key in answers"
        );
    }
    // Its id without its key, or with a new key: refused too.
    let (status, _) = send(&proxy, &[("x-agent-id", "patient")]).await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &proxy,
        &[
            ("authorization", "Bearer sk-fresh"),
            ("x-agent-id", "patient"),
        ],
    )
    .await;
    assert_eq!(status, 403);

    // Nothing of it reached the provider; the bystander still works.
    assert_eq!(upstream.seen().len(), 2);
    let bystander = [("authorization", "Bearer sk-bystander")];
    assert_eq!(
        send(&proxy, &bystander).await.0,
        200,
        "its key alone names it"
    );
    assert_eq!(proxy.registry.get("bystander").unwrap().requests, 2);
    let metrics = &proxy.telemetry.llm_proxy;
    assert_eq!(metrics.refused_quarantined.get(), 3);
    assert_eq!(metrics.refused_identity.get(), 4);
}

#[tokio::test]
async fn one_agent_cannot_speak_as_another() {
    let (_upstream, proxy) = Proxy::with_upstream().await;
    let alice = ("authorization", "Bearer sk-alice");
    assert_eq!(send(&proxy, &[alice, ("x-agent-id", "alice")]).await.0, 200);
    assert_eq!(
        send(
            &proxy,
            &[("authorization", "Bearer sk-bob"), ("x-agent-id", "bob")]
        )
        .await
        .0,
        200
    );
    let (status, body) = send(&proxy, &[alice, ("x-agent-id", "bob")]).await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (403, Some("identity_mismatch"))
    );
    // A key first seen without X-Agent-ID is its derived agent for good.
    let plain = ("api-key", "sk-carol");
    assert_eq!(send(&proxy, &[plain]).await.0, 200);
    let carol = format!("key-{}", &sha256_hex("sk-carol")[..12]);
    let carol_agent = proxy.registry.get(&carol).unwrap();
    assert_eq!(carol_agent.identified_by, IdentifiedBy::ApiKey);
    assert_eq!(send(&proxy, &[plain, ("x-agent-id", "alice")]).await.0, 403);
    assert_eq!(send(&proxy, &[plain, ("x-agent-id", "carol")]).await.0, 403);
    // The turns that went through are each agent's own.
    let vitals = proxy.vitals.wait_for(3).await;
    let mut ids: Vec<&str> = vitals.iter().map(|v| v.agent_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["alice", "bob", carol.as_str()]);
}

fn billing_agent(cfg: &mut agent_immune::receivers::llm_proxy::LlmProxyConfig) {
    cfg.agents.insert(
        "billing".into(),
        AgentKeyConfig {
            key_sha256: KeyHashes::One(sha256_hex("sk-billing-agent")),
        },
    );
    cfg.upstream_api_key = Some(Secret::new("sk-provider-secret"));
}

#[tokio::test]
async fn strict_mode_admits_configured_keys_only_and_sends_the_proxys_credential() {
    let (upstream, proxy) = Proxy::with_upstream_config(|cfg| {
        cfg.identity = IdentityMode::Strict;
        billing_agent(cfg);
    })
    .await;
    for headers in [
        vec![],
        vec![("x-agent-id", "billing")],
        vec![
            ("authorization", "Bearer sk-unknown"),
            ("x-agent-id", "ops"),
        ],
    ] {
        let (status, body) = send(&proxy, &headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    let key = ("authorization", "Bearer sk-billing-agent");
    let (status, body) = send(&proxy, &[key, ("x-agent-id", "ops")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("identity_mismatch"))
    );
    assert!(upstream.seen().is_empty(), "nothing refused was forwarded");

    assert_eq!(send(&proxy, &[key]).await.0, 200);
    let seen = upstream.wait_seen(1).await;
    assert_eq!(
        seen[0].headers["authorization"],
        "Bearer sk-provider-secret"
    );
    let vitals = proxy.vitals.wait_for(1).await;
    assert_eq!(vitals[0].agent_id, "billing");
    let billing = proxy.registry.get("billing").unwrap();
    assert_eq!(billing.identified_by, IdentifiedBy::ConfiguredKey);
    assert_eq!(proxy.telemetry.llm_proxy.refused_identity.get(), 4);
}

#[tokio::test]
async fn a_configured_agent_works_in_bound_mode_beside_unconfigured_ones() {
    let (upstream, proxy) = Proxy::with_upstream_config(billing_agent).await;
    let key = ("authorization", "Bearer sk-billing-agent");
    assert_eq!(send(&proxy, &[key, ("x-agent-id", "billing")]).await.0, 200);
    // An unconfigured key keeps its own credential upstream.
    let other = ("authorization", "Bearer sk-other-agent");
    assert_eq!(send(&proxy, &[other, ("x-agent-id", "other")]).await.0, 200);
    let seen = upstream.wait_seen(2).await;
    assert_eq!(
        seen[0].headers["authorization"],
        "Bearer sk-provider-secret"
    );
    assert_eq!(seen[1].headers["authorization"], "Bearer sk-other-agent");
    // The configured name cannot be claimed with another key or none.
    let thief = [
        ("authorization", "Bearer sk-thief"),
        ("x-agent-id", "billing"),
    ];
    assert_eq!(send(&proxy, &thief).await.0, 403);
    assert_eq!(send(&proxy, &[("x-agent-id", "billing")]).await.0, 403);
    proxy.enforcement.quarantine("billing");
    assert_eq!(send(&proxy, &[key]).await.0, 503);
}
