//! The exporters against real OTLP receivers on real sockets: tonic servers
//! built from opentelemetry-proto's generated services, agent-immune's own
//! raw-bytes OTLP receiver, and small axum OTLP/HTTP servers.

use agent_immune::exporters::events::{self, EventsConfig};
use agent_immune::exporters::otlp_client::{Compression, OtlpClientConfig, Protocol, RetryConfig};
use agent_immune::exporters::otlp_forward::{self, ForwardItem, OtlpForwardConfig};
use agent_immune::immune::event::Event;
use agent_immune::pipeline::consumer::{Consumer, Received, Refused, Signal};
use agent_immune::receivers::otlp::{Consumers, OtlpReceiver, OtlpReceiverConfig};
use agent_immune::telemetry::Telemetry;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---- test data

/// A traces request in non-canonical protobuf: an unknown field (99) is
/// appended. Any decode + re-encode on the way would drop it, so equal
/// bytes at the far end prove the exporter forwarded the original.
fn forwarded_bytes() -> (Bytes, u64) {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    Span {
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        name: "chat gpt-4o".into(),
                        ..Default::default()
                    };
                    3
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut bytes = request.encode_to_vec();
    bytes.extend_from_slice(&[0x98, 0x06, 0x2a]); // field 99, varint 42
    assert_eq!(
        ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap(),
        request
    );
    assert_ne!(request.encode_to_vec(), bytes);
    (Bytes::from(bytes), 3)
}

fn infection() -> Event {
    Event {
        id: "01HZ-infection-1".into(),
        body: "planner infected: token_spike at 7.2 sigma".into(),
        ..agent_immune::testdata::infection_event()
    }
}

/// Retries after milliseconds, not seconds, so tests run fast.
fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        max_elapsed_time: Duration::from_secs(20),
        ..RetryConfig::default()
    }
}

fn forward_config(endpoint: String, protocol: Protocol) -> OtlpForwardConfig {
    OtlpForwardConfig {
        endpoint,
        protocol,
        retry_on_failure: fast_retry(),
        ..OtlpForwardConfig::default()
    }
}

fn events_config(endpoint: String, protocol: Protocol) -> EventsConfig {
    EventsConfig {
        console: false,
        otlp: Some(OtlpClientConfig {
            retry_on_failure: fast_retry(),
            ..OtlpClientConfig::new(endpoint, protocol)
        }),
        ..EventsConfig::default()
    }
}

