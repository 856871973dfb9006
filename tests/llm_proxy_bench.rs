//! Benchmark, not a test: the latency the llm_proxy adds under concurrent
//! load. The same requests go to the fake OpenAI server directly and through
//! the proxy; the report gives p50/p99 of both, their difference, and the
//! proxy's own added-latency histogram. Run it with
//!
//! ```sh
//! cargo test --release --test llm_proxy_bench -- --ignored --nocapture
//! ```

mod llm_proxy_support;

use llm_proxy_support::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (concurrent clients, requests) per measured run: one client alone shows
/// the pure added latency, 32 show it under load (CPU shared with the fake
/// server and the clients on the same machine).
const LOADS: [(usize, usize); 2] = [(1, 1000), (32, 4000)];

async fn run(
    url: String,
    body: String,
    agents: bool,
    (concurrency, requests): (usize, usize),
) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                // One key per agent: the proxy binds a key to one agent.
                request = if agents {
                    request
                        .header("x-agent-id", format!("bench-{}", worker % 8))
                        .header("authorization", format!("Bearer sk-bench-{}", worker % 8))
                } else {
                    request.header("authorization", "Bearer sk-bench")
                };
                let started = Instant::now();
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    all.sort();
    all
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn added_latency_under_concurrent_load() {
    let (upstream, proxy) = Proxy::with_upstream().await;
    let plain = chat_request("gpt-4o-mini", "You are a benchmark.", "hello").to_string();
    let streamed =
        streamed_chat_request("gpt-4o-mini", "You are a benchmark.", "hello").to_string();

    println!(
        "llm_proxy added latency ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let mut proxied_requests = 0;
    for load in LOADS {
        for (name, body) in [("chat", &plain), ("chat stream", &streamed)] {
            let direct_url = format!("{}/v1/chat/completions", upstream.url());
            let proxy_url = proxy.url("/v1/chat/completions");
            // Warm both paths (connections, allocations) before measuring.
            run(direct_url.clone(), body.clone(), false, load).await;
            run(proxy_url.clone(), body.clone(), true, load).await;
            let direct = run(direct_url, body.clone(), false, load).await;
            let proxied = run(proxy_url, body.clone(), true, load).await;
            proxied_requests += 2 * load.1;
            let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
            let (p50, p99) = (percentile(&proxied, 0.5), percentile(&proxied, 0.99));
            println!(
                "{:>2} clients {name:>11}: direct p50 {:>6.0} µs p99 {:>6.0} µs | proxied p50 {:>6.0} µs p99 {:>6.0} µs | added p50 {:>6.0} µs p99 {:>6.0} µs",
                load.0,
                us(d50),
                us(d99),
                us(p50),
                us(p99),
                us(p50.saturating_sub(d50)),
                us(p99.saturating_sub(d99)),
            );
        }
    }
    let histogram = &proxy.telemetry.llm_proxy.added_latency;
    let bound = |q| {
        histogram
            .quantile_bound_us(q)
            .map_or("> 250000".to_string(), |b| format!("<= {b}"))
    };
    println!(
        "proxy's own measure (request in + response headers out, upstream excluded), {} requests: mean {:.0} µs, p50 {} µs, p99 {} µs",
        histogram.count(),
        us(histogram.sum()) / histogram.count().max(1) as f64,
        bound(0.5),
        bound(0.99),
    );
    assert_eq!(histogram.count() as usize, proxied_requests);
}
