//! The pipeline config document: named receivers, processors and exporters
//! wired by `[pipelines.*]`, as in the Collector. Loading reports every
//! problem with its file, line and full key; unknown keys are errors.

use super::service::ServiceConfig;
use super::{ConfigIssue, env};
use crate::api::config::ApiConfig;
use crate::executors::ExecutorsConfig;
use crate::exporters::events::config::EventsConfig;
use crate::exporters::otlp_forward::config::OtlpForwardConfig;
use crate::immune::config::ImmuneConfig;
use crate::pipeline::consumer::Signal;
use crate::processors::genai::config::GenaiConfig;
use crate::processors::turns::config::TurnsConfig;
use crate::receivers::llm_proxy::LlmProxyConfig;
use crate::receivers::otlp::config::OtlpReceiverConfig;
use crate::state::StateConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// The default pipeline, embedded in the binary.
pub const DEFAULT_PIPELINE: &str = include_str!("../../pipelines/default.toml");

/// A component id, `type[/name]` as in the Collector (`otlp`, `otlp/agents`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId(pub String);

impl ComponentId {
    /// The component type: the part before the first `/`.
    pub fn kind(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
pub enum ReceiverConfig {
    Otlp(OtlpReceiverConfig),
    LlmProxy(Box<LlmProxyConfig>),
}

#[derive(Debug, Clone)]
pub enum ProcessorConfig {
    Genai(GenaiConfig),
    Turns(TurnsConfig),
    Immune(Box<ImmuneConfig>),
}

#[derive(Debug, Clone)]
pub enum ExporterConfig {
    OtlpForward(OtlpForwardConfig),
    Events(EventsConfig),
}

/// One `[pipelines.<signal>[/<name>]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineTable {
    receivers: Vec<Spanned<String>>,
    #[serde(default)]
    processors: Vec<Spanned<String>>,
    exporters: Vec<Spanned<String>>,
}

/// A validated pipeline: which components, in order.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub name: String,
    pub signal: Signal,
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
}

/// The whole validated document.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<embedded default>`).
    pub origin: String,
    pub receivers: BTreeMap<ComponentId, ReceiverConfig>,
    pub processors: BTreeMap<ComponentId, ProcessorConfig>,
    pub exporters: BTreeMap<ComponentId, ExporterConfig>,
    pub pipelines: Vec<PipelineConfig>,
    pub service: ServiceConfig,
    pub api: ApiConfig,
    pub executors: ExecutorsConfig,
    /// `[state]`: where state is kept. Without the table nothing is
    /// persisted (tests, throwaway runs); the embedded default has it.
    pub state: Option<StateConfig>,
    /// `--data-dir` from the command line (wins over env and config).
    pub data_dir_flag: Option<std::path::PathBuf>,
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.origin, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.origin, self.line, self.key, self.message
            )
        }
    }
}

/// All problems found in a config file (never just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Loads the embedded default pipeline.
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Config::parse("<embedded default>", DEFAULT_PIPELINE, |k| {
            std::env::var(k).ok()
        })
    }

    /// Reads and validates a config file, expanding `${env:VAR}` from the
    /// process environment.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                origin: origin.clone(),
                line: 0,
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Config::parse(&origin, &source, |k| std::env::var(k).ok())
    }

    /// Parses and validates config text.
    pub fn parse(
        origin: &str,
        source: &str,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut ctx = Loader {
            origin: origin.to_string(),
            source: String::new(),
            errors: Vec::new(),
        };
        match env::expand(source, lookup_env) {
            Ok(expanded) => ctx.source = expanded,
            Err((line, message)) => {
                ctx.errors.push(ConfigError {
                    origin: origin.to_string(),
                    line,
                    key: String::new(),
                    message,
                });
                return Err(ConfigErrors(ctx.errors));
            }
        }
        let source = ctx.source.clone();
        let root = match DeTable::parse(&source) {
            Ok(root) => root,
            Err(e) => {
                ctx.push_toml_error("", &e, 0..0);
                return Err(ConfigErrors(ctx.errors));
            }
        };
        let config = ctx.document(root.into_inner());
        if ctx.errors.is_empty() {
            Ok(config)
        } else {
            ctx.errors.sort_by_key(|e| e.line);
            Err(ConfigErrors(ctx.errors))
        }
    }
}

