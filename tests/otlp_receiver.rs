//! The OTLP receiver over real sockets, driven by real clients: tonic's
//! generated OTLP clients, the opentelemetry-otlp exporters and reqwest.

mod common;

use agent_immune::pipeline::consumer::{Consumer, Received, Refused, Signal};
use agent_immune::receivers::otlp::rpc_status::{RpcStatus, retry_delay_of};
use agent_immune::receivers::otlp::{Consumers, OtlpReceiver, OtlpReceiverConfig};
use agent_immune::telemetry::Telemetry;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

// ---- allocation tracking, to show a gzip bomb is refused without inflating it

struct PeakAlloc;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Tests that move tens of MiB take turns, so the bomb test's allocation
/// peak is its own.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- a consumer that records what it got, or refuses

#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<Received>>,
    refuse: Option<Refused>,
    /// Refused before decoding (a saturated pipeline).
    saturated: Option<Refused>,
}

impl Recorder {
    fn refusing(refused: Refused) -> Arc<Self> {
        Arc::new(Self {
            refuse: Some(refused),
            ..Self::default()
        })
    }

    fn saturated(refused: Refused) -> Arc<Self> {
        Arc::new(Self {
            saturated: Some(refused),
            ..Self::default()
        })
    }
    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

impl Consumer for Recorder {
    fn has_room(&self) -> Result<(), Refused> {
        self.saturated.clone().map_or(Ok(()), Err)
    }

    fn consume(&self, received: Received) -> Result<(), Refused> {
        assert!(self.saturated.is_none(), "decoded although saturated");
        if let Some(refused) = &self.refuse {
            return Err(refused.clone());
        }
        self.got.lock().unwrap().push(received);
        Ok(())
    }
}

struct Harness {
    grpc: SocketAddr,
    http: SocketAddr,
    traces: Arc<Recorder>,
    metrics: Arc<Recorder>,
    logs: Arc<Recorder>,
    telemetry: Arc<Telemetry>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), agent_immune::receivers::otlp::ReceiverError>>,
}

impl Harness {
    async fn start() -> Self {
        Self::with(OtlpReceiverConfig::default(), Arc::default(), true).await
    }

    async fn with(mut cfg: OtlpReceiverConfig, traces: Arc<Recorder>, all_signals: bool) -> Self {
        cfg.grpc = "127.0.0.1:0".into();
        cfg.http = "127.0.0.1:0".into();
        let receiver = OtlpReceiver::bind(&cfg).await.unwrap();
        let (grpc, http) = (receiver.grpc_addr().unwrap(), receiver.http_addr().unwrap());
        let metrics: Arc<Recorder> = Arc::default();
        let logs: Arc<Recorder> = Arc::default();
        let consumers = Consumers {
            traces: Some(traces.clone() as Arc<dyn Consumer>),
            metrics: all_signals.then(|| metrics.clone() as Arc<dyn Consumer>),
            logs: all_signals.then(|| logs.clone() as Arc<dyn Consumer>),
        };
        let telemetry = Arc::new(Telemetry::default());
        let cancel = CancellationToken::new();
        let task = receiver.serve(consumers, telemetry.clone(), cancel.clone());
        Self {
            grpc,
            http,
            traces,
            metrics,
            logs,
            telemetry,
            cancel,
            task,
        }
    }

    fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.http_url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A raw gRPC call with arbitrary bytes (e.g. a truncated message).
    async fn grpc_raw(&self, signal: Signal, body: Bytes) -> Result<(), tonic::Status> {
        common::grpc_raw(&self.grpc_url(), signal, body)
            .await
            .map(|_| ())
    }
}

// ---- test data

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0x5b; 16],
        span_id: vec![0xee; 8],
        name: name.into(),
        kind: 3,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes,
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![attr(
                    "service.name",
                    any_value::Value::StringValue("agent".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn chat_request() -> ExportTraceServiceRequest {
    traces(vec![
        span(
            "chat gpt-4o",
            vec![
                attr(
                    "gen_ai.operation.name",
                    any_value::Value::StringValue("chat".into()),
                ),
                attr("gen_ai.usage.input_tokens", any_value::Value::IntValue(42)),
            ],
        ),
        span("execute_tool search", vec![]),
    ])
}

fn logs_request() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        severity_number: 9,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("hello".into())),
                        }),
                        ..Default::default()
                    };
                    3
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics_request() -> ExportMetricsServiceRequest {
    let point = NumberDataPoint {
        value: Some(number_data_point::Value::AsInt(5)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point.clone(), point],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8], level: Compression) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), level);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn status_of(body: &[u8]) -> RpcStatus {
    RpcStatus::decode(body).unwrap()
}