/// Forwards `items` through a fresh exporter, then closes it (drop the
/// sender, await the task): its counters are final when this returns.
async fn forward_all(cfg: &OtlpForwardConfig, items: Vec<ForwardItem>) -> Arc<Telemetry> {
    let telemetry = Arc::new(Telemetry::default());
    let (tx, task) = otlp_forward::start(
        "otlp_forward",
        cfg,
        telemetry.clone(),
        CancellationToken::new(),
    )
    .unwrap();
    for item in items {
        tx.send(item).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    telemetry
}

async fn export_events(cfg: &EventsConfig, batch: Vec<Event>) -> Arc<Telemetry> {
    let telemetry = Arc::new(Telemetry::default());
    let (tx, task) = events::start(cfg, telemetry.clone(), CancellationToken::new()).unwrap();
    for event in batch {
        assert!(events::enqueue(&tx, event, &telemetry));
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    telemetry
}

/// Forwards the sample traces (`forwarded_bytes`) once through `cfg`:
/// the bytes sent, their span count, and the exporter's final counters.
async fn forward_sample(cfg: &OtlpForwardConfig) -> (Bytes, u64, Arc<Telemetry>) {
    let (bytes, items) = forwarded_bytes();
    let telemetry = forward_all(cfg, vec![traces_item(bytes.clone(), items)]).await;
    (bytes, items, telemetry)
}

fn traces_item(bytes: Bytes, items: u64) -> ForwardItem {
    ForwardItem {
        signal: Signal::Traces,
        protobuf: bytes,
        items,
    }
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .unwrap();
    out
}

// ---- downstream 1: agent-immune's own OTLP receiver (raw bytes as received)

#[derive(Default)]
struct Recorder(Mutex<Vec<Received>>);

impl Consumer for Recorder {
    fn consume(&self, received: Received) -> Result<(), Refused> {
        self.0.lock().unwrap().push(received);
        Ok(())
    }
}

async fn raw_receiver() -> (SocketAddr, Arc<Recorder>, CancellationToken) {
    let cfg = OtlpReceiverConfig {
        grpc: "127.0.0.1:0".into(),
        http: String::new(),
        ..OtlpReceiverConfig::default()
    };
    let receiver = OtlpReceiver::bind(&cfg).await.unwrap();
    let addr = receiver.grpc_addr().unwrap();
    let recorder = Arc::new(Recorder::default());
    let cancel = CancellationToken::new();
    let consumers = Consumers {
        traces: Some(recorder.clone() as Arc<dyn Consumer>),
        ..Consumers::default()
    };
    receiver.serve(consumers, Arc::default(), cancel.clone());
    (addr, recorder, cancel)
}

// ---- downstream 2: tonic servers from opentelemetry-proto's generated services

#[derive(Default)]
struct GrpcSink {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    logs: Mutex<Vec<(ExportLogsServiceRequest, Option<String>)>>,
    /// Calls answered with this status before the sink starts accepting.
    fail: Mutex<VecDeque<tonic::Status>>,
    calls: std::sync::atomic::AtomicU32,
}

impl GrpcSink {
    fn failing(statuses: Vec<tonic::Status>) -> Arc<Self> {
        Arc::new(Self {
            fail: Mutex::new(statuses.into()),
            ..Self::default()
        })
    }
    fn next_failure(&self) -> Option<tonic::Status> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.fail.lock().unwrap().pop_front()
    }
    fn calls(&self) -> u32 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(status) = self.next_failure() {
            return Err(status);
        }
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if let Some(status) = self.next_failure() {
            return Err(status);
        }
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.logs.lock().unwrap().push((request.into_inner(), auth));
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

async fn serve_grpc_sink(listener: TcpListener, sink: Arc<GrpcSink>) -> CancellationToken {
    let cancel = CancellationToken::new();
    let gzip = tonic::codec::CompressionEncoding::Gzip;
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::from_arc(sink.clone()).accept_compressed(gzip))
        .add_service(LogsServiceServer::from_arc(sink).accept_compressed(gzip))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            cancel.clone().cancelled_owned(),
        );
    tokio::spawn(server);
    cancel
}

async fn grpc_sink(sink: Arc<GrpcSink>) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, serve_grpc_sink(listener, sink).await)
}

// ---- downstream 3: an axum OTLP/HTTP server recording raw requests

struct HttpRecord {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct HttpSink {
    got: Mutex<Vec<HttpRecord>>,
    /// Responses for the first requests; afterwards 200.
    script: Mutex<VecDeque<(StatusCode, Option<&'static str>)>>,
    /// When set, requests wait for it before being answered.
    gate: Option<Arc<Notify>>,
    arrived: Notify,
}

impl HttpSink {
    fn scripted(script: Vec<(StatusCode, Option<&'static str>)>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            ..Self::default()
        })
    }
    fn take(&self) -> Vec<HttpRecord> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

async fn http_handler(State(sink): State<Arc<HttpSink>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    sink.got.lock().unwrap().push(HttpRecord {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
    });
    sink.arrived.notify_one();
    if let Some(gate) = &sink.gate {
        gate.notified().await;
    }
    let scripted = sink.script.lock().unwrap().pop_front();
    match scripted {
        Some((status, retry_after)) => {
            let mut response =
                (status, [("content-type", "text/plain")], "scripted failure").into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.parse().unwrap());
            }
            response
        }
        None => ([("content-type", "application/x-protobuf")], Bytes::new()).into_response(),
    }
}

fn serve_http_sink(listener: TcpListener, sink: Arc<HttpSink>) {
    let app = axum::Router::new().fallback(http_handler).with_state(sink);
    tokio::spawn(async move { axum::serve(listener, app).await });
}

async fn http_sink(sink: Arc<HttpSink>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    serve_http_sink(listener, sink);
    url
}

// ---- otlp_forward

#[tokio::test]
async fn forward_grpc_sends_the_original_bytes() {
    let (addr, recorder, _cancel) = raw_receiver().await;
    let cfg = forward_config(format!("http://{addr}"), Protocol::Grpc);
    let (bytes, items, telemetry) = forward_sample(&cfg).await;
    let got = recorder.0.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].protobuf, bytes);
    assert_eq!(telemetry.forward.sent.get(), items);
    assert_eq!(telemetry.forward.send_failed.get(), 0);
    assert_eq!(telemetry.forward.queue_size.get(), 0);
}

