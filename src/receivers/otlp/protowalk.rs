//! Counting the items of OTLP protobuf bytes without decoding them: a
//! refusal under load must cost far less than acceptance (the receiver
//! counts what it refuses), and the benchmark sink must stay cheap next to
//! the process it measures.

use super::shape::{Part, Shape};
use crate::pipeline::consumer::Signal;

/// Items of an export request of `signal` (spans, log records, metric data
/// points), or None when the bytes are not protobuf.
pub fn count_items(signal: Signal, bytes: &[u8]) -> Option<u64> {
    match signal {
        Signal::Traces => count_spans(bytes),
        Signal::Logs => count_log_records(bytes),
        Signal::Metrics => count_data_points(bytes),
    }
}

/// Data points of an `ExportMetricsServiceRequest`: resource_metrics = 1 →
/// scope_metrics = 2 → metrics = 2 → gauge 5 / sum 7 / histogram 9 /
/// exponential_histogram 10 / summary 11 → data_points = 1.
pub fn count_data_points(bytes: &[u8]) -> Option<u64> {
    let mut total = 0;
    for_each_field(bytes, 1, |resource_metrics| {
        for_each_field(resource_metrics, 2, |scope_metrics| {
            for_each_field(scope_metrics, 2, |metric| {
                for data in [5, 7, 9, 10, 11] {
                    for_each_field(metric, data, |points| {
                        total += count_fields(points, 1)?;
                        Some(())
                    })?;
                }
                Some(())
            })
        })
    })?;
    Some(total)
}

/// Spans in an `ExportTraceServiceRequest` (resource_spans = 1 →
/// scope_spans = 2 → spans = 2), or None when the bytes are not protobuf.
pub fn count_spans(bytes: &[u8]) -> Option<u64> {
    let mut total = 0;
    for_each_field(bytes, 1, |resource_spans| {
        for_each_field(resource_spans, 2, |scope_spans| {
            total += count_fields(scope_spans, 2)?;
            Some(())
        })
    })?;
    Some(total)
}

/// Log records in an `ExportLogsServiceRequest` (1 → 2 → 2, as traces).
pub fn count_log_records(bytes: &[u8]) -> Option<u64> {
    count_spans(bytes)
}

/// The shape of an export request of `signal`: its counts, its estimated
/// decoded size, and the values nested deeper than `max_value_depth`
/// (found, not descended into, so any nesting costs a bounded walk). An
/// error names what is not protobuf; nothing is allocated per element.
pub fn shape(signal: Signal, bytes: &[u8], max_value_depth: u32) -> Result<Shape, String> {
    let root = match signal {
        Signal::Traces => Msg::ExportTraces,
        Signal::Logs => Msg::ExportLogs,
        Signal::Metrics => Msg::ExportMetrics,
    };
    let mut walk = Walk {
        origin: bytes.as_ptr() as usize,
        max_value_depth,
        shape: Shape::default(),
    };
    walk.shape.decoded_bytes = super::shape::request_size();
    walk.message(root, bytes, 0)?;
    Ok(walk.shape)
}

/// Blanks a too-deep value's payload so it decodes as an empty value of the
/// same length: unknown length-delimited fields (number 15), which prost
/// skips without allocating.
pub fn blank(payload: &mut [u8]) {
    const UNKNOWN_BYTES_KEY: u8 = (15 << 3) | 2;
    let mut rest = payload;
    while !rest.is_empty() {
        // A field of n bytes is its key, a one-byte length and n - 2 zeros;
        // a remainder of one byte cannot be a field, so leave two or more.
        let n = match rest.len() {
            len @ 2..=129 => len,
            130 => 128,
            _ => 129,
        };
        let (field, tail) = rest.split_at_mut(n.min(rest.len()));
        field.fill(0);
        if let [key, len, ..] = field {
            *key = UNKNOWN_BYTES_KEY;
            *len = (n - 2) as u8;
        }
        rest = tail;
    }
}

