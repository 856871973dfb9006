//! The shape of a request, learnt from its bytes before anything is
//! allocated for it: how many items, attributes and other parts it holds,
//! how deep its values nest, and so what decoding it would cost in memory
//! (the Collector's sizer idea). Filled by the protobuf walk
//! (`protowalk::shape`) and the JSON scan (`jsonscan::shape`).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, SummaryDataPoint, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use std::mem::size_of;
use std::ops::Range;

/// Decoded vectors grow by doubling, and every element may be its own heap
/// allocation: a decoded element costs up to about twice its size.
const GROWTH: u64 = 2;

/// What a repeated element is, for counting and sizing. Parts held inline
/// in their parent (a span's status, a key-value's value) cost nothing of
/// their own and are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    ResourceGroup,
    ScopeGroup,
    Span,
    Event,
    Link,
    LogRecord,
    Metric,
    NumberPoint,
    HistogramPoint,
    ExponentialPoint,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    /// An element of an array value.
    Value,
    /// A resource's entity reference.
    Entity,
    /// An element of a repeated string (an entity's keys).
    Text,
}

impl Part {
    /// In-memory size of one decoded element.
    fn size(self) -> u64 {
        let bytes = match self {
            Part::ResourceGroup => size_of::<ResourceSpans>()
                .max(size_of::<ResourceLogs>())
                .max(size_of::<ResourceMetrics>()),
            Part::ScopeGroup => size_of::<ScopeSpans>()
                .max(size_of::<ScopeLogs>())
                .max(size_of::<ScopeMetrics>()),
            Part::Span => size_of::<Span>(),
            Part::Event => size_of::<span::Event>(),
            Part::Link => size_of::<span::Link>(),
            Part::LogRecord => size_of::<LogRecord>(),
            Part::Metric => size_of::<Metric>(),
            Part::NumberPoint => size_of::<NumberDataPoint>(),
            Part::HistogramPoint => size_of::<HistogramDataPoint>(),
            Part::ExponentialPoint => size_of::<ExponentialHistogramDataPoint>(),
            Part::SummaryPoint => size_of::<SummaryDataPoint>(),
            Part::Quantile => size_of::<ValueAtQuantile>(),
            Part::Exemplar => size_of::<Exemplar>(),
            Part::KeyValue => size_of::<KeyValue>(),
            Part::Value => size_of::<AnyValue>(),
            Part::Entity => size_of::<EntityRef>(),
            Part::Text => size_of::<String>(),
        };
        bytes as u64
    }

    /// The largest part: what an element of unknown kind is sized as.
    pub fn largest() -> Part {
        [
            Part::ResourceGroup,
            Part::ScopeGroup,
            Part::Span,
            Part::Event,
            Part::Link,
            Part::LogRecord,
            Part::Metric,
            Part::NumberPoint,
            Part::HistogramPoint,
            Part::ExponentialPoint,
            Part::SummaryPoint,
            Part::Exemplar,
        ]
        .into_iter()
        .max_by_key(|p| p.size())
        .unwrap_or(Part::Span)
    }
}

/// A request's counts and estimated decoded size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    /// Spans, log records and metric data points (the Collector's items).
    pub items: u64,
    /// Resources, scopes, events, links, metrics, exemplars, quantiles,
    /// entity references.
    pub parts: u64,
    /// Attributes (key-values, at any depth) and array elements.
    pub attributes: u64,
    /// Estimated bytes of the decoded request.
    pub decoded_bytes: u64,
    /// Byte ranges of values nested deeper than the limit: decoded as empty
    /// values, the rest of the request kept.
    pub too_deep: Vec<Range<usize>>,
}

impl Shape {
    /// Counts one repeated element.
    pub fn add(&mut self, part: Part) {
        match part {
            Part::Span
            | Part::LogRecord
            | Part::NumberPoint
            | Part::HistogramPoint
            | Part::ExponentialPoint
            | Part::SummaryPoint => self.items += 1,
            Part::KeyValue | Part::Value => self.attributes += 1,
            _ => self.parts += 1,
        }
        self.decoded_bytes = self.decoded_bytes.saturating_add(part.size() * GROWTH);
    }

    /// Counts `n` repeated numbers (histogram buckets and bounds).
    pub fn add_numbers(&mut self, n: u64) {
        self.decoded_bytes = self
            .decoded_bytes
            .saturating_add(n.saturating_mul(8 * GROWTH));
    }

    /// Counts the bytes of a string or bytes field.
    pub fn add_bytes(&mut self, n: u64) {
        self.decoded_bytes = self.decoded_bytes.saturating_add(n);
    }

    /// The first limit this request exceeds, as a message naming it.
    pub fn exceeds(&self, limits: &RequestLimits) -> Option<String> {
        let checks = [
            (
                self.items,
                limits.max_items,
                "spans, log records or data points",
                "max_items_per_request",
            ),
            (
                self.parts,
                limits.max_items,
                "resources, scopes, events, links, metrics or exemplars",
                "max_items_per_request",
            ),
            (
                self.attributes,
                limits.max_attributes,
                "attributes and array values",
                "max_attributes_per_request",
            ),
        ];
        checks.into_iter().find_map(|(count, max, what, key)| {
            (count > max).then(|| format!("too many items: {count} {what} exceed {key} ({max})"))
        })
    }
}

/// Per-request bounds, from `[receivers.otlp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_items: u64,
    pub max_attributes: u64,
    /// Attribute values nested deeper than this are truncated.
    pub max_value_depth: u32,
}

/// `bytes` with each too-deep range blanked so that it decodes as an empty
/// value, by `blank` (which keeps the range's length, so nothing around it
/// moves).
pub fn sanitized(bytes: &[u8], too_deep: &[Range<usize>], blank: fn(&mut [u8])) -> Vec<u8> {
    let mut copy = bytes.to_vec();
    for range in too_deep {
        if let Some(slice) = copy.get_mut(range.clone()) {
            blank(slice);
        }
    }
    copy
}

/// Bytes of the decoded request itself (the rest is in its parts).
pub fn request_size() -> u64 {
    size_of::<ExportTraceServiceRequest>()
        .max(size_of::<ExportLogsServiceRequest>())
        .max(size_of::<ExportMetricsServiceRequest>()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_exceeded_key() {
        let limits = RequestLimits {
            max_items: 2,
            max_attributes: 3,
            max_value_depth: 4,
        };
        let mut shape = Shape::default();
        for _ in 0..2 {
            shape.add(Part::Span);
        }
        shape.add(Part::Event);
        assert_eq!(shape.exceeds(&limits), None);
        shape.add(Part::LogRecord);
        let message = shape.exceeds(&limits).unwrap();
        assert!(message.contains("max_items_per_request (2)"), "{message}");
        let mut shape = Shape::default();
        for _ in 0..4 {
            shape.add(Part::KeyValue);
        }
        let message = shape.exceeds(&limits).unwrap();
        assert!(
            message.contains("4 attributes and array values exceed max_attributes_per_request (3)"),
            "{message}"
        );
        assert!(shape.decoded_bytes >= 4 * size_of::<KeyValue>() as u64);
    }
}
