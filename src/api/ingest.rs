//! JSON vitals ingest, for agents that do not speak OTLP: one object or an
//! array of them, each one turn. Every field is checked (type, range,
//! finite) and a refusal names the field; a batch is all or nothing.

use super::error::ApiError;
use crate::immune::agent_id;
use crate::immune::vitals::{UnixNanos, Vitals, VitalsSource};
use serde_json::{Map, Value};

/// The fields a record may carry.
pub const FIELDS: [&str; 16] = [
    "agent_id",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "retries",
    "success",
    "cost",
    "model",
    "error_type",
    "prompt_hash",
    "timestamp",
    "llm_calls",
    "errors",
    "trace_id",
    "span_id",
];

/// One day: no single turn runs longer.
const MAX_LATENCY_MS: f64 = 86_400_000.0;
const MAX_TOKENS: u64 = 1_000_000_000;
const MAX_COUNT: u64 = 100_000;
/// USD for one turn.
const MAX_COST: f64 = 1_000_000.0;
const MAX_TEXT_CHARS: usize = 256;
/// 2000-01-01T00:00:00Z.
const MIN_TIMESTAMP_S: f64 = 946_684_800.0;
/// 3000-01-01T00:00:00Z: a larger number is milliseconds, not seconds.
const MAX_TIMESTAMP_S: f64 = 32_503_680_000.0;
/// Clock skew tolerated for timestamps ahead of the server's clock; a
/// later end is taken as now.
const MAX_FUTURE_S: f64 = 3600.0;

/// Reads the body: one record or an array of at most `max_batch`. `now`
/// stands in for a missing timestamp; `fresh_ids` makes ids for turns
/// that come without a trace.
pub fn parse_batch(
    body: &[u8],
    max_batch: usize,
    now: UnixNanos,
    fresh_ids: &mut dyn FnMut() -> ([u8; 16], [u8; 8]),
) -> Result<Vec<Vitals>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty body: send a JSON object with agent_id and latency_ms, or an array of them",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| not_json(body, &e))?;
    match value {
        Value::Object(record) => Ok(vec![parse_record(&record, "", now, fresh_ids)?]),
        Value::Array(records) => {
            if records.is_empty() {
                return Err(ApiError::bad_request("empty array: no vitals to ingest"));
            }
            if records.len() > max_batch {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "{} records in one request; at most {max_batch} (split the batch)",
                        records.len()
                    ),
                ));
            }
            records
                .iter()
                .enumerate()
                .map(|(i, record)| match record {
                    Value::Object(r) => parse_record(r, &format!("[{i}]."), now, fresh_ids),
                    _ => Err(ApiError::field(format!("[{i}]"), "must be a JSON object")),
                })
                .collect()
        }
        _ => Err(ApiError::bad_request(
            "body must be a JSON object or an array of objects",
        )),
    }
}

/// A JSON syntax error, blaming the field whose value could not be read
/// when there is one (`NaN`, `Infinity`, `1e999` have no JSON number form).
fn not_json(body: &[u8], e: &serde_json::Error) -> ApiError {
    let message = format!("body is not valid JSON: {e}");
    match key_before(body, e.line(), e.column()) {
        Some(field) if FIELDS.contains(&field.as_str()) => ApiError {
            field: Some(field.clone()),
            message: format!("{field}: not a valid JSON value ({e}); numbers must be finite"),
            ..ApiError::bad_request(message)
        },
        _ => ApiError::bad_request(message),
    }
}

/// The object key whose value is at `line`:`column` (1-based, as serde_json
/// reports them): the last `"key":` before that point.
fn key_before(body: &[u8], line: usize, column: usize) -> Option<String> {
    let line_start = if line <= 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map(|(i, _)| i + 1)?
    };
    let end = (line_start + column).min(body.len());
    let before = std::str::from_utf8(&body[..end]).ok()?;
    let colon = before.rfind(':')?;
    let key_part = before[..colon].trim_end().strip_suffix('"')?;
    let open = key_part.rfind('"')?;
    let key = &key_part[open + 1..];
    (!key.is_empty() && key.len() <= 64).then(|| key.to_string())
}

/// Field access with the record's path prefix in every error.
struct Record<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
}