// ---- gRPC

#[tokio::test]
async fn grpc_export_reaches_the_consumer_as_the_exact_bytes_sent() {
    let h = Harness::start().await;
    let request = chat_request();
    let mut client = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let response = client.export(request.clone()).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);

    let got = h.traces.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].signal, Signal::Traces);
    assert_eq!(got[0].protobuf, Bytes::from(request.encode_to_vec()));
    assert_eq!(got[0].items, 2);
    assert_eq!(got[0].traces.as_ref(), Some(&request));
    assert_eq!(h.telemetry.receiver.accepted.traces.get(), 2);
}

#[tokio::test]
async fn grpc_gzip_request_is_inflated() {
    let h = Harness::start().await;
    let request = chat_request();
    let mut client = TraceServiceClient::connect(h.grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(request.clone()).await.unwrap();
    assert_eq!(
        h.traces.take()[0].protobuf,
        Bytes::from(request.encode_to_vec())
    );
}

#[tokio::test]
async fn grpc_truncated_message_is_invalid_argument_naming_the_request() {
    let h = Harness::start().await;
    let bytes = chat_request().encode_to_vec();
    let status = h
        .grpc_raw(
            Signal::Traces,
            Bytes::copy_from_slice(&bytes[..bytes.len() - 5]),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("ExportTraceServiceRequest"),
        "{status:?}"
    );
    assert!(h.traces.take().is_empty());
    assert_eq!(h.telemetry.receiver.malformed_requests.get(), 1);
}

#[tokio::test]
async fn grpc_message_over_max_recv_msg_size_is_refused() {
    let cfg = OtlpReceiverConfig {
        max_recv_msg_size_mib: 1,
        ..Default::default()
    };
    let h = Harness::with(cfg, Arc::default(), true).await;
    let big = traces(vec![span(&"x".repeat(1_100_000), vec![])]);
    let mut client = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let status = client.export(big).await.unwrap_err();
    // RESOURCE_EXHAUSTED without RetryInfo: OTLP clients do not retry it.
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("message length too large"),
        "{status:?}"
    );
    assert_eq!(retry_delay_of(&status), None);
    assert!(h.traces.take().is_empty());
}

#[tokio::test]
async fn grpc_backpressure_is_resource_exhausted_with_retry_info() {
    let refusing = Recorder::refusing(Refused::Backpressure("detection queue full".into()));
    let h = Harness::with(OtlpReceiverConfig::default(), refusing, true).await;
    let mut client = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let status = client.export(chat_request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("detection queue full"));
    assert_eq!(retry_delay_of(&status), Some(Duration::from_secs(1)));
    assert_eq!(h.telemetry.receiver.refused.traces.get(), 2);
    assert_eq!(h.telemetry.receiver.accepted.traces.get(), 0);
}

