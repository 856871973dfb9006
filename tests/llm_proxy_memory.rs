//! The proxy's memory under hostile bodies, on the real binary: a 32 MiB
//! `{"x":[0,0,…]}` used to become a 0.7 GB JSON tree; now the body is read
//! as bytes, its few facts picked out without a tree, and forwarded as
//! received.

mod common;
mod llm_proxy_support;

use common::binary::Binary;
use common::pipeline::TestPipeline;
use llm_proxy_support::{FakeUpstream, chat_request};

const MIB: u64 = 1024 * 1024;
/// The proxy's default `max_request_body_mib`.
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Growth allowed for four such requests at once: their bytes (4 × 32 MiB)
/// and the server's buffers; a JSON tree of one of them alone is ~0.5 GiB.
const GROWTH_LIMIT: u64 = 200 * MIB;

/// `{"x":[0,0,…]}`, at most `len` bytes: 16M numbers in 32 MiB.
fn zeros_body(len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(b"{\"x\":[0");
    while body.len() + 4 <= len {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(b"]}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_concurrent_32_mib_bodies_keep_the_proxy_small() {
    let upstream = FakeUpstream::start("default").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    let text = TestPipeline::default()
        .without_otlp()
        .llm_proxy(upstream.url())
        .text();
    std::fs::write(&config, text).unwrap();
    let ready = "LLM proxy listening on ";
    let bin = Binary::start_until(&config, &[], ready).await;
    let line = bin.stderr_line(ready).unwrap();
    let addr = line
        .split(ready)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let url = format!("http://{addr}/v1/chat/completions");
    let client = reqwest::Client::new();
    let ordinary = || {
        client
            .post(&url)
            .header("authorization", "Bearer sk-ordinary")
            .header("x-agent-id", "ordinary")
            .header("content-type", "application/json")
            .body(chat_request("gpt-4o-mini", "s", "u").to_string())
            .send()
    };
    assert_eq!(ordinary().await.unwrap().status(), 200);
    let before = bin.rss_bytes();

    let body = bytes::Bytes::from(zeros_body(BODY_LIMIT));
    let mut requests = Vec::new();
    for i in 0..4 {
        let request = client
            .post(&url)
            .header("authorization", format!("Bearer sk-big-{i}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        requests.push(tokio::spawn(request));
    }
    for request in requests {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200, "the big body was forwarded");
    }
    let peak = bin.peak_rss_bytes();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "proxy RSS before {} MiB, peak {} MiB, growth {} MiB for 4 × {} MiB bodies",
        before / MIB,
        peak / MIB,
        growth / MIB,
        body.len() as u64 / MIB
    );
    assert!(
        growth < GROWTH_LIMIT,
        "peak RSS grew by {} MiB (limit {} MiB)",
        growth / MIB,
        GROWTH_LIMIT / MIB
    );

    // Forwarded exactly as received, and ordinary requests still work.
    let seen = upstream.wait_seen(5).await;
    let big: Vec<_> = seen.iter().filter(|s| s.body.len() as u64 > MIB).collect();
    assert_eq!(big.len(), 4);
    assert!(big.iter().all(|s| s.body == body));
    assert_eq!(ordinary().await.unwrap().status(), 200);
}