/// OTLP messages the walk knows (every one that decoding allocates for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    ExportTraces,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    ExportLogs,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    ExportMetrics,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    /// Gauge, sum, histogram, exponential histogram or summary: data points
    /// in field 1, of the point message given.
    MetricData(&'static Msg),
    NumberPoint,
    HistogramPoint,
    ExponentialPoint,
    Buckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    Resource,
    Entity,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What a field of a known message holds.
enum Field {
    /// A message: repeated ones are counted as their part.
    Message(Msg, Option<Part>),
    /// Repeated numbers, packed or not; `fixed` when 8 bytes each.
    Numbers { fixed: bool },
    /// One element of a repeated string.
    Text,
    /// Anything else: scalars, strings, bytes, unknown fields.
    Other,
}

impl Msg {
    fn field(self, number: u64) -> Field {
        use Field::{Message as M, Numbers, Other};
        let kv = M(Msg::KeyValue, Some(Part::KeyValue));
        match (self, number) {
            (Msg::ExportTraces, 1) => M(Msg::ResourceSpans, Some(Part::ResourceGroup)),
            (Msg::ExportLogs, 1) => M(Msg::ResourceLogs, Some(Part::ResourceGroup)),
            (Msg::ExportMetrics, 1) => M(Msg::ResourceMetrics, Some(Part::ResourceGroup)),
            (Msg::ResourceSpans | Msg::ResourceLogs | Msg::ResourceMetrics, 1) => {
                M(Msg::Resource, None)
            }
            (Msg::ResourceSpans, 2) => M(Msg::ScopeSpans, Some(Part::ScopeGroup)),
            (Msg::ResourceLogs, 2) => M(Msg::ScopeLogs, Some(Part::ScopeGroup)),
            (Msg::ResourceMetrics, 2) => M(Msg::ScopeMetrics, Some(Part::ScopeGroup)),
            (Msg::ScopeSpans | Msg::ScopeLogs | Msg::ScopeMetrics, 1) => M(Msg::Scope, None),
            (Msg::ScopeSpans, 2) => M(Msg::Span, Some(Part::Span)),
            (Msg::ScopeLogs, 2) => M(Msg::LogRecord, Some(Part::LogRecord)),
            (Msg::ScopeMetrics, 2) => M(Msg::Metric, Some(Part::Metric)),
            (Msg::Resource, 1) | (Msg::Scope, 3) => kv,
            (Msg::Resource, 3) => M(Msg::Entity, Some(Part::Entity)),
            (Msg::Entity, 3 | 4) => Field::Text,
            (Msg::Span, 9) | (Msg::Event, 3) | (Msg::Link, 4) | (Msg::LogRecord, 6) => kv,
            (Msg::Span, 11) => M(Msg::Event, Some(Part::Event)),
            (Msg::Span, 13) => M(Msg::Link, Some(Part::Link)),
            (Msg::Span, 15) => M(Msg::Status, None),
            (Msg::LogRecord, 5) => M(Msg::AnyValue, None),
            (Msg::Metric, 5 | 7) => M(Msg::MetricData(&Msg::NumberPoint), None),
            (Msg::Metric, 9) => M(Msg::MetricData(&Msg::HistogramPoint), None),
            (Msg::Metric, 10) => M(Msg::MetricData(&Msg::ExponentialPoint), None),
            (Msg::Metric, 11) => M(Msg::MetricData(&Msg::SummaryPoint), None),
            (Msg::Metric, 12) => kv,
            (Msg::MetricData(point), 1) => M(*point, point.as_part()),
            (Msg::NumberPoint | Msg::SummaryPoint, 7) | (Msg::HistogramPoint, 9) => kv,
            (Msg::ExponentialPoint, 1) | (Msg::Exemplar, 7) => kv,
            (Msg::NumberPoint, 5) | (Msg::HistogramPoint, 8) | (Msg::ExponentialPoint, 11) => {
                M(Msg::Exemplar, Some(Part::Exemplar))
            }
            (Msg::HistogramPoint, 6 | 7) => Numbers { fixed: true },
            (Msg::ExponentialPoint, 8 | 9) => M(Msg::Buckets, None),
            (Msg::Buckets, 2) => Numbers { fixed: false },
            (Msg::SummaryPoint, 6) => M(Msg::Quantile, Some(Part::Quantile)),
            (Msg::KeyValue, 2) => M(Msg::AnyValue, None),
            (Msg::AnyValue, 5) => M(Msg::ArrayValue, None),
            (Msg::AnyValue, 6) => M(Msg::KeyValueList, None),
            (Msg::ArrayValue, 1) => M(Msg::AnyValue, Some(Part::Value)),
            (Msg::KeyValueList, 1) => kv,
            _ => Other,
        }
    }

    fn as_part(self) -> Option<Part> {
        match self {
            Msg::NumberPoint => Some(Part::NumberPoint),
            Msg::HistogramPoint => Some(Part::HistogramPoint),
            Msg::ExponentialPoint => Some(Part::ExponentialPoint),
            Msg::SummaryPoint => Some(Part::SummaryPoint),
            _ => None,
        }
    }
}

struct Walk {
    /// Address of the request's first byte, to turn slices into offsets.
    origin: usize,
    max_value_depth: u32,
    shape: Shape,
}

impl Walk {
    /// Walks one message; `depth` is how many values enclose it.
    fn message(&mut self, msg: Msg, mut bytes: &[u8], depth: u32) -> Result<(), String> {
        while !bytes.is_empty() {
            let at = self.offset(bytes);
            let key = varint(&mut bytes).ok_or_else(|| truncated(at))?;
            let (number, wire) = (key >> 3, key & 7);
            let field = msg.field(number);
            match wire {
                0 => {
                    varint(&mut bytes).ok_or_else(|| truncated(at))?;
                    if let Field::Numbers { .. } = field {
                        self.shape.add_numbers(1);
                    }
                }
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    bytes = bytes.get(n..).ok_or_else(|| truncated(at))?;
                    if let Field::Numbers { .. } = field {
                        self.shape.add_numbers(1);
                    }
                }
                2 => {
                    let len = varint(&mut bytes)
                        .and_then(|len| usize::try_from(len).ok())
                        .ok_or_else(|| truncated(at))?;
                    let payload = bytes.get(..len).ok_or_else(|| truncated(at))?;
                    bytes = &bytes[len..];
                    match field {
                        Field::Message(inner, part) => {
                            if let Some(part) = part {
                                self.shape.add(part);
                            }
                            self.submessage(inner, payload, depth)?;
                        }
                        Field::Numbers { fixed: true } => self.shape.add_numbers(len as u64 / 8),
                        Field::Numbers { fixed: false } => {
                            let n = payload.iter().filter(|b| **b < 0x80).count();
                            self.shape.add_numbers(n as u64);
                        }
                        Field::Text => {
                            self.shape.add(Part::Text);
                            self.shape.add_bytes(len as u64);
                        }
                        Field::Other => self.shape.add_bytes(len as u64),
                    }
                }
                _ => {
                    return Err(format!(
                        "wire type {wire} of field {number} at byte {at} is not used by OTLP"
                    ));
                }
            }
        }
        Ok(())
    }

    /// A value nested deeper than the limit is recorded, not entered.
    fn submessage(&mut self, msg: Msg, payload: &[u8], depth: u32) -> Result<(), String> {
        if msg != Msg::AnyValue {
            return self.message(msg, payload, depth);
        }
        if depth >= self.max_value_depth {
            let start = self.offset(payload);
            self.shape.too_deep.push(start..start + payload.len());
            return Ok(());
        }
        self.message(msg, payload, depth + 1)
    }

    fn offset(&self, rest: &[u8]) -> usize {
        (rest.as_ptr() as usize).saturating_sub(self.origin)
    }
}

