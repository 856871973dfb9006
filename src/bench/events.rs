//! Reading immune events at the sink: which agent, which event, when.

use super::sink::LogObserver;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// One event as the sink saw it.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub name: String,
    pub agent: String,
    /// `agent_immune.from` and `agent_immune.to` of lifecycle events.
    pub from: Option<String>,
    pub to: Option<String>,
    pub arrived: Instant,
}

/// An observer that passes on the events of agents whose id starts with
/// `prefix`, and the channel they come out of.
pub fn observer(prefix: &'static str) -> (LogObserver, mpsc::UnboundedReceiver<SeenEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let observer: LogObserver = Arc::new(move |arrived, request: ExportLogsServiceRequest| {
        for record in request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            let Some(agent) = str_attr(record, "gen_ai.agent.id") else {
                continue;
            };
            if !agent.starts_with(prefix) {
                continue;
            }
            let name = if record.event_name.is_empty() {
                str_attr(record, "event.name").unwrap_or_default()
            } else {
                record.event_name.clone()
            };
            let _ = tx.send(SeenEvent {
                name,
                agent,
                from: str_attr(record, "agent_immune.from"),
                to: str_attr(record, "agent_immune.to"),
                arrived,
            });
        }
    });
    (observer, rx)
}

fn str_attr(record: &LogRecord, key: &str) -> Option<String> {
    record
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

/// True for the event that says an agent's baseline is ready.
pub fn is_baseline_ready(e: &SeenEvent) -> bool {
    e.name == "agent_immune.lifecycle"
        && e.from.as_deref() == Some("INITIALIZING")
        && e.to.as_deref() == Some("HEALTHY")
}
