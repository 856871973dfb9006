//! Loads a recorded capture from `shared/fixtures/genai-spans/*.json` into
//! the OTLP request its SDK exporter sent: ids hex-decoded, attributes
//! typed as in the JSON, one `ScopeSpans` per instrumentation scope.

use anyhow::{Context, Result, anyhow, bail};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value as Json};
use std::path::{Path, PathBuf};

/// Largest fixture file read (they are a few KiB each).
const MAX_FIXTURE_BYTES: u64 = 16 * 1024 * 1024;

/// One recorded capture.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// File name without `.json`, e.g. `otel-v2_chat_system_span-only`.
    pub name: String,
    /// `instrumentation` and `scenario` as recorded.
    pub instrumentation: String,
    pub scenario: String,
    /// HTTP requests the fake provider received (attempts, retries included).
    pub server_requests: u64,
    /// The spans as the SDK exporter sent them.
    pub request: ExportTraceServiceRequest,
}

/// `shared/fixtures/genai-spans`, next to the crate.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/genai-spans")
}

/// Every `*.json` fixture in `dir`, sorted by name.
pub fn fixture_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

pub fn load_fixture(path: &Path) -> Result<Fixture> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_FIXTURE_BYTES {
        bail!(
            "{}: {size} bytes is larger than a fixture can be",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    parse_fixture(&name, &text).with_context(|| format!("fixture {}", path.display()))
}

pub fn parse_fixture(name: &str, text: &str) -> Result<Fixture> {
    let doc: Json = serde_json::from_str(text).context("not JSON")?;
    let resource_attributes = match doc.get("resource_attributes") {
        Some(Json::Object(map)) => attributes(map)?,
        None | Some(Json::Null) => Vec::new(),
        Some(_) => bail!("resource_attributes is not an object"),
    };
    let spans = doc
        .get("spans")
        .and_then(Json::as_array)
        .ok_or_else(|| anyhow!("no spans array"))?;
    let mut scopes: Vec<ScopeSpans> = Vec::new();
    for (i, raw) in spans.iter().enumerate() {
        let (scope, span) = span(raw).with_context(|| format!("spans[{i}]"))?;
        match scopes.iter_mut().find(|s| s.scope.as_ref() == Some(&scope)) {
            Some(existing) => existing.spans.push(span),
            None => scopes.push(ScopeSpans {
                scope: Some(scope),
                spans: vec![span],
                schema_url: String::new(),
            }),
        }
    }
    let server_requests = doc
        .pointer("/server_http_requests/requests")
        .and_then(Json::as_u64)
        .unwrap_or(0);
    Ok(Fixture {
        name: name.to_string(),
        instrumentation: str_field(&doc, "instrumentation").to_string(),
        scenario: str_field(&doc, "scenario").to_string(),
        server_requests,
        request: ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource_attributes,
                    ..Default::default()
                }),
                scope_spans: scopes,
                schema_url: String::new(),
            }],
        },
    })
}

fn str_field<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or_default()
}

