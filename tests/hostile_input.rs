//! Hostile input against the real binary (issue 13, items 1 and 12): item
//! amplification is refused before anything is decoded, four worst-case
//! requests at once keep peak memory under the configured limit while
//! `/healthz` answers and an ordinary client keeps exporting, the decoded
//! data budget refuses retryably, and a value nested too deep is truncated
//! with the rest of its batch kept and judged.
//!
//! The figures in BENCHMARKS.md come from
//! `cargo test --release --test hostile_input -- --nocapture`.

mod common;

use agent_immune::pipeline::consumer::Signal;
use agent_immune::testdata::{AgentTrace, kv_nested};
use bytes::Bytes;
use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{free_port, grpc_raw, metric, poll_until};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default `memory_limit_mib`.
const MEMORY_LIMIT: u64 = 512 << 20;
const LIMIT: Duration = Duration::from_secs(60);
/// How long `/healthz` may take under attack.
const HEALTH_LIMIT: Duration = Duration::from_secs(1);

/// A running binary with OTLP gRPC and HTTP and the management API.
struct Target {
    bin: Binary,
    grpc: String,
    http: String,
    api: String,
    _dir: tempfile::TempDir,
}

async fn start(service: &str) -> Target {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    let mut pipeline = TestPipeline::default()
        .otlp(format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"))
        .api(format!("127.0.0.1:{api}"));
    if !service.is_empty() {
        pipeline = pipeline.table(format!("[service]\n{service}"));
    }
    let config = dir.path().join("pipeline.toml");
    std::fs::write(&config, pipeline.text()).unwrap();
    Target {
        bin: Binary::start(&config, &[]).await,
        grpc: format!("http://127.0.0.1:{grpc}"),
        http: format!("http://127.0.0.1:{http}"),
        api: format!("http://127.0.0.1:{api}"),
        _dir: dir,
    }
}

/// A protobuf field: key, length, payload.
fn field(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    varint(&mut out, (number << 3) | 2);
    varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `resource_spans { scope_spans { <spans> } }`.
fn traces_request(spans: &[u8]) -> Vec<u8> {
    field(1, &field(2, spans))
}

/// About `bytes` of empty spans: `0a <len> 12 <len> (12 00)×N`.
fn empty_spans(bytes: usize) -> Vec<u8> {
    traces_request(&[0x12, 0x00].repeat(bytes / 2 - 8))
}

/// One span of about `bytes` of empty attributes (`4a 00`).
fn empty_attributes(bytes: usize) -> Vec<u8> {
    traces_request(&field(2, &[0x4a, 0x00].repeat(bytes / 2 - 12)))
}

/// About `bytes` of OTLP/JSON empty spans: `{},{},…`.
fn json_empty_spans(bytes: usize) -> Vec<u8> {
    let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":["#.to_vec();
    body.extend_from_slice(&b"{},".repeat(bytes / 3 - 20));
    body.extend_from_slice(b"{}]}]}]}");
    body
}

/// The four amplification kinds, each as the largest request its transport
/// takes (20 MiB HTTP bodies, 4 MiB gRPC messages).
#[derive(Debug, Clone, Copy)]
enum Kind {
    ProtobufEmptySpans,
    JsonEmptyObjects,
    EmptyAttributes,
    GrpcEmptySpans,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::ProtobufEmptySpans,
        Kind::JsonEmptyObjects,
        Kind::EmptyAttributes,
        Kind::GrpcEmptySpans,
    ];

    fn body(self) -> Bytes {
        const HTTP_MAX: usize = 20 << 20;
        const GRPC_MAX: usize = 4 << 20;
        Bytes::from(match self {
            Kind::ProtobufEmptySpans => empty_spans(HTTP_MAX - 64),
            Kind::JsonEmptyObjects => json_empty_spans(HTTP_MAX - 64),
            Kind::EmptyAttributes => empty_attributes(HTTP_MAX - 64),
            Kind::GrpcEmptySpans => empty_spans(GRPC_MAX - 64),
        })
    }

    /// Sends the request; the answer's status (HTTP, or the gRPC code) and
    /// message.
    async fn send(self, target: &Target, body: Bytes) -> (u16, String) {
        match self {
            Kind::GrpcEmptySpans => match grpc_raw(&target.grpc, Signal::Traces, body).await {
                Ok(_) => (0, String::new()),
                Err(status) => (status.code() as u16, status.message().to_string()),
            },
            _ => {
                let content_type = match self {
                    Kind::JsonEmptyObjects => "application/json",
                    _ => "application/x-protobuf",
                };
                let response = reqwest::Client::new()
                    .post(format!("{}/v1/traces", target.http))
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        }
    }
}

/// `/healthz`, answered in time, while `running`; counts the checks.
async fn watch_health(
    api: String,
    checks: Arc<AtomicU64>,
    done: tokio_util::sync::CancellationToken,
) {
    let client = reqwest::Client::builder()
        .timeout(HEALTH_LIMIT)
        .build()
        .unwrap();
    while !done.is_cancelled() {
        let started = Instant::now();
        let answer = client.get(format!("{api}/healthz")).send().await;
        let status = answer.map(|r| r.status().as_u16());
        assert_eq!(
            status.as_ref().ok(),
            Some(&200),
            "/healthz did not answer within {HEALTH_LIMIT:?} under attack: {status:?}"
        );
        checks.fetch_add(1, Ordering::Relaxed);
        // Check again soon, not back to back.
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(started.elapsed())).await;
    }
}

/// An ordinary exporter: small batches, retried on 429 as OTLP says;
/// counts the exports accepted.
async fn polite_client(
    http: String,
    accepted: Arc<AtomicU64>,
    done: tokio_util::sync::CancellationToken,
) {
    let client = reqwest::Client::new();
    let mut i = 0u64;
    while !done.is_cancelled() {
        i += 1;
        let body = AgentTrace::new("polite").seed(i).request().encode_to_vec();
        loop {
            let response = client
                .post(format!("{http}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                200 => break,
                429 => tokio::task::yield_now().await,
                status => panic!("an ordinary export was refused: {status}"),
            }
        }
        accepted.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_worst_case_requests_of_each_kind_stay_under_the_memory_limit() {
    for kind in Kind::ALL {
        let target = start("").await;
        let before = target.bin.rss_bytes();
        let done = tokio_util::sync::CancellationToken::new();
        let checks = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let health = tokio::spawn(watch_health(
            target.api.clone(),
            checks.clone(),
            done.clone(),
        ));
        let polite = tokio::spawn(polite_client(
            target.http.clone(),
            accepted.clone(),
            done.clone(),
        ));
        let body = kind.body();
        let target = Arc::new(target);
        let mut attacks = Vec::new();
        for _ in 0..4 {
            let (target, body) = (target.clone(), body.clone());
            attacks.push(tokio::spawn(async move { kind.send(&target, body).await }));
        }
        for attack in attacks {
            let (status, message) = attack.await.unwrap();
            // 400 over HTTP, INVALID_ARGUMENT (3) over gRPC, naming the limit.
            assert!(status == 400 || status == 3, "{kind:?}: {status} {message}");
            assert!(message.contains("_per_request"), "{kind:?}: {message}");
        }
        // The ordinary client got through during and after the attack.
        let after_attack = accepted.load(Ordering::Relaxed);
        poll_until("an ordinary export after the attack", LIMIT, async || {
            (accepted.load(Ordering::Relaxed) > after_attack + 2).then_some(())
        })
        .await;
        done.cancel();
        health.await.unwrap();
        polite.await.unwrap();
        let peak = target.bin.peak_rss_bytes();
        println!(
            "{kind:?}: 4 concurrent {} MiB requests, RSS {} MiB before, peak {} MiB; {} health checks answered, {} ordinary exports accepted",
            body.len() >> 20,
            before >> 20,
            peak >> 20,
            checks.load(Ordering::Relaxed),
            accepted.load(Ordering::Relaxed),
        );
        assert!(checks.load(Ordering::Relaxed) > 0);
        assert!(
            peak < MEMORY_LIMIT,
            "{kind:?}: peak RSS {} MiB over the limit",
            peak >> 20
        );
        assert!(metric(&target.api, "agent_immune_receiver_over_limit_requests").await >= 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_decoded_budget_refuses_retryably() {
    // 50k empty spans (100 KB on the wire) decode to tens of MiB: two of
    // them do not fit in a 40 MiB budget at once.
    let target = start("decoded_budget_mib = 40").await;
    let body = Bytes::from(empty_spans(100_000));
    let client = reqwest::Client::new();
    let refusal = poll_until("a refusal by the decoded-data budget", LIMIT, async || {
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..8 {
            sends.spawn(
                client
                    .post(format!("{}/v1/traces", target.http))
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send(),
            );
        }
        let mut refused = None;
        while let Some(response) = sends.join_next().await {
            let response = response.unwrap().unwrap();
            let status = response.status().as_u16();
            assert!(status == 200 || status == 429, "{status}");
            if status == 429 {
                let retry_after = response.headers().get("retry-after").cloned();
                refused = Some((retry_after, response.text().await.unwrap()));
            }
        }
        refused
    })
    .await;
    let (retry_after, message) = refusal;
    assert!(retry_after.is_some(), "429 without Retry-After");
    assert!(message.contains("budget"), "{message}");
    assert!(metric(&target.api, "agent_immune_receiver_memory_refused_requests").await >= 1);

    // A request that could never fit is a permanent error naming the key.
    let huge = Bytes::from(traces_request(&field(2, &[0x4a, 0x00].repeat(900_000))));
    let response = client
        .post(format!("{}/v1/traces", target.http))
        .header("content-type", "application/x-protobuf")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("decoded_budget_mib")
    );
}

/// An agent's turn (its trace ids from `seed`) with one of its spans
/// carrying a 31-deep attribute.
fn turn_with_deep_attribute(agent: &str, seed: u64) -> ExportTraceServiceRequest {
    let mut request = AgentTrace::new(agent).seed(seed).request();
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(kv_nested("deep", 31));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_nested_too_deep_is_truncated_and_the_rest_is_judged() {
    let target = start("").await;
    // Over gRPC (protobuf) ...
    let mut client = TraceServiceClient::connect(target.grpc.clone())
        .await
        .unwrap();
    client
        .export(turn_with_deep_attribute("deep-proto", 1))
        .await
        .expect("the batch is accepted, its deep value truncated");
    // ... and over HTTP as OTLP/JSON.
    let json = serde_json::to_vec(&turn_with_deep_attribute("deep-json", 2)).unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", target.http))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{:?}",
        response.text().await
    );
    assert!(metric(&target.api, "agent_immune_receiver_truncated_values").await >= 2);
    // The other spans of each batch made a turn of their agent.
    poll_until("the two turns", LIMIT, async || {
        (metric(&target.api, "agent_immune_turns").await >= 2).then_some(())
    })
    .await;
}