/// Loads one component's table (already known to be of this type) into
/// its typed config; `key` is the full key errors are reported under.
type LoadComponent<T> = fn(&mut Loader, &str, Spanned<DeValue<'_>>) -> T;

/// The component types one section (`[receivers]`, ...) knows, in the
/// order its "unknown type" error lists them.
struct ComponentTable<T: 'static> {
    /// The singular section name used in errors (`receiver`).
    section: &'static str,
    kinds: &'static [(&'static str, LoadComponent<T>)],
}

const RECEIVERS: ComponentTable<ReceiverConfig> = ComponentTable {
    section: "receiver",
    kinds: &[
        ("otlp", |l, key, v| {
            ReceiverConfig::Otlp(l.typed(key, v, OtlpReceiverConfig::validate))
        }),
        ("llm_proxy", |l, key, v| {
            ReceiverConfig::LlmProxy(Box::new(l.typed(key, v, LlmProxyConfig::validate)))
        }),
    ],
};

const PROCESSORS: ComponentTable<ProcessorConfig> = ComponentTable {
    section: "processor",
    kinds: &[
        ("genai", |l, key, v| {
            ProcessorConfig::Genai(l.typed(key, v, GenaiConfig::validate))
        }),
        ("turns", |l, key, v| {
            ProcessorConfig::Turns(l.typed(key, v, TurnsConfig::validate))
        }),
        ("immune", |l, key, v| {
            ProcessorConfig::Immune(Box::new(l.typed(key, v, ImmuneConfig::validate)))
        }),
    ],
};

const EXPORTERS: ComponentTable<ExporterConfig> = ComponentTable {
    section: "exporter",
    kinds: &[
        ("otlp_forward", |l, key, v| {
            ExporterConfig::OtlpForward(l.typed(key, v, OtlpForwardConfig::validate))
        }),
        ("events", |l, key, v| {
            ExporterConfig::Events(l.typed(key, v, EventsConfig::validate))
        }),
    ],
};

struct Loader {
    origin: String,
    source: String,
    errors: Vec<ConfigError>,
}

