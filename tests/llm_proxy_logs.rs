//! The API key an agent sends through the llm_proxy never reaches a log
//! line, at any level (the proxy's own and its HTTP stack's), nor the
//! discovery registry, on any path: success, streams, refusals, upstream
//! errors and failures.

mod llm_proxy_support;

use agent_immune::receivers::llm_proxy::config::PolicyRule;
use llm_proxy_support::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

const SECRET: &str = "sk-live-SECRET-7f3a9c1e5b";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn the_api_key_never_appears_in_logs_or_the_registry() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish()
        .try_init()
        .unwrap();

    let upstream = FakeUpstream::start("default").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut cfg = Proxy::config(&upstream);
    cfg.providers = [("dead".to_string(), dead)].into();
    cfg.policies = vec![PolicyRule {
        name: "no-o1".into(),
        block_models: vec!["o1*".into()],
        ..Default::default()
    }];
    let proxy = Proxy::start(cfg).await;
    let client = reqwest::Client::new();
    let url = proxy.url("/v1/chat/completions");
    let call = |model: &str, extra: &[(&'static str, &'static str)]| {
        let mut request = client
            .post(&url)
            .header("authorization", format!("Bearer {SECRET}"))
            .header("api-key", SECRET)
            .header("content-type", "application/json")
            .body(chat_request(model, "s", "u").to_string());
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().bytes().await.unwrap() }
    };
    call("gpt-4o-mini", &[]).await;
    call("error-429", &[]).await;
    call("o1-preview", &[]).await;
    call("gpt-4o-mini", &[("x-llm-provider", "dead")]).await;
    call("gpt-4o-mini", &[("x-llm-provider", "unknown")]).await;
    let mut streamed = chat_request("gpt-4o-mini", "s", "u");
    streamed["stream"] = json!(true);
    client
        .post(&url)
        .header("authorization", format!("Bearer {SECRET}"))
        .body(streamed.to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let key_id = format!("key-{}", &sha256_hex(SECRET)[..12]);
    proxy.enforcement.quarantine(&key_id);
    call("gpt-4o-mini", &[]).await;
    proxy.vitals.wait_for(5).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    // The capture works and saw the proxy's paths...
    for expected in [
        "request refused by policy",
        "upstream request failed",
        "X-LLM-Provider names no allowlisted provider",
        "request refused",
    ] {
        assert!(
            logs.contains(expected),
            "missing {expected:?} in logs:\n{logs}"
        );
    }
    // ...and never the key, nor a recognisable part of it.
    assert!(!logs.contains("SECRET"), "the API key leaked into the logs");
    assert!(!logs.contains("7f3a9c1e5b"));
    let registry = serde_json::to_string(&proxy.registry.agents()).unwrap();
    assert!(registry.contains(&key_id), "{registry}");
    assert!(!registry.contains("SECRET"));
    assert!(
        proxy
            .vitals
            .all()
            .iter()
            .all(|v| !format!("{v:?}").contains("SECRET"))
    );
}
