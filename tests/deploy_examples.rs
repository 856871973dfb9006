//! The deployment example in `deploy/`, checked as far as it can be without
//! a Docker engine (none runs here).
//!
//! Run for real: the compose file's agent-immune command, environment and
//! config file (the real binary); its Rotel flags (the Rotel binary from the
//! test virtualenv); its simulator command (the real binary); Tempo and Loki
//! replaced by OTLP receivers in this test listening on the ports their
//! configs name, Loki's on its OTLP/HTTP path; Prometheus replaced by this
//! test scraping the target its config names. Every address in the compose
//! file is moved to a loopback port by one table, so a service that points
//! at the wrong port of another fails here.
//!
//! Checked, not run: the dashboard's LogQL against the events that really
//! arrived, mapped to Loki's labels by Loki's documented OTLP rules (as in
//! Loki 3.7's `pkg/loghttp/push/otlp.go`); its PromQL against the real
//! `/metrics`; data source uids and the trace links; the Dockerfile's
//! inputs. Never run: the containers themselves, Grafana, Loki, Tempo,
//! Prometheus, `docker compose up`, `docker build`.
//!
//! The YAML files are read by a small reader of the subset they are written
//! in (no YAML library is a dependency); it refuses anything outside it.

mod common;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn read_yaml(rel: &str) -> Value {
    yaml::parse(&read(&deploy(rel))).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

fn dashboard() -> Value {
    let path = deploy("grafana/dashboards/agent-immune.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Grafana expands `$VAR` in provisioning files; `$$` is a literal `$`.
fn grafana_unescape(s: &str) -> String {
    s.replace("$$", "$")
}

// ---------------------------------------------------------------- YAML subset

/// Block maps and lists, plain / single- / double-quoted scalars, one-line
/// lists of scalars, comments. Scalars stay strings. Anything else (anchors,
/// tags, block scalars, flow maps, tabs, duplicate keys, stray indentation)
/// is an error naming the line.
mod yaml {
    use serde_json::{Map, Value};

    struct Line {
        no: usize,
        indent: usize,
        text: String,
    }

    pub fn parse(src: &str) -> Result<Value, String> {
        let mut parser = Parser {
            lines: lines(src)?,
            i: 0,
        };
        let Some(first) = parser.lines.first() else {
            return Ok(Value::Null);
        };
        if first.indent != 0 {
            return Err(format!("line {}: indented first line", first.no));
        }
        let value = parser.block(0)?;
        match parser.lines.get(parser.i) {
            Some(line) => Err(format!("line {}: unexpected indentation", line.no)),
            None => Ok(value),
        }
    }

    fn lines(src: &str) -> Result<Vec<Line>, String> {
        let mut out = Vec::new();
        for (n, raw) in src.lines().enumerate() {
            let no = n + 1;
            let content = strip_comment(raw).trim_end();
            let text = content.trim_start_matches(' ');
            if text.is_empty() {
                continue;
            }
            if text.starts_with('\t') {
                return Err(format!("line {no}: tab in indentation"));
            }
            if text == "---" || text == "..." {
                return Err(format!(
                    "line {no}: multiple documents are not in the subset"
                ));
            }
            out.push(Line {
                no,
                indent: content.len() - text.len(),
                text: text.to_string(),
            });
        }
        Ok(out)
    }

    /// Quotes open only where a scalar may start, so `it's` in a plain
    /// scalar does not.
    fn starts_token(prev: Option<char>) -> bool {
        prev.is_none_or(|p| matches!(p, ' ' | '[' | ',' | ':' | '-'))
    }

    fn strip_comment(line: &str) -> &str {
        let mut quote: Option<char> = None;
        let mut escaped = false;
        let mut prev: Option<char> = None;
        for (i, c) in line.char_indices() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if (c == '"' || c == '\'') && starts_token(prev) => quote = Some(c),
                None if c == '#' && prev.is_none_or(|p| p == ' ') => return &line[..i],
                None => {}
            }
            prev = Some(c);
        }
        line
    }

    fn is_item(text: &str) -> bool {
        text == "-" || text.starts_with("- ")
    }

    /// `key: rest` or `key:` outside quotes; None for anything else.
    fn split_key(text: &str) -> Option<(String, &str)> {
        if text.starts_with(['[', '{', '"', '\'']) {
            return None;
        }
        let bytes = text.as_bytes();
        let pos = (0..bytes.len())
            .find(|&i| bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' '))?;
        let key = text[..pos].trim();
        (!key.is_empty()).then(|| (key.to_string(), text[pos + 1..].trim()))
    }

