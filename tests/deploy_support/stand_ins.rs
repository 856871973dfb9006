//! Loki's stand-in: an OTLP/HTTP logs receiver that keeps what it got.

use super::loki_mapping;
use crate::common;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub struct Push {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub request: ExportLogsServiceRequest,
}

#[derive(Default)]
pub struct LokiSink {
    pub pushes: Mutex<Vec<Push>>,
    pub changed: Notify,
}

impl LokiSink {
    pub fn records(&self) -> Vec<LogRecord> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| p.request.resource_logs.iter())
            .flat_map(|rl| rl.scope_logs.iter())
            .flat_map(|sl| sl.log_records.iter().cloned())
            .collect()
    }

    pub fn entries(&self) -> Vec<loki_mapping::Entry> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| loki_mapping::entries(&p.request))
            .collect()
    }

    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        common::until_notified(&self.changed, what, timeout, || check(self)).await
    }
}

/// An HTTP server that takes OTLP/HTTP logs as Loki's distributor does
/// (protobuf, optionally gzip) and answers 204, as Loki does.
pub async fn fake_loki(addr: SocketAddr) -> Arc<LokiSink> {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use std::io::Read;

    async fn push(
        State(sink): State<Arc<LokiSink>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let mut raw = body.to_vec();
        if header("content-encoding") == "gzip" {
            let mut inflated = Vec::new();
            if flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut inflated)
                .is_err()
            {
                return StatusCode::BAD_REQUEST;
            }
            raw = inflated;
        }
        let Ok(request) = ExportLogsServiceRequest::decode(&raw[..]) else {
            return StatusCode::BAD_REQUEST;
        };
        sink.pushes.lock().unwrap().push(Push {
            method: method.to_string(),
            path: uri.path().to_string(),
            content_type: header("content-type"),
            request,
        });
        sink.changed.notify_waiters();
        StatusCode::NO_CONTENT
    }

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let sink = Arc::new(LokiSink::default());
    let app = axum::Router::new().fallback(push).with_state(sink.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    sink
}