fn span(raw: &Json) -> Result<(InstrumentationScope, Span)> {
    let scope_raw = raw.get("instrumentation_scope");
    let scope = InstrumentationScope {
        name: scope_raw
            .map(|s| str_field(s, "name"))
            .unwrap_or_default()
            .to_string(),
        version: scope_raw
            .map(|s| str_field(s, "version"))
            .unwrap_or_default()
            .to_string(),
        ..Default::default()
    };
    let status = raw.get("status");
    let code = match status.map(|s| str_field(s, "code")).unwrap_or("UNSET") {
        "UNSET" | "" => StatusCode::Unset,
        "OK" => StatusCode::Ok,
        "ERROR" => StatusCode::Error,
        other => bail!("unknown status code {other:?}"),
    };
    let kind = match str_field(raw, "kind") {
        "INTERNAL" => SpanKind::Internal,
        "SERVER" => SpanKind::Server,
        "CLIENT" => SpanKind::Client,
        "PRODUCER" => SpanKind::Producer,
        "CONSUMER" => SpanKind::Consumer,
        "" | "UNSPECIFIED" => SpanKind::Unspecified,
        other => bail!("unknown span kind {other:?}"),
    };
    let events = match raw.get("events") {
        Some(Json::Array(events)) => events.iter().map(event).collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let links = match raw.get("links") {
        Some(Json::Array(links)) => links.iter().map(link).collect::<Result<Vec<_>>>()?,
        _ => Vec::new(),
    };
    let span = Span {
        trace_id: hex_id(raw.get("trace_id"), 16).context("trace_id")?,
        span_id: hex_id(raw.get("span_id"), 8).context("span_id")?,
        parent_span_id: match raw.get("parent_span_id") {
            None | Some(Json::Null) => Vec::new(),
            id => hex_id(id, 8).context("parent_span_id")?,
        },
        name: str_field(raw, "name").to_string(),
        kind: kind as i32,
        start_time_unix_nano: nanos(raw.get("start_time_unix_nano"))
            .context("start_time_unix_nano")?,
        end_time_unix_nano: nanos(raw.get("end_time_unix_nano")).context("end_time_unix_nano")?,
        attributes: match raw.get("attributes") {
            Some(Json::Object(map)) => attributes(map)?,
            _ => Vec::new(),
        },
        events,
        links,
        status: Some(Status {
            code: code as i32,
            message: status
                .and_then(|s| s.get("description"))
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
        }),
        ..Default::default()
    };
    Ok((scope, span))
}

fn event(raw: &Json) -> Result<Event> {
    Ok(Event {
        name: str_field(raw, "name").to_string(),
        time_unix_nano: nanos(raw.get("time_unix_nano")).unwrap_or(0),
        attributes: match raw.get("attributes") {
            Some(Json::Object(map)) => attributes(map)?,
            _ => Vec::new(),
        },
        dropped_attributes_count: 0,
    })
}

fn link(raw: &Json) -> Result<Link> {
    Ok(Link {
        trace_id: hex_id(raw.get("trace_id"), 16).context("link trace_id")?,
        span_id: hex_id(raw.get("span_id"), 8).context("link span_id")?,
        attributes: match raw.get("attributes") {
            Some(Json::Object(map)) => attributes(map)?,
            _ => Vec::new(),
        },
        ..Default::default()
    })
}

fn hex_id(raw: Option<&Json>, len: usize) -> Result<Vec<u8>> {
    let text = raw
        .and_then(Json::as_str)
        .ok_or_else(|| anyhow!("missing"))?;
    let bytes = hex::decode(text).with_context(|| format!("{text:?} is not hex"))?;
    if bytes.len() != len {
        bail!("{text:?} is {} bytes, expected {len}", bytes.len());
    }
    Ok(bytes)
}

fn nanos(raw: Option<&Json>) -> Result<u64> {
    match raw {
        Some(Json::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| anyhow!("{n} is not a time")),
        _ => bail!("missing"),
    }
}

/// JSON object → typed attributes (null values are left out, as SDKs do).
pub fn attributes(map: &Map<String, Json>) -> Result<Vec<KeyValue>> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        if let Some(value) = any_value(value).with_context(|| format!("attribute {key}"))? {
            out.push(KeyValue {
                key: key.clone(),
                value: Some(value),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

fn any_value(v: &Json) -> Result<Option<AnyValue>> {
    let value = match v {
        Json::Null => return Ok(None),
        Json::Bool(b) => Value::BoolValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().ok_or_else(|| anyhow!("{n} is not a number"))?),
        },
        Json::String(s) => Value::StringValue(s.clone()),
        Json::Array(items) => Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .map(|item| Ok(any_value(item)?.unwrap_or(AnyValue { value: None })))
                .collect::<Result<Vec<_>>>()?,
        }),
        Json::Object(map) => Value::KvlistValue(KeyValueList {
            values: attributes(map)?,
        }),
    };
    Ok(Some(AnyValue { value: Some(value) }))
}