#[tokio::test]
async fn forward_grpc_gzip_arrives_as_the_original_bytes() {
    let (addr, recorder, _cancel) = raw_receiver().await;
    let cfg = OtlpForwardConfig {
        compression: Compression::Gzip,
        ..forward_config(format!("http://{addr}"), Protocol::Grpc)
    };
    let (bytes, _, _) = forward_sample(&cfg).await;
    assert_eq!(recorder.0.lock().unwrap()[0].protobuf, bytes);
}

#[tokio::test]
async fn forward_grpc_reaches_a_generated_trace_service() {
    let sink = Arc::new(GrpcSink::default());
    let (url, _cancel) = grpc_sink(sink.clone()).await;
    let (bytes, items, telemetry) = forward_sample(&forward_config(url, Protocol::Grpc)).await;
    let got = sink.traces.lock().unwrap();
    assert_eq!(got[0], ExportTraceServiceRequest::decode(bytes).unwrap());
    assert_eq!(telemetry.forward.sent.get(), items);
}

#[tokio::test]
async fn forward_http_sends_the_original_bytes_to_the_signal_path() {
    let sink = Arc::new(HttpSink::default());
    let url = http_sink(sink.clone()).await;
    let (bytes, items) = forwarded_bytes();
    let mut cfg = forward_config(format!("{url}/"), Protocol::Http);
    cfg.headers
        .insert("authorization".into(), "Bearer t0ken".into());
    let logs = ForwardItem {
        signal: Signal::Logs,
        protobuf: Bytes::from_static(b""),
        items: 0,
    };
    let telemetry = forward_all(&cfg, vec![traces_item(bytes.clone(), items), logs]).await;
    let mut got = sink.take();
    got.sort_by(|a, b| b.path.cmp(&a.path));
    assert_eq!(got[0].path, "/v1/traces");
    assert_eq!(got[0].body, bytes);
    assert_eq!(got[0].headers["content-type"], "application/x-protobuf");
    assert_eq!(got[0].headers["authorization"], "Bearer t0ken");
    assert!(got[0].headers.get("content-encoding").is_none());
    assert_eq!(got[1].path, "/v1/logs");
    assert_eq!(telemetry.forward.sent.get(), items);
}

#[tokio::test]
async fn forward_http_gzip_compresses_the_original_bytes() {
    let sink = Arc::new(HttpSink::default());
    let url = http_sink(sink.clone()).await;
    let cfg = OtlpForwardConfig {
        compression: Compression::Gzip,
        ..forward_config(url, Protocol::Http)
    };
    let (bytes, _, _) = forward_sample(&cfg).await;
    let got = sink.take();
    assert_eq!(got[0].headers["content-encoding"], "gzip");
    assert_eq!(gunzip(&got[0].body), bytes.to_vec());
}

#[tokio::test]
async fn forward_http_retries_after_503_then_succeeds() {
    let sink = HttpSink::scripted(vec![
        (StatusCode::SERVICE_UNAVAILABLE, Some("0")),
        (StatusCode::TOO_MANY_REQUESTS, None),
    ]);
    let url = http_sink(sink.clone()).await;
    let (bytes, items, telemetry) = forward_sample(&forward_config(url, Protocol::Http)).await;
    let got = sink.take();
    assert_eq!(got.len(), 3, "503, 429, then accepted");
    assert!(got.iter().all(|r| r.body == bytes));
    assert_eq!(telemetry.forward.sent.get(), items);
    assert_eq!(telemetry.forward.send_failed.get(), 0);
}

#[tokio::test]
async fn forward_http_permanent_400_is_not_retried_and_counted_failed() {
    let sink = HttpSink::scripted(vec![(StatusCode::BAD_REQUEST, None)]);
    let url = http_sink(sink.clone()).await;
    let (_, items, telemetry) = forward_sample(&forward_config(url, Protocol::Http)).await;
    assert_eq!(sink.take().len(), 1);
    assert_eq!(telemetry.forward.sent.get(), 0);
    assert_eq!(telemetry.forward.send_failed.get(), items);
}