impl Record<'_> {
    fn err(&self, field: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::field(format!("{}{field}", self.prefix), problem)
    }

    /// The value, `None` when absent or null.
    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// `n` itself when it is within `max`, else an error quoting both.
    fn at_most<T: PartialOrd + std::fmt::Display>(
        &self,
        field: &str,
        n: T,
        max: T,
    ) -> Result<T, ApiError> {
        if n > max {
            return Err(self.err(field, format!("{n} is above the limit of {max}")));
        }
        Ok(n)
    }

    fn number(&self, field: &str, max: f64) -> Result<Option<f64>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let n = value
            .as_f64()
            .ok_or_else(|| self.err(field, format!("must be a number, got {}", kind(value))))?;
        if !n.is_finite() {
            return Err(self.err(field, "must be a finite number"));
        }
        if n < 0.0 {
            return Err(self.err(field, "must not be negative"));
        }
        self.at_most(field, n, max).map(Some)
    }

    fn count(&self, field: &str, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let n = match value {
            Value::Number(n) if n.is_u64() => n.as_u64(),
            Value::Number(n) if n.is_i64() => {
                return Err(self.err(field, "must not be negative"));
            }
            // 3.0 is a count, 3.5 is not.
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                .map(|f| f as u64),
            _ => None,
        };
        let n = n.ok_or_else(|| {
            self.err(
                field,
                format!("must be a non-negative integer, got {}", describe(value)),
            )
        })?;
        self.at_most(field, n, max).map(Some)
    }

    fn text(&self, field: &str, max_chars: usize) -> Result<Option<String>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        let s = value
            .as_str()
            .ok_or_else(|| self.err(field, format!("must be a string, got {}", kind(value))))?;
        if s.chars().count() > max_chars {
            return Err(self.err(field, format!("longer than {max_chars} characters")));
        }
        if s.chars().any(char::is_control) {
            return Err(self.err(field, "must not contain control characters"));
        }
        Ok((!s.is_empty()).then(|| s.to_string()))
    }

    fn hex_id<const N: usize>(&self, field: &str) -> Result<Option<[u8; N]>, ApiError> {
        let Some(s) = self.text(field, 2 * N)? else {
            // Given empty, it is no id (the document's pattern says so).
            if self.get(field).is_some() {
                return Err(self.err(field, format!("must be {} hex digits", 2 * N)));
            }
            return Ok(None);
        };
        let mut out = [0u8; N];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|_| self.err(field, format!("must be {} hex digits", 2 * N)))?;
        if out == [0u8; N] {
            return Err(self.err(field, "must not be all zeros (an invalid id in OTLP)"));
        }
        Ok(Some(out))
    }

    /// The turn's end: Unix seconds from 2000 up to the year 3000, or an
    /// RFC 3339 date-time of those years (any offset). A time more than
    /// [`MAX_FUTURE_S`] ahead of the server's clock is taken as now: a turn
    /// cannot end in the future, and the bound moves with the clock, so the
    /// OpenAPI document (which states the fixed range) and the server agree.
    fn timestamp(&self, now: UnixNanos) -> Result<Option<UnixNanos>, ApiError> {
        let Some(value) = self.get("timestamp") else {
            return Ok(None);
        };
        let seconds = match value {
            Value::Number(n) => {
                let seconds = n
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| self.err("timestamp", "must be a finite number of Unix seconds"))?;
                if seconds < MIN_TIMESTAMP_S {
                    return Err(self.err("timestamp", "before the year 2000"));
                }
                if seconds >= MAX_TIMESTAMP_S {
                    return Err(self.err(
                        "timestamp",
                        "after the year 2999 (Unix seconds are expected, not milliseconds)",
                    ));
                }
                seconds
            }
            Value::String(s) => rfc3339_seconds(s).map_err(|e| {
                self.err(
                    "timestamp",
                    format!("not an RFC 3339 date-time of the years 2000 to 2999 (e.g. 2025-01-31T12:00:00Z): {e}"),
                )
            })?,
            _ => {
                return Err(self.err(
                    "timestamp",
                    format!(
                        "must be Unix seconds or an RFC 3339 string, got {}",
                        kind(value)
                    ),
                ));
            }
        };
        if seconds > now as f64 / 1e9 + MAX_FUTURE_S {
            return Ok(Some(now));
        }
        Ok(Some((seconds.max(0.0) * 1e9) as UnixNanos))
    }
}

