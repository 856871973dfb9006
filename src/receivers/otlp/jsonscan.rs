//! The shape of an OTLP/JSON request from one pass over its bytes, before
//! serde builds anything: every object and array element is counted by the
//! key it sits under (an upper bound: an element under a key serde ignores
//! is counted too), and the lists holding containers nested deeper than the
//! limit are found, to be blanked to `[]` so the rest of the request is kept.

use super::shape::{Part, Shape};

/// Containers enclosing an attribute value at the shallowest place one
/// sits (an exemplar's filtered attributes), and the containers each level
/// of value nesting adds at most (`{"kvlistValue":{"values":[{"value":`).
const BASE_DEPTH: u32 = 16;
const DEPTH_PER_VALUE: u32 = 4;

/// What an element under `key` decodes to.
enum Kind {
    Part(Part),
    /// An object held inline in its parent (a span's status, a value).
    Inline,
    /// Numbers of a repeated numeric field.
    Numbers,
    /// Ignored by the decoder.
    Unknown,
}

fn kind_of(key: &[u8]) -> Kind {
    match key {
        b"resourceSpans" | b"resourceLogs" | b"resourceMetrics" => Kind::Part(Part::ResourceGroup),
        b"scopeSpans" | b"scopeLogs" | b"scopeMetrics" => Kind::Part(Part::ScopeGroup),
        b"spans" => Kind::Part(Part::Span),
        b"events" => Kind::Part(Part::Event),
        b"links" => Kind::Part(Part::Link),
        b"logRecords" => Kind::Part(Part::LogRecord),
        b"metrics" => Kind::Part(Part::Metric),
        // The largest of the points: the key does not say which kind.
        b"dataPoints" => Kind::Part(Part::ExponentialPoint),
        b"quantileValues" => Kind::Part(Part::Quantile),
        b"exemplars" => Kind::Part(Part::Exemplar),
        b"attributes" | b"metadata" | b"filteredAttributes" | b"values" => {
            Kind::Part(Part::KeyValue)
        }
        b"bucketCounts" | b"explicitBounds" => Kind::Numbers,
        b"entityRefs" => Kind::Part(Part::Entity),
        b"idKeys" | b"descriptionKeys" => Kind::Part(Part::Text),
        b"resource"
        | b"scope"
        | b"status"
        | b"value"
        | b"body"
        | b"gauge"
        | b"sum"
        | b"histogram"
        | b"exponentialHistogram"
        | b"summary"
        | b"positive"
        | b"negative"
        | b"arrayValue"
        | b"kvlistValue" => Kind::Inline,
        _ => Kind::Unknown,
    }
}

/// Container depth beyond which an OTLP/JSON request holds values nested
/// deeper than `max_value_depth`.
pub fn depth_limit(max_value_depth: u32) -> u32 {
    BASE_DEPTH + DEPTH_PER_VALUE * max_value_depth
}

/// Blanks a too-deep container to an empty one of the same kind and length.
pub fn blank(container: &mut [u8]) {
    let empty: &[u8] = match container.first() {
        Some(b'[') => b"[]",
        _ => b"{}",
    };
    container.fill(b' ');
    if let Some(start) = container.get_mut(..2) {
        start.copy_from_slice(empty);
    }
}

/// One open container: where it started and the kind of its elements.
struct Open {
    start: usize,
    array: bool,
    /// For an array, the kind its elements are counted as.
    elements: Option<&'static [u8]>,
}

