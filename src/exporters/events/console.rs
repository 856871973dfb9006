//! Events on the console: one line each, human-readable text by default or
//! one JSON object per line for log shippers.

use super::config::ConsoleFormat;
use super::otlp_logs::severity;
use crate::escape;
use crate::immune::event::{AttrValue, Event};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// At most this many numbers are shown on a text line.
const MAX_TEXT_NUMBERS: usize = 8;

/// Writes one line per event.
pub fn write_lines(
    out: &mut impl Write,
    format: ConsoleFormat,
    events: &[Event],
) -> std::io::Result<()> {
    for event in events {
        let line = match format {
            ConsoleFormat::Text => text_line(event),
            ConsoleFormat::Json => json_line(event),
        };
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// `2026-01-01T12:00:00.000Z WARN  agent_immune.infection agent=planner <body> (max_deviation=7.20 ...)`:
/// time, severity, name, agent, the body, and the event's numbers.
pub fn text_line(event: &Event) -> String {
    let (_, severity) = severity(event.severity);
    // The agent id and body can carry client text: escaped, one line.
    let mut line = format!(
        "{} {severity:<5} {} agent={} {}",
        timestamp(event.time),
        event.name,
        escape::controls(&event.agent_id),
        escape::controls(&event.body)
    );
    let numbers: Vec<String> = event
        .attributes
        .iter()
        .filter_map(|(key, value)| {
            let key = key.strip_prefix("agent_immune.").unwrap_or(key);
            match value {
                AttrValue::Int(i) => Some(format!("{key}={i}")),
                AttrValue::Double(d) => Some(format!("{key}={d:.2}")),
                _ => None,
            }
        })
        .take(MAX_TEXT_NUMBERS)
        .collect();
    if !numbers.is_empty() {
        line.push_str(" (");
        line.push_str(&numbers.join(" "));
        line.push(')');
    }
    line
}

/// The event as one JSON object, keys named as in the OTLP log record.
pub fn json_line(event: &Event) -> String {
    let attributes: serde_json::Map<String, serde_json::Value> = event
        .attributes
        .iter()
        .map(|(key, value)| {
            let value = match value {
                AttrValue::Str(s) => serde_json::Value::from(s.as_str()),
                AttrValue::Int(i) => serde_json::Value::from(*i),
                // NaN and infinities have no JSON form: null.
                AttrValue::Double(d) => serde_json::Value::from(*d),
                AttrValue::Bool(b) => serde_json::Value::from(*b),
                AttrValue::StrList(list) => serde_json::Value::from(list.clone()),
            };
            (key.clone(), value)
        })
        .collect();
    let mut object = serde_json::json!({
        "time": timestamp(event.time),
        "time_unix_nano": event.time,
        "severity": severity(event.severity).1,
        "event.name": event.name,
        "event.id": event.id,
        "gen_ai.agent.id": event.agent_id,
        "body": event.body,
        "attributes": attributes,
    });
    if let Some(map) = object.as_object_mut() {
        if let Some(trace_id) = event.trace_id {
            map.insert("trace_id".into(), hex::encode(trace_id).into());
        }
        if let Some(span_id) = event.span_id {
            map.insert("span_id".into(), hex::encode(span_id).into());
        }
    }
    object.to_string()
}

fn timestamp(unix_nanos: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::event::Severity;

    fn event() -> Event {
        Event {
            id: "ev-9".into(),
            name: "agent_immune.infection",
            time: 1_700_000_000_123_000_000,
            severity: Severity::Warn,
            agent_id: "planner".into(),
            trace_id: Some([1; 16]),
            span_id: None,
            body: "token spike".into(),
            attributes: vec![
                (
                    "agent_immune.max_deviation".into(),
                    AttrValue::Double(7.234),
                ),
                ("agent_immune.anomaly_count".into(), AttrValue::Int(2)),
                (
                    "agent_immune.diagnosis".into(),
                    AttrValue::Str("prompt_injection".into()),
                ),
                ("agent_immune.bad".into(), AttrValue::Double(f64::NAN)),
            ],
        }
    }

    #[test]
    fn text_line_has_time_severity_name_agent_body_and_numbers() {
        assert_eq!(
            text_line(&event()),
            "2023-11-14T22:13:20.123Z WARN  agent_immune.infection agent=planner token spike \
             (max_deviation=7.23 anomaly_count=2 bad=NaN)"
        );
    }

    #[test]
    fn text_line_escapes_client_text() {
        let mut e = event();
        e.agent_id = "evil\n2099-01-01T00:00:00.000Z WARN  forged\x1b[31m".into();
        e.body = "cut\r\nline".into();
        let line = text_line(&e);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains(
            "agent=evil\\n2099-01-01T00:00:00.000Z WARN  forged\\u{1b}[31m cut\\r\\nline"
        ));
    }

    #[test]
    fn json_line_is_one_parsable_object() {
        let line = json_line(&event());
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event.name"], "agent_immune.infection");
        assert_eq!(v["severity"], "WARN");
        assert_eq!(v["trace_id"], "01".repeat(16));
        assert!(v.get("span_id").is_none());
        assert_eq!(v["attributes"]["agent_immune.anomaly_count"], 2);
        assert!(v["attributes"]["agent_immune.bad"].is_null());
    }

    #[test]
    fn write_lines_writes_one_line_per_event() {
        let mut out = Vec::new();
        write_lines(&mut out, ConsoleFormat::Json, &[event(), event()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
    }
}