impl Loader {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.source.len());
        self.source.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn push(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            origin: self.origin.clone(),
            line: self.line_of(span.start),
            key: key.into(),
            message: message.into(),
        });
    }

    fn push_toml_error(&mut self, key: &str, e: &toml::de::Error, fallback: Range<usize>) {
        let span = e.span().unwrap_or(fallback);
        self.push(span, key, e.message().trim().to_string());
    }

    /// Deserializes one table into a typed config, reporting any error at
    /// its own line, then runs the type's semantic validation.
    fn typed<T: for<'de> Deserialize<'de> + Default>(
        &mut self,
        key: &str,
        value: Spanned<DeValue<'_>>,
        validate: impl Fn(&T) -> Vec<ConfigIssue>,
    ) -> T {
        let span = value.span();
        // A table written as `[processors.turns]` with nothing in it is the
        // component with its defaults.
        let table = match value.get_ref() {
            DeValue::Table(t) => Some(t.clone()),
            _ => None,
        };
        let parsed = T::deserialize(ValueDeserializer::from(value));
        match parsed {
            Ok(config) => {
                for issue in validate(&config) {
                    let at = table
                        .as_ref()
                        .and_then(|t| find_key(t, &issue.key))
                        .unwrap_or(span.clone());
                    self.push(at, format!("{key}.{}", issue.key), issue.message);
                }
                config
            }
            Err(e) => {
                self.push_toml_error(key, &e, span);
                T::default()
            }
        }
    }

    fn document(&mut self, root: DeTable<'_>) -> Config {
        let mut config = Config {
            origin: self.origin.clone(),
            receivers: BTreeMap::new(),
            processors: BTreeMap::new(),
            exporters: BTreeMap::new(),
            pipelines: Vec::new(),
            service: ServiceConfig::default(),
            api: ApiConfig::default(),
            executors: ExecutorsConfig::default(),
            state: None,
            data_dir_flag: None,
        };
        let mut pipelines = Vec::new();
        for (key, value) in root {
            let key_span = key.span();
            let name = key.into_inner().to_string();
            match name.as_str() {
                "receivers" | "processors" | "exporters" | "pipelines" => {
                    let DeValue::Table(table) = value.into_inner() else {
                        self.push(key_span, &name, "must be a table");
                        continue;
                    };
                    for (id, component) in table {
                        let id_span = id.span();
                        let id = ComponentId(id.into_inner().to_string());
                        let full = format!("{name}.{id}");
                        match name.as_str() {
                            "receivers" => {
                                let into = &mut config.receivers;
                                self.component(&RECEIVERS, into, id, id_span, &full, component)
                            }
                            "processors" => {
                                let into = &mut config.processors;
                                self.component(&PROCESSORS, into, id, id_span, &full, component)
                            }
                            "exporters" => {
                                let into = &mut config.exporters;
                                self.component(&EXPORTERS, into, id, id_span, &full, component)
                            }
                            _ => pipelines.push((id, id_span, full, component)),
                        }
                    }
                }
                "service" => {
                    config.service = self.typed(&name, value, ServiceConfig::validate);
                }
                "api" => {
                    config.api = self.typed(&name, value, ApiConfig::validate);
                }
                "executors" => {
                    config.executors = self.typed(&name, value, ExecutorsConfig::validate);
                }
                "state" => {
                    config.state = Some(self.typed(&name, value, StateConfig::validate));
                }
                other => self.push(
                    key_span,
                    other,
                    "unknown top-level key (expected receivers, processors, exporters, executors, pipelines, service, api or state)",
                ),
            }
        }
        for (id, span, full, table) in pipelines {
            self.pipeline(&mut config, id, span, &full, table);
        }
        if config.pipelines.is_empty() && self.errors.is_empty() {
            self.push(0..0, "pipelines", "no pipeline is defined");
        }
        config
    }

    /// Loads one component table through its section's type table, or
    /// reports an unknown type naming the known ones.
    fn component<T>(
        &mut self,
        table: &ComponentTable<T>,
        into: &mut BTreeMap<ComponentId, T>,
        id: ComponentId,
        span: Range<usize>,
        full: &str,
        value: Spanned<DeValue<'_>>,
    ) {
        let Some((_, load)) = table.kinds.iter().find(|(kind, _)| *kind == id.kind()) else {
            let known: Vec<&str> = table.kinds.iter().map(|(kind, _)| *kind).collect();
            return self.push(
                span,
                full,
                format!(
                    "unknown {} type {:?} (known: {})",
                    table.section,
                    id.kind(),
                    known.join(", ")
                ),
            );
        };
        let parsed = load(self, full, value);
        into.insert(id, parsed);
    }

    fn pipeline(
        &mut self,
        config: &mut Config,
        id: ComponentId,
        span: Range<usize>,
        full: &str,
        value: Spanned<DeValue<'_>>,
    ) {
        let signal = match id.kind() {
            "traces" => Signal::Traces,
            "metrics" => Signal::Metrics,
            "logs" => Signal::Logs,
            other => {
                return self.push(
                    span,
                    full,
                    format!("pipeline type must be traces, metrics or logs, not {other:?}"),
                );
            }
        };
        let table: PipelineTable = match PipelineTable::deserialize(ValueDeserializer::from(value))
        {
            Ok(t) => t,
            Err(e) => return self.push_toml_error(full, &e, span),
        };
        let mut pipeline = PipelineConfig {
            name: id.0.clone(),
            signal,
            receivers: Vec::new(),
            processors: Vec::new(),
            exporters: Vec::new(),
        };
        if table.receivers.is_empty() {
            self.push(
                span.clone(),
                format!("{full}.receivers"),
                "needs at least one receiver",
            );
        }
        if table.exporters.is_empty() {
            self.push(
                span.clone(),
                format!("{full}.exporters"),
                "needs at least one exporter",
            );
        }
        let mut proxies = Vec::new();
        for r in table.receivers {
            let cid = ComponentId(r.get_ref().clone());
            match config.receivers.get(&cid) {
                None => self.push(
                    r.span(),
                    format!("{full}.receivers"),
                    format!("receiver {cid:?} is not defined under [receivers]"),
                ),
                Some(ReceiverConfig::LlmProxy(_)) => proxies.push(r.span()),
                Some(_) => {}
            }
            pipeline.receivers.push(cid);
        }
        let mut kinds = Vec::new();
        for p in table.processors {
            let cid = ComponentId(p.get_ref().clone());
            match config.processors.get(&cid) {
                None => self.push(
                    p.span(),
                    format!("{full}.processors"),
                    format!("processor {cid:?} is not defined under [processors]"),
                ),
                Some(_) if signal != Signal::Traces => self.push(
                    p.span(),
                    format!("{full}.processors"),
                    format!(
                        "processor {cid:?} works on traces only; {} pipelines forward untouched",
                        signal.as_str()
                    ),
                ),
                Some(_) => kinds.push((cid.kind().to_string(), p.span())),
            }
            pipeline.processors.push(cid);
        }
        // Detection needs its stages in data-flow order, each once.
        let order = ["genai", "turns", "immune"];
        let got: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
        if !got.is_empty() && got != order {
            let at = kinds
                .first()
                .map(|(_, s)| s.clone())
                .unwrap_or(span.clone());
            self.push(at, format!("{full}.processors"), format!("detection needs exactly [\"genai\", \"turns\", \"immune\"] in that order, got {got:?}"));
        }
        if got.is_empty() {
            for at in proxies {
                self.push(at, format!("{full}.receivers"), "an llm_proxy receiver feeds detection: its pipeline needs the genai, turns and immune processors");
            }
        }
        for e in table.exporters {
            let cid = ComponentId(e.get_ref().clone());
            match config.exporters.get(&cid) {
                None => self.push(e.span(), format!("{full}.exporters"), format!("exporter {cid:?} is not defined under [exporters]")),
                Some(ExporterConfig::Events(_)) if got.is_empty() => self.push(
                    e.span(),
                    format!("{full}.exporters"),
                    "an events exporter needs the immune processor in its pipeline (events come from detection)",
                ),
                Some(_) => {}
            }
            pipeline.exporters.push(cid);
        }
        config.pipelines.push(pipeline);
    }
}