#[tokio::test]
async fn forward_grpc_retries_unavailable_but_not_invalid_argument() {
    let sink = GrpcSink::failing(vec![tonic::Status::unavailable("restarting")]);
    let (url, _cancel) = grpc_sink(sink.clone()).await;
    let (_, items, telemetry) = forward_sample(&forward_config(url, Protocol::Grpc)).await;
    assert_eq!(sink.calls(), 2);
    assert_eq!(sink.traces.lock().unwrap().len(), 1);
    assert_eq!(telemetry.forward.sent.get(), items);

    let sink = GrpcSink::failing(vec![tonic::Status::invalid_argument("bad data")]);
    let (url, _cancel) = grpc_sink(sink.clone()).await;
    let (_, items, telemetry) = forward_sample(&forward_config(url, Protocol::Grpc)).await;
    assert_eq!(sink.calls(), 1);
    assert_eq!(telemetry.forward.send_failed.get(), items);
}

/// A port where connections are accepted and dropped at once: the
/// downstream is "down", observably (each attempt is one accepted
/// connection).
async fn down_then_up(listener: TcpListener, attempts_before_up: usize) -> TcpListener {
    let addr = listener.local_addr().unwrap();
    for _ in 0..attempts_before_up {
        let (stream, _) = listener.accept().await.unwrap();
        drop(stream);
    }
    drop(listener);
    TcpListener::bind(addr).await.unwrap()
}

/// A downstream at the returned URL that is down for `attempts`
/// connections, then served by `serve`; the task ends once it is up.
async fn comes_up_after<F, Fut>(attempts: usize, serve: F) -> (String, JoinHandle<Fut::Output>)
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let up = tokio::spawn(async move { serve(down_then_up(listener, attempts).await).await });
    (url, up)
}

#[tokio::test]
async fn forward_grpc_delivers_after_the_downstream_comes_up() {
    let sink = Arc::new(GrpcSink::default());
    let (url, up) = comes_up_after(2, {
        let sink = sink.clone();
        |listener| serve_grpc_sink(listener, sink)
    })
    .await;
    let (bytes, items, telemetry) = forward_sample(&forward_config(url, Protocol::Grpc)).await;
    let _server = up.await.unwrap();
    assert_eq!(
        sink.traces.lock().unwrap()[0],
        ExportTraceServiceRequest::decode(bytes).unwrap()
    );
    assert_eq!(telemetry.forward.sent.get(), items);
    assert_eq!(telemetry.forward.send_failed.get(), 0);
}

#[tokio::test]
async fn forward_http_delivers_after_the_downstream_comes_up() {
    let sink = Arc::new(HttpSink::default());
    let (url, up) = comes_up_after(2, {
        let sink = sink.clone();
        |listener| async move { serve_http_sink(listener, sink) }
    })
    .await;
    let (bytes, items, telemetry) = forward_sample(&forward_config(url, Protocol::Http)).await;
    up.await.unwrap();
    assert_eq!(sink.take()[0].body, bytes);
    assert_eq!(telemetry.forward.sent.get(), items);
}

#[tokio::test]
async fn forward_queue_full_is_visible_to_try_reserve_and_cancel_drains_it() {
    let gate = Arc::new(Notify::new());
    let sink = Arc::new(HttpSink {
        gate: Some(gate.clone()),
        ..HttpSink::default()
    });
    let url = http_sink(sink.clone()).await;
    let mut cfg = forward_config(url, Protocol::Http);
    cfg.sending_queue.queue_size = 2;
    cfg.sending_queue.num_consumers = 1;
    let telemetry = Arc::new(Telemetry::default());
    let cancel = CancellationToken::new();
    let (tx, task) =
        otlp_forward::start("otlp_forward", &cfg, telemetry.clone(), cancel.clone()).unwrap();
    let (bytes, items) = forwarded_bytes();
    tx.try_reserve(bytes.len())
        .unwrap()
        .send(traces_item(bytes.clone(), items));
    sink.arrived.notified().await; // the one consumer is now busy
    tx.try_reserve(bytes.len())
        .unwrap()
        .send(traces_item(bytes.clone(), items));
    tx.try_reserve(bytes.len())
        .unwrap()
        .send(traces_item(bytes.clone(), items));
    assert!(
        tx.try_reserve(0).is_err(),
        "queue of 2 is full while the consumer is busy"
    );

    cancel.cancel();
    // Release the three requests one by one (one consumer: each arrives
    // after the previous one was answered).
    gate.notify_one();
    for _ in 0..2 {
        sink.arrived.notified().await;
        gate.notify_one();
    }
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sink.take().len(), 3);
    assert_eq!(telemetry.forward.sent.get(), 3 * items);
    assert_eq!(telemetry.forward.queue_size.get(), 0);
    assert_eq!(telemetry.forward.queue_bytes.get(), 0);
    assert!(tx.try_reserve(0).is_err(), "closed after shutdown");
}