fn truncated(at: usize) -> String {
    format!("truncated or invalid field at byte {at}")
}

fn count_fields(bytes: &[u8], wanted: u64) -> Option<u64> {
    let mut n = 0;
    for_each_field(bytes, wanted, |_| {
        n += 1;
        Some(())
    })?;
    Some(n)
}

/// Calls `f` with the payload of every length-delimited field `wanted`.
fn for_each_field(
    mut bytes: &[u8],
    wanted: u64,
    mut f: impl FnMut(&[u8]) -> Option<()>,
) -> Option<()> {
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut bytes)?;
            }
            1 => bytes = bytes.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let payload = bytes.get(..len)?;
                if field == wanted {
                    f(payload)?;
                }
                bytes = &bytes[len..];
            }
            5 => bytes = bytes.get(4..)?,
            _ => return None,
        }
    }
    Some(())
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{AgentTrace, request_of};
    use prost::Message;

    #[test]
    fn counts_match_the_decoded_request() {
        let traces: Vec<AgentTrace> = (0..7)
            .map(|i| {
                AgentTrace::new(format!("a{}", i % 3))
                    .service(format!("s{}", i % 2))
                    .tool_calls(i)
                    .http_attempts(2)
                    .seed(u64::from(i))
            })
            .collect();
        let request = request_of(&traces);
        let expected: usize = traces.iter().map(|t| t.spans().len()).sum();
        assert_eq!(count_spans(&request.encode_to_vec()), Some(expected as u64));
        assert_eq!(count_spans(&[]), Some(0));
        assert_eq!(count_spans(&[0x0a, 0x05, 0x01]), None, "truncated");
    }

    #[test]
    fn data_points_are_counted_in_every_kind_of_metric() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
            ScopeMetrics, Sum, metric::Data,
        };
        let metric = |data| Metric {
            name: "m".into(),
            data: Some(data),
            ..Default::default()
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint::default(); 3],
                        })),
                        metric(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint::default(); 2],
                            ..Default::default()
                        })),
                        metric(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint::default(); 4],
                            ..Default::default()
                        })),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(
            count_items(Signal::Metrics, &request.encode_to_vec()),
            Some(9)
        );
    }

    #[test]
    fn shape_counts_what_decoding_allocates() {
        let traces: Vec<AgentTrace> = (0..5)
            .map(|i| {
                AgentTrace::new(format!("a{i}"))
                    .tool_calls(i)
                    .seed(u64::from(i))
            })
            .collect();
        let request = request_of(&traces);
        let spans: usize = traces.iter().map(|t| t.spans().len()).sum();
        // Key-values everywhere, and the values of array values, nested.
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        fn values(v: Option<&AnyValue>) -> usize {
            match v.and_then(|v| v.value.as_ref()) {
                Some(Value::ArrayValue(a)) => {
                    a.values.len() + a.values.iter().map(|v| values(Some(v))).sum::<usize>()
                }
                Some(Value::KvlistValue(l)) => key_values(&l.values),
                _ => 0,
            }
        }
        fn key_values(kvs: &[KeyValue]) -> usize {
            kvs.len()
                + kvs
                    .iter()
                    .map(|kv| values(kv.value.as_ref()))
                    .sum::<usize>()
        }
        let mut attributes = 0;
        for r in &request.resource_spans {
            attributes += r.resource.as_ref().map_or(0, |r| key_values(&r.attributes));
            for s in &r.scope_spans {
                attributes += s.scope.as_ref().map_or(0, |s| key_values(&s.attributes));
                for span in &s.spans {
                    attributes += key_values(&span.attributes);
                    attributes += span
                        .events
                        .iter()
                        .map(|e| key_values(&e.attributes))
                        .sum::<usize>();
                    attributes += span
                        .links
                        .iter()
                        .map(|l| key_values(&l.attributes))
                        .sum::<usize>();
                }
            }
        }
        let bytes = request.encode_to_vec();
        let found = shape(Signal::Traces, &bytes, 16).unwrap();
        assert_eq!(found.items, spans as u64);
        assert_eq!(found.attributes, attributes as u64);
        assert!(found.decoded_bytes > bytes.len() as u64);
        assert!(found.too_deep.is_empty());
        assert!(shape(Signal::Traces, &[0x0a, 0x05, 0x01], 16).is_err());
        let group = shape(Signal::Traces, &[0x0b], 16).unwrap_err();
        assert!(group.contains("wire type 3"), "{group}");
    }

    #[test]
    fn too_deep_values_are_found_and_blanked_to_empty_values() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::AnyValue;
        // A value nested 200 deep: far past prost's own recursion limit.
        let mut request = AgentTrace::new("a").request();
        request.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .push(crate::testdata::kv_nested("deep", 200));
        let bytes = request.encode_to_vec();
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        let found = shape(Signal::Traces, &bytes, 8).unwrap();
        assert_eq!(found.too_deep.len(), 1);
        let blanked = super::super::shape::sanitized(&bytes, &found.too_deep, blank);
        let decoded = ExportTraceServiceRequest::decode(blanked.as_slice()).unwrap();
        assert_eq!(
            decoded.resource_spans[0].scope_spans[0].spans.len(),
            request.resource_spans[0].scope_spans[0].spans.len()
        );
        // Every payload length blanks to an empty value.
        for len in 2..600 {
            let mut payload = vec![0xffu8; len];
            blank(&mut payload);
            let decoded = AnyValue::decode(payload.as_slice()).unwrap();
            assert_eq!(decoded, AnyValue::default(), "{len}");
        }
    }
}