    fn quoted(text: &str, no: usize) -> Result<(String, usize), String> {
        let q = text.chars().next().unwrap_or('"');
        let mut out = String::new();
        let mut chars = text.char_indices().skip(1).peekable();
        while let Some((i, c)) = chars.next() {
            match (q, c) {
                ('"', '\\') => match chars.next() {
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, '/')) => out.push('/'),
                    other => return Err(format!("line {no}: escape {other:?} not in the subset")),
                },
                ('\'', '\'') if chars.peek().is_some_and(|&(_, n)| n == '\'') => {
                    chars.next();
                    out.push('\'');
                }
                (q, c) if c == q => return Ok((out, i + 1)),
                (_, c) => out.push(c),
            }
        }
        Err(format!("line {no}: unterminated quoted scalar"))
    }

    fn scalar(text: &str, no: usize) -> Result<Value, String> {
        if text.starts_with(['"', '\'']) {
            let (s, end) = quoted(text, no)?;
            if !text[end..].trim().is_empty() {
                return Err(format!("line {no}: text after a quoted scalar"));
            }
            return Ok(Value::String(s));
        }
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| format!("line {no}: a flow list must end on its line"))?;
            return flow_list(inner, no);
        }
        if text == "{}" {
            return Ok(Value::Object(Map::new()));
        }
        if text.starts_with(['{', '&', '*', '!', '|', '>', '%', '@', '`']) {
            return Err(format!("line {no}: {text:?} is not in the subset"));
        }
        Ok(Value::String(text.to_string()))
    }

    fn flow_list(inner: &str, no: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let (item, after) = if rest.starts_with(['"', '\'']) {
                let (s, end) = quoted(rest, no)?;
                (Value::String(s), rest[end..].trim_start())
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let plain = rest[..end].trim();
                if plain.starts_with(['[', '{']) {
                    return Err(format!(
                        "line {no}: nested flow collections are not in the subset"
                    ));
                }
                (scalar(plain, no)?, &rest[end..])
            };
            items.push(item);
            rest = match after.strip_prefix(',') {
                Some(r) => r.trim_start(),
                None if after.is_empty() => after,
                None => return Err(format!("line {no}: expected ',' in a flow list")),
            };
        }
        Ok(Value::Array(items))
    }

    struct Parser {
        lines: Vec<Line>,
        i: usize,
    }

    impl Parser {
        fn block(&mut self, indent: usize) -> Result<Value, String> {
            if is_item(&self.lines[self.i].text) {
                self.list(indent)
            } else {
                self.map(indent)
            }
        }

        fn map(&mut self, indent: usize) -> Result<Value, String> {
            let mut map = Map::new();
            while let Some(line) = self.lines.get(self.i) {
                if line.indent < indent {
                    break;
                }
                let no = line.no;
                if line.indent > indent {
                    return Err(format!("line {no}: unexpected indentation"));
                }
                if is_item(&line.text) {
                    return Err(format!("line {no}: a list item where a key was expected"));
                }
                let (key, rest) = split_key(&line.text)
                    .ok_or_else(|| format!("line {no}: expected `key: value`"))?;
                let rest = rest.to_string();
                self.i += 1;
                let value = if rest.is_empty() {
                    self.nested(indent, true)?
                } else {
                    scalar(&rest, no)?
                };
                if map.insert(key.clone(), value).is_some() {
                    return Err(format!("line {no}: duplicate key {key:?}"));
                }
            }
            Ok(Value::Object(map))
        }

        /// The value of `key:` (or of a bare `-`) on the following lines.
        fn nested(&mut self, indent: usize, list_at_same_indent: bool) -> Result<Value, String> {
            match self.lines.get(self.i) {
                Some(next) if next.indent > indent => {
                    let inner = next.indent;
                    self.block(inner)
                }
                Some(next)
                    if list_at_same_indent && next.indent == indent && is_item(&next.text) =>
                {
                    self.list(indent)
                }
                _ => Ok(Value::Null),
            }
        }

        fn list(&mut self, indent: usize) -> Result<Value, String> {
            let mut items = Vec::new();
            while let Some(line) = self.lines.get(self.i) {
                if line.indent != indent || !is_item(&line.text) {
                    if line.indent > indent {
                        return Err(format!("line {}: unexpected indentation", line.no));
                    }
                    break;
                }
                let no = line.no;
                let after = &line.text[1..];
                let item = after.trim_start().to_string();
                let inner = indent + 1 + (after.len() - item.len());
                if item.is_empty() {
                    self.i += 1;
                    items.push(self.nested(indent, false)?);
                } else if split_key(&item).is_some() {
                    // A map opening on the item's line: its keys line up with the first.
                    self.lines[self.i] = Line {
                        no,
                        indent: inner,
                        text: item,
                    };
                    items.push(self.map(inner)?);
                } else {
                    self.i += 1;
                    items.push(scalar(&item, no)?);
                }
            }
            Ok(Value::Array(items))
        }
    }
}

// ---------------------------------------------------------------- compose

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$VAR` and `$$`, as
/// docker compose interpolates values.
fn compose_interpolate(value: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("unterminated ${ in the compose file");
            let expr = &body[..end];
            let (name, default, empty_is_unset) = if let Some((n, d)) = expr.split_once(":-") {
                (n, d, true)
            } else if let Some((n, d)) = expr.split_once('-') {
                (n, d, false)
            } else {
                (expr, "", false)
            };
            let value = env(name).filter(|v| !(empty_is_unset && v.is_empty()));
            out.push_str(&value.unwrap_or_else(|| default.to_string()));
            rest = &body[end + 1..];
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            out.push_str(&env(&after[..end]).unwrap_or_default());
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    out
}

struct Compose(Value);

impl Compose {
    fn load() -> Self {
        Compose(read_yaml("docker-compose.yaml"))
    }

    fn services(&self) -> &Map<String, Value> {
        self.0["services"].as_object().expect("services: a map")
    }

    fn service(&self, name: &str) -> &Value {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("the compose file has no service {name:?}"))
    }

    /// A list-valued key (`command`, `entrypoint`, `depends_on`, ...).
    fn list(&self, service: &str, key: &str) -> Vec<String> {
        match &self.service(service)[key] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().expect("list of strings").to_string())
                .collect(),
            other => panic!("{service}.{key}: a list, not {other}"),
        }
    }

    /// The environment map, interpolated as compose would with `host_env`.
    fn environment(
        &self,
        service: &str,
        host_env: &dyn Fn(&str) -> Option<String>,
    ) -> BTreeMap<String, String> {
        match &self.service(service)["environment"] {
            Value::Null => BTreeMap::new(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let raw = v.as_str().expect("environment values are strings");
                    (k.clone(), compose_interpolate(raw, host_env))
                })
                .collect(),
            other => panic!("{service}.environment: a map, not {other}"),
        }
    }

    /// `(source, container path)` of each volume; a source starting with
    /// `.` is a bind mount relative to deploy/, else a named volume.
    fn mounts(&self, service: &str) -> Vec<(String, String)> {
        self.list(service, "volumes")
            .iter()
            .map(|v| {
                let mut parts = v.split(':');
                let source = parts.next().unwrap_or_default().to_string();
                let target = parts
                    .next()
                    .expect("volume with a container path")
                    .to_string();
                (source, target)
            })
            .collect()
    }
}

/// Moves the compose network onto loopback: every `(service, port)` gets
/// one local port, so wiring that disagrees between services disagrees
/// here too. Container paths become host paths (bind mounts) or temporary
/// directories (named volumes).
struct Localizer {
    services: BTreeSet<String>,
    ports: Mutex<BTreeMap<(String, u16), u16>>,
    volumes_root: PathBuf,
}

impl Localizer {
    fn new(compose: &Compose, volumes_root: &Path) -> Self {
        Localizer {
            services: compose.services().keys().cloned().collect(),
            ports: Mutex::new(BTreeMap::new()),
            volumes_root: volumes_root.to_path_buf(),
        }
    }

    fn port(&self, service: &str, port: u16) -> u16 {
        *self
            .ports
            .lock()
            .unwrap()
            .entry((service.to_string(), port))
            .or_insert_with(common::free_port)
    }

    fn addr(&self, service: &str, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(service, port)))
    }

    /// `[scheme://]host:port[/path]` with a compose service (or the owner's
    /// own wildcard / loopback address) as host, moved to loopback.
    fn address(&self, owner: &str, value: &str) -> String {
        let (scheme, rest) = match value.find("://") {
            Some(i) => value.split_at(i + 3),
            None => ("", value),
        };
        let Some((host, after)) = rest.split_once(':') else {
            return value.to_string();
        };
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        let Ok(port) = after[..digits].parse::<u16>() else {
            return value.to_string();
        };
        let service = match host {
            "0.0.0.0" | "127.0.0.1" | "localhost" => owner,
            h if self.services.contains(h) => h,
            _ => return value.to_string(),
        };
        format!(
            "{scheme}127.0.0.1:{}{}",
            self.port(service, port),
            &after[digits..]
        )
    }

    fn path(&self, compose: &Compose, owner: &str, value: &str) -> String {
        for (source, target) in compose.mounts(owner) {
            if let Some(below) = value.strip_prefix(&target) {
                if !(below.is_empty() || below.starts_with('/')) {
                    continue;
                }
                let host = if source.starts_with('.') {
                    deploy(&source)
                } else {
                    let dir = self.volumes_root.join(&source);
                    std::fs::create_dir_all(&dir).unwrap();
                    dir
                };
                return format!("{}{below}", host.display());
            }
        }
        value.to_string()
    }

    fn value(&self, compose: &Compose, owner: &str, value: &str) -> String {
        if value.starts_with('/') {
            self.path(compose, owner, value)
        } else {
            self.address(owner, value)
        }
    }

    /// A command line: addresses and paths moved; `--control-host` (a bind
    /// address) and `--control-port` (a bare port) too.
    fn args(&self, compose: &Compose, owner: &str, args: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(args.len());
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            out.push(self.value(compose, owner, arg));
            match arg.as_str() {
                "--control-host" => {
                    iter.next();
                    out.push("127.0.0.1".to_string());
                }
                "--control-port" => {
                    let port: u16 = iter.next().and_then(|p| p.parse().ok()).expect("a port");
                    out.push(self.port(owner, port).to_string());
                }
                _ => {}
            }
        }
        out
    }
}

