//! From request bytes to a validated `Received`, shared by gRPC and HTTP:
//! protobuf requests keep their original bytes; JSON requests are decoded
//! with OTLP JSON rules and encoded to protobuf once.

use super::shape::sanitized;
use super::{jsonscan, protowalk};
use crate::pipeline::consumer::{Received, Signal};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use std::ops::Range;

/// A request that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// For the client: what failed, including the decoder's detail (which
    /// may quote the client's own data).
    pub client_message: String,
    /// For our logs: what failed, never quoting the payload.
    pub log_message: String,
}

fn request_type(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "ExportTraceServiceRequest",
        Signal::Metrics => "ExportMetricsServiceRequest",
        Signal::Logs => "ExportLogsServiceRequest",
    }
}

/// Bytes that are not OTLP protobuf, as the walk over them found.
pub fn not_protobuf(signal: Signal, detail: &str) -> DecodeError {
    // The detail names a field and an offset, never the data.
    let message = format!("invalid OTLP protobuf {}: {detail}", request_type(signal));
    DecodeError {
        client_message: message.clone(),
        log_message: message,
    }
}

/// Decodes an OTLP protobuf request; `Received.protobuf` is `bytes` itself.
/// Values at the `too_deep` ranges are decoded as empty values (from a
/// blanked copy; the bytes handed on are still the received ones).
pub fn from_protobuf(
    signal: Signal,
    bytes: Bytes,
    too_deep: &[Range<usize>],
) -> Result<Received, DecodeError> {
    // prost's message names the field and the problem, not the data.
    let invalid = |e: prost::DecodeError| not_protobuf(signal, &e.to_string());
    let blanked;
    let decoded: &[u8] = if too_deep.is_empty() {
        &bytes
    } else {
        blanked = sanitized(&bytes, too_deep, protowalk::blank);
        &blanked
    };
    let (items, traces) = match signal {
        Signal::Traces => {
            let request = ExportTraceServiceRequest::decode(decoded).map_err(invalid)?;
            (count_spans(&request), Some(request))
        }
        Signal::Metrics => {
            let request = ExportMetricsServiceRequest::decode(decoded).map_err(invalid)?;
            (count_data_points(&request), None)
        }
        Signal::Logs => {
            let request = ExportLogsServiceRequest::decode(decoded).map_err(invalid)?;
            (count_log_records(&request), None)
        }
    };
    Ok(Received {
        signal,
        protobuf: bytes,
        items,
        traces,
        reservation: None,
    })
}

/// Decodes an OTLP JSON request (hex ids, 64-bit integers as numbers or
/// strings, enums as integers) and encodes it to protobuf for downstream;
/// containers at the `too_deep` ranges are decoded (and sent on) empty.
pub fn from_json(
    signal: Signal,
    body: &[u8],
    too_deep: &[Range<usize>],
) -> Result<Received, DecodeError> {
    let blanked;
    let body: &[u8] = if too_deep.is_empty() {
        body
    } else {
        blanked = sanitized(body, too_deep, jsonscan::blank);
        &blanked
    };
    let invalid = |e: serde_json::Error| DecodeError {
        client_message: format!("invalid OTLP JSON {}: {e}", request_type(signal)),
        log_message: format!(
            "invalid OTLP JSON {} ({:?} error at line {} column {})",
            request_type(signal),
            e.classify(),
            e.line(),
            e.column()
        ),
    };
    let (protobuf, items, traces) = match signal {
        Signal::Traces => {
            let request: ExportTraceServiceRequest =
                serde_json::from_slice(body).map_err(invalid)?;
            let items = count_spans(&request);
            (request.encode_to_vec(), items, Some(request))
        }
        Signal::Metrics => {
            let request: ExportMetricsServiceRequest =
                serde_json::from_slice(body).map_err(invalid)?;
            (request.encode_to_vec(), count_data_points(&request), None)
        }
        Signal::Logs => {
            let request: ExportLogsServiceRequest =
                serde_json::from_slice(body).map_err(invalid)?;
            (request.encode_to_vec(), count_log_records(&request), None)
        }
    };
    Ok(Received {
        signal,
        protobuf: Bytes::from(protobuf),
        items,
        traces,
        reservation: None,
    })
}

