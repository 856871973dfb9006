//! Counting the items of OTLP protobuf bytes without decoding them: a
//! refusal under load must cost far less than acceptance (the receiver
//! counts what it refuses), and the benchmark sink must stay cheap next to
//! the process it measures.

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
}