/// The port of `host:port` / `scheme://host:port/...`.
fn port_of(value: &str) -> u16 {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let after = rest.rsplit_once(':').map(|(_, p)| p).expect("host:port");
    let digits = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    after[..digits].parse().expect("a port")
}

// ---------------------------------------------------------------- Loki's OTLP mapping

/// How Loki 3.x stores an OTLP log record (its `pkg/loghttp/push/otlp.go`
/// with the default `otlp_config`): listed resource attributes become index
/// labels, other attributes structured metadata, names sanitized.
mod loki {
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
                        metadata
                            .insert("severity_number".into(), record.severity_number.to_string());
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
}

// ---------------------------------------------------------------- LogQL / PromQL names

/// The label names and literal values a LogQL or PromQL query uses.
mod query {
    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        Num(String),
        Var(String),
        Op(&'static str),
        Open(char),
        Close(char),
        Comma,
        Pipe,
        Other(char),
    }

    #[derive(Debug, Clone, PartialEq)]
    pub struct Matcher {
        pub name: String,
        pub op: &'static str,
        /// The literal compared with; None for a number or a dashboard variable.
        pub literal: Option<String>,
    }

    #[derive(Debug, Default)]
    pub struct Names {
        /// Inside `{...}`: index labels.
        pub selector: Vec<Matcher>,
        /// Label filters after `|`.
        pub filters: Vec<Matcher>,
        /// `by (...)`, `without (...)`, `unwrap x`.
        pub labels: Vec<String>,
        pub unwrapped: Vec<String>,
        /// Identifiers that are neither matched labels nor keywords nor
        /// functions: PromQL metric names.
        pub metrics: Vec<String>,
    }

    fn tokens(expr: &str) -> Result<Vec<Tok>, String> {
        let chars: Vec<char> = expr.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        let two = |i: usize, c: char| chars.get(i + 1) == Some(&c);
        while i < chars.len() {
            let c = chars[i];
            match c {
                c if c.is_whitespace() => i += 1,
                '"' | '`' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(format!("unterminated string in {expr:?}")),
                            Some('\\') if c == '"' => {
                                s.push(*chars.get(i + 1).unwrap_or(&'\\'));
                                i += 2;
                            }
                            Some(&q) if q == c => break,
                            Some(&other) => {
                                s.push(other);
                                i += 1;
                            }
                        }
                    }
                    i += 1;
                    out.push(if s.starts_with('$') {
                        Tok::Var(s)
                    } else {
                        Tok::Str(s)
                    });
                }
                '[' => {
                    // A range or subquery: durations and variables only.
                    let end = chars[i..]
                        .iter()
                        .position(|&c| c == ']')
                        .ok_or_else(|| format!("unterminated [ in {expr:?}"))?;
                    i += end + 1;
                }
                '{' | '(' => {
                    out.push(Tok::Open(c));
                    i += 1;
                }
                '}' | ')' => {
                    out.push(Tok::Close(c));
                    i += 1;
                }
                ',' => {
                    out.push(Tok::Comma);
                    i += 1;
                }
                '|' if two(i, '=') || two(i, '~') => {
                    out.push(Tok::Op("line filter"));
                    i += 2;
                }
                '|' => {
                    out.push(Tok::Pipe);
                    i += 1;
                }
                '!' if two(i, '=') => {
                    out.push(Tok::Op("!="));
                    i += 2;
                }
                '!' if two(i, '~') => {
                    out.push(Tok::Op("!~"));
                    i += 2;
                }
                '=' if two(i, '~') => {
                    out.push(Tok::Op("=~"));
                    i += 2;
                }
                '=' if two(i, '=') => {
                    out.push(Tok::Op("=="));
                    i += 2;
                }
                '=' => {
                    out.push(Tok::Op("="));
                    i += 1;
                }
                '>' | '<' => {
                    let op = match (c, two(i, '=')) {
                        ('>', true) => ">=",
                        ('>', false) => ">",
                        ('<', true) => "<=",
                        _ => "<",
                    };
                    out.push(Tok::Op(op));
                    i += if op.len() == 2 { 2 } else { 1 };
                }
                '$' => {
                    let start = i;
                    i += 1;
                    while chars
                        .get(i)
                        .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                    {
                        i += 1;
                    }
                    out.push(Tok::Var(chars[start..i].iter().collect()));
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let start = i;
                    while chars
                        .get(i)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        i += 1;
                    }
                    out.push(Tok::Ident(chars[start..i].iter().collect()));
                }
                c if c.is_ascii_digit() => {
                    let start = i;
                    while chars
                        .get(i)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                    {
                        i += 1;
                    }
                    out.push(Tok::Num(chars[start..i].iter().collect()));
                }
                other => {
                    out.push(Tok::Other(other));
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Keywords, and aggregations (which may be followed by `by` rather than `(`).
    const KEYWORDS: [&str; 26] = [
        "by",
        "without",
        "unwrap",
        "and",
        "or",
        "unless",
        "bool",
        "on",
        "ignoring",
        "offset",
        "group_left",
        "group_right",
        "keep",
        "drop",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];

    pub fn names(expr: &str) -> Result<Names, String> {
        let toks = tokens(expr)?;
        let mut names = Names::default();
        let mut in_selector = false;
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Open('{') => in_selector = true,
                Tok::Close('}') => in_selector = false,
                Tok::Ident(kw)
                    if (kw == "by" || kw == "without")
                        && toks.get(i + 1) == Some(&Tok::Open('(')) =>
                {
                    i += 2;
                    while let Some(tok) = toks.get(i) {
                        match tok {
                            Tok::Ident(label) => names.labels.push(label.clone()),
                            Tok::Comma => {}
                            Tok::Close(')') => break,
                            other => {
                                return Err(format!(
                                    "unexpected {other:?} in a grouping of {expr:?}"
                                ));
                            }
                        }
                        i += 1;
                    }
                }
                Tok::Ident(kw) if kw == "unwrap" => {
                    // `unwrap x` or `unwrap duration(x)`
                    let label = match (toks.get(i + 1), toks.get(i + 2), toks.get(i + 3)) {
                        (Some(Tok::Ident(_)), Some(Tok::Open('(')), Some(Tok::Ident(x))) => {
                            i += 3;
                            x
                        }
                        (Some(Tok::Ident(x)), _, _) => {
                            i += 1;
                            x
                        }
                        other => {
                            return Err(format!("unwrap without a label in {expr:?}: {other:?}"));
                        }
                    };
                    names.labels.push(label.clone());
                    names.unwrapped.push(label.clone());
                }
                Tok::Ident(name) => match (toks.get(i + 1), toks.get(i + 2)) {
                    (Some(Tok::Op(op)), Some(value)) if *op != "line filter" => {
                        let literal = match value {
                            Tok::Str(s) => Some(s.clone()),
                            Tok::Num(_) | Tok::Var(_) => None,
                            other => return Err(format!("{name} {op} {other:?} in {expr:?}")),
                        };
                        let matcher = Matcher {
                            name: name.clone(),
                            op,
                            literal,
                        };
                        if in_selector {
                            names.selector.push(matcher);
                        } else {
                            names.filters.push(matcher);
                        }
                        i += 2;
                    }
                    (Some(Tok::Open('(')), _) => {} // a function
                    _ if KEYWORDS.contains(&name.as_str()) => {}
                    _ => names.metrics.push(name.clone()),
                },
                _ => {}
            }
            i += 1;
        }
        Ok(names)
    }
}

