//! Hand-made spans for tests that need one exact shape.

use super::kv::kv_str;
use crate::immune::vitals::TraceId;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// A trace id from a small number (never all zeros).
pub fn trace_id(n: u64) -> TraceId {
    let mut id = [0u8; 16];
    id[0] = 0xab;
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

/// A span of trace `trace` with span id `id` (and parent id `parent`, both
/// small numbers), from `start_ms` to `end_ms` after a fixed epoch.
pub fn span(
    trace: u64,
    id: u64,
    parent: Option<u64>,
    name: &str,
    (start_ms, end_ms): (u64, u64),
    attributes: Vec<KeyValue>,
) -> Span {
    const EPOCH: u64 = 1_700_000_000_000_000_000;
    Span {
        trace_id: trace_id(trace).to_vec(),
        span_id: span_id(id).to_vec(),
        parent_span_id: parent.map(|p| span_id(p).to_vec()).unwrap_or_default(),
        name: name.to_string(),
        start_time_unix_nano: EPOCH + start_ms * 1_000_000,
        end_time_unix_nano: EPOCH + end_ms * 1_000_000,
        attributes,
        ..Default::default()
    }
}

/// The 8-byte id of span number `n` (never all zeros).
pub fn span_id(n: u64) -> [u8; 8] {
    (n | 1 << 63).to_be_bytes()
}

/// `span` marked failed (status ERROR with `message`).
pub fn failed(mut span: Span, message: &str) -> Span {
    span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: message.to_string(),
    });
    span
}

/// The spans in one request under one resource with `service.name`.
pub fn request(service_name: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    request_with_resource(vec![kv_str("service.name", service_name)], spans)
}

pub fn request_with_resource(
    resource: Vec<KeyValue>,
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}
