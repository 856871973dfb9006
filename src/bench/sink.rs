//! The downstream collector of the benchmarks: a minimal OTLP/gRPC server
//! that takes traces and logs as raw bytes, counts spans without decoding
//! them, and hands log requests (immune events) to an observer.

use crate::pipeline::consumer::Signal;
use crate::receivers::otlp::protowalk::{count_log_records, count_spans};
use crate::receivers::otlp::raw_codec::RawBytesCodec;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxFuture;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Called with every decoded logs request and the instant it arrived.
pub type LogObserver = Arc<dyn Fn(Instant, ExportLogsServiceRequest) + Send + Sync>;

/// Largest message the sink takes (the receivers' limit is lower).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub struct SinkCounts {
    pub span_requests: AtomicU64,
    pub spans: AtomicU64,
    pub log_records: AtomicU64,
    /// Requests whose bytes did not walk as protobuf.
    pub malformed: AtomicU64,
    /// Wakes whoever waits for a count.
    pub changed: Notify,
}

impl SinkCounts {
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Waits until `spans() >= target`, or gives up at `deadline`.
    /// Returns whether it got there.
    pub async fn wait_for_spans(&self, target: u64, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.changed.notified();
            if self.spans() >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.spans() >= target;
            }
        }
    }
}

pub struct Sink {
    pub addr: SocketAddr,
    pub counts: Arc<SinkCounts>,
    cancel: CancellationToken,
}

impl Sink {
    pub async fn start(observer: Option<LogObserver>) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(SinkCounts::default());
        let cancel = CancellationToken::new();
        let mut router = axum::Router::new();
        for signal in [Signal::Traces, Signal::Logs] {
            router = router.route_service(
                signal.grpc_path(),
                SinkService {
                    signal,
                    counts: counts.clone(),
                    observer: observer.clone(),
                },
            );
        }
        let server = Server::builder()
            .initial_stream_window_size(4 * 1024 * 1024)
            .initial_connection_window_size(8 * 1024 * 1024)
            .add_routes(Routes::from(router))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                cancel.clone().cancelled_owned(),
            );
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!("bench sink stopped: {e}");
            }
        });
        Ok(Sink {
            addr,
            counts,
            cancel,
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Clone)]
struct SinkService {
    signal: Signal,
    counts: Arc<SinkCounts>,
    observer: Option<LogObserver>,
}

impl tower::Service<http::Request<axum::body::Body>> for SinkService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<axum::body::Body>) -> Self::Future {
        let method = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawBytesCodec)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_MESSAGE);
            Ok(grpc.unary(method, request).await)
        })
    }
}

impl tonic::server::UnaryService<Bytes> for SinkService {
    type Response = Bytes;
    type Future = Ready<Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let arrived = Instant::now();
        let body = request.into_inner();
        let counts = &self.counts;
        match self.signal {
            Signal::Traces => match count_spans(&body) {
                Some(n) => {
                    counts.span_requests.fetch_add(1, Ordering::Relaxed);
                    counts.spans.fetch_add(n, Ordering::Relaxed);
                }
                None => {
                    counts.malformed.fetch_add(1, Ordering::Relaxed);
                }
            },
            _ => {
                counts
                    .log_records
                    .fetch_add(count_log_records(&body).unwrap_or(0), Ordering::Relaxed);
                if let Some(observer) = &self.observer {
                    match ExportLogsServiceRequest::decode(body) {
                        Ok(logs) => observer(arrived, logs),
                        Err(_) => {
                            counts.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        counts.changed.notify_waiters();
        ready(Ok(tonic::Response::new(Bytes::new())))
    }
}