// ---------------------------------------------------------------- dashboard queries

#[derive(Debug, Clone)]
struct DataSource {
    name: String,
    kind: String,
    uid: String,
    url: String,
    json_data: Value,
}

fn datasources() -> Vec<DataSource> {
    let doc = read_yaml("grafana/provisioning/datasources/datasources.yaml");
    doc["datasources"]
        .as_array()
        .expect("datasources: a list")
        .iter()
        .map(|d| DataSource {
            name: d["name"].as_str().expect("name").to_string(),
            kind: d["type"].as_str().expect("type").to_string(),
            uid: d["uid"].as_str().expect("a fixed uid").to_string(),
            url: d["url"].as_str().unwrap_or_default().to_string(),
            json_data: d["jsonData"].clone(),
        })
        .collect()
}

fn datasource_of_kind(kind: &str) -> DataSource {
    let all: Vec<DataSource> = datasources()
        .into_iter()
        .filter(|d| d.kind == kind)
        .collect();
    assert_eq!(all.len(), 1, "one {kind} data source: {all:?}");
    all[0].clone()
}

/// A query the dashboard or a data source runs: (data source type, where, expression).
#[derive(Debug, Clone)]
struct Query {
    kind: String,
    place: String,
    expr: String,
}

fn dashboard_queries(dash: &Value) -> Vec<Query> {
    fn kind_of(ds: &Value) -> Option<String> {
        ds["type"].as_str().map(str::to_string)
    }
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let kind = kind_of(&target["datasource"]).or_else(|| kind_of(&panel["datasource"]));
            if let (Some(kind), Some(expr)) = (kind, target["expr"].as_str()) {
                out.push(Query {
                    kind,
                    place: format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                    expr: expr.to_string(),
                });
            }
        }
    }
    for annotation in dash["annotations"]["list"].as_array().into_iter().flatten() {
        let Some(kind) = kind_of(&annotation["datasource"]) else {
            continue;
        };
        for expr in [&annotation["expr"], &annotation["target"]["expr"]] {
            if let Some(expr) = expr.as_str() {
                out.push(Query {
                    kind: kind.clone(),
                    place: format!(
                        "annotation {:?}",
                        annotation["name"].as_str().unwrap_or("?")
                    ),
                    expr: expr.to_string(),
                });
            }
        }
    }
    out
}

/// The LogQL queries Grafana will run against agent-immune's events: the
/// dashboard's and the Tempo data source's trace-to-logs query.
fn loki_queries() -> Vec<Query> {
    let mut queries: Vec<Query> = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|q| q.kind == "loki")
        .collect();
    let tempo = datasource_of_kind("tempo");
    if let Some(q) = tempo.json_data["tracesToLogsV2"]["query"].as_str() {
        queries.push(Query {
            kind: "loki".into(),
            place: "Tempo data source tracesToLogsV2".into(),
            expr: grafana_unescape(q),
        });
    }
    queries
}

/// Every `datasource` object anywhere in the dashboard, with where it is.
fn datasource_refs(value: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "datasource" && v.is_object() {
                    out.push((path.clone(), v.clone()));
                }
                datasource_refs(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                datasource_refs(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- processes

/// A child process whose output goes to a file, shown when the test fails.
struct Proc {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        logs: &Path,
    ) -> Proc {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, read(&self.log));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("---- {} (last lines)\n{}", self.name, tail.join("\n"));
        }
    }
}

fn rotel_agent() -> PathBuf {
    let python = common::python();
    let venv = python.parent().and_then(|p| p.parent()).expect("venv root");
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).expect("venv lib") {
        let candidate = entry
            .unwrap()
            .path()
            .join("site-packages/rotel/rotel-agent");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "rotel-agent not found under {}: run tests/run.sh",
        lib.display()
    );
}

async fn wait_listening(what: &str, addr: SocketAddr, proc: &mut Proc) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        proc.assert_running();
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- fake Loki

struct Push {
    method: String,
    path: String,
    content_type: String,
    request: ExportLogsServiceRequest,
}

#[derive(Default)]
struct LokiSink {
    pushes: Mutex<Vec<Push>>,
    changed: Notify,
}

impl LokiSink {
    fn records(&self) -> Vec<LogRecord> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| p.request.resource_logs.iter())
            .flat_map(|rl| rl.scope_logs.iter())
            .flat_map(|sl| sl.log_records.iter().cloned())
            .collect()
    }

    fn entries(&self) -> Vec<loki::Entry> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| loki::entries(&p.request))
            .collect()
    }

    async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if let Some(v) = check(self) {
                return v;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
        }
    }
}

