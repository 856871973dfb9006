//! The container target's name template: `{agent_id}` and
//! `{<resource attribute>}` filled in per agent. Agent ids and attributes
//! come from telemetry, so the result must be a plain name: never an option
//! (`--host=…`) smuggled into the CLI's arguments.

use std::collections::BTreeMap;

const MAX_NAME_LEN: usize = 253;
const MAX_TEMPLATE_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    AgentId,
    Attribute(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.is_empty() {
            return Err("must not be empty (e.g. \"{agent_id}\")".into());
        }
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(format!("longer than {MAX_TEMPLATE_LEN} bytes"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("unmatched '}}' in {text:?}"));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(format!("unclosed '{{' in {text:?}"));
            };
            let name = after[..close].trim();
            if name.is_empty() || name.contains('{') {
                return Err(format!("empty or nested placeholder in {text:?}"));
            }
            parts.push(if name == "agent_id" {
                Part::AgentId
            } else {
                Part::Attribute(name.to_string())
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The resource attributes the template reads.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Attribute(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The name for one agent, or why there is none.
    pub fn render(
        &self,
        agent_id: &str,
        resource: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => name.push_str(text),
                Part::AgentId => name.push_str(agent_id),
                Part::Attribute(key) => match resource.get(key) {
                    Some(value) => name.push_str(value),
                    None => {
                        return Err(format!(
                            "agent {agent_id:?} has no resource attribute {key:?} to name its container"
                        ));
                    }
                },
            }
            if name.len() > MAX_NAME_LEN {
                break;
            }
        }
        if is_safe_name(&name) {
            Ok(name)
        } else {
            Err(format!(
                "{:?} (for agent {agent_id:?}) is not a plain container or deployment name",
                super::super::request::truncate(&name, 80)
            ))
        }
    }
}

/// Letters, digits, `_ . -`, starting with a letter or digit, at most 253.
pub fn is_safe_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_agent_id_and_attributes() {
        let t = Template::parse("agent-{agent_id}-{k8s.namespace.name}").unwrap();
        assert_eq!(t.attributes().collect::<Vec<_>>(), ["k8s.namespace.name"]);
        let resource = BTreeMap::from([("k8s.namespace.name".to_string(), "prod".to_string())]);
        assert_eq!(
            t.render("billing", &resource).unwrap(),
            "agent-billing-prod"
        );
        let missing = t.render("billing", &BTreeMap::new()).unwrap_err();
        assert!(missing.contains("k8s.namespace.name"), "{missing}");
    }

    #[test]
    fn refuses_options_and_odd_names() {
        let t = Template::parse("{agent_id}").unwrap();
        assert!(t.render("--host=tcp://evil", &BTreeMap::new()).is_err());
        assert!(t.render("a b", &BTreeMap::new()).is_err());
        assert!(t.render(&"a".repeat(300), &BTreeMap::new()).is_err());
        assert!(t.render("ok.name_1-2", &BTreeMap::new()).is_ok());
    }

    #[test]
    fn rejects_broken_templates() {
        assert!(Template::parse("{agent_id").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("").is_err());
        assert_eq!(
            Template::parse("fixed")
                .unwrap()
                .render("x", &BTreeMap::new())
                .unwrap(),
            "fixed"
        );
    }
}