#[tokio::test]
async fn a_saturated_pipeline_refuses_before_decoding_and_counts_what_it_refused() {
    let h = Harness::with(
        OtlpReceiverConfig::default(),
        Recorder::saturated(Refused::Backpressure("detection queue is full".into())),
        true,
    )
    .await;
    let mut client = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let status = client.export(chat_request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(retry_delay_of(&status), Some(Duration::from_secs(1)));
    assert_eq!(
        h.telemetry.receiver.refused.traces.get(),
        2,
        "spans walked, not decoded"
    );
    // Bytes that would not decode are refused as retryable, not rejected:
    // nothing was decoded.
    let status = h
        .grpc_raw(Signal::Traces, Bytes::from_static(&[0x0a, 0x05, 0x01]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(h.telemetry.receiver.malformed_requests.get(), 0);
    let response = h
        .post(
            "/v1/traces",
            "application/x-protobuf",
            chat_request().encode_to_vec(),
        )
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(h.telemetry.receiver.refused.traces.get(), 4);
}

#[tokio::test]
async fn grpc_shutting_down_is_unavailable() {
    let h = Harness::with(
        OtlpReceiverConfig::default(),
        Recorder::refusing(Refused::Unavailable),
        true,
    )
    .await;
    let mut client = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    let status = client.export(chat_request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn grpc_logs_and_metrics_reach_their_consumers() {
    let h = Harness::start().await;
    let mut logs = LogsServiceClient::connect(h.grpc_url()).await.unwrap();
    logs.export(logs_request()).await.unwrap();
    let mut metrics =
        opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::connect(
            h.grpc_url(),
        )
        .await
        .unwrap();
    metrics.export(metrics_request()).await.unwrap();

    let got_logs = h.logs.take();
    assert_eq!(got_logs[0].signal, Signal::Logs);
    assert_eq!(got_logs[0].items, 3);
    assert_eq!(
        got_logs[0].protobuf,
        Bytes::from(logs_request().encode_to_vec())
    );
    assert!(got_logs[0].traces.is_none());
    let got_metrics = h.metrics.take();
    assert_eq!(got_metrics[0].items, 2);
    assert_eq!(h.telemetry.receiver.accepted.logs.get(), 3);
    assert_eq!(h.telemetry.receiver.accepted.metrics.get(), 2);
    assert!(h.traces.take().is_empty());
}

#[tokio::test]
async fn grpc_signal_without_pipeline_is_unimplemented() {
    let h = Harness::with(OtlpReceiverConfig::default(), Arc::default(), false).await;
    let mut logs = LogsServiceClient::connect(h.grpc_url()).await.unwrap();
    let status = logs.export(logs_request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(status.message().contains("logs"), "{status:?}");
}

#[tokio::test]
async fn grpc_span_with_10000_attributes_is_accepted() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::start().await;
    let attributes = (0..10_000)
        .map(|i| attr(&format!("attr.{i}"), any_value::Value::IntValue(i)))
        .collect();
    let request = traces(vec![span("wide", attributes)]);
    let mut client = TraceServiceClient::connect(h.grpc_url()).await.unwrap();
    client.export(request.clone()).await.unwrap();
    let got = h.traces.take();
    assert_eq!(got[0].protobuf, Bytes::from(request.encode_to_vec()));
    let decoded = got[0].traces.as_ref().unwrap();
    assert_eq!(
        decoded.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .len(),
        10_000
    );
}

// ---- the real OpenTelemetry SDK exporters

/// Ends one span through an SDK tracer provider whose simple processor
/// exports synchronously with `exporter`. Runs on a blocking thread: the
/// SDK's simple processor blocks on the export.
async fn export_with_sdk<E>(build: impl FnOnce() -> E + Send + 'static)
where
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
        // tonic's channel needs a runtime context while it is polled.
        let _guard = handle.enter();
        let exporter = build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_service_name("sdk-agent")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sdk-test");
        let mut span = tracer.start("invoke_agent planner");
        span.set_attribute(opentelemetry::KeyValue::new("gen_ai.agent.name", "planner"));
        span.end();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
}

fn only_span_name(recorder: &Recorder) -> String {
    let got = recorder.take();
    assert_eq!(got.len(), 1, "expected one request");
    let request = ExportTraceServiceRequest::decode(got[0].protobuf.as_ref()).unwrap();
    let rs = &request.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes;
    assert!(service.iter().any(|kv| kv.key == "service.name"
        && kv.value.as_ref().unwrap().value
            == Some(any_value::Value::StringValue("sdk-agent".into()))));
    rs.scope_spans[0].spans[0].name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_otlp_grpc_exporter_delivers_spans() {
    let h = Harness::start().await;
    let url = h.grpc_url();
    export_with_sdk(move || {
        use opentelemetry_otlp::WithExportConfig;
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .build()
            .unwrap()
    })
    .await;
    assert_eq!(only_span_name(&h.traces), "invoke_agent planner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_otlp_http_protobuf_exporter_delivers_spans() {
    let h = Harness::start().await;
    let url = h.http_url("/v1/traces");
    export_with_sdk(move || {
        use opentelemetry_otlp::WithExportConfig;
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .unwrap()
    })
    .await;
    assert_eq!(only_span_name(&h.traces), "invoke_agent planner");
}

// ---- HTTP

#[tokio::test]
async fn http_protobuf_is_passed_on_as_sent_and_answered_in_protobuf() {
    let h = Harness::start().await;
    let bytes = chat_request().encode_to_vec();
    let response = h
        .post("/v1/traces", "application/x-protobuf", bytes.clone())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    assert!(response.bytes().await.unwrap().is_empty());
    let got = h.traces.take();
    assert_eq!(got[0].protobuf, Bytes::from(bytes));
    assert_eq!(got[0].items, 2);
}

#[tokio::test]
async fn http_json_is_decoded_and_re_encoded_once() {
    let h = Harness::start().await;
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"agent"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"chat","kind":3,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000001000000000",
        "attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":"42"}}]}]}]}]}"#;
    let response = h
        .post("/v1/traces", "application/json; charset=utf-8", json)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{}");
    let got = h.traces.take();
    let decoded = ExportTraceServiceRequest::decode(got[0].protobuf.as_ref()).unwrap();
    assert_eq!(got[0].traces.as_ref(), Some(&decoded));
    let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        hex::encode(&span.trace_id),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(
        span.attributes[0].value.as_ref().unwrap().value,
        Some(any_value::Value::IntValue(42))
    );
}