// ---- events

fn attribute<'a>(record: &'a LogRecord, key: &str) -> Option<&'a Value> {
    record
        .attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn assert_infection_record(request: &ExportLogsServiceRequest) {
    let resource_logs = &request.resource_logs[0];
    let resource = resource_logs.resource.as_ref().unwrap();
    let service = resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .unwrap();
    assert_eq!(
        service.value.as_ref().unwrap().value,
        Some(Value::StringValue("agent-immune".into()))
    );
    let scope = &resource_logs.scope_logs[0];
    assert_eq!(scope.scope.as_ref().unwrap().name, "agent-immune");
    let record = &scope.log_records[0];
    assert_eq!(record.event_name, "agent_immune.infection");
    assert_eq!(
        attribute(record, "event.name"),
        Some(&Value::StringValue("agent_immune.infection".into()))
    );
    assert_eq!(
        attribute(record, "event.id"),
        Some(&Value::StringValue("01HZ-infection-1".into()))
    );
    assert_eq!(
        attribute(record, "gen_ai.agent.id"),
        Some(&Value::StringValue("planner".into()))
    );
    assert_eq!(
        attribute(record, "agent_immune.max_deviation"),
        Some(&Value::DoubleValue(7.2))
    );
    assert_eq!(
        attribute(record, "agent_immune.anomaly_count"),
        Some(&Value::IntValue(2))
    );
    assert_eq!(
        attribute(record, "agent_immune.severe"),
        Some(&Value::BoolValue(true))
    );
    assert!(
        matches!(attribute(record, "agent_immune.anomalies"), Some(Value::ArrayValue(a)) if a.values.len() == 2)
    );
    assert_eq!(record.trace_id, vec![0xab; 16]);
    assert_eq!(record.span_id, vec![0xcd; 8]);
    assert_eq!(record.severity_number, 13);
    assert_eq!(record.severity_text, "WARN");
    assert_eq!(record.time_unix_nano, 1_700_000_000_000_000_000);
    assert!(record.observed_time_unix_nano > record.time_unix_nano);
    assert_eq!(
        record.body.as_ref().unwrap().value,
        Some(Value::StringValue(
            "planner infected: token_spike at 7.2 sigma".into()
        ))
    );
}

#[tokio::test]
async fn events_arrive_as_log_records_over_grpc_with_headers() {
    let sink = Arc::new(GrpcSink::default());
    let (url, _cancel) = grpc_sink(sink.clone()).await;
    let mut cfg = events_config(url, Protocol::Grpc);
    if let Some(otlp) = cfg.otlp.as_mut() {
        otlp.headers
            .insert("Authorization".into(), "Bearer k".into());
        otlp.compression = Compression::Gzip;
    }
    let telemetry = export_events(&cfg, vec![infection()]).await;
    let got = sink.logs.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_infection_record(&got[0].0);
    assert_eq!(got[0].1.as_deref(), Some("Bearer k"));
    assert_eq!(telemetry.events.sent.get(), 1);
    assert_eq!(telemetry.events.send_failed.get(), 0);
}

#[tokio::test]
async fn events_arrive_as_log_records_over_http_gzip() {
    let sink = Arc::new(HttpSink::default());
    let url = http_sink(sink.clone()).await;
    let mut cfg = events_config(url, Protocol::Http);
    if let Some(otlp) = cfg.otlp.as_mut() {
        otlp.compression = Compression::Gzip;
    }
    let telemetry = export_events(&cfg, vec![infection()]).await;
    let got = sink.take();
    assert_eq!(got[0].path, "/v1/logs");
    assert_eq!(got[0].headers["content-encoding"], "gzip");
    let request = ExportLogsServiceRequest::decode(gunzip(&got[0].body).as_slice()).unwrap();
    assert_infection_record(&request);
    assert_eq!(telemetry.events.sent.get(), 1);
}