/// Scans `body`; never fails (malformed JSON is serde's to report, and a
/// prefix is counted as serde would decode it).
pub fn shape(body: &[u8], max_value_depth: u32) -> Shape {
    let limit = depth_limit(max_value_depth) as usize;
    let mut shape = Shape::default();
    shape.decoded_bytes = super::shape::request_size();
    // String bytes are copied at most once, and the request is then encoded
    // to protobuf (no larger than its JSON).
    shape.add_bytes(2 * body.len() as u64);
    let mut stack: Vec<Open> = Vec::new();
    // The last key read, and whether a value is awaited in an array.
    let mut key: &[u8] = b"";
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                let end = string_end(body, i);
                let s = &body[i + 1..end.saturating_sub(1).max(i + 1)];
                let is_key = body[end..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b':');
                if is_key {
                    key = s;
                } else if let Some(open) = stack.last()
                    && open.array
                {
                    count(&mut shape, open.elements.unwrap_or(b""), false);
                }
                i = end;
                continue;
            }
            c @ (b'{' | b'[') => {
                let array = c == b'[';
                // Under an array, an element is known by the array's key;
                // in an object, by the key just read.
                let under = match stack.last() {
                    Some(Open {
                        array: true,
                        elements,
                        ..
                    }) => elements.unwrap_or(b""),
                    Some(_) => key,
                    None => b"",
                };
                if stack.len() >= limit {
                    // Too deep: the innermost open list is cut to `[]` (an
                    // empty list of values is valid where an empty key-value
                    // is not), and the scan goes on after it.
                    let cut = stack.iter().rposition(|o| o.array);
                    let start = cut.map_or(i, |at| stack[at].start);
                    let end = container_end(body, start);
                    shape.too_deep.push(start..end);
                    stack.truncate(cut.unwrap_or(stack.len()));
                    i = end;
                    continue;
                }
                if !array && !stack.is_empty() {
                    count(&mut shape, under, true);
                }
                stack.push(Open {
                    start: i,
                    array,
                    elements: array.then(|| static_key(under)),
                });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let start = i;
                while i < body.len()
                    && !matches!(body[i], b',' | b']' | b'}' | b':')
                    && !body[i].is_ascii_whitespace()
                {
                    i += 1;
                }
                if let Some(open) = stack.last()
                    && open.array
                {
                    count(&mut shape, open.elements.unwrap_or(b""), false);
                }
                if i == start {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    shape
}

/// The key an array's elements are counted under, as one of the known keys
/// (so no reference into the body outlives the scan of its array).
fn static_key(key: &[u8]) -> &'static [u8] {
    const KNOWN: [&[u8]; 15] = [
        b"resourceSpans",
        b"resourceLogs",
        b"resourceMetrics",
        b"scopeSpans",
        b"scopeLogs",
        b"scopeMetrics",
        b"spans",
        b"events",
        b"links",
        b"logRecords",
        b"metrics",
        b"dataPoints",
        b"quantileValues",
        b"exemplars",
        b"values",
    ];
    const MORE: [&[u8]; 8] = [
        b"entityRefs",
        b"idKeys",
        b"descriptionKeys",
        b"attributes",
        b"metadata",
        b"filteredAttributes",
        b"bucketCounts",
        b"explicitBounds",
    ];
    KNOWN
        .into_iter()
        .chain(MORE)
        .find(|k| *k == key)
        .unwrap_or(b"")
}

/// Counts one element under `key`: objects as their part, scalars only in
/// numeric arrays (strings and numbers elsewhere are in the byte bound).
fn count(shape: &mut Shape, key: &[u8], object: bool) {
    match (kind_of(key), object) {
        (Kind::Part(part), true) => shape.add(part),
        // An array value's elements are values, not key-values.
        (Kind::Part(Part::KeyValue), false) => shape.add(Part::Value),
        (Kind::Part(Part::Text), false) => shape.add(Part::Text),
        (Kind::Numbers, false) => shape.add_numbers(1),
        // An object under a key serde ignores costs nothing; one under an
        // inline key is in its parent's size.
        _ => {}
    }
}

/// Index just past the string starting at `start` (its opening quote).
fn string_end(body: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    body.len()
}

/// Index just past the container starting at `start`.
fn container_end(body: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < body.len() {
        match body[i] {
            b'"' => {
                i = string_end(body, i);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_key_and_bounds_empty_objects() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{"attributes":[
            {"key":"a","value":{"arrayValue":{"values":[{"intValue":1},{"stringValue":"x"}]}}}],
            "status":{}}]}]}],"ignored":[{},{},{}]}"#;
        let shape = shape(body, 8);
        assert_eq!(shape.items, 2);
        assert_eq!(shape.parts, 2, "one resource and one scope group");
        assert_eq!(shape.attributes, 3, "one key-value, two array values");
        assert!(shape.too_deep.is_empty());

        let mut many = b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[".to_vec();
        for _ in 0..1000 {
            many.extend_from_slice(b"{},");
        }
        many.extend_from_slice(b"{}]}]}]}");
        assert_eq!(super::shape(&many, 8).items, 1001);
    }

    #[test]
    fn too_deep_values_are_cut_to_empty_lists_and_the_rest_decodes() {
        use crate::testdata::{AgentTrace, kv_nested};
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::AnyValue;
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let mut request = AgentTrace::new("a").request();
        let spans = request.resource_spans[0].scope_spans[0].spans.len();
        request.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .push(kv_nested("deep", 40));
        let mut body = serde_json::to_vec(&request).unwrap();
        let found = shape(&body, 4);
        assert_eq!(found.too_deep.len(), 1);
        assert_eq!(found.items as usize, spans);
        for range in &found.too_deep {
            blank(&mut body[range.clone()]);
        }
        let decoded: ExportTraceServiceRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), spans);
        // Kept down to the limit, empty below it.
        let depth = |mut v: &AnyValue| {
            let mut n = 0;
            while let Some(Value::KvlistValue(list)) = &v.value {
                n += 1;
                match list.values.first().and_then(|kv| kv.value.as_ref()) {
                    Some(inner) => v = inner,
                    None => break,
                }
            }
            n
        };
        let attributes = &decoded.resource_spans[0].scope_spans[0].spans[0].attributes;
        let deep = attributes.iter().find(|kv| kv.key == "deep").unwrap();
        let kept = depth(deep.value.as_ref().unwrap());
        assert!((4..10).contains(&kept), "{kept} levels kept");
    }
}
