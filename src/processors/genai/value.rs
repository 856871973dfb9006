//! Reading OTLP attribute values without copying them, and refusing the
//! junk real instrumentations send (negative or absurd counts, NaN).

use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// A token count above this is a bug or an attack, not a call: ignored.
pub const MAX_TOKENS: u64 = 100_000_000;
/// A reported cost above this (USD per call) is ignored.
pub const MAX_REPORTED_COST_USD: f64 = 1_000_000.0;
/// Longest identity, model or error type kept; longer ones are cut.
pub const MAX_NAME_BYTES: usize = 256;

/// The string inside a value, if it is one.
pub fn as_str(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// A scalar value as text (a pid is an int, a namespace a string); `None`
/// for arrays, maps, bytes and empty strings.
pub fn as_text(v: &AnyValue) -> Option<String> {
    match &v.value {
        Some(Value::StringValue(s)) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        Some(Value::IntValue(i)) => Some(i.to_string()),
        Some(Value::BoolValue(b)) => Some(b.to_string()),
        Some(Value::DoubleValue(d)) if d.is_finite() => Some(d.to_string()),
        _ => None,
    }
}

/// A non-empty, trimmed string.
pub fn as_name(v: &AnyValue) -> Option<&str> {
    as_str(v).map(str::trim).filter(|s| !s.is_empty())
}

/// A token count: an int, a whole-ish double or a decimal string, within
/// `0..=MAX_TOKENS`.
pub fn as_count(v: &AnyValue) -> Option<u64> {
    let n = match &v.value {
        Some(Value::IntValue(i)) => u64::try_from(*i).ok()?,
        Some(Value::DoubleValue(f)) if f.is_finite() && *f >= 0.0 => {
            if *f > MAX_TOKENS as f64 {
                return None;
            }
            *f as u64
        }
        Some(Value::StringValue(s)) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    (n <= MAX_TOKENS).then_some(n)
}

/// A reported cost in USD: finite, non-negative, plausible.
pub fn as_cost(v: &AnyValue) -> Option<f64> {
    let f = match &v.value {
        Some(Value::DoubleValue(f)) => *f,
        Some(Value::IntValue(i)) => *i as f64,
        Some(Value::StringValue(s)) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (f.is_finite() && (0.0..=MAX_REPORTED_COST_USD).contains(&f)).then_some(f)
}

/// An HTTP status code (int or string), 100..=599.
pub fn as_http_status(v: &AnyValue) -> Option<u16> {
    let n: i64 = match &v.value {
        Some(Value::IntValue(i)) => *i,
        Some(Value::StringValue(s)) => s.trim().parse().ok()?,
        Some(Value::DoubleValue(f)) if f.is_finite() => *f as i64,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|s| (100..=599).contains(s))
}

/// True when a finish-reason value (string, or array of strings, or a JSON
/// string of an array) says the model stopped to call tools.
pub fn finish_reasons_say_tool_calls(v: &AnyValue) -> bool {
    match &v.value {
        Some(Value::StringValue(s)) => s.contains("tool_call"),
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .any(|x| as_str(x).is_some_and(is_tool_calls_reason)),
        _ => false,
    }
}

/// `tool_calls` (OpenAI, OTel) and `tool_call` (Traceloop 0.62) are one
/// value.
pub fn is_tool_calls_reason(s: &str) -> bool {
    matches!(s, "tool_calls" | "tool_call")
}

/// `s` cut to at most `max` bytes on a char boundary.
pub fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> AnyValue {
        AnyValue {
            value: Some(Value::IntValue(i)),
        }
    }
    fn dbl(f: f64) -> AnyValue {
        AnyValue {
            value: Some(Value::DoubleValue(f)),
        }
    }
    fn s(x: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(x.into())),
        }
    }

    #[test]
    fn counts_refuse_junk() {
        assert_eq!(as_count(&int(42)), Some(42));
        assert_eq!(as_count(&int(-1)), None);
        assert_eq!(as_count(&int(i64::MAX)), None);
        assert_eq!(as_count(&int(MAX_TOKENS as i64 + 1)), None);
        assert_eq!(as_count(&dbl(17.0)), Some(17));
        assert_eq!(as_count(&dbl(f64::NAN)), None);
        assert_eq!(as_count(&dbl(f64::INFINITY)), None);
        assert_eq!(as_count(&dbl(-3.0)), None);
        assert_eq!(as_count(&dbl(1e300)), None);
        assert_eq!(as_count(&s(" 12 ")), Some(12));
        assert_eq!(as_count(&s("twelve")), None);
        assert_eq!(as_count(&AnyValue { value: None }), None);
    }

    #[test]
    fn costs_and_statuses_refuse_junk() {
        assert_eq!(as_cost(&dbl(0.25)), Some(0.25));
        assert_eq!(as_cost(&dbl(-0.25)), None);
        assert_eq!(as_cost(&dbl(f64::NAN)), None);
        assert_eq!(as_http_status(&int(429)), Some(429));
        assert_eq!(as_http_status(&s("503")), Some(503));
        assert_eq!(as_http_status(&int(70_000)), None);
        assert_eq!(as_http_status(&int(-1)), None);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
