//! OTLP receiver: gRPC and HTTP, the Collector's defaults and status codes.
//!
//! Bind first (ports are known before anything is served, so tests can bind
//! port 0 and a daemon can fail early), then serve until cancelled:
//!
//! ```ignore
//! let receiver = OtlpReceiver::bind(&cfg).await?;
//! let task = receiver.serve(consumers, telemetry, cancel.clone());
//! cancel.cancel();
//! task.await??;
//! ```

pub mod config;
pub mod decode;
mod grpc;
mod http;
pub mod inflate;
mod ingest;
pub mod jsonscan;
pub mod protowalk;
pub mod raw_codec;
pub mod rpc_status;
pub mod shape;

pub use config::OtlpReceiverConfig;
pub use ingest::{Consumers, RETRY_DELAY};

use crate::listener::{HttpListener, ListenerConfig};
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::consumer::Signal;
use crate::telemetry::Telemetry;
use ingest::Ingest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// After cancellation, how long in-flight requests get to finish before the
/// servers are dropped (idle keep-alive connections do not hold shutdown).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("invalid OTLP receiver config: {0}")]
    Config(String),
    #[error("cannot listen for OTLP/{protocol} on {addr}: {source}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("OTLP/gRPC server failed: {0}")]
    Grpc(std::io::Error),
    #[error("OTLP/HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// A bound, not yet serving, OTLP receiver.
#[derive(Debug)]
pub struct OtlpReceiver {
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    paths: [(Signal, String); 3],
    max_recv_msg_bytes: usize,
    max_request_body_bytes: usize,
    listener: ListenerConfig,
    /// The receiver's id, naming its listeners in the metrics.
    name: String,
    limits: shape::RequestLimits,
    budget: Arc<MemoryBudget>,
}

impl OtlpReceiver {
    /// Binds the enabled endpoints.
    pub async fn bind(cfg: &OtlpReceiverConfig) -> Result<Self, ReceiverError> {
        let issues = cfg.validate();
        if let Some(issue) = issues.first() {
            return Err(ReceiverError::Config(format!(
                "{}: {}",
                issue.key, issue.message
            )));
        }
        let grpc = match cfg.grpc_addr().map_err(ReceiverError::Config)? {
            Some(addr) => Some(listen("grpc", addr).await?),
            None => None,
        };
        let http = match cfg.http_addr().map_err(ReceiverError::Config)? {
            Some(addr) => Some(listen("http", addr).await?),
            None => None,
        };
        Ok(Self {
            grpc,
            http,
            paths: Signal::ALL.map(|s| (s, cfg.url_path(s).to_string())),
            max_recv_msg_bytes: cfg.max_recv_msg_bytes(),
            max_request_body_bytes: cfg.max_request_body_bytes(),
            listener: cfg.listener.clone(),
            name: "otlp".to_string(),
            limits: cfg.request_limits(),
            budget: default_budget(),
        })
    }

    /// Names the receiver (its id) in the listener metrics:
    /// `<name>/grpc`, `<name>/http`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Shares `budget` (the process's) instead of the receiver's own.
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// The bound gRPC address (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `cancel`, then shuts down gracefully within
    /// [`SHUTDOWN_GRACE`]. The task's result is the first server error.
    pub fn serve(
        self,
        consumers: Consumers,
        telemetry: Arc<Telemetry>,
        cancel: CancellationToken,
    ) -> JoinHandle<Result<(), ReceiverError>> {
        let listener = |tcp, protocol: &str| {
            let metrics = telemetry
                .listeners
                .register(&format!("{}/{protocol}", self.name));
            HttpListener::new(tcp, &self.listener, metrics)
        };
        let grpc_listener = self.grpc.map(|tcp| listener(tcp, "grpc"));
        let http_listener = self.http.map(|tcp| listener(tcp, "http"));
        let ingest = Arc::new(Ingest::new(consumers, telemetry, self.limits, self.budget));
        // A child token: a failing server stops this receiver, not the caller.
        let cancel = cancel.child_token();
        let mut servers = tokio::task::JoinSet::new();
        if let Some(listener) = grpc_listener {
            let server = grpc::serve(
                listener,
                ingest.clone(),
                self.max_recv_msg_bytes,
                cancel.clone(),
            );
            servers.spawn(async move { server.await.map_err(ReceiverError::Grpc) });
        }
        if let Some(listener) = http_listener {
            let server = http::serve(
                listener,
                ingest,
                self.paths,
                self.max_request_body_bytes,
                cancel.clone(),
            );
            servers.spawn(async move { server.await.map_err(ReceiverError::Http) });
        }
        tokio::spawn(async move {
            let mut first_error = None;
            let mut record = |joined: Result<Result<(), ReceiverError>, tokio::task::JoinError>| {
                if let Ok(Err(e)) = joined {
                    tracing::error!("{e}");
                    first_error.get_or_insert(e);
                }
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                // A server that stops on its own (it failed) stops the receiver.
                Some(joined) = servers.join_next() => record(joined),
            }
            cancel.cancel();
            let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while let Some(joined) = servers.join_next().await {
                    record(joined);
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    "OTLP receiver: connections still open after {SHUTDOWN_GRACE:?}, closing them"
                );
                servers.abort_all();
            }
            first_error.map_or(Ok(()), Err)
        })
    }
}

/// The budget of a receiver started on its own (tests, tools): the
/// `[service]` defaults.
fn default_budget() -> Arc<MemoryBudget> {
    let (budget, resident) = crate::config::service::ServiceConfig::default().memory_budget();
    MemoryBudget::new(budget, resident)
}

async fn listen(protocol: &'static str, addr: SocketAddr) -> Result<TcpListener, ReceiverError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ReceiverError::Bind {
            protocol,
            addr,
            source,
        })?;
    tracing::info!(
        "OTLP/{protocol} receiver listening on {}",
        listener.local_addr().unwrap_or(addr)
    );
    Ok(listener)
}