/// An HTTP server that takes OTLP/HTTP logs as Loki's distributor does
/// (protobuf, optionally gzip) and answers 204, as Loki does.
async fn fake_loki(addr: SocketAddr) -> Arc<LokiSink> {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use std::io::Read;

    async fn push(
        State(sink): State<Arc<LokiSink>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let mut raw = body.to_vec();
        if header("content-encoding") == "gzip" {
            let mut inflated = Vec::new();
            if flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut inflated)
                .is_err()
            {
                return StatusCode::BAD_REQUEST;
            }
            raw = inflated;
        }
        let Ok(request) = ExportLogsServiceRequest::decode(&raw[..]) else {
            return StatusCode::BAD_REQUEST;
        };
        sink.pushes.lock().unwrap().push(Push {
            method: method.to_string(),
            path: uri.path().to_string(),
            content_type: header("content-type"),
            request,
        });
        sink.changed.notify_waiters();
        StatusCode::NO_CONTENT
    }

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let sink = Arc::new(LokiSink::default());
    let app = axum::Router::new().fallback(push).with_state(sink.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    sink
}

// ---------------------------------------------------------------- tests: files

#[test]
fn the_yaml_reader_reads_the_subset_and_refuses_the_rest() {
    let doc = yaml::parse(
        "# c\na:\n  b: \"x # not a comment\"  # comment\n  list:\n  - one\n  - k: v\n    k2: 'it''s'\n  flow: [\"-x\", y]\nc: it's plain\n",
    )
    .unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "a": {"b": "x # not a comment", "list": ["one", {"k": "v", "k2": "it's"}], "flow": ["-x", "y"]},
            "c": "it's plain"
        })
    );
    for bad in [
        "a: 1\na: 2\n",
        "a:\n  b: 1\n   c: 2\n",
        "a: &anchor 1\n",
        "a: |\n  text\n",
        "a: {b: 1}\n",
        "a:\n\t- b\n",
        "a: \"open\n",
        "- a\nb: c\n",
    ] {
        assert!(yaml::parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn every_yaml_file_in_deploy_is_in_the_subset() {
    let mut seen = 0;
    let mut dirs = vec![deploy("")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let doc =
                    yaml::parse(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(doc.is_object(), "{}: not a map", path.display());
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 6,
        "compose, loki, tempo, prometheus and two Grafana provisioning files; read {seen}"
    );
}

#[test]
fn the_compose_file_wires_the_stack_with_pinned_images() {
    let compose = Compose::load();
    let names: BTreeSet<&str> = compose.services().keys().map(String::as_str).collect();
    for needed in [
        "rotel",
        "agent-immune",
        "tempo",
        "loki",
        "grafana",
        "prometheus",
        "simulator",
    ] {
        assert!(names.contains(needed), "no {needed} service: {names:?}");
    }
    let volumes = compose.0["volumes"].as_object().expect("top-level volumes");
    for (name, service) in compose.services() {
        // Built from this repository, or a versioned image (never `latest`).
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        if service["build"].is_object() {
            let dockerfile = service["build"]["dockerfile"]
                .as_str()
                .expect("build.dockerfile");
            let context = deploy(service["build"]["context"].as_str().expect("build.context"));
            assert!(
                context.join(dockerfile).is_file(),
                "{name}: {dockerfile} not in {}",
                context.display()
            );
        } else {
            let (_, tag) = image
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
            assert!(
                tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
                "{name}: {image} is not pinned to a version"
            );
        }
        for (source, target) in compose.mounts(name) {
            assert!(target.starts_with('/'), "{name}: mount target {target}");
            if source.starts_with('.') {
                assert!(
                    deploy(&source).exists(),
                    "{name}: mounts {source}, which is not in deploy/"
                );
            } else {
                assert!(
                    volumes.contains_key(&source),
                    "{name}: volume {source} is not declared"
                );
            }
        }
        for dependency in compose.list(name, "depends_on") {
            assert!(
                names.contains(dependency.as_str()),
                "{name} depends on unknown {dependency}"
            );
        }
    }
    // Rotel's image prepends its own flags unless the entrypoint is replaced;
    // the test runs exactly `start` + the listed flags.
    assert_eq!(compose.list("rotel", "entrypoint"), ["/rotel"]);
    assert_eq!(compose.list("rotel", "command")[0], "start");
}

#[test]
fn the_agent_immune_config_validates_with_the_compose_environment() {
    let compose = Compose::load();
    let command = compose.list("agent-immune", "command");
    let config = command
        .iter()
        .position(|a| a == "--config")
        .map(|i| command[i + 1].clone())
        .expect("agent-immune's command names its --config");
    let tmp = tempfile::tempdir().unwrap();
    let local = Localizer::new(&compose, tmp.path());
    let config_file = local.path(&compose, "agent-immune", &config);
    assert_eq!(PathBuf::from(&config_file), deploy("agent-immune.toml"));

    // Exactly the environment compose gives the container (no host variables).
    let env = compose.environment("agent-immune", &|_| None);
    let validate = |env: &BTreeMap<String, String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_agent-immune"))
            .args(["validate", "--config", &config_file])
            .env_clear()
            .envs(env)
            .output()
            .unwrap()
    };
    let out = validate(&env);
    assert!(
        out.status.success(),
        "validate failed with the compose environment:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));

    // The file does depend on that environment: without it, validate names what is missing.
    let out = validate(&BTreeMap::new());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not set"));
}

#[test]
fn the_dashboard_uses_only_provisioned_datasources() {
    let provisioned = datasources();
    let by_uid: BTreeMap<&str, &DataSource> =
        provisioned.iter().map(|d| (d.uid.as_str(), d)).collect();
    assert_eq!(
        by_uid.len(),
        provisioned.len(),
        "data source uids are unique"
    );
    let dash = dashboard();
    assert!(
        !read(&deploy("grafana/dashboards/agent-immune.json")).contains("${DS_"),
        "no import placeholders"
    );
    let mut refs = Vec::new();
    datasource_refs(&dash, "dashboard".into(), &mut refs);
    assert!(refs.len() > 10, "{refs:?}");
    for (place, ds) in &refs {
        let uid = ds["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{place}: data source without uid"));
        if uid == "-- Grafana --" {
            continue; // Grafana's built-in annotations
        }
        let provisioned = by_uid
            .get(uid)
            .unwrap_or_else(|| panic!("{place}: data source uid {uid:?} is not provisioned"));
        assert_eq!(
            ds["type"].as_str(),
            Some(provisioned.kind.as_str()),
            "{place}: type of {uid}"
        );
    }
    let kinds: BTreeSet<String> = dashboard_queries(&dash)
        .into_iter()
        .map(|q| q.kind)
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["loki".to_string(), "prometheus".to_string()])
    );

    // Grafana loads the file from where the compose file mounts it.
    let compose = Compose::load();
    let provider = read_yaml("grafana/provisioning/dashboards/dashboards.yaml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    let tmp = tempfile::tempdir().unwrap();
    let local = Localizer::new(&compose, tmp.path());
    assert_eq!(
        PathBuf::from(local.path(&compose, "grafana", path)),
        deploy("grafana/dashboards")
    );
    let home =
        compose.environment("grafana", &|_| None)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
            .clone();
    assert_eq!(
        PathBuf::from(local.path(&compose, "grafana", &home)),
        deploy("grafana/dashboards/agent-immune.json")
    );
    for dir in ["datasources", "dashboards"] {
        let target = format!("/etc/grafana/provisioning/{dir}");
        assert_eq!(
            PathBuf::from(local.path(&compose, "grafana", &target)),
            deploy(&format!("grafana/provisioning/{dir}"))
        );
    }
}

#[test]
fn trace_ids_link_to_tempo_and_back() {
    let tempo = datasource_of_kind("tempo");
    let loki_ds = datasource_of_kind("loki");
    let derived = loki_ds.json_data["derivedFields"]
        .as_array()
        .expect("Loki derivedFields");
    let link = derived
        .iter()
        .find(|f| f["datasourceUid"].as_str() == Some(tempo.uid.as_str()))
        .expect("a derived field linking to the Tempo data source");
    assert_eq!(
        link["matcherType"], "label",
        "matches structured metadata, not the log line"
    );
    assert_eq!(link["matcherRegex"].as_str(), Some(loki::TRACE_ID));
    assert_eq!(
        grafana_unescape(link["url"].as_str().unwrap()),
        "${__value.raw}"
    );
    assert_eq!(
        tempo.json_data["tracesToLogsV2"]["datasourceUid"].as_str(),
        Some(loki_ds.uid.as_str())
    );

    // The events table links its trace column to Tempo in Explore.
    let dash = dashboard();
    let table = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "table")
        .expect("an events table");
    let text = table.to_string();
    let organize = &table["transformations"][1]["options"];
    let renamed = organize["renameByName"][loki::TRACE_ID]
        .as_str()
        .expect("trace_id column");
    let overrides = table["fieldConfig"]["overrides"].as_array().unwrap();
    let trace = overrides
        .iter()
        .find(|o| o["matcher"]["options"].as_str() == Some(renamed))
        .expect("an override on the trace column");
    let url = trace["properties"][0]["value"][0]["url"]
        .as_str()
        .expect("a link url");
    assert!(url.starts_with("/explore?"), "{url}");
    assert!(url.contains(&format!("\"uid\":\"{}\"", tempo.uid)), "{url}");
    assert!(url.contains("${__value.raw}"), "{url}");
    assert!(text.contains("extractFields"));
}