#[tokio::test]
async fn http_gzip_protobuf_is_inflated_to_the_original_bytes() {
    let h = Harness::start().await;
    let bytes = chat_request().encode_to_vec();
    let response = reqwest::Client::new()
        .post(h.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gzip(&bytes, Compression::default()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(h.traces.take()[0].protobuf, Bytes::from(bytes));
}

#[tokio::test]
async fn http_truncated_protobuf_is_400_with_a_status_body() {
    let h = Harness::start().await;
    let bytes = chat_request().encode_to_vec();
    let response = h
        .post(
            "/v1/traces",
            "application/x-protobuf",
            bytes[..bytes.len() - 5].to_vec(),
        )
        .await;
    assert_eq!(response.status(), 400);
    let status = status_of(&response.bytes().await.unwrap());
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.contains("ExportTraceServiceRequest"),
        "{status:?}"
    );
    assert!(h.traces.take().is_empty());
    assert_eq!(h.telemetry.receiver.malformed_requests.get(), 1);
}

#[tokio::test]
async fn http_invalid_json_is_400_with_a_json_status() {
    let h = Harness::start().await;
    let response = h
        .post("/v1/traces", "application/json", r#"{"resourceSpans": 5}"#)
        .await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid OTLP JSON"),
        "{body}"
    );
}

#[tokio::test]
async fn http_invalid_utf8_in_a_string_field_is_400() {
    let h = Harness::start().await;
    let mut bytes = traces(vec![span("NAME-TO-BREAK", vec![])]).encode_to_vec();
    let at = bytes
        .windows(13)
        .position(|w| w == b"NAME-TO-BREAK")
        .unwrap();
    bytes[at] = 0xff;
    let response = h.post("/v1/traces", "application/x-protobuf", bytes).await;
    assert_eq!(response.status(), 400);
    let status = status_of(&response.bytes().await.unwrap());
    assert!(status.message.contains("UTF-8"), "{status:?}");
}

#[tokio::test]
async fn http_wrong_or_missing_content_type_is_415() {
    let h = Harness::start().await;
    let response = h.post("/v1/traces", "text/plain", "hello").await;
    assert_eq!(response.status(), 415);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("text/plain"),
        "{body}"
    );

    let response = reqwest::Client::new()
        .post(h.http_url("/v1/traces"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert!(h.traces.take().is_empty());
}

#[tokio::test]
async fn http_unsupported_content_encoding_is_415() {
    let h = Harness::start().await;
    let response = reqwest::Client::new()
        .post(h.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn http_wrong_method_is_405_and_unknown_path_404() {
    let h = Harness::start().await;
    let response = reqwest::get(h.http_url("/v1/traces")).await.unwrap();
    assert_eq!(response.status(), 405);
    let response = h.post("/v2/traces", "application/x-protobuf", vec![]).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn http_configured_paths_are_served() {
    let cfg = OtlpReceiverConfig {
        traces_url_path: "/otlp/traces".into(),
        ..Default::default()
    };
    let h = Harness::with(cfg, Arc::default(), true).await;
    let bytes = chat_request().encode_to_vec();
    assert_eq!(
        h.post("/otlp/traces", "application/x-protobuf", bytes.clone())
            .await
            .status(),
        200
    );
    assert_eq!(
        h.post("/v1/traces", "application/x-protobuf", bytes)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn http_body_over_the_limit_is_413() {
    let _heavy = HEAVY.lock().await;
    let cfg = OtlpReceiverConfig {
        max_request_body_size_mib: 1,
        ..Default::default()
    };
    let h = Harness::with(cfg, Arc::default(), true).await;
    // Declared length over the limit.
    let response = h
        .post(
            "/v1/traces",
            "application/x-protobuf",
            vec![0u8; (1 << 20) + 1],
        )
        .await;
    assert_eq!(response.status(), 413);
    let status = status_of(&response.bytes().await.unwrap());
    assert!(
        status.message.contains("max_request_body_size"),
        "{status:?}"
    );

    // Chunked, no declared length: the streaming cap catches it.
    let mut stream = tokio::net::TcpStream::connect(h.http).await.unwrap();
    let head = "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..20 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break; // the server may answer and close before we finish
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{}",
        text.lines().next().unwrap_or("")
    );
    assert!(h.traces.take().is_empty());
}

#[tokio::test]
async fn http_body_of_several_mib_under_the_limit_is_accepted() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::start().await;
    // Larger than axum's 2 MB default extractor limit, under our 20 MiB.
    let bytes = traces(vec![span(&"x".repeat(3 << 20), vec![])]).encode_to_vec();
    let response = h
        .post("/v1/traces", "application/x-protobuf", bytes.clone())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.traces.take()[0].protobuf.len(), bytes.len());
}

#[tokio::test]
async fn http_gzip_bomb_is_refused_without_inflating_it() {
    let _heavy = HEAVY.lock().await;
    let h = Harness::start().await;
    // 1 GiB of zeros: 1024 gzip members of 1 MiB each, about 1 MiB on the wire.
    let bomb = gzip(&vec![0u8; 1 << 20], Compression::best()).repeat(1024);
    assert!(bomb.len() < 2 << 20);
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let response = reqwest::Client::new()
        .post(h.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert_eq!(response.status(), 413);
    // The 20 MiB cap plus the 1 MiB body and buffers, nowhere near 1 GiB.
    assert!(peak < 64 << 20, "peak allocation {} MiB", peak >> 20);
    assert!(h.traces.take().is_empty());
}

#[tokio::test]
async fn http_backpressure_is_429_and_shutdown_503_with_retry_after() {
    let refusing = Recorder::refusing(Refused::Backpressure("full".into()));
    let h = Harness::with(OtlpReceiverConfig::default(), refusing, true).await;
    let response = h
        .post(
            "/v1/traces",
            "application/x-protobuf",
            chat_request().encode_to_vec(),
        )
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        status_of(&response.bytes().await.unwrap()).code,
        tonic::Code::ResourceExhausted as i32
    );

    let h = Harness::with(
        OtlpReceiverConfig::default(),
        Recorder::refusing(Refused::Unavailable),
        true,
    )
    .await;
    let response = h.post("/v1/traces", "application/json", "{}").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["code"], tonic::Code::Unavailable as i32);
}

#[tokio::test]
async fn http_logs_and_metrics_reach_their_consumers() {
    let h = Harness::start().await;
    let response = h
        .post(
            "/v1/logs",
            "application/x-protobuf",
            logs_request().encode_to_vec(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let metrics_json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"q",
        "gauge":{"dataPoints":[{"asInt":"1"},{"asDouble":2.5},{"asInt":3}]}}]}]}]}"#;
    let response = h
        .post("/v1/metrics", "application/json", metrics_json)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.logs.take()[0].items, 3);
    let metrics = h.metrics.take();
    assert_eq!(metrics[0].items, 3);
    assert_eq!(metrics[0].signal, Signal::Metrics);
}