/// Unix seconds of an RFC 3339 date-time (`T` or `t`, `Z`, `z` or an
/// offset `+hh:mm`) whose year, as written, is 2000 to 2999.
fn rfc3339_seconds(text: &str) -> Result<f64, String> {
    if !text.is_ascii() || text.len() < 20 {
        return Err("too short".into());
    }
    let (local, offset_s) = match text.as_bytes()[text.len() - 1] {
        b'Z' | b'z' => (&text[..text.len() - 1], 0.0),
        _ => {
            let (local, offset) = text.split_at(text.len() - 6);
            let sign = match offset.as_bytes()[0] {
                b'+' => 1.0,
                b'-' => -1.0,
                _ => return Err("no Z or +hh:mm offset".into()),
            };
            let hours: u8 = offset[1..3].parse().map_err(|_| "bad offset")?;
            let minutes: u8 = offset[4..].parse().map_err(|_| "bad offset")?;
            if &offset[3..4] != ":" || hours > 23 || minutes > 59 {
                return Err("bad offset".into());
            }
            (
                local,
                sign * (f64::from(hours) * 3600.0 + f64::from(minutes) * 60.0),
            )
        }
    };
    let year: u16 = local[..4].parse().map_err(|_| "bad year")?;
    if !(2000..3000).contains(&year) {
        return Err(format!("year {year}"));
    }
    if !matches!(local.as_bytes()[10], b'T' | b't') {
        return Err("no T between date and time".into());
    }
    let utc = format!("{}T{}Z", &local[..10], &local[11..]);
    let t = humantime::parse_rfc3339(&utc).map_err(|e| e.to_string())?;
    let seconds = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "before 1970")?
        .as_secs_f64();
    Ok(seconds - offset_s)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short rendering of a refused value (numbers shown, the rest by kind).
fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

