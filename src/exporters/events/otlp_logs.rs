//! Events as OTLP log records: one LogRecord per event, all under one
//! Resource (`service.name = agent-immune`) and scope.

use crate::immune::event::{AttrValue, Event, Severity};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub const SERVICE_NAME: &str = "agent-immune";
pub const SCOPE_NAME: &str = "agent-immune";

/// OTLP SeverityNumber and text for a severity.
pub fn severity(severity: Severity) -> (i32, &'static str) {
    match severity {
        Severity::Info => (9, "INFO"),
        Severity::Warn => (13, "WARN"),
        Severity::Error => (17, "ERROR"),
    }
}

/// One request carrying `events` in order. `observed_at` is when the
/// exporter saw them (OTLP's observed time), in Unix nanoseconds.
pub fn to_logs_request(events: &[Event], observed_at: u64) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    key_value("service.name", Value::StringValue(SERVICE_NAME.into())),
                    key_value(
                        "service.version",
                        Value::StringValue(env!("CARGO_PKG_VERSION").into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: events
                    .iter()
                    .map(|e| to_log_record(e, observed_at))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn to_log_record(event: &Event, observed_at: u64) -> LogRecord {
    let (severity_number, severity_text) = severity(event.severity);
    let mut attributes = Vec::with_capacity(event.attributes.len() + 3);
    attributes.push(key_value(
        "event.name",
        Value::StringValue(event.name.into()),
    ));
    attributes.push(key_value("event.id", Value::StringValue(event.id.clone())));
    // The agent is an attribute so backends can filter and group by it.
    if !event.agent_id.is_empty() && !event.attributes.iter().any(|(k, _)| k == "gen_ai.agent.id") {
        attributes.push(key_value(
            "gen_ai.agent.id",
            Value::StringValue(event.agent_id.clone()),
        ));
    }
    attributes.extend(
        event
            .attributes
            .iter()
            .map(|(key, value)| key_value(key, attr_value(value))),
    );
    LogRecord {
        time_unix_nano: event.time,
        observed_time_unix_nano: observed_at,
        severity_number,
        severity_text: severity_text.into(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(event.body.clone())),
        }),
        attributes,
        trace_id: event.trace_id.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: event.span_id.map(|s| s.to_vec()).unwrap_or_default(),
        event_name: event.name.into(),
        ..Default::default()
    }
}

fn attr_value(value: &AttrValue) -> Value {
    match value {
        AttrValue::Str(s) => Value::StringValue(s.clone()),
        AttrValue::Int(i) => Value::IntValue(*i),
        AttrValue::Double(d) => Value::DoubleValue(*d),
        AttrValue::Bool(b) => Value::BoolValue(*b),
        AttrValue::StrList(list) => Value::ArrayValue(ArrayValue {
            values: list
                .iter()
                .map(|s| AnyValue {
                    value: Some(Value::StringValue(s.clone())),
                })
                .collect(),
        }),
    }
}

fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::infection_event;

    fn attr<'a>(record: &'a LogRecord, key: &str) -> &'a Value {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .unwrap_or_else(|| panic!("no attribute {key}"))
    }

    #[test]
    fn event_becomes_a_typed_log_record() {
        let record = to_log_record(&infection_event(), 42);
        assert_eq!(record.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(record.observed_time_unix_nano, 42);
        assert_eq!(
            (record.severity_number, record.severity_text.as_str()),
            (13, "WARN")
        );
        assert_eq!(record.event_name, "agent_immune.infection");
        assert_eq!(record.trace_id, vec![0xab; 16]);
        assert_eq!(record.span_id, vec![0xcd; 8]);
        let keys: Vec<_> = record.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(&keys[..3], ["event.name", "event.id", "gen_ai.agent.id"]);
        assert_eq!(
            attr(&record, "agent_immune.max_deviation"),
            &Value::DoubleValue(7.2)
        );
        assert_eq!(
            attr(&record, "agent_immune.anomaly_count"),
            &Value::IntValue(2)
        );
        assert_eq!(
            attr(&record, "agent_immune.severe"),
            &Value::BoolValue(true)
        );
        let Value::ArrayValue(list) = attr(&record, "agent_immune.anomalies") else {
            panic!("not an array");
        };
        assert_eq!(list.values.len(), 2);
    }

    #[test]
    fn missing_ids_stay_empty_and_severities_map() {
        let mut event = infection_event();
        event.trace_id = None;
        event.span_id = None;
        event.severity = Severity::Error;
        let record = to_log_record(&event, 0);
        assert!(record.trace_id.is_empty() && record.span_id.is_empty());
        assert_eq!(record.severity_number, 17);
        assert_eq!(severity(Severity::Info), (9, "INFO"));
    }

    #[test]
    fn request_has_the_agent_immune_resource_and_scope() {
        let request = to_logs_request(&[infection_event(), infection_event()], 1);
        let rl = &request.resource_logs[0];
        let resource = rl.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        assert_eq!(
            resource.attributes[0].value.as_ref().unwrap().value,
            Some(Value::StringValue("agent-immune".into()))
        );
        assert_eq!(
            rl.scope_logs[0].scope.as_ref().unwrap().name,
            "agent-immune"
        );
        assert_eq!(rl.scope_logs[0].log_records.len(), 2);
    }
}
