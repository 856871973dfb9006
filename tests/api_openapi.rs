//! The OpenAPI document in the repository (src/api/openapi.json) and the
//! router agree: every route served is documented and every documented
//! operation is served, with the same access rule; every schema reference
//! resolves. And the service serves the API on its own port.

mod api_support;
mod common;

use agent_immune::api::auth::Access;
use agent_immune::api::config::ApiConfig;
use agent_immune::api::pages::OPENAPI;
use agent_immune::api::server::routes;
use agent_immune::pipeline::service::Service;
use api_support::{Harness, Options};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

/// (METHOD, path) of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn document_and_router_list_the_same_routes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let served: BTreeSet<(String, String)> = routes(&ApiConfig::default())
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
}

#[test]
fn documented_security_matches_the_access_rule() {
    let doc = document();
    let with_key = json!([{"apiKey": []}, {"bearer": []}]);
    let key_optional = json!([{"apiKey": []}, {"bearer": []}, {}]);
    for route in routes(&ApiConfig::default()) {
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        let expected = match route.access {
            Access::Write => &with_key,
            Access::Read => &key_optional,
            Access::Open => &json!([]),
        };
        assert_eq!(
            &op["security"], expected,
            "{} {} is {:?}",
            route.method, route.path, route.access
        );
        if route.access == Access::Write {
            assert!(op["responses"].get("401").is_some(), "{}", route.path);
        }
        assert!(op["operationId"].as_str().is_some(), "{}", route.path);
    }
}

#[test]
fn every_schema_reference_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20);
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
}

/// Each documented operation reaches a handler over HTTP: whatever it
/// answers, it is not the router's "no such endpoint" or 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let h = Harness::start(Options::default()).await;
    for (method, path) in documented(&document()) {
        let concrete = path
            .replace("{id}", "some-agent")
            .replace("{name}", "some-rule");
        let r = h.keyed(&method, &concrete, Some("{}".into())).await;
        assert_ne!(r.status, 405, "{method} {path}");
        assert!(
            !r.text.contains("no such endpoint"),
            "{method} {path}: {}",
            r.text
        );
    }
    let served = h.get("/api/v1/openapi.json").await;
    assert_eq!(
        served.text, OPENAPI,
        "the served document is the repository's"
    );
    h.stop().await;
}

/// `Service::start` serves the API itself on `[api] endpoint`, with the
/// fleet behind it; without a key (until the state store provides one)
/// nothing mutating gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_the_api() {
    let service = Service::start(api_support::pipeline(None, false, "127.0.0.1:0"))
        .await
        .expect("start");
    let base = format!("http://{}", service.api_addr.expect("API bound"));
    let http = reqwest::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let agents = http
        .get(format!("{base}/api/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(agents.status().as_u16(), 200);
    assert_eq!(
        agents.text().await.unwrap(),
        r#"{"agents":[],"total":0,"next_cursor":null}"#
    );
    let ingest = http
        .post(format!("{base}/api/v1/ingest"))
        .body(r#"{"agent_id":"a","latency_ms":1}"#)
        .send()
        .await
        .unwrap();
    let status = ingest.status().as_u16();
    assert!(
        status == 401 || status == 503,
        "refused without a key: {status}"
    );
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    service.shutdown(std::time::Duration::from_secs(5)).await;
}