#[tokio::test]
async fn http_signal_without_pipeline_is_404() {
    let h = Harness::with(OtlpReceiverConfig::default(), Arc::default(), false).await;
    let response = h
        .post(
            "/v1/metrics",
            "application/x-protobuf",
            metrics_request().encode_to_vec(),
        )
        .await;
    assert_eq!(response.status(), 404);
    assert!(
        status_of(&response.bytes().await.unwrap())
            .message
            .contains("metrics")
    );
}

// ---- lifecycle

#[tokio::test]
async fn cancel_shuts_both_servers_down() {
    let h = Harness::start().await;
    // An open keep-alive connection must not hold shutdown.
    let client = reqwest::Client::new();
    let ok = client
        .post(h.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(chat_request().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    h.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), h.task)
        .await
        .expect("receiver stops")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(h.http).await.is_err());
    assert!(tokio::net::TcpStream::connect(h.grpc).await.is_err());
}

#[tokio::test]
async fn disabled_protocol_is_not_bound_and_busy_port_is_a_clear_error() {
    let cfg = OtlpReceiverConfig {
        grpc: String::new(),
        http: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let receiver = OtlpReceiver::bind(&cfg).await.unwrap();
    assert_eq!(receiver.grpc_addr(), None);
    let taken = receiver.http_addr().unwrap();
    let clash = OtlpReceiverConfig {
        grpc: String::new(),
        http: taken.to_string(),
        ..Default::default()
    };
    let err = OtlpReceiver::bind(&clash).await.unwrap_err().to_string();
    assert!(
        err.contains(&taken.to_string()) && err.contains("OTLP/http"),
        "{err}"
    );
}
