//! `[executors]`: the enforcement targets, one table each, with Collector
//! style ids `type[/name]` (`process`, `http_control/agents`), and
//! `[executors.routing]` choosing a target per agent.
//!
//! ```toml
//! [executors.http_control]
//! base_url = "http://127.0.0.1:9000"
//! bearer_token = "${env:AGENT_CONTROL_TOKEN}"
//!
//! [executors.process]
//! pids = { "billing-agent" = 4242 }
//!
//! [executors.composite]
//! targets = ["http_control", "process"]   # first success wins
//!
//! [executors.routing]
//! default = "composite"
//! ```
//!
//! Types: `noop`, `http_control`, `agent_control_grpc`, `process`,
//! `container`, `composite`. `noop` exists without being declared. An id
//! with a name is quoted in TOML: `[executors."http_control/support"]`.

use super::agent_control_grpc::AgentControlGrpcConfig;
use super::composite::CompositeConfig;
use super::container::config::ContainerConfig;
use super::container::template::Template;
use super::http_control::HttpControlConfig;
use super::noop::{NOOP_ID, NoopConfig};
use super::process::config::ProcessConfig;
use super::process::{HOST_ATTRIBUTE, PID_ATTRIBUTE};
use super::routing::RoutingConfig;
use crate::config::ConfigIssue;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};

/// The table name reserved for routing.
pub const ROUTING_KEY: &str = "routing";
/// Target types, as written before the `/` of an id.
pub const KINDS: [&str; 7] = [
    "noop",
    "llm_proxy",
    "http_control",
    "agent_control_grpc",
    "process",
    "container",
    "composite",
];
/// Most targets in one config.
const MAX_TARGETS: usize = 256;

/// One target's table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TargetConfig {
    Noop(NoopConfig),
    /// The `llm_proxy` receiver's own gateway (block, throttle, strip tools);
    /// the id names the receiver (`[executors.llm_proxy]` acts through
    /// `[receivers.llm_proxy]`). Takes no keys.
    LlmProxy(NoopConfig),
    HttpControl(HttpControlConfig),
    AgentControlGrpc(AgentControlGrpcConfig),
    Process(ProcessConfig),
    Container(ContainerConfig),
    Composite(CompositeConfig),
}

impl TargetConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Noop(_) => "noop",
            TargetConfig::LlmProxy(_) => "llm_proxy",
            TargetConfig::HttpControl(_) => "http_control",
            TargetConfig::AgentControlGrpc(_) => "agent_control_grpc",
            TargetConfig::Process(_) => "process",
            TargetConfig::Container(_) => "container",
            TargetConfig::Composite(_) => "composite",
        }
    }

    /// Keys relative to the target's own table.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        match self {
            TargetConfig::Noop(c) | TargetConfig::LlmProxy(c) => c.validate(),
            TargetConfig::HttpControl(c) => c.validate(),
            TargetConfig::AgentControlGrpc(c) => c.validate(),
            TargetConfig::Process(c) => c.validate(),
            TargetConfig::Container(c) => c.validate(),
            TargetConfig::Composite(c) => c.validate(),
        }
    }
}

/// The whole `[executors]` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutorsConfig {
    /// Target id → its config.
    pub targets: BTreeMap<String, TargetConfig>,
    pub routing: RoutingConfig,
}

/// The type of an id: the part before the first `/`.
pub fn kind_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

