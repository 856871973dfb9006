//! OTLP/HTTP protobuf sending with reqwest.

use super::config::{Compression, OtlpClientConfig};
use super::{ClientError, SendError, error_chain};
use crate::pipeline::consumer::Signal;
use crate::receivers::otlp::rpc_status::RpcStatus;
use bytes::Bytes;
use flate2::write::GzEncoder;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use prost::Message;
use std::io::Write;
use std::time::Duration;

const PROTOBUF: &str = "application/x-protobuf";
/// Most of a response body we read: enough for any status message, and a
/// misbehaving server cannot make us buffer more.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Longest Retry-After honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub struct HttpTransport {
    client: reqwest::Client,
    /// Full URL per signal: `{endpoint}/v1/{traces,metrics,logs}`.
    urls: [String; 3],
    headers: HeaderMap,
    gzip: bool,
}

impl HttpTransport {
    pub fn new(cfg: &OtlpClientConfig) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| ClientError(format!("HTTP client: {}", error_chain(&e))))?;
        let base = cfg.endpoint.trim_end_matches('/');
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ClientError(format!("headers.{name}: not a valid header name")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                ClientError(format!("headers.{name}: value not allowed in a header"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
        if cfg.compression == Compression::Gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(Self {
            client,
            urls: [Signal::Traces, Signal::Metrics, Signal::Logs]
                .map(|s| format!("{base}{}", s.http_path())),
            headers,
            gzip: cfg.compression == Compression::Gzip,
        })
    }

    fn url(&self, signal: Signal) -> &str {
        match signal {
            Signal::Traces => &self.urls[0],
            Signal::Metrics => &self.urls[1],
            Signal::Logs => &self.urls[2],
        }
    }

    /// One POST; returns the response body on 2xx.
    pub async fn send(&self, signal: Signal, protobuf: Bytes) -> Result<Bytes, SendError> {
        let body = if self.gzip {
            gzip(&protobuf)?
        } else {
            protobuf
        };
        let response = self
            .client
            .post(self.url(signal))
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let message = format!("POST {}: {}", self.url(signal), error_chain(&e));
                if e.is_builder() {
                    SendError::Permanent { message }
                } else {
                    // Connect errors, timeouts, resets: the Collector retries them.
                    SendError::Retryable {
                        message,
                        retry_after: None,
                    }
                }
            })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let is_protobuf = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(PROTOBUF));
        let body = read_capped(response).await;
        if status.is_success() {
            return Ok(body);
        }
        let detail = if is_protobuf {
            RpcStatus::decode(body.as_ref())
                .map(|s| s.message)
                .unwrap_or_default()
        } else {
            String::from_utf8_lossy(&body).chars().take(512).collect()
        };
        let message = format!(
            "POST {}: HTTP {status}: {}",
            self.url(signal),
            detail.trim()
        );
        Err(if is_retryable(status) {
            SendError::Retryable {
                message,
                retry_after,
            }
        } else {
            SendError::Permanent { message }
        })
    }
}

/// 408, 429 and 500-504 are retryable, as in Rotel and the brief the
/// Collector follows; anything else is the data's fault.
fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500..=504)
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured; the
/// backoff applies instead).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

async fn read_capped(mut response: reqwest::Response) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_RESPONSE_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_RESPONSE_BODY {
            break;
        }
    }
    Bytes::from(body)
}

fn gzip(data: &[u8]) -> Result<Bytes, SendError> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .map(Bytes::from)
        .map_err(|e| SendError::Permanent {
            message: format!("gzip compression failed: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 415, 505] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn retry_after_seconds_are_read_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("999999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
