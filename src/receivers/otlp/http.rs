//! OTLP/HTTP: POST protobuf or JSON on the configured paths, answered in the
//! request's encoding with the OTLP status mapping.

use super::inflate::{ContentEncoding, InflateError, inflate};
use super::ingest::{Ingest, Payload, RETRY_DELAY, Rejection};
use super::rpc_status::RpcStatus;
use crate::listener::HttpListener;
use crate::pipeline::consumer::{Refused, Signal};
use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const PROTOCOL: &str = "http";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
/// A client that has not sent its whole body by then is dropped (408), so a
/// slow sender cannot hold a connection and its buffer forever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The body encoding of a request, and so of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

struct HttpState {
    ingest: Arc<Ingest>,
    max_body_bytes: usize,
}

/// Serves OTLP/HTTP on `listener` until `cancel`, then shuts down
/// gracefully. `paths` maps each signal to its URL path.
pub async fn serve(
    listener: HttpListener,
    ingest: Arc<Ingest>,
    paths: [(Signal, String); 3],
    max_body_bytes: usize,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(HttpState {
        ingest,
        max_body_bytes,
    });
    let mut router = Router::new();
    for (signal, path) in paths {
        let state = state.clone();
        // Other methods on these paths get axum's 405 with `Allow: POST`.
        router = router.route(
            &path,
            post(move |request: Request| async move { handle(&state, signal, request).await }),
        );
    }
    let router = router.fallback(|| async {
        error_response(
            Encoding::Json,
            StatusCode::NOT_FOUND,
            RpcStatus::new(Code::Unimplemented, "unknown path; OTLP paths are /v1/traces, /v1/metrics, /v1/logs unless configured otherwise"),
        )
    });
    listener.serve(router, cancel.cancelled_owned()).await
}

async fn handle(state: &HttpState, signal: Signal, request: Request) -> Response {
    let headers = request.headers();
    let encoding = match encoding_of(headers) {
        Ok(encoding) => encoding,
        Err(message) => {
            tracing::warn!(
                signal = signal.as_str(),
                protocol = PROTOCOL,
                "OTLP request rejected: {message}"
            );
            return error_response(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                RpcStatus::new(Code::InvalidArgument, message),
            );
        }
    };
    let compression = match ContentEncoding::from_header(headers.get(header::CONTENT_ENCODING)) {
        Ok(compression) => compression,
        Err(message) => {
            tracing::warn!(
                signal = signal.as_str(),
                protocol = PROTOCOL,
                "OTLP request rejected: {message}"
            );
            return error_response(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                RpcStatus::new(Code::InvalidArgument, message),
            );
        }
    };
    if let Err(rejection) = state
        .ingest
        .consumer(signal, PROTOCOL)
        .and_then(|_| state.ingest.admit(signal, PROTOCOL))
    {
        return rejection_response(encoding, rejection);
    }
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return too_large(signal, encoding, limit);
    }
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(request.into_body(), limit).collect(),
    )
    .await;
    let body = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(signal, encoding, limit);
        }
        Ok(Err(e)) => {
            return malformed(
                state,
                signal,
                encoding,
                format!("could not read the request body: {e}"),
            );
        }
        Err(_) => {
            return error_response(
                encoding,
                StatusCode::REQUEST_TIMEOUT,
                RpcStatus::new(Code::DeadlineExceeded, "request body not received in time"),
            );
        }
    };
    let body = match compression {
        ContentEncoding::Identity => body,
        compression => match inflate(compression, &body, limit) {
            Ok(inflated) => Bytes::from(inflated),
            Err(InflateError::TooLarge { .. }) => return too_large(signal, encoding, limit),
            Err(e @ InflateError::Invalid { .. }) => {
                return malformed(state, signal, encoding, e.to_string());
            }
        },
    };
    let payload = match encoding {
        Encoding::Protobuf => Payload::Protobuf(body),
        Encoding::Json => Payload::Json(body),
    };
    let outcome = state.ingest.ingest(signal, PROTOCOL, payload).await;
    match outcome {
        Ok(()) => success(encoding),
        Err(rejection) => rejection_response(encoding, rejection),
    }
}

