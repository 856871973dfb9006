//! The one OTLP client both exporters use: sends protobuf bytes for a signal
//! over gRPC (raw-bytes codec, so forwarded bytes are not re-encoded) or
//! HTTP/protobuf, and classifies failures as the Collector does.

pub mod config;
mod grpc;
mod http;
pub mod retry;

pub use config::{Compression, OtlpClientConfig, Protocol};
pub use retry::{RetryConfig, with_retry};

use crate::pipeline::consumer::Signal;
use bytes::Bytes;
use prost::Message;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a send failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Connection errors, timeouts, HTTP 408/429/5xx, gRPC UNAVAILABLE and
    /// friends. `retry_after` is the server's own hint (Retry-After,
    /// RetryInfo).
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server rejected the data itself (HTTP 400, INVALID_ARGUMENT...):
    /// sending it again would fail again.
    #[error("{message} (permanent, not retried)")]
    Permanent { message: String },
}

/// A client that cannot be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("invalid OTLP exporter config: {0}")]
pub struct ClientError(pub String);

enum Transport {
    Grpc(grpc::GrpcTransport),
    Http(http::HttpTransport),
}

/// Sends OTLP requests to one endpoint. Cheap to share behind an `Arc`;
/// gRPC requests multiplex over one lazily (re)connected channel.
pub struct OtlpClient {
    transport: Transport,
    endpoint: String,
    retry: RetryConfig,
}

impl OtlpClient {
    /// Builds the client; connects lazily, so a downstream that is down at
    /// startup is a retryable send failure later, not a startup error.
    /// Must be called inside a tokio runtime.
    pub fn new(cfg: &OtlpClientConfig) -> Result<Self, ClientError> {
        if let Some(issue) = cfg.validate().first() {
            return Err(ClientError(format!("{}: {}", issue.key, issue.message)));
        }
        let transport = match cfg.protocol {
            Protocol::Grpc => Transport::Grpc(grpc::GrpcTransport::new(cfg)?),
            Protocol::Http => Transport::Http(http::HttpTransport::new(cfg)?),
        };
        Ok(Self {
            transport,
            endpoint: cfg.endpoint.clone(),
            retry: cfg.retry_on_failure.clone(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One attempt: `Ok` only once the server acknowledged the request.
    pub async fn send(&self, signal: Signal, protobuf: Bytes) -> Result<(), SendError> {
        let response = match &self.transport {
            Transport::Grpc(t) => t.send(signal, protobuf).await?,
            Transport::Http(t) => t.send(signal, protobuf).await?,
        };
        log_partial_success(signal, &self.endpoint, &response);
        Ok(())
    }

    /// Sends with the configured `retry_on_failure` policy; `abandon` stops
    /// retrying (shutdown deadline).
    pub async fn send_with_retry(
        &self,
        signal: Signal,
        protobuf: Bytes,
        abandon: &CancellationToken,
    ) -> Result<(), SendError> {
        let what = format!("OTLP {} export to {}", signal.as_str(), self.endpoint);
        with_retry(&self.retry, abandon, &what, || {
            self.send(signal, protobuf.clone())
        })
        .await
    }
}

/// The `partial_success` of any Export*ServiceResponse: the three share
/// field numbers (1: partial_success; in it 1: rejected count, 2: message).
#[derive(Clone, PartialEq, Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The server accepted the request but may have dropped part of it: the
/// OTLP spec says not to retry, so it is logged.
fn log_partial_success(signal: Signal, endpoint: &str, response: &[u8]) {
    if response.is_empty() {
        return;
    }
    if let Ok(ExportResponse {
        partial_success: Some(p),
    }) = ExportResponse::decode(response)
        && (p.rejected > 0 || !p.error_message.is_empty())
    {
        let message: String = p.error_message.chars().take(512).collect();
        tracing::warn!(
            signal = signal.as_str(),
            endpoint,
            rejected = p.rejected,
            "OTLP export partially rejected: {message}"
        );
    }
}

/// An error and its sources, one line ("error sending request: connection
/// refused"), since the top-level message alone rarely says what happened.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
