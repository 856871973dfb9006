//! `[executors.routing]`: which target acts on which agent, like the
//! Collector's routing connector: ordered rules, first match wins, and a
//! default for the rest.
//!
//! ```toml
//! [executors.routing]
//! default = "noop"
//!
//! [[executors.routing.rules]]
//! agents = ["billing-*"]
//! target = "process"
//!
//! [[executors.routing.rules]]
//! resource_attribute = { key = "k8s.namespace.name", value = "support" }
//! target = "container/k8s"
//! ```

use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const MAX_RULES: usize = 1000;
const MAX_PATTERNS: usize = 1000;
const MAX_PATTERN_LEN: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Target for agents no rule matches. Default: the one declared target
    /// that no composite lists, when there is exactly one; "noop" (observe
    /// only) when none is declared; with several, this key is required.
    pub default: Option<String>,
    /// Rules tried in order (`[[executors.routing.rules]]`); the first that
    /// matches an agent picks its target. Default none.
    pub rules: Vec<RouteRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Agent id patterns, any of which matches (`*` any run of characters,
    /// `?` one character), e.g. `["billing-*", "support-bot"]`. Default: any
    /// agent (then resource_attribute is required).
    #[serde(default)]
    pub agents: Vec<String>,
    /// A resource attribute the agent must have, e.g. `{ key =
    /// "k8s.namespace.name", value = "support" }`; the value may use `*` and
    /// `?`. With agents, both must match. Default none.
    #[serde(default)]
    pub resource_attribute: Option<AttributeMatch>,
    /// The target id for matching agents, e.g. "process" or
    /// "http_control/agents". Required.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// Resource attribute key, e.g. "service.namespace".
    pub key: String,
    /// Value pattern (`*`, `?` allowed).
    pub value: String,
}

impl RouteRule {
    pub fn matches(&self, agent_id: &str, resource: &BTreeMap<String, String>) -> bool {
        let agent_ok =
            self.agents.is_empty() || self.agents.iter().any(|p| glob_match(p, agent_id));
        let attribute_ok = match &self.resource_attribute {
            None => true,
            Some(m) => resource
                .get(&m.key)
                .is_some_and(|v| glob_match(&m.value, v)),
        };
        agent_ok && attribute_ok
    }
}

impl RoutingConfig {
    /// Checks the rules' own shape; target ids are checked by the executors
    /// config, which knows what is declared. Keys are relative to `routing`.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.rules.len() > MAX_RULES {
            issues.push(ConfigIssue::new(
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let key = format!("rules[{i}]");
            if rule.agents.is_empty() && rule.resource_attribute.is_none() {
                issues.push(ConfigIssue::new(
                    key.clone(),
                    "needs agents or resource_attribute (agents no rule matches go to routing.default)",
                ));
            }
            if rule.agents.len() > MAX_PATTERNS {
                issues.push(ConfigIssue::new(
                    format!("{key}.agents"),
                    format!("at most {MAX_PATTERNS} patterns"),
                ));
            }
            for pattern in &rule.agents {
                if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
                    issues.push(ConfigIssue::new(
                        format!("{key}.agents"),
                        format!("patterns must be 1 to {MAX_PATTERN_LEN} bytes"),
                    ));
                }
            }
            if let Some(m) = &rule.resource_attribute {
                if m.key.is_empty() {
                    issues.push(ConfigIssue::new(
                        format!("{key}.resource_attribute.key"),
                        "must not be empty",
                    ));
                }
                if m.value.len() > MAX_PATTERN_LEN {
                    issues.push(ConfigIssue::new(
                        format!("{key}.resource_attribute.value"),
                        format!("at most {MAX_PATTERN_LEN} bytes"),
                    ));
                }
            }
        }
        issues
    }
}

pub use crate::config::glob::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("billing-*", "billing-eu"));
        assert!(glob_match("billing-*", "billing-"));
        assert!(!glob_match("billing-*", "support"));
        assert!(glob_match("*-bot", "support-bot"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
    }

    #[test]
    fn rules_match_agents_and_attributes() {
        let rules: RoutingConfig = toml::from_str(
            r#"[[rules]]
               agents = ["billing-*"]
               resource_attribute = { key = "deployment.environment", value = "prod*" }
               target = "process""#,
        )
        .unwrap();
        let rule = &rules.rules[0];
        let prod = BTreeMap::from([("deployment.environment".into(), "production".into())]);
        assert!(rule.matches("billing-eu", &prod));
        assert!(!rule.matches("billing-eu", &BTreeMap::new()));
        assert!(!rule.matches("support", &prod));
        assert!(rules.validate().is_empty());
    }

    #[test]
    fn a_rule_needs_a_matcher_and_a_target() {
        let rules: RoutingConfig = toml::from_str(
            r#"[[rules]]
               target = "process""#,
        )
        .unwrap();
        let keys: Vec<_> = rules.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["rules[0]"]);
        assert!(toml::from_str::<RoutingConfig>("[[rules]]\nagents = [\"a\"]").is_err());
    }
}