/// Spans in a decoded request.
pub fn count_spans(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

fn count_log_records(request: &ExportLogsServiceRequest) -> u64 {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len() as u64)
        .sum()
}

/// Metric items are data points, as the Collector counts them.
fn count_data_points(request: &ExportMetricsServiceRequest) -> u64 {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        } as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The OTLP JSON example from the spec, with the encodings a JSON client
    // may use: hex ids, int64 as a string and as a number, enum as integer.
    const TRACE_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"svc"}}]},
      "scopeSpans":[{"scope":{"name":"lib"},"spans":[
        {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
         "parentSpanId":"","name":"chat gpt-4o","kind":3,
         "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
         "attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":"42"}},
                       {"key":"n","value":{"intValue":7}},
                       {"key":"unknownFieldIsIgnored","value":{"stringValue":"x"},"extra":1}],
         "status":{"code":2,"message":"boom"}}]}]}]}"#;

    #[test]
    fn json_follows_otlp_json_encoding() {
        let received = from_json(Signal::Traces, TRACE_JSON.as_bytes(), &[]).unwrap();
        assert_eq!(received.items, 1);
        let request = received.traces.unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(hex::encode(&span.span_id), "eee19b7ec3c1b174");
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.kind, 3);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(Value::IntValue(42))
        );
        assert_eq!(
            span.attributes[1].value.as_ref().unwrap().value,
            Some(Value::IntValue(7))
        );
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        // The protobuf handed downstream is the same request.
        let reencoded = ExportTraceServiceRequest::decode(received.protobuf.as_ref()).unwrap();
        assert_eq!(reencoded, request);
    }

    #[test]
    fn json_with_bad_hex_id_names_the_problem() {
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#;
        let err = from_json(Signal::Traces, body.as_bytes(), &[]).unwrap_err();
        assert!(
            err.client_message.contains("ExportTraceServiceRequest"),
            "{err:?}"
        );
        assert!(err.log_message.contains("line 1"), "{err:?}");
    }

    #[test]
    fn json_metrics_and_logs_count_items() {
        let metrics = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"a","sum":{"dataPoints":[{"asInt":"5","timeUnixNano":"1"},{"asDouble":1.5}],
             "aggregationTemporality":2,"isMonotonic":true}},
            {"name":"b","gauge":{"dataPoints":[{"asDouble":2.0}]}}]}]}]}"#;
        let received = from_json(Signal::Metrics, metrics.as_bytes(), &[]).unwrap();
        assert_eq!(received.items, 3);
        assert!(received.traces.is_none());
        let logs = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"timeUnixNano":"1","severityNumber":9,"body":{"stringValue":"hi"},
             "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}]}"#;
        assert_eq!(
            from_json(Signal::Logs, logs.as_bytes(), &[]).unwrap().items,
            1
        );
    }

    #[test]
    fn protobuf_keeps_original_bytes_and_rejects_garbage() {
        let request = ExportTraceServiceRequest::decode(
            from_json(Signal::Traces, TRACE_JSON.as_bytes(), &[])
                .unwrap()
                .protobuf,
        )
        .unwrap();
        let bytes = Bytes::from(request.encode_to_vec());
        let received = from_protobuf(Signal::Traces, bytes.clone(), &[]).unwrap();
        assert_eq!(received.protobuf, bytes);
        assert_eq!(received.items, 1);

        let truncated = bytes.slice(..bytes.len() - 3);
        let err = from_protobuf(Signal::Traces, truncated, &[]).unwrap_err();
        assert!(
            err.client_message
                .starts_with("invalid OTLP protobuf ExportTraceServiceRequest"),
            "{err:?}"
        );
    }
}
