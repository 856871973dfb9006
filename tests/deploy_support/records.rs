//! agent-immune's events as log records: the pieces the stack test reads.

use crate::common;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

/// The strings of a string-list attribute; empty when absent.
pub fn str_list(record: &LogRecord, key: &str) -> Vec<String> {
    match common::attr(record, key) {
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .filter_map(|v| match &v.value {
                Some(Any::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The `name` events about `agent`.
pub fn of_agent<'a>(records: &'a [LogRecord], name: &str, agent: &str) -> Vec<&'a LogRecord> {
    records
        .iter()
        .filter(|r| {
            common::event_name(r) == name && common::attr_str(r, "gen_ai.agent.id") == Some(agent)
        })
        .collect()
}
