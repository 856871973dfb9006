//! Queues bounded under a flood, against the real binary over real HTTP:
//! JSON ingest faster than detection can judge gets 429 + Retry-After once
//! its shard queues are full, and a forwarding queue whose next hop answers
//! UNAVAILABLE refuses big exports retryably once its byte bound is
//! reached. Resident memory stays bounded either way.

mod common;

use agent_immune::testdata::{AgentTrace, kv_str};
use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{free_port, metric_sample, metrics_text, poll_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const KEY: &str = "hostile-queues-key-0123456789abcdef";
const MIB: u64 = 1024 * 1024;

/// A config file for `pipeline` in `dir`.
fn config_file(dir: &Path, pipeline: &TestPipeline) -> std::path::PathBuf {
    let path = dir.join("agent-immune.toml");
    std::fs::write(&path, pipeline.text()).unwrap();
    path
}

/// What one ingest client saw.
#[derive(Debug, Default)]
struct Answers {
    accepted: u64,
    refused: u64,
}

/// Posts `batches` batches of 1000 records, without waiting between them;
/// every answer is 202 or 429 with Retry-After.
async fn ingest_client(api: String, client: usize, batches: u64) -> Answers {
    let http = reqwest::Client::new();
    let batch: Vec<_> = (0..1000)
        .map(|i| {
            json!({
                "agent_id": format!("ingest-agent-{}", (client * 1000 + i) % 64),
                "latency_ms": 100 + i % 50,
                "input_tokens": 500,
                "output_tokens": 100,
                "tool_calls": 2,
            })
        })
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    let mut answers = Answers::default();
    for _ in 0..batches {
        let response = http
            .post(format!("{api}/api/v1/ingest"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            202 => answers.accepted += 1,
            429 => {
                assert!(
                    response.headers().contains_key("retry-after"),
                    "429 without Retry-After"
                );
                answers.refused += 1;
            }
            other => panic!(
                "ingest answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_flood_gets_429_once_the_detection_queue_is_full_and_memory_stays_bounded() {
    let api_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::default()
        .table(format!(
            "[service]\nshards = 2\nvitals_queue = 2048\n\
             [state]\ndata_dir = \"{}/state\"",
            dir.path().display()
        ))
        .api(format!("127.0.0.1:{api_port}"));
    let bin = Binary::start(
        &config_file(dir.path(), &pipeline),
        &[("AGENT_IMMUNE_API_KEY", KEY)],
    )
    .await;

    // Eight keyed clients, 40 batches each: 320 000 records offered much
    // faster than detection judges them.
    let clients: Vec<_> = (0..8)
        .map(|c| tokio::spawn(ingest_client(api.clone(), c, 40)))
        .collect();
    let (mut accepted, mut refused) = (0, 0);
    for client in clients {
        let answers = client.await.unwrap();
        accepted += answers.accepted;
        refused += answers.refused;
    }
    assert!(accepted > 0, "ingest works at all");
    assert!(refused > 0, "a full detection queue refuses ingest");
    assert_eq!(accepted + refused, 8 * 40);

    // The shards judge what they took: the queue drains, and a batch sent
    // again is taken.
    poll_until("a batch taken again", Duration::from_secs(60), async || {
        (ingest_client(api.clone(), 0, 1).await.accepted > 0).then_some(())
    })
    .await;

    let text = metrics_text(&api).await;
    let counted = metric_sample(&text, "agent_immune_detection_refused_vitals").unwrap();
    assert_eq!(counted, refused as i64 * 1000, "{text}");
    let peak = bin.peak_rss_bytes();
    eprintln!(
        "ingest flood: {accepted} batches accepted, {refused} refused, peak RSS {} MiB",
        peak / MIB
    );
    assert!(
        peak < 256 * MIB,
        "peak RSS {} MiB under an ingest flood",
        peak / MIB
    );
}

/// A next hop that answers every export UNAVAILABLE (HTTP 503's gRPC
/// twin: retryable), counting them.
#[derive(Default, Clone)]
struct Unavailable(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Unavailable {
    async fn export(
        &self,
        _request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(tonic::Status::unavailable("next hop is down"))
    }
}

async fn unavailable_next_hop() -> (u16, Unavailable) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hop = Unavailable::default();
    let service = TraceServiceServer::new(hop.clone()).max_decoding_message_size(64 * MIB as usize);
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (port, hop)
}

/// A valid OTLP traces request of about `bytes` (one span carrying a large
/// attribute).
fn big_export(bytes: usize) -> Vec<u8> {
    let mut request = AgentTrace::new("bulky-agent").request();
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.attributes.push(kv_str("payload", &"x".repeat(bytes)));
    request.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_queue_refuses_big_exports_retryably_at_its_byte_bound() {
    let (hop_port, hop) = unavailable_next_hop().await;
    let (http, api_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let pipeline = TestPipeline::default()
        .otlp("", format!("127.0.0.1:{http}"))
        .forward_to(format!("127.0.0.1:{hop_port}"))
        .table("[exporters.otlp_forward.sending_queue]\nqueue_size_mib = 64")
        .api(format!("127.0.0.1:{api_port}"));
    let bin = Binary::start(&config_file(dir.path(), &pipeline), &[]).await;

    // 19 MiB exports, one after the other, as a client would retry them.
    let body = big_export(19 * MIB as usize);
    let client = reqwest::Client::new();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for _ in 0..30 {
        let response = client
            .post(format!("http://127.0.0.1:{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => {
                assert_eq!(
                    refused, 0,
                    "accepted after a refusal with the next hop still down"
                );
                accepted += 1;
            }
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("export answered {other}"),
        }
    }
    // 64 MiB hold three 19 MiB requests (a fourth waits only when the queue
    // is empty); the rest are refused, retryably.
    assert_eq!(accepted, 3, "refused {refused}");
    assert_eq!(refused, 27);
    assert!(hop.0.load(Ordering::Relaxed) > 0, "the next hop was tried");

    // The gauge shows the three requests held (it is refreshed each second).
    let api = format!("http://127.0.0.1:{api_port}");
    poll_until(
        "the held bytes on /metrics",
        Duration::from_secs(30),
        async || {
            let held = metric_sample(
                &metrics_text(&api).await,
                "agent_immune_exporter_queue_bytes{exporter=\"otlp_forward\"}",
            )?;
            (held >= 3 * 19 * MIB as i64 && held <= 64 * MIB as i64).then_some(())
        },
    )
    .await;
    let peak = bin.peak_rss_bytes();
    eprintln!(
        "forward queue: {accepted} accepted, {refused} refused, peak RSS {} MiB",
        peak / MIB
    );
    assert!(
        peak < 400 * MIB,
        "peak RSS {} MiB with 30 × 19 MiB offered",
        peak / MIB
    );
}