/// `Content-Type` without parameters (`; charset=utf-8`), case-insensitive.
fn encoding_of(headers: &HeaderMap) -> Result<Encoding, String> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = value.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case(PROTOBUF) {
        Ok(Encoding::Protobuf)
    } else if media_type.eq_ignore_ascii_case(JSON) {
        Ok(Encoding::Json)
    } else {
        let shown: String = media_type.chars().take(60).collect();
        Err(format!(
            "unsupported Content-Type {shown:?}; OTLP/HTTP accepts {PROTOBUF} or {JSON}"
        ))
    }
}

/// An empty Export*ServiceResponse in the request's encoding.
fn success(encoding: Encoding) -> Response {
    match encoding {
        Encoding::Protobuf => ([(header::CONTENT_TYPE, PROTOBUF)], Bytes::new()).into_response(),
        Encoding::Json => ([(header::CONTENT_TYPE, JSON)], "{}").into_response(),
    }
}

fn too_large(signal: Signal, encoding: Encoding, limit: usize) -> Response {
    let message = format!(
        "request body exceeds max_request_body_size ({limit} bytes, after decompression too)"
    );
    tracing::warn!(
        signal = signal.as_str(),
        protocol = PROTOCOL,
        "OTLP request rejected: {message}"
    );
    error_response(
        encoding,
        StatusCode::PAYLOAD_TOO_LARGE,
        RpcStatus::new(Code::InvalidArgument, message),
    )
}

fn malformed(state: &HttpState, signal: Signal, encoding: Encoding, message: String) -> Response {
    state.ingest.count_malformed();
    tracing::warn!(
        signal = signal.as_str(),
        protocol = PROTOCOL,
        "OTLP request rejected: {message}"
    );
    error_response(
        encoding,
        StatusCode::BAD_REQUEST,
        RpcStatus::new(Code::InvalidArgument, message),
    )
}

/// The OTLP/HTTP response for a rejection: 400, 429/503 with Retry-After
/// (retryable), or 404 when no pipeline takes the signal.
fn rejection_response(encoding: Encoding, rejection: Rejection) -> Response {
    let (status, body, retry) = match rejection {
        Rejection::Malformed(e) => (
            StatusCode::BAD_REQUEST,
            RpcStatus::new(Code::InvalidArgument, e.client_message),
            false,
        ),
        Rejection::Limit(message) => (
            StatusCode::BAD_REQUEST,
            RpcStatus::new(Code::InvalidArgument, message),
            false,
        ),
        Rejection::Refused(refused @ Refused::Backpressure(_)) => (
            StatusCode::TOO_MANY_REQUESTS,
            RpcStatus::new(Code::ResourceExhausted, refused.to_string()),
            true,
        ),
        Rejection::Refused(refused @ Refused::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            RpcStatus::new(Code::Unavailable, refused.to_string()),
            true,
        ),
        Rejection::Refused(refused @ Refused::NoPipeline(_)) => (
            StatusCode::NOT_FOUND,
            RpcStatus::new(Code::Unimplemented, refused.to_string()),
            false,
        ),
    };
    let mut response = error_response(encoding, status, body);
    if retry {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_DELAY.as_secs().max(1)),
        );
    }
    response
}

/// A google.rpc.Status body in the request's encoding, as OTLP/HTTP says.
fn error_response(encoding: Encoding, status: StatusCode, body: RpcStatus) -> Response {
    match encoding {
        Encoding::Protobuf => {
            use prost::Message;
            (
                status,
                [(header::CONTENT_TYPE, PROTOBUF)],
                body.encode_to_vec(),
            )
                .into_response()
        }
        Encoding::Json => (status, [(header::CONTENT_TYPE, JSON)], body.to_json()).into_response(),
    }
}
