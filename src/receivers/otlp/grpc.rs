//! OTLP/gRPC: the three Export methods served with a raw-bytes codec, so a
//! traces request reaches the pipeline as the exact bytes the client sent.

use super::ingest::{Ingest, Payload, RETRY_DELAY, Rejection};
use super::raw_codec::RawBytesCodec;
use super::rpc_status::RpcStatus;
use crate::listener::HttpListener;
use crate::pipeline::consumer::{Refused, Signal};
use bytes::Bytes;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::codegen::BoxFuture;
use tonic::{Code, Status};

const PROTOCOL: &str = "grpc";
/// HTTP/2 flow-control windows. The 64 KiB default makes a 200 KB request
/// take several round trips; these let a whole request arrive in one.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// Serves OTLP/gRPC (HTTP/2 only) on `listener` until `cancel`, then shuts
/// down gracefully (in-flight requests finish).
pub async fn serve(
    listener: HttpListener,
    ingest: Arc<Ingest>,
    max_message_bytes: usize,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let mut router = axum::Router::new();
    for signal in Signal::ALL {
        let service = ExportService {
            signal,
            ingest: ingest.clone(),
            max_message_bytes,
        };
        router = router.route_service(signal.grpc_path(), service);
    }
    let router = router.fallback(|| async {
        Status::unimplemented("unknown method").into_http::<tonic::body::Body>()
    });
    listener
        .http2_only(STREAM_WINDOW, CONNECTION_WINDOW)
        .serve(router, cancel.cancelled_owned())
        .await
}

/// One Export method as a tower service: tonic does the framing, gzip and
/// size limit; `ExportMethod` does the rest.
#[derive(Clone)]
struct ExportService {
    signal: Signal,
    ingest: Arc<Ingest>,
    max_message_bytes: usize,
}

impl tower::Service<http::Request<axum::body::Body>> for ExportService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<axum::body::Body>) -> Self::Future {
        let method = ExportMethod {
            signal: self.signal,
            ingest: self.ingest.clone(),
        };
        let max_message_bytes = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawBytesCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_bytes);
            let mut response = grpc.unary(method, request).await;
            too_large_is_resource_exhausted(&mut response);
            Ok(response)
        })
    }
}

/// tonic answers a message over the size limit with OUT_OF_RANGE; gRPC (and
/// grpc-go, the Collector's) says RESOURCE_EXHAUSTED. It matters: OTLP
/// exporters retry OUT_OF_RANGE, and a message that is too large fails again
/// every time; RESOURCE_EXHAUSTED without RetryInfo they do not retry.
fn too_large_is_resource_exhausted(response: &mut http::Response<tonic::body::Body>) {
    let status = response.headers_mut().get_mut("grpc-status");
    if let Some(status) = status
        && status.as_bytes() == b"11"
    {
        *status = http::HeaderValue::from_static("8");
    }
}

struct ExportMethod {
    signal: Signal,
    ingest: Arc<Ingest>,
}

impl tonic::server::UnaryService<Bytes> for ExportMethod {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let payload = Payload::Protobuf(request.into_inner());
        let (ingest, signal) = (self.ingest.clone(), self.signal);
        Box::pin(async move {
            ingest
                .ingest(signal, PROTOCOL, payload)
                .await
                // An empty Export*ServiceResponse encodes to zero bytes.
                .map(|()| tonic::Response::new(Bytes::new()))
                .map_err(to_status)
        })
    }
}

/// The OTLP/gRPC status for a rejection (retryable ones carry RetryInfo).
fn to_status(rejection: Rejection) -> Status {
    match rejection {
        Rejection::Malformed(e) => Status::invalid_argument(e.client_message),
        Rejection::Limit(message) => Status::invalid_argument(message),
        Rejection::Refused(refused @ Refused::Backpressure(_)) => {
            RpcStatus::new(Code::ResourceExhausted, refused.to_string())
                .with_retry_delay(RETRY_DELAY)
                .into_tonic()
        }
        Rejection::Refused(refused @ Refused::Unavailable) => {
            RpcStatus::new(Code::Unavailable, refused.to_string())
                .with_retry_delay(RETRY_DELAY)
                .into_tonic()
        }
        Rejection::Refused(refused @ Refused::NoPipeline(_)) => {
            Status::unimplemented(refused.to_string())
        }
    }
}