impl ExecutorsConfig {
    /// Every problem, keys relative to `[executors]`.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.targets.len() > MAX_TARGETS {
            issues.push(ConfigIssue::new(
                "",
                format!("at most {MAX_TARGETS} targets"),
            ));
        }
        for (id, target) in &self.targets {
            if let Some((_, name)) = id.split_once('/')
                && (name.is_empty() || name.contains('/'))
            {
                issues.push(ConfigIssue::new(
                    id.clone(),
                    "ids are type or type/name, with a non-empty name",
                ));
            }
            for issue in target.validate() {
                issues.push(ConfigIssue::new(
                    format!("{id}.{}", issue.key),
                    issue.message,
                ));
            }
            if let TargetConfig::Composite(composite) = target {
                for member in &composite.targets {
                    if let Some(problem) = self.member_problem(id, member) {
                        issues.push(ConfigIssue::new(format!("{id}.targets"), problem));
                    }
                }
            }
        }
        for issue in self.routing.validate() {
            issues.push(ConfigIssue::new(
                format!("{ROUTING_KEY}.{}", issue.key),
                issue.message,
            ));
        }
        for (i, rule) in self.routing.rules.iter().enumerate() {
            if !self.is_target(&rule.target) {
                issues.push(ConfigIssue::new(
                    format!("{ROUTING_KEY}.rules[{i}].target"),
                    self.undeclared(&rule.target),
                ));
            }
        }
        match &self.routing.default {
            Some(id) if !self.is_target(id) => {
                issues.push(ConfigIssue::new(
                    format!("{ROUTING_KEY}.default"),
                    self.undeclared(id),
                ));
            }
            Some(_) => {}
            None => {
                let candidates = self.default_candidates();
                if candidates.len() > 1 {
                    issues.push(ConfigIssue::new(
                        format!("{ROUTING_KEY}.default"),
                        format!(
                            "several targets are declared ({}): say which acts on agents no rule matches (\"noop\" to only observe them)",
                            candidates.join(", ")
                        ),
                    ));
                }
            }
        }
        issues
    }

    /// The target for agents no rule matches (see `RoutingConfig::default`).
    pub fn default_target(&self) -> &str {
        if let Some(id) = &self.routing.default {
            return id;
        }
        match self.default_candidates().as_slice() {
            [only] => only,
            _ => NOOP_ID,
        }
    }

    /// The resource attributes routing and targets read: what the pipeline
    /// must keep per agent and put in `ActionRequest::resource`.
    pub fn resource_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for rule in &self.routing.rules {
            if let Some(m) = &rule.resource_attribute {
                keys.insert(m.key.clone());
            }
        }
        for target in self.targets.values() {
            match target {
                TargetConfig::Process(p) if p.resource_pids => {
                    keys.insert(PID_ATTRIBUTE.to_string());
                    keys.insert(HOST_ATTRIBUTE.to_string());
                }
                TargetConfig::Container(c) => {
                    if let Ok(template) = Template::parse(&c.target) {
                        keys.extend(template.attributes().map(str::to_string));
                    }
                }
                _ => {}
            }
        }
        keys
    }

    fn is_target(&self, id: &str) -> bool {
        id == NOOP_ID || self.targets.contains_key(id)
    }

    fn undeclared(&self, id: &str) -> String {
        let mut known: Vec<&str> = self.targets.keys().map(String::as_str).collect();
        if !known.contains(&NOOP_ID) {
            known.push(NOOP_ID);
        }
        format!(
            "target {id:?} is not declared under [executors] (declared: {})",
            known.join(", ")
        )
    }

    fn member_problem(&self, composite: &str, member: &str) -> Option<String> {
        if member == composite {
            return Some("a composite cannot list itself".into());
        }
        if !self.is_target(member) {
            return Some(self.undeclared(member));
        }
        matches!(self.targets.get(member), Some(TargetConfig::Composite(_)))
            .then(|| format!("{member:?} is a composite; composites do not nest"))
    }

    /// Declared targets that no composite lists.
    fn default_candidates(&self) -> Vec<&str> {
        let members: BTreeSet<&str> = self
            .targets
            .values()
            .filter_map(|t| match t {
                TargetConfig::Composite(c) => Some(c.targets.iter().map(String::as_str)),
                _ => None,
            })
            .flatten()
            .collect();
        self.targets
            .keys()
            .map(String::as_str)
            .filter(|id| !members.contains(id))
            .collect()
    }
}

impl<'de> Deserialize<'de> for ExecutorsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ExecutorsVisitor)
    }
}

struct ExecutorsVisitor;