#[tokio::test]
async fn events_queued_together_go_in_one_request() {
    let sink = Arc::new(GrpcSink::default());
    let (url, _cancel) = grpc_sink(sink.clone()).await;
    let batch: Vec<Event> = (0..50)
        .map(|i| Event {
            id: format!("ev-{i}"),
            ..infection()
        })
        .collect();
    let telemetry = export_events(&events_config(url, Protocol::Grpc), batch).await;
    let got = sink.logs.lock().unwrap();
    let records: Vec<&LogRecord> = got
        .iter()
        .flat_map(|(r, _)| &r.resource_logs[0].scope_logs[0].log_records)
        .collect();
    assert_eq!(records.len(), 50);
    assert!(
        got.len() < 50,
        "batched: {} requests for 50 events",
        got.len()
    );
    // In order.
    assert_eq!(
        attribute(records[49], "event.id"),
        Some(&Value::StringValue("ev-49".into()))
    );
    assert_eq!(telemetry.events.sent.get(), 50);
}

#[tokio::test]
async fn events_retry_after_unavailable_and_drop_on_permanent_error() {
    let sink = GrpcSink::failing(vec![
        tonic::Status::unavailable("down"),
        tonic::Status::unavailable("down"),
    ]);
    let (url, _cancel) = grpc_sink(sink.clone()).await;
    let telemetry = export_events(&events_config(url, Protocol::Grpc), vec![infection()]).await;
    assert_eq!(sink.calls(), 3);
    assert_eq!(telemetry.events.sent.get(), 1);

    let sink = HttpSink::scripted(vec![(StatusCode::BAD_REQUEST, None)]);
    let url = http_sink(sink.clone()).await;
    let telemetry = export_events(&events_config(url, Protocol::Http), vec![infection()]).await;
    assert_eq!(sink.take().len(), 1);
    assert_eq!(telemetry.events.send_failed.get(), 1);
    assert_eq!(telemetry.events.sent.get(), 0);
}

#[tokio::test]
async fn events_delivered_after_the_downstream_comes_up() {
    let sink = Arc::new(GrpcSink::default());
    let (url, up) = comes_up_after(1, {
        let sink = sink.clone();
        |listener| serve_grpc_sink(listener, sink)
    })
    .await;
    let telemetry = export_events(&events_config(url, Protocol::Grpc), vec![infection()]).await;
    let _server = up.await.unwrap();
    assert_infection_record(&sink.logs.lock().unwrap()[0].0);
    assert_eq!(telemetry.events.sent.get(), 1);
}

#[tokio::test]
async fn enqueue_after_shutdown_is_counted_as_enqueue_failed() {
    let telemetry = Arc::new(Telemetry::default());
    let cancel = CancellationToken::new();
    let cfg = EventsConfig {
        console: false,
        ..EventsConfig::default()
    };
    let (tx, task) = events::start(&cfg, telemetry.clone(), cancel.clone()).unwrap();
    cancel.cancel();
    task.await.unwrap();
    assert!(!events::enqueue(&tx, infection(), &telemetry));
    assert_eq!(telemetry.events.enqueue_failed.get(), 1);
}

#[test]
fn console_json_line_parses_as_json() {
    let line = events::console::json_line(&infection());
    assert_eq!(line.lines().count(), 1);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["event.name"], "agent_immune.infection");
    assert_eq!(value["gen_ai.agent.id"], "planner");
    assert_eq!(value["severity"], "WARN");
    assert_eq!(value["trace_id"], "ab".repeat(16));
    assert_eq!(value["span_id"], "cd".repeat(8));
    assert_eq!(value["attributes"]["agent_immune.max_deviation"], 7.2);
    assert_eq!(
        value["attributes"]["agent_immune.anomalies"][1],
        "cost_spike"
    );
    assert_eq!(value["time"], "2023-11-14T22:13:20.000Z");

    let text = events::console::text_line(&infection());
    assert!(
        text.starts_with("2023-11-14T22:13:20.000Z WARN  agent_immune.infection agent=planner"),
        "{text}"
    );
}
