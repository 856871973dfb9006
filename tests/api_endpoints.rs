//! Every endpoint of the management API over real HTTP against the real
//! pipeline: answers, the key on every guarded route (missing, wrong, both
//! header forms), fail-closed without a key, closed reads, bad input named
//! by field, limits, 404/405/409/503, and the LLM proxy's endpoints.

mod api_support;
mod common;

use agent_immune::api::auth::Access;
use agent_immune::api::config::ApiConfig;
use agent_immune::api::server::routes;
use api_support::{Harness, KEY, Options, WRONG_KEY};
use serde_json::json;

/// A concrete path for a route template.
fn concrete(path: &str) -> String {
    path.replace("{id}", "some-agent")
        .replace("{name}", "some-rule")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_page_and_reads() {
    let h = Harness::start(Options::default()).await;
    let r = h.get("/healthz").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = h.get("/readyz").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ready"})));
    h.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(h.get("/readyz").await.status, 503);
    // Not ready (starting or stopping): ingest is refused with 503.
    let r = h.ingest(h.turn("a", 1.0)).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.error().contains("not ready"));
    h.ready.store(true, std::sync::atomic::Ordering::Relaxed);

    // Nothing reported yet.
    assert_eq!(
        h.get("/api/v1/agents").await.json(),
        json!({"agents": [], "total": 0, "next_cursor": null})
    );
    assert_eq!(h.get("/api/v1/approvals").await.json(), json!([]));
    assert_eq!(h.get("/api/v1/events").await.json(), json!([]));
    let stats = h.get("/api/v1/stats").await.json();
    assert_eq!(stats["agents"], 0);
    assert_eq!(stats["healing_success_rate"], serde_json::Value::Null);

    // An agent registers on its first report (single object and arrays).
    let r = h.ingest(h.turn("checkout-agent", 1.0)).await;
    assert_eq!((r.status, r.json()), (202, json!({"accepted": 1})));
    let batch: Vec<_> = (0..20).map(|_| h.turn("checkout-agent", 1.0)).collect();
    let r = h.ingest(serde_json::Value::Array(batch)).await;
    assert_eq!((r.status, r.json()), (202, json!({"accepted": 20})));
    h.wait_state("checkout-agent", "HEALTHY").await;
    let page = h.get("/api/v1/agents").await.json();
    assert_eq!(
        (page["total"].as_u64(), page["next_cursor"].is_null()),
        (Some(1), true)
    );
    let agents = &page["agents"];
    assert_eq!(agents.as_array().unwrap().len(), 1);
    let a = &agents[0];
    assert_eq!(a["agent_id"], "checkout-agent");
    assert!(a["since"].as_u64().unwrap() > 0);
    assert!(a["baseline"]["ready"].as_bool().unwrap());
    // Learned: the warmup, then turns that left the evaluation window.
    assert!(a["baseline"]["turns"].as_u64().unwrap() >= 15, "{a}");
    assert_eq!(a["last_vitals"]["model"], "gpt-4o-mini");
    assert_eq!(a["last_vitals"]["tool_calls"], 2);
    assert!(a["deviation"].is_null() || a["deviation"].as_f64().unwrap() < 2.5);
    let detail = h.agent("checkout-agent").await.unwrap();
    assert_eq!(detail["history"][0]["from"], "INITIALIZING");
    assert_eq!(detail["history"][0]["to"], "HEALTHY");
    assert!(
        detail["history"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("baseline")
    );
    assert_eq!(detail["events"][0]["name"], "agent_immune.lifecycle");
    let stats = h.get("/api/v1/stats").await.json();
    assert_eq!(stats["agents"], 1);
    assert_eq!(stats["by_state"]["HEALTHY"], 1);

    // Metrics: the pipeline's counters and the agents per state.
    let r = h.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "agent_immune_agents{state=\"HEALTHY\"} 1\n",
        "agent_immune_agents{state=\"QUARANTINED\"} 0\n",
        "agent_immune_receiver_accepted_spans 0\n",
        "agent_immune_llm_proxy_requests 0\n",
        "agent_immune_llm_proxy_added_latency_seconds_count 0\n",
        "agent_immune_api_ingested_vitals 21\n",
        // The one refused while not ready.
        "agent_immune_api_ingest_refused_requests 1\n",
        "agent_immune_api_unauthorized_requests 0\n",
    ] {
        assert!(r.text.contains(line), "{line} in\n{}", r.text);
    }

    // The dashboard page: embedded, locked down by its CSP.
    let r = h.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("Approval queue"));
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'sha256-") && csp.contains("connect-src 'self'"));
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    let r = h.get("/api/v1/openapi.json").await;
    assert_eq!(r.json()["openapi"], "3.0.3");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guarded_route_wants_the_key() {
    let h = Harness::start(Options::default()).await;
    let writes: Vec<_> = routes(&ApiConfig::default())
        .into_iter()
        .filter(|r| r.access == Access::Write)
        .collect();
    assert!(writes.len() >= 8, "{writes:?}");
    for route in &writes {
        let path = concrete(route.path);
        let method = route.method.as_str();
        for headers in [
            vec![],
            vec![("x-api-key", WRONG_KEY)],
            vec![("authorization", "Bearer not-the-key")],
            vec![("authorization", "Basic dGVzdDp0ZXN0")],
            vec![("x-api-key", "")],
        ] {
            let r = h
                .send(method, &path, Some("{}".to_string()), &headers)
                .await;
            assert_eq!(
                r.status, 401,
                "{method} {path} with {headers:?}: {}",
                r.text
            );
            assert!(r.headers.contains_key("www-authenticate"));
            let error = r.error();
            assert!(
                error.contains("missing API key") || error.contains("invalid API key"),
                "{error}"
            );
        }
    }
    // Both header forms carry the key.
    for header in [
        ("x-api-key", KEY.to_string()),
        ("authorization", format!("Bearer {KEY}")),
    ] {
        let r = h
            .send(
                "POST",
                "/api/v1/ingest",
                Some(h.turn("keyed", 1.0).to_string()),
                &[(header.0, header.1.as_str())],
            )
            .await;
        assert_eq!(r.status, 202, "{header:?}: {}", r.text);
    }
    // Reads are open by default; refusals are counted.
    assert_eq!(h.get("/api/v1/agents").await.status, 200);
    let metrics = h.get("/metrics").await.text;
    assert!(
        metrics.contains(&format!(
            "agent_immune_api_unauthorized_requests {}\n",
            writes.len() * 5
        )),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_guarded_routes_fail_closed() {
    let h = Harness::start(Options {
        key: None,
        ..Options::default()
    })
    .await;
    for route in routes(&ApiConfig::default())
        .into_iter()
        .filter(|r| r.access == Access::Write)
    {
        let path = concrete(route.path);
        let r = h
            .keyed(route.method.as_str(), &path, Some("{}".into()))
            .await;
        assert_eq!(r.status, 503, "{} {}: {}", route.method, route.path, r.text);
        assert!(r.error().contains("no API key configured"));
    }
    assert_eq!(h.get("/api/v1/agents").await.status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_can_be_closed() {
    let h = Harness::start(Options {
        api: ApiConfig {
            endpoint: "127.0.0.1:0".into(),
            read_requires_key: true,
            ..ApiConfig::default()
        },
        ..Options::default()
    })
    .await;
    for route in routes(&ApiConfig::default()) {
        if route.method != "GET" {
            continue;
        }
        let path = concrete(route.path);
        let open = h.get(&path).await;
        let keyed = h.keyed("GET", &path, None).await;
        match route.access {
            Access::Read => {
                assert_eq!(open.status, 401, "{path}: {}", open.text);
                assert_ne!(keyed.status, 401, "{path}: {}", keyed.text);
            }
            // Health, readiness, the page and the document stay open.
            Access::Open => assert_eq!(open.status, 200, "{path}"),
            Access::Write => unreachable!(),
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field() {
    let h = Harness::start(Options {
        api: ApiConfig {
            endpoint: "127.0.0.1:0".into(),
            max_body_kib: 4,
            max_ingest_batch: 5,
            ..ApiConfig::default()
        },
        ..Options::default()
    })
    .await;
    let cases = [
        (json!({"latency_ms": 10}), "agent_id"),
        (json!({"agent_id": "a"}), "latency_ms"),
        (json!({"agent_id": "a", "latency_ms": -1}), "latency_ms"),
        (json!({"agent_id": "a", "latency_ms": "fast"}), "latency_ms"),
        (json!({"agent_id": "a", "latency_ms": 1e12}), "latency_ms"),
        (
            json!({"agent_id": "a", "latency_ms": 1, "input_tokens": -5}),
            "input_tokens",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "output_tokens": 2.5}),
            "output_tokens",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "tool_calls": 1e9}),
            "tool_calls",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "retries": "2"}),
            "retries",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "success": 1}),
            "success",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "cost": -0.5}),
            "cost",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "model": 4}),
            "model",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "error_type": {}}),
            "error_type",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "prompt_hash": "x".repeat(300)}),
            "prompt_hash",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "timestamp": 1.0e13}),
            "timestamp",
        ),
        (
            json!({"agent_id": "a", "latency_ms": 1, "tokens": 5}),
            "tokens",
        ),
        (
            json!([{"agent_id": "a", "latency_ms": 1}, {"agent_id": "", "latency_ms": 1}]),
            "[1].agent_id",
        ),
    ];
    for (body, field) in cases {
        let r = h.ingest(body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.field().as_deref(), Some(field), "{body}: {}", r.text);
        assert!(r.error().starts_with(field), "{}", r.text);
    }
    // NaN and infinities have no JSON form: refused naming the field.
    for (body, field) in [
        (r#"{"agent_id": "a", "latency_ms": NaN}"#, "latency_ms"),
        (
            r#"{"agent_id": "a", "latency_ms": 1, "cost": 1e999}"#,
            "cost",
        ),
    ] {
        let r = h.keyed("POST", "/api/v1/ingest", Some(body.into())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.field().as_deref(), Some(field), "{body}: {}", r.text);
    }
    // Not JSON, wrong shapes.
    for body in ["{", "NaN", "[]", "42"] {
        let r = h.keyed("POST", "/api/v1/ingest", Some(body.into())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    // Limits: the body size and the batch length.
    let r = h
        .ingest(json!({"agent_id": "a", "latency_ms": 1, "model": "m".repeat(5000)}))
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.error().contains("max_body_kib"));
    let batch: Vec<_> = (0..6).map(|_| h.turn("a", 1.0)).collect();
    let r = h.ingest(serde_json::Value::Array(batch)).await;
    assert_eq!(r.status, 413, "{}", r.text);
    // Nothing of a refused batch got in.
    assert_eq!(
        h.get("/api/v1/agents").await.json(),
        json!({"agents": [], "total": 0, "next_cursor": null})
    );

    // Query parameters.
    for (path, field) in [
        ("/api/v1/events?limit=many", "limit"),
        ("/api/v1/events?limit=100000", "limit"),
        ("/api/v1/events?since=-1", "since"),
        ("/api/v1/events?agnt=x", "agnt"),
        ("/api/v1/approvals?status=open", "status"),
        ("/api/v1/agents?page=2", "page"),
        ("/api/v1/agents?limit=", "limit"),
        ("/api/v1/agents?state=", "state"),
        ("/api/v1/events?since=9223372036854775808", "since"),
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert_eq!(r.field().as_deref(), Some(field), "{path}");
    }
    // Feedback.
    for (body, field) in [
        (json!({"actual_cause": "correct"}), "agent"),
        (json!({"agent": "a"}), "actual_cause"),
        (
            json!({"agent": "a", "actual_cause": "bad_luck"}),
            "actual_cause",
        ),
        (
            json!({"agent": "a", "actual_cause": "correct", "notes": 5}),
            "notes",
        ),
        (
            json!({"agent": "a", "actual_cause": "correct", "note": "x"}),
            "note",
        ),
        (json!({"agent": 3, "actual_cause": "correct"}), "agent"),
    ] {
        let r = h.post("/api/v1/feedback", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.field().as_deref(), Some(field), "{body}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agents_wrong_states_and_routes() {
    let h = Harness::start(Options::default()).await;
    // 404: an agent nobody reported.
    let r = h.get("/api/v1/agents/nobody").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("nobody"), "{}", r.text);
    for verb in ["approve", "reject", "heal", "reset-baseline"] {
        let r = h
            .post(&format!("/api/v1/agents/nobody/{verb}"), json!({}))
            .await;
        assert_eq!(r.status, 404, "{verb}: {}", r.text);
    }
    let r = h
        .post(
            "/api/v1/feedback",
            json!({"agent": "nobody", "actual_cause": "correct"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // 409: a healthy agent has nothing to approve, reject, heal or judge.
    h.healthy_turns("calm-agent", 20).await;
    h.wait_state("calm-agent", "HEALTHY").await;
    for verb in ["approve", "reject", "heal"] {
        let r = h
            .post(&format!("/api/v1/agents/calm-agent/{verb}"), json!({}))
            .await;
        assert_eq!(r.status, 409, "{verb}: {}", r.text);
        assert!(r.error().contains("HEALTHY"), "{}", r.text);
    }
    let r = h
        .post(
            "/api/v1/feedback",
            json!({"agent": "calm-agent", "actual_cause": "false_positive"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.error().contains("not been diagnosed"), "{}", r.text);

    // Ids with any characters travel percent-encoded.
    let odd = "team a/agent #1";
    let r = h.ingest(json!({"agent_id": odd, "latency_ms": 5})).await;
    assert_eq!(r.status, 202);
    api_support::eventually("the odd agent", || async {
        let r = h.get("/api/v1/agents/team%20a%2Fagent%20%231").await;
        (r.status == 200).then(|| r.json())
    })
    .await;

    // Routes that do not exist, and methods a route does not take.
    let r = h.get("/api/v1/agent").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("no such endpoint"));
    let r = h.send("DELETE", "/api/v1/agents", None, &[]).await;
    assert_eq!(r.status, 405);
    assert!(r.error().contains("does not take DELETE"), "{}", r.text);
    let r = h.send("GET", "/api/v1/ingest", None, &[]).await;
    assert_eq!(r.status, 405);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_detection_fleet_routes_are_unavailable() {
    let h = Harness::start(Options {
        fleet: false,
        ..Options::default()
    })
    .await;
    for path in [
        "/api/v1/agents",
        "/api/v1/stats",
        "/api/v1/events",
        "/api/v1/approvals",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(r.error().contains("detection is not running"));
    }
    let r = h.ingest(h.turn("a", 1.0)).await;
    assert_eq!(r.status, 503);
    // Health and metrics do not need the fleet.
    assert_eq!(h.get("/healthz").await.status, 200);
    let metrics = h.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(!metrics.text.contains("agent_immune_agents{"));
    // No llm_proxy receiver: its routes say so.
    let r = h.get("/api/v1/policies").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("no llm_proxy receiver"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_proxy_discovery_and_policies() {
    let h = Harness::start(Options {
        llm_proxy: true,
        ..Options::default()
    })
    .await;
    assert_eq!(h.get("/api/v1/proxy/agents").await.json(), json!([]));
    assert_eq!(h.get("/api/v1/policies").await.json(), json!([]));
    let rule = json!({"name": "cap-support", "agents": "support-*", "requests_per_minute": 30, "block_models": ["gpt-4*"]});
    let r = h.post("/api/v1/policies", rule.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["name"], "cap-support");
    let listed = h.get("/api/v1/policies").await.json();
    assert_eq!(listed[0]["name"], "cap-support");
    assert_eq!(listed[0]["requests_per_minute"], 30);
    assert_eq!(h.post("/api/v1/policies", rule).await.status, 409);
    let r = h
        .post(
            "/api/v1/policies",
            json!({"name": "", "requests_per_minute": 3}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.field().as_deref(), Some("name"));
    let r = h
        .post("/api/v1/policies", json!({"name": "x", "rpm": 3}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error().contains("rpm"), "{}", r.text);
    // Deleted once; then there is nothing to delete.
    for status in [204, 404] {
        let r = h
            .keyed("DELETE", "/api/v1/policies/cap-support", None)
            .await;
        assert_eq!(r.status, status, "{}", r.text);
    }
    assert_eq!(h.get("/api/v1/policies").await.json(), json!([]));
    h.stop().await;
}