impl<'de> Visitor<'de> for ExecutorsVisitor {
    type Value = ExecutorsConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table of executors, e.g. [executors.process]")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut config = ExecutorsConfig::default();
        while let Some(id) = map.next_key::<String>()? {
            if id == ROUTING_KEY {
                config.routing = map.next_value()?;
                continue;
            }
            let target = match kind_of(&id) {
                "noop" => TargetConfig::Noop(map.next_value()?),
                "llm_proxy" => TargetConfig::LlmProxy(map.next_value()?),
                "http_control" => TargetConfig::HttpControl(map.next_value()?),
                "agent_control_grpc" => TargetConfig::AgentControlGrpc(map.next_value()?),
                "process" => TargetConfig::Process(map.next_value()?),
                "container" => TargetConfig::Container(map.next_value()?),
                "composite" => TargetConfig::Composite(map.next_value()?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown executor type {other:?} in {id:?} (known: {}, and the routing table)",
                        KINDS.join(", ")
                    )));
                }
            };
            config.targets.insert(id, target);
        }
        Ok(config)
    }
}

impl Serialize for ExecutorsConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (id, target) in &self.targets {
            map.serialize_entry(id, target)?;
        }
        if self.routing != RoutingConfig::default() {
            map.serialize_entry(ROUTING_KEY, &self.routing)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ExecutorsConfig {
        toml::from_str(text).unwrap()
    }

    fn keys(config: &ExecutorsConfig) -> Vec<String> {
        config.validate().into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn nothing_declared_is_observe_only() {
        let config = parse("");
        assert_eq!(config.default_target(), "noop");
        assert!(config.validate().is_empty());
    }

    #[test]
    fn the_one_declared_target_is_the_default() {
        let config = parse("[process]\npids = { a = 42 }");
        assert_eq!(config.default_target(), "process");
        assert!(config.validate().is_empty());
        let config = parse(
            r#"[process]
               [http_control]
               base_url = "http://127.0.0.1:9000"
               [composite]
               targets = ["http_control", "process"]"#,
        );
        assert_eq!(config.default_target(), "composite");
        assert!(config.validate().is_empty());
    }

    #[test]
    fn several_targets_need_a_default() {
        let config = parse(
            r#"[process]
               [container]"#,
        );
        assert_eq!(keys(&config), ["routing.default"]);
        let config = parse(
            r#"[process]
               [container]
               [routing]
               default = "noop""#,
        );
        assert!(config.validate().is_empty());
        assert_eq!(config.default_target(), "noop");
    }

    #[test]
    fn references_must_be_declared() {
        let config = parse(
            r#"[composite]
               targets = ["process", "composite", "noop"]
               ["composite/b"]
               targets = ["composite"]
               [routing]
               default = "http_control"
               [[routing.rules]]
               agents = ["x*"]
               target = "container""#,
        );
        assert_eq!(
            keys(&config),
            [
                "composite.targets",
                "composite.targets",
                "composite/b.targets",
                "routing.rules[0].target",
                "routing.default"
            ]
        );
        let message = &config.validate()[3].message;
        assert!(message.contains("not declared"), "{message}");
    }

    #[test]
    fn target_keys_are_prefixed_and_types_checked() {
        let config = parse(
            r#"["http_control/agents"]
               timeout = "1s""#,
        );
        assert_eq!(keys(&config), ["http_control/agents.base_url"]);
        let err = toml::from_str::<ExecutorsConfig>("[podman]").unwrap_err();
        assert!(
            err.to_string().contains("unknown executor type \"podman\""),
            "{err}"
        );
        let err = toml::from_str::<ExecutorsConfig>("[process]\npidz = {}").unwrap_err();
        assert!(err.to_string().contains("pidz"), "{err}");
        let config = parse("[\"process/\"]");
        assert_eq!(keys(&config), ["process/"]);
    }

    #[test]
    fn resource_keys_are_what_routing_and_targets_read() {
        let config = parse(
            r#"[process]
               resource_pids = true
               [container]
               target = "{k8s.deployment.name}"
               [routing]
               default = "noop"
               [[routing.rules]]
               resource_attribute = { key = "service.namespace", value = "ops" }
               target = "container""#,
        );
        let keys: Vec<_> = config.resource_keys().into_iter().collect();
        assert_eq!(
            keys,
            [
                "host.name",
                "k8s.deployment.name",
                "process.pid",
                "service.namespace"
            ]
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let config = parse(
            r#"[process]
               pids = { a = 42 }
               [routing]
               default = "process""#,
        );
        let text = toml::to_string(&config).unwrap();
        assert_eq!(parse(&text), config);
    }
}
