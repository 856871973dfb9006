//! How Loki 3.x stores an OTLP log record (its `pkg/loghttp/push/otlp.go`
//! with the default `otlp_config`): listed resource attributes become index
//! labels, other attributes structured metadata, names sanitized.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use std::collections::BTreeMap;

/// `distributor.otlp.default_resource_attributes_as_index_labels`.
const INDEX_LABEL_RESOURCE_ATTRIBUTES: [&str; 18] = [
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// Where Loki keeps a record's trace id.
pub const TRACE_ID: &str = "trace_id";

#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub line: String,
}

impl Entry {
    /// A label as a LogQL pipeline sees it: stream label or structured metadata.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.stream
            .get(name)
            .or_else(|| self.metadata.get(name))
            .map(String::as_str)
    }
}

/// otlptranslator's LabelNamer: each run of characters outside
/// `[a-zA-Z0-9_]` becomes one `_`; a leading digit gets `key_`.
pub fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut replaced = false;
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            replaced = false;
        } else if !replaced {
            out.push('_');
            replaced = true;
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

fn json(value: &Option<Any>) -> serde_json::Value {
    match value {
        Some(Any::StringValue(s)) => s.clone().into(),
        Some(Any::BoolValue(b)) => (*b).into(),
        Some(Any::IntValue(i)) => (*i).into(),
        Some(Any::DoubleValue(d)) => (*d).into(),
        Some(Any::ArrayValue(a)) => a.values.iter().map(|v| json(&v.value)).collect(),
        Some(other) => {
            panic!("agent-immune sent an attribute of an unexpected kind: {other:?}")
        }
        None => serde_json::Value::Null,
    }
}

/// pcommon's `Value.AsString`.
pub fn as_string(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => {
            let abs = d.abs();
            if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
                format!("{d:e}")
            } else {
                d.to_string()
            }
        }
        Some(Any::ArrayValue(_)) => json(&value.and_then(|v| v.value.clone())).to_string(),
        Some(other) => {
            panic!("agent-immune sent an attribute of an unexpected kind: {other:?}")
        }
    }
}

fn put(into: &mut BTreeMap<String, String>, attrs: &[KeyValue]) {
    for kv in attrs {
        into.insert(label_name(&kv.key), as_string(kv.value.as_ref()));
    }
}

pub fn entries(request: &ExportLogsServiceRequest) -> Vec<Entry> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let mut stream = BTreeMap::new();
        let mut resource_metadata = BTreeMap::new();
        for kv in rl.resource.iter().flat_map(|r| &r.attributes) {
            let target = if INDEX_LABEL_RESOURCE_ATTRIBUTES.contains(&kv.key.as_str()) {
                &mut stream
            } else {
                &mut resource_metadata
            };
            put(target, std::slice::from_ref(kv));
        }
        for sl in &rl.scope_logs {
            let mut scope_metadata = resource_metadata.clone();
            if let Some(scope) = &sl.scope {
                put(&mut scope_metadata, &scope.attributes);
                if !scope.name.is_empty() {
                    scope_metadata.insert("scope_name".into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    scope_metadata.insert("scope_version".into(), scope.version.clone());
                }
            }
            for record in &sl.log_records {
                let mut metadata = scope_metadata.clone();
                put(&mut metadata, &record.attributes);
                if record.time_unix_nano != 0 && record.observed_time_unix_nano != 0 {
                    metadata.insert(
                        "observed_timestamp".into(),
                        record.observed_time_unix_nano.to_string(),
                    );
                }
                if record.severity_number != 0 {
                    metadata.insert("severity_number".into(), record.severity_number.to_string());
                }
                if !record.severity_text.is_empty() {
                    metadata.insert("severity_text".into(), record.severity_text.clone());
                }
                if record.flags != 0 {
                    metadata.insert("flags".into(), record.flags.to_string());
                }
                if record.trace_id.iter().any(|b| *b != 0) {
                    metadata.insert(TRACE_ID.into(), hex::encode(&record.trace_id));
                }
                if record.span_id.iter().any(|b| *b != 0) {
                    metadata.insert("span_id".into(), hex::encode(&record.span_id));
                }
                out.push(Entry {
                    stream: stream.clone(),
                    metadata,
                    line: as_string(record.body.as_ref()),
                });
            }
        }
    }
    out
}
