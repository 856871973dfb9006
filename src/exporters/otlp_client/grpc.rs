//! OTLP/gRPC sending over a tonic channel with the raw-bytes codec.

use super::config::{Compression, OtlpClientConfig};
use super::{ClientError, SendError};
use crate::pipeline::consumer::Signal;
use crate::receivers::otlp::raw_codec::RawBytesCodec;
use crate::receivers::otlp::rpc_status::retry_delay_of;
use bytes::Bytes;
use std::time::Duration;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Same windows as the receiver: a large request should not wait on
/// flow-control round trips.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest response accepted (responses are empty or a short message).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

pub struct GrpcTransport {
    grpc: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
}

impl GrpcTransport {
    pub fn new(cfg: &OtlpClientConfig) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|e| ClientError(format!("endpoint {:?}: {e}", cfg.endpoint)))?
            .connect_timeout(cfg.timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_RESPONSE);
        if cfg.compression == Compression::Gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        let mut metadata = MetadataMap::new();
        for (name, value) in &cfg.headers {
            let key =
                MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    ClientError(format!("headers.{name}: not a valid gRPC metadata key"))
                })?;
            let value = MetadataValue::try_from(value.as_str()).map_err(|_| {
                ClientError(format!(
                    "headers.{name}: value not allowed in gRPC metadata"
                ))
            })?;
            metadata.insert(key, value);
        }
        Ok(Self {
            grpc,
            metadata,
            timeout: cfg.timeout,
        })
    }

    /// One Export call; returns the raw response message.
    pub async fn send(&self, signal: Signal, protobuf: Bytes) -> Result<Bytes, SendError> {
        let mut grpc = self.grpc.clone();
        let mut request = tonic::Request::new(protobuf);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        let path = http::uri::PathAndQuery::from_static(signal.grpc_path());
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(super::error_chain(&e)))?;
            grpc.unary::<Bytes, Bytes, _>(request, path, RawBytesCodec)
                .await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(SendError::Retryable {
                message: format!("no response within {:?}", self.timeout),
                retry_after: None,
            }),
        }
    }
}

/// gRPC codes worth retrying: the Collector's list (cancelled, deadline,
/// resource exhausted, aborted, unavailable, data loss) plus INTERNAL, which
/// tonic reports for HTTP/2 stream resets.
fn classify(status: &tonic::Status) -> SendError {
    let message = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => SendError::Retryable {
            message,
            retry_after: retry_delay_of(status),
        },
        _ => SendError::Permanent { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::otlp::rpc_status::RpcStatus;

    #[test]
    fn classification_follows_the_collector() {
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
        ] {
            assert!(
                matches!(
                    classify(&tonic::Status::new(code, "x")),
                    SendError::Retryable { .. }
                ),
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
            Code::NotFound,
        ] {
            assert!(
                matches!(
                    classify(&tonic::Status::new(code, "x")),
                    SendError::Permanent { .. }
                ),
                "{code:?}"
            );
        }
        let throttled = RpcStatus::new(Code::ResourceExhausted, "slow down")
            .with_retry_delay(Duration::from_secs(7))
            .into_tonic();
        assert_eq!(
            classify(&throttled),
            SendError::Retryable {
                message: "gRPC ResourceExhausted: slow down".into(),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
    }
}