fn parse_record(
    map: &Map<String, Value>,
    prefix: &str,
    now: UnixNanos,
    fresh_ids: &mut dyn FnMut() -> ([u8; 16], [u8; 8]),
) -> Result<Vitals, ApiError> {
    let r = Record { map, prefix };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let shown: String = unknown.chars().take(64).collect();
        return Err(r.err(
            &shown,
            format!("unknown field (known: {})", FIELDS.join(", ")),
        ));
    }
    let agent_id = match r.get("agent_id") {
        None => return Err(r.err("agent_id", "is required")),
        Some(Value::String(s)) => agent_id::parse(s)
            .map_err(|e| r.err("agent_id", e.to_string()))?
            .to_string(),
        Some(other) => {
            return Err(r.err("agent_id", format!("must be a string, got {}", kind(other))));
        }
    };
    let latency_ms = r
        .number("latency_ms", MAX_LATENCY_MS)?
        .ok_or_else(|| r.err("latency_ms", "is required"))?;
    let input_tokens = r.count("input_tokens", MAX_TOKENS)?;
    let output_tokens = r.count("output_tokens", MAX_TOKENS)?;
    let success = match r.get("success") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(r.err(
                "success",
                format!("must be true or false, got {}", kind(other)),
            ));
        }
    };
    let error_type = r.text("error_type", MAX_TEXT_CHARS)?;
    // A failed turn counts one error unless the agent says how many.
    let errors = r.count("errors", MAX_COUNT)?.unwrap_or(u64::from(!success));
    let usage_known = input_tokens.is_some() || output_tokens.is_some();
    let ids = match (r.hex_id::<16>("trace_id")?, r.hex_id::<8>("span_id")?) {
        (Some(t), Some(s)) => (t, s),
        (Some(t), None) => (t, fresh_ids().1),
        (None, Some(_)) => return Err(r.err("span_id", "needs trace_id as well")),
        (None, None) => fresh_ids(),
    };
    let small = |field: &str| -> Result<u32, ApiError> {
        Ok(r.count(field, MAX_COUNT)?.map_or(0, |n| n as u32))
    };
    Ok(Vitals {
        agent_id,
        trace_id: ids.0,
        root_span_id: ids.1,
        end_time: r.timestamp(now)?.unwrap_or(now),
        latency_ms,
        input_tokens: input_tokens.unwrap_or(0),
        output_tokens: output_tokens.unwrap_or(0),
        usage_known,
        llm_calls: match r.count("llm_calls", MAX_COUNT)? {
            Some(n) => n as u32,
            // One LLM call per reported turn, unless it reported no usage.
            None => u32::from(usage_known),
        },
        tool_calls: small("tool_calls")?,
        retries: small("retries")?,
        errors: errors as u32,
        error_type,
        cost_usd: r.number("cost", MAX_COST)?.unwrap_or(0.0),
        model: r.text("model", MAX_TEXT_CHARS)?,
        prompt_hash: r.text("prompt_hash", MAX_TEXT_CHARS)?,
        resource: Vec::new(),
        source: VitalsSource::Ingest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixNanos = 1_800_000_000_000_000_000;

    fn parse(body: &str) -> Result<Vec<Vitals>, ApiError> {
        let mut n = 0u8;
        parse_batch(body.as_bytes(), 3, NOW, &mut || {
            n += 1;
            ([n; 16], [n; 8])
        })
    }

    #[test]
    fn timestamps_take_offsets_and_a_future_end_is_now() {
        let end = |t: &str| {
            parse(&format!(
                r#"{{"agent_id":"a","latency_ms":1,"timestamp":{t}}}"#
            ))
            .map(|v| v[0].end_time)
        };
        let new_year_2027 = 1_798_761_600_000_000_000;
        assert_eq!(
            end(r#""2027-01-01T01:30:00+01:30""#).unwrap(),
            new_year_2027
        );
        assert_eq!(
            end(r#""2026-12-31t22:00:00-02:00""#).unwrap(),
            new_year_2027
        );
        assert_eq!(
            end(r#""2027-01-01T00:00:00.5z""#).unwrap(),
            new_year_2027 + 500_000_000
        );
        // Beyond the skew allowance: taken as now, whichever form.
        assert_eq!(end(r#""2999-12-31T23:59:59Z""#).unwrap(), NOW);
        assert_eq!(end("32503679999").unwrap(), NOW);
        for refused in [
            r#""1999-12-31T23:59:59Z""#,
            r#""0899-01-19T09:58:01Z""#,
            r#""3000-01-01T00:00:00Z""#,
            r#""2027-01-01 00:00:00Z""#,
            r#""2027-01-01T00:00:00+1:00""#,
            r#""2027-02-30T00:00:00Z""#,
            "946684799",
            "32503680000",
        ] {
            assert!(end(refused).is_err(), "{refused}");
        }
    }

    fn field_of(body: &str) -> String {
        let e = parse(body).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{e:?}");
        e.field
            .clone()
            .unwrap_or_else(|| panic!("no field in {e:?}"))
    }

    #[test]
    fn full_record_converts() {
        let v = parse(
            r#"{"agent_id":"billing","latency_ms":812.5,"input_tokens":1200,"output_tokens":300,
                "tool_calls":2,"retries":1,"success":false,"cost":0.0042,"model":"gpt-4o",
                "error_type":"timeout","prompt_hash":"abc123","timestamp":1799999999.5}"#,
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        let v = &v[0];
        assert_eq!(v.agent_id, "billing");
        assert_eq!(v.latency_ms, 812.5);
        assert_eq!((v.input_tokens, v.output_tokens), (1200, 300));
        assert!(v.usage_known);
        assert_eq!(
            (v.tool_calls, v.retries, v.errors, v.llm_calls),
            (2, 1, 1, 1)
        );
        assert_eq!(v.error_type.as_deref(), Some("timeout"));
        assert_eq!(v.model.as_deref(), Some("gpt-4o"));
        assert_eq!(v.end_time, 1_799_999_999_500_000_000);
        assert_eq!(v.trace_id, [1; 16]);
    }

    #[test]
    fn minimal_record_and_arrays() {
        let v = parse(r#"[{"agent_id":"a","latency_ms":1},{"agent_id":"b","latency_ms":2,"timestamp":"2027-01-01T00:00:00Z"}]"#).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].end_time, NOW);
        assert!(!v[0].usage_known);
        assert_eq!(v[0].errors, 0);
        assert_ne!(v[0].trace_id, v[1].trace_id, "each turn gets its own id");
        assert_eq!(v[1].end_time, 1_798_761_600_000_000_000);
        let e = parse(r#"[{"agent_id":"a","latency_ms":1},{"agent_id":"a","latency_ms":1},{"agent_id":"a","latency_ms":1},{"agent_id":"a","latency_ms":1}]"#).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn every_bad_field_is_named() {
        // Optional fields are checked after the two required ones.
        let with = |extra: &str| format!(r#"{{"agent_id":"a","latency_ms":1,{extra}}}"#);
        let long = "x".repeat(agent_id::MAX_AGENT_ID_CHARS + 1);
        let cases = [
            (r#"{"latency_ms":1}"#.to_string(), "agent_id"),
            (r#"{"agent_id":7,"latency_ms":1}"#.to_string(), "agent_id"),
            (r#"{"agent_id":" ","latency_ms":1}"#.to_string(), "agent_id"),
            (
                format!(r#"{{"agent_id":"{long}","latency_ms":1}}"#),
                "agent_id",
            ),
            (r#"{"agent_id":"a"}"#.to_string(), "latency_ms"),
            (
                r#"{"agent_id":"a","latency_ms":-1}"#.to_string(),
                "latency_ms",
            ),
            (
                r#"{"agent_id":"a","latency_ms":"5"}"#.to_string(),
                "latency_ms",
            ),
            (
                r#"{"agent_id":"a","latency_ms":1e300}"#.to_string(),
                "latency_ms",
            ),
            (with(r#""input_tokens":1.5"#), "input_tokens"),
            (with(r#""output_tokens":-3"#), "output_tokens"),
            (with(r#""tool_calls":1e12"#), "tool_calls"),
            (with(r#""retries":true"#), "retries"),
            (with(r#""success":"yes""#), "success"),
            (with(r#""cost":-0.1"#), "cost"),
            (with(r#""model":["x"]"#), "model"),
            (
                with(&format!(r#""error_type":"{}""#, "e".repeat(300))),
                "error_type",
            ),
            (with(r#""prompt_hash":"a\u0007""#), "prompt_hash"),
            (with(r#""timestamp":1799999999000"#), "timestamp"),
            (with(r#""timestamp":12"#), "timestamp"),
            (with(r#""timestamp":"yesterday""#), "timestamp"),
            (with(r#""trace_id":"xyz""#), "trace_id"),
            (with(r#""span_id":"0102030405060708""#), "span_id"),
            (with(r#""latncy":2"#), "latncy"),
            (
                r#"[{"agent_id":"a","latency_ms":1},{"agent_id":"a","latency_ms":-1}]"#.to_string(),
                "[1].latency_ms",
            ),
            (r#"[{"agent_id":"a","latency_ms":1}, 3]"#.to_string(), "[1]"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(&body), field, "{body}");
        }
    }

    #[test]
    fn limits_are_quoted_for_numbers_and_counts() {
        let message = |body: &str| parse(body).unwrap_err().message;
        assert_eq!(
            message(r#"{"agent_id":"a","latency_ms":1,"cost":2000000.5}"#),
            "cost: 2000000.5 is above the limit of 1000000"
        );
        assert_eq!(
            message(r#"{"agent_id":"a","latency_ms":1,"retries":100001}"#),
            "retries: 100001 is above the limit of 100000"
        );
    }

    #[test]
    fn unreadable_numbers_name_their_field() {
        for (body, field) in [
            (r#"{"agent_id":"a","latency_ms":NaN}"#, "latency_ms"),
            (r#"{"agent_id":"a","latency_ms":1,"cost":Infinity}"#, "cost"),
            (
                "{\"agent_id\":\"a\",\n \"latency_ms\": 1,\n \"input_tokens\": 1e999}",
                "input_tokens",
            ),
            (
                r#"[{"agent_id":"a","latency_ms":1},{"agent_id":"b","latency_ms":-NaN}]"#,
                "latency_ms",
            ),
        ] {
            assert_eq!(field_of(body), field, "{body}");
        }
    }

    #[test]
    fn body_level_errors() {
        for body in ["", "  ", "{", "[]", "3", "\"x\"", "NaN"] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert!(e.field.is_none(), "{body}: {e:?}");
        }
    }

    #[test]
    fn given_ids_are_kept() {
        let v = parse(r#"{"agent_id":"a","latency_ms":1,"trace_id":"0102030405060708090a0b0c0d0e0f10","span_id":"1112131415161718"}"#).unwrap();
        assert_eq!(v[0].trace_id[0], 1);
        assert_eq!(v[0].trace_id[15], 0x10);
        assert_eq!(
            v[0].root_span_id,
            [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
    }
}