#[test]
fn addresses_agree_across_the_config_files() {
    let compose = Compose::load();
    let env = compose.environment("agent-immune", &|_| None);
    let loki_cfg = read_yaml("loki/loki.yaml");
    let tempo_cfg = read_yaml("tempo/tempo.yaml");
    let loki_port: u16 = loki_cfg["server"]["http_listen_port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let tempo_http: u16 = tempo_cfg["server"]["http_listen_port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let tempo_grpc = port_of(
        tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
            .as_str()
            .unwrap(),
    );

    // agent-immune -> Loki's OTLP path, and -> Tempo's OTLP receiver.
    let events = &env["LOKI_OTLP_HTTP"];
    assert!(
        events.starts_with("http://loki:") && events.ends_with("/otlp"),
        "{events}"
    );
    assert_eq!(port_of(events), loki_port);
    assert_eq!(env["TEMPO_OTLP_GRPC"], format!("http://tempo:{tempo_grpc}"));
    // Rotel -> agent-immune's receiver; the simulator -> Rotel; agent-immune -> the simulator.
    let rotel = compose.list("rotel", "command");
    let flag = |args: &[String], name: &str| {
        args[args.iter().position(|a| a == name).unwrap() + 1].clone()
    };
    assert_eq!(
        flag(&rotel, "--otlp-exporter-endpoint"),
        format!("http://agent-immune:{}", port_of(&env["OTLP_GRPC_LISTEN"]))
    );
    let simulator = compose.list("simulator", "command");
    assert_eq!(
        flag(&simulator, "--endpoint"),
        format!(
            "http://rotel:{}",
            port_of(&flag(&rotel, "--otlp-grpc-endpoint"))
        )
    );
    assert_eq!(
        env["AGENT_CONTROL_URL"],
        format!("http://simulator:{}", flag(&simulator, "--control-port"))
    );
    // Prometheus scrapes the API port; Grafana reaches each backend on its port.
    let prometheus = read_yaml("prometheus/prometheus.yaml");
    let target = prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(
        target,
        format!("agent-immune:{}", port_of(&env["API_LISTEN"]))
    );
    for ds in datasources() {
        let expected = match ds.kind.as_str() {
            "loki" => format!("http://loki:{loki_port}"),
            "tempo" => format!("http://tempo:{tempo_http}"),
            "prometheus" => "http://prometheus:9090".to_string(), // Prometheus's default listen port
            other => panic!("unexpected data source {other}"),
        };
        assert_eq!(ds.url, expected, "data source {}", ds.name);
    }
    assert!(
        !compose
            .list("prometheus", "command")
            .iter()
            .any(|a| a.contains("web.listen-address"))
    );
}

#[test]
fn the_dockerfile_copies_everything_a_release_build_reads() {
    let dockerfile = read(&deploy("Dockerfile"));
    let mut copied = BTreeSet::new();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "COPY {source}: not in the repository"
            );
            copied.insert(source.to_string());
        }
    }
    // What the build reads: the manifest, build.rs and the protos it compiles,
    // the sources, and whatever they include_str! from outside src/.
    let mut needed =
        BTreeSet::from(["Cargo.toml", "Cargo.lock", "build.rs", "src"].map(String::from));
    if read(&repo().join("build.rs")).contains("\"proto\"") {
        needed.insert("proto".into());
    }
    let mut files = vec![repo().join("src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = read(&path);
        for piece in text
            .split("include_str!(\"")
            .skip(1)
            .chain(text.split("include_bytes!(\"").skip(1))
        {
            let rel = &piece[..piece.find('"').unwrap()];
            let target = path.parent().unwrap().join(rel).canonicalize().unwrap();
            let top = target
                .strip_prefix(repo())
                .unwrap()
                .components()
                .next()
                .unwrap();
            needed.insert(top.as_os_str().to_string_lossy().into_owned());
        }
    }
    assert!(
        needed.contains("pipelines"),
        "the embedded default pipeline: {needed:?}"
    );
    let missing: Vec<_> = needed.difference(&copied).collect();
    assert!(
        missing.is_empty(),
        "the Dockerfile does not copy {missing:?}"
    );
    // The context is the repository root; the ignore file lets exactly those through.
    let ignore = read(&deploy("Dockerfile.dockerignore"));
    let allowed: BTreeSet<String> = ignore
        .lines()
        .filter_map(|l| l.strip_prefix('!'))
        .map(String::from)
        .collect();
    assert!(ignore.lines().any(|l| l.trim() == "*"), "an allowlist");
    assert_eq!(allowed, copied);
}