/// Finds the span of a dotted key (`retry_on_failure.initial_interval`)
/// inside a table, falling back to the deepest key found.
fn find_key(table: &DeTable<'_>, dotted: &str) -> Option<Range<usize>> {
    let mut current = table;
    let mut found = None;
    for part in dotted.split('.') {
        let (k, v) = current.get_key_value(part)?;
        found = Some(k.span());
        match v.get_ref() {
            DeValue::Table(t) => current = t,
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_component_types_name_the_known_ones() {
        let source = "[receivers.kafka]\n\n[processors.\"batch/x\"]\n\n[exporters.debug]\n";
        let errors = Config::parse("t.toml", source, |_| None).unwrap_err();
        let lines: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            lines,
            [
                "t.toml:1: receivers.kafka: unknown receiver type \"kafka\" (known: otlp, llm_proxy)",
                "t.toml:3: processors.batch/x: unknown processor type \"batch\" (known: genai, turns, immune)",
                "t.toml:5: exporters.debug: unknown exporter type \"debug\" (known: otlp_forward, events)",
            ]
        );
    }

    #[test]
    fn each_known_component_type_loads_into_its_variant() {
        let source = "[receivers.otlp]\n[receivers.llm_proxy]\n[processors.genai]\n[processors.turns]\n\
                      [processors.immune]\n[exporters.otlp_forward]\nendpoint = \"http://127.0.0.1:4317\"\n[exporters.events]\n\
                      [pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"genai\", \"turns\", \"immune\"]\n\
                      exporters = [\"events\"]\n";
        let config = Config::parse("t.toml", source, |_| None).unwrap();
        let id = |s: &str| ComponentId(s.to_string());
        assert!(matches!(
            config.receivers[&id("otlp")],
            ReceiverConfig::Otlp(_)
        ));
        assert!(matches!(
            config.receivers[&id("llm_proxy")],
            ReceiverConfig::LlmProxy(_)
        ));
        assert!(matches!(
            config.processors[&id("genai")],
            ProcessorConfig::Genai(_)
        ));
        assert!(matches!(
            config.processors[&id("turns")],
            ProcessorConfig::Turns(_)
        ));
        assert!(matches!(
            config.processors[&id("immune")],
            ProcessorConfig::Immune(_)
        ));
        assert!(matches!(
            config.exporters[&id("otlp_forward")],
            ExporterConfig::OtlpForward(_)
        ));
        assert!(matches!(
            config.exporters[&id("events")],
            ExporterConfig::Events(_)
        ));
    }
}