#[test]
fn lokis_mapping_and_the_query_check_catch_names_loki_would_not_hold() {
    use agent_immune::exporters::events::otlp_logs::to_logs_request;
    use agent_immune::immune::event::{AttrValue, Event, Severity};

    assert_eq!(loki::label_name("service.name"), "service_name");
    assert_eq!(loki::label_name("123invalid"), "key_123invalid");
    assert_eq!(loki::label_name("a..b/c"), "a_b_c");

    let event = Event {
        id: "ev-1".into(),
        name: "agent_immune.infection",
        time: 1_700_000_000_000_000_000,
        severity: Severity::Warn,
        agent_id: "planner".into(),
        trace_id: Some([0xab; 16]),
        span_id: Some([0xcd; 8]),
        body: "planner infected".into(),
        attributes: vec![
            ("agent_immune.max_deviation".into(), AttrValue::Double(7.25)),
            (
                "agent_immune.anomalies".into(),
                AttrValue::StrList(vec!["token_spike".into(), "cost_spike".into()]),
            ),
        ],
    };
    let entries = loki::entries(&to_logs_request(&[event], 42));
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(
        entry.stream,
        BTreeMap::from([("service_name".to_string(), "agent-immune".to_string())])
    );
    for (name, value) in [
        ("event_name", "agent_immune.infection"),
        ("event_id", "ev-1"),
        ("gen_ai_agent_id", "planner"),
        ("agent_immune_max_deviation", "7.25"),
        ("agent_immune_anomalies", r#"["token_spike","cost_spike"]"#),
        ("trace_id", "abababababababababababababababab"),
        ("span_id", "cdcdcdcdcdcdcdcd"),
        ("severity_text", "WARN"),
        ("severity_number", "13"),
        ("scope_name", "agent-immune"),
        ("observed_timestamp", "42"),
    ] {
        assert_eq!(
            entry.metadata.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(entry.line, "planner infected");

    let check = |expr: &str| {
        let query = Query {
            kind: "loki".into(),
            place: "q".into(),
            expr: expr.into(),
        };
        logql_problems(&query, &entries).join("; ")
    };
    let good = r#"max by (gen_ai_agent_id) (max_over_time({service_name="agent-immune"} | event_name="agent_immune.infection" | gen_ai_agent_id=~"$agent" | unwrap agent_immune_max_deviation [$__auto]))"#;
    assert_eq!(check(good), "");
    assert!(check(r#"{gen_ai_agent_id="planner"}"#).contains("structured metadata"));
    assert!(check(r#"{service_name="agent_immune"}"#).contains("no stream has"));
    assert!(
        check(r#"{service_name="agent-immune"} | agent_immune_maxdeviation > 3"#)
            .contains("no event carries")
    );
    assert!(
        check(r#"{service_name="agent-immune"} | event_name="agent_immune.infektion""#)
            .contains("no event has")
    );
    assert!(
        check(r#"sum by (agent) (count_over_time({service_name="agent-immune"} [5m]))"#)
            .contains("no event carries agent")
    );
    assert!(
        check(r#"sum(sum_over_time({service_name="agent-immune"} | unwrap event_id [5m]))"#)
            .contains("not a number")
    );
}

// ---------------------------------------------------------------- test: the stack on loopback

fn str_list(record: &LogRecord, key: &str) -> Vec<String> {
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

fn of_agent<'a>(records: &'a [LogRecord], name: &str, agent: &str) -> Vec<&'a LogRecord> {
    records
        .iter()
        .filter(|r| {
            common::event_name(r) == name && common::attr_str(r, "gen_ai.agent.id") == Some(agent)
        })
        .collect()
}

/// What is wrong with one LogQL query against the entries Loki would hold;
/// empty when every name and literal it uses is there.
fn logql_problems(query: &Query, entries: &[loki::Entry]) -> Vec<String> {
    let names = match query::names(&query.expr) {
        Ok(n) => n,
        Err(e) => return vec![format!("{}: {e}", query.place)],
    };
    let mut problems = Vec::new();
    let place = &query.place;
    assert!(
        !names.selector.is_empty(),
        "{place}: no stream selector in {:?}",
        query.expr
    );
    for m in &names.selector {
        if !entries.iter().any(|e| e.stream.contains_key(&m.name)) {
            let hint = if entries.iter().any(|e| e.metadata.contains_key(&m.name)) {
                " (it is structured metadata: a stream selector on it matches nothing)"
            } else {
                ""
            };
            problems.push(format!("{place}: no index label {}{hint}", m.name));
        } else if let (Some(v), "=") = (&m.literal, m.op)
            && !entries.iter().any(|e| e.stream.get(&m.name) == Some(v))
        {
            problems.push(format!("{place}: no stream has {}={v:?}", m.name));
        }
    }
    // The events the query is about: those its event_name literals name.
    let event_names: BTreeSet<&str> = names
        .filters
        .iter()
        .filter(|m| m.name == "event_name" && m.op == "=")
        .filter_map(|m| m.literal.as_deref())
        .collect();
    let about: Vec<&loki::Entry> = entries
        .iter()
        .filter(|e| {
            event_names.is_empty()
                || e.label("event_name")
                    .is_some_and(|n| event_names.contains(n))
        })
        .collect();
    let all: Vec<&loki::Entry> = entries.iter().collect();
    for m in &names.filters {
        // The event names themselves are looked up among all events.
        let pool = if m.name == "event_name" { &all } else { &about };
        if !pool.iter().any(|e| e.label(&m.name).is_some()) {
            problems.push(format!("{place}: no event carries {}", m.name));
        } else if let (Some(v), "=") = (&m.literal, m.op)
            && !pool.iter().any(|e| e.label(&m.name) == Some(v.as_str()))
        {
            problems.push(format!("{place}: no event has {}={v:?}", m.name));
        }
    }
    for label in &names.labels {
        if !about.iter().any(|e| e.label(label).is_some()) {
            problems.push(format!(
                "{place}: no event carries {label} (grouped or unwrapped)"
            ));
        }
    }
    for label in &names.unwrapped {
        for e in &about {
            if let Some(v) = e.label(label)
                && v.parse::<f64>().is_err()
            {
                problems.push(format!("{place}: unwrap {label}: {v:?} is not a number"));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_on_loopback_delivers_what_the_dashboard_queries() {
    let compose = Compose::load();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let local = Localizer::new(&compose, &tmp.path().join("volumes"));

    // Tempo and Loki stand-ins, on the ports their own configs listen on.
    let tempo_cfg = read_yaml("tempo/tempo.yaml");
    let tempo_grpc = port_of(
        tempo_cfg["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
            .as_str()
            .unwrap(),
    );
    let (_, tempo) = common::downstream_collector_at(local.addr("tempo", tempo_grpc)).await;
    let loki_cfg = read_yaml("loki/loki.yaml");
    let loki_port: u16 = loki_cfg["server"]["http_listen_port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let loki_sink = fake_loki(local.addr("loki", loki_port)).await;

    // agent-immune: the compose command, environment and mounted config.
    let api_key = "deploy-examples-test-key-0123456789abcdef";
    let host_env = |name: &str| (name == "AGENT_IMMUNE_API_KEY").then(|| api_key.to_string());
    let env: BTreeMap<String, String> = compose
        .environment("agent-immune", &host_env)
        .into_iter()
        .map(|(k, v)| {
            let v = local.value(&compose, "agent-immune", &v);
            (k, v)
        })
        .collect();
    assert_eq!(env["AGENT_IMMUNE_API_KEY"], api_key);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_agent-immune"));
    let args = local.args(
        &compose,
        "agent-immune",
        &compose.list("agent-immune", "command"),
    );
    let mut immune = Proc::spawn("agent-immune", &binary, &args, &env, &logs);
    let api = format!("http://{}", env["API_LISTEN"]);
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        immune.assert_running();
        let ready = http.get(format!("{api}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent-immune never became ready on {api}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Rotel with the compose file's flags.
    let rotel_args = local.args(&compose, "rotel", &compose.list("rotel", "command"));
    let mut rotel = Proc::spawn(
        "rotel",
        &rotel_agent(),
        &rotel_args,
        &BTreeMap::new(),
        &logs,
    );
    let rotel_grpc = compose.list("rotel", "command");
    let rotel_grpc = port_of(
        &rotel_grpc[rotel_grpc
            .iter()
            .position(|a| a == "--otlp-grpc-endpoint")
            .unwrap()
            + 1],
    );
    wait_listening("rotel", local.addr("rotel", rotel_grpc), &mut rotel).await;

    // The simulated fleet with the compose file's command (its first
    // infection is scheduled 20 s in).
    let sim_args = local.args(&compose, "simulator", &compose.list("simulator", "command"));
    let mut simulator = Proc::spawn("simulator", &binary, &sim_args, &BTreeMap::new(), &logs);

    let infection = loki_sink
        .wait_for(
            "the looping agent's infection at Loki",
            Duration::from_secs(120),
            |s| {
                s.records().into_iter().find(|r| {
                    common::event_name(r) == "agent_immune.infection"
                        && str_list(r, "agent_immune.anomalies")
                            .contains(&"tool_explosion".to_string())
                })
            },
        )
        .await;
    simulator.assert_running();
    rotel.assert_running();
    let agent = common::attr_str(&infection, "gen_ai.agent.id")
        .expect("agent id")
        .to_string();

    // The operator approves (through the API, with the key compose passes
    // through); then the agent is healed and passes probation.
    let next = loki_sink
        .wait_for(
            "an approval request or a healing action",
            Duration::from_secs(60),
            |s| {
                let records = s.records();
                [
                    "agent_immune.approval_requested",
                    "agent_immune.healing_action",
                ]
                .into_iter()
                .find(|name| !of_agent(&records, name, &agent).is_empty())
            },
        )
        .await;
    if next == "agent_immune.approval_requested" {
        let answer = http
            .post(format!("{api}/api/v1/agents/{agent}/approve"))
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "approve: {}", answer.status());
    }
    loki_sink
        .wait_for("probation passed", Duration::from_secs(90), |s| {
            of_agent(&s.records(), "agent_immune.probation", &agent)
                .iter()
                .any(|r| common::attr_str(r, "agent_immune.result") == Some("passed"))
                .then_some(())
        })
        .await;

    // Loki got OTLP/HTTP protobuf on its native OTLP path.
    for push in loki_sink.pushes.lock().unwrap().iter() {
        assert_eq!(
            (push.method.as_str(), push.path.as_str()),
            ("POST", "/otlp/v1/logs")
        );
        assert_eq!(push.content_type, "application/x-protobuf");
    }

    // Every name and literal of every LogQL query Grafana runs is in what
    // Loki holds (waiting out delivery of the last events).
    let queries = loki_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notified = loki_sink.changed.notified();
        let entries = loki_sink.entries();
        let problems: Vec<String> = queries
            .iter()
            .flat_map(|q| logql_problems(q, &entries))
            .collect();
        if problems.is_empty() {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!(
                "the dashboard queries what Loki would not hold:\n{}",
                problems.join("\n")
            );
        }
    }

    // The infection's trace id, as Loki stores it, is a trace Tempo received:
    // the link from the event opens the offending turn.
    let entries = loki_sink.entries();
    let stored = entries
        .iter()
        .find(|e| e.label("event_id") == common::attr_str(&infection, "event.id"))
        .expect("the infection as a Loki entry");
    assert_eq!(
        stored.stream.get("service_name").map(String::as_str),
        Some("agent-immune")
    );
    let trace_id = stored
        .metadata
        .get(loki::TRACE_ID)
        .expect("trace_id structured metadata")
        .clone();
    assert_eq!(trace_id.len(), 32);
    assert!(
        stored.line.contains(&agent),
        "the log line is the event's body: {:?}",
        stored.line
    );
    let traces: Vec<String> = tempo
        .traces
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter())
        .map(|s| hex::encode(&s.trace_id))
        .collect();
    assert!(
        traces.contains(&trace_id),
        "Tempo never got trace {trace_id} ({} spans)",
        traces.len()
    );

    // Prometheus's target serves every metric and label the dashboard's PromQL uses.
    let prometheus = read_yaml("prometheus/prometheus.yaml");
    let target = prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    let scrape = http
        .get(format!(
            "http://{}/metrics",
            local.address("prometheus", target)
        ))
        .send()
        .await
        .unwrap();
    let content_type = scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    let metrics = scrape.text().await.unwrap();
    for q in dashboard_queries(&dashboard())
        .into_iter()
        .filter(|q| q.kind == "prometheus")
    {
        let names = query::names(&q.expr).unwrap();
        assert!(
            !names.metrics.is_empty(),
            "{}: no metric in {:?}",
            q.place,
            q.expr
        );
        for metric in &names.metrics {
            assert!(
                metrics.contains(&format!("# TYPE {metric} ")),
                "{}: /metrics has no {metric}",
                q.place
            );
            if q.expr.contains("rate(") {
                assert!(
                    metrics.contains(&format!("# TYPE {metric} counter")),
                    "{}: rate of a non-counter {metric}",
                    q.place
                );
            }
            for label in &names.labels {
                assert!(
                    metrics
                        .lines()
                        .any(|l| l.starts_with(&format!("{metric}{{"))
                            && l.contains(&format!("{label}=\""))),
                    "{}: {metric} has no label {label}",
                    q.place
                );
            }
        }
    }

    // The compose healthcheck's command works against the running API.
    let check = compose.service("agent-immune")["healthcheck"]["test"]
        .as_array()
        .unwrap()
        .clone();
    let check: Vec<String> = check
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(check[..2], ["CMD", "agent-immune"]);
    let out = tokio::process::Command::new(&binary)
        .args(local.args(&compose, "agent-immune", &check[2..]))
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "healthcheck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&agent));

    simulator.assert_running();
    immune.assert_running();
}
