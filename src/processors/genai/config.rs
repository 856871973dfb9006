//! `[processors.genai]`: which attributes name an agent, which names are
//! framework constants rather than agents, and what a model's tokens cost.

use crate::config::ConfigIssue;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Bounds that keep a typo from turning every span lookup into a long scan.
const MAX_IDENTITY_ATTRIBUTES: usize = 32;
const MAX_PLACEHOLDERS: usize = 1_000;
const MAX_PRICES: usize = 10_000;
/// No model costs more than this per million tokens; above it is a typo.
const MAX_PRICE_PER_MTOK: f64 = 100_000.0;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenaiConfig {
    /// Further span (then resource) attributes that name the agent,
    /// consulted in order after `gen_ai.agent.id` and `gen_ai.agent.name`,
    /// e.g. `["app.agent_id"]`. Default `[]`.
    pub agent_id_attributes: Vec<String>,
    /// Agent ids and names that are framework constants, not agents: they
    /// are skipped when resolving who an agent is. Default `["agent",
    /// "OpenAI Agent", "Agent workflow"]` (what the OpenAI Agents SDK
    /// instrumentations stamp on every span and on the workflow root).
    pub placeholder_agents: Vec<String>,
    /// Price per model in USD per million tokens, used when a span reports
    /// no cost: `[processors.genai.prices."gpt-4o-mini"] input_per_mtok =
    /// 0.15, output_per_mtok = 0.6`. A model matches its exact entry, else
    /// the longest entry its name starts with (so `gpt-4o-mini` prices the
    /// dated `gpt-4o-mini-2024-07-18`). Entries given here are added to, or
    /// replace, the built-in table of common OpenAI and Anthropic models.
    #[serde(deserialize_with = "prices_over_defaults")]
    pub prices: BTreeMap<String, ModelPrice>,
}

/// USD per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// USD per million input (prompt) tokens.
    pub input_per_mtok: f64,
    /// USD per million output (completion) tokens, reasoning included.
    pub output_per_mtok: f64,
    /// USD per million input tokens read from the provider's prompt cache
    /// (they are part of the input tokens). Default: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
}

impl Default for GenaiConfig {
    fn default() -> Self {
        Self {
            agent_id_attributes: Vec::new(),
            placeholder_agents: ["agent", "OpenAI Agent", "Agent workflow"]
                .into_iter()
                .map(String::from)
                .collect(),
            prices: default_prices(),
        }
    }
}

/// List prices (standard tier, USD per million tokens) of common models.
pub fn default_prices() -> BTreeMap<String, ModelPrice> {
    const TABLE: &[(&str, f64, f64, f64)] = &[
        // OpenAI
        ("gpt-4o", 2.50, 10.00, 1.25),
        ("gpt-4o-mini", 0.15, 0.60, 0.075),
        ("gpt-4.1", 2.00, 8.00, 0.50),
        ("gpt-4.1-mini", 0.40, 1.60, 0.10),
        ("gpt-4.1-nano", 0.10, 0.40, 0.025),
        ("gpt-5", 1.25, 10.00, 0.125),
        ("gpt-5-mini", 0.25, 2.00, 0.025),
        ("gpt-5-nano", 0.05, 0.40, 0.005),
        ("gpt-4-turbo", 10.00, 30.00, 10.00),
        ("gpt-3.5-turbo", 0.50, 1.50, 0.50),
        ("o1", 15.00, 60.00, 7.50),
        ("o3", 2.00, 8.00, 0.50),
        ("o3-mini", 1.10, 4.40, 0.55),
        ("o4-mini", 1.10, 4.40, 0.275),
        ("text-embedding-3-small", 0.02, 0.0, 0.02),
        ("text-embedding-3-large", 0.13, 0.0, 0.13),
        // Anthropic (cache reads are a tenth of the input price)
        ("claude-opus-4", 15.00, 75.00, 1.50),
        ("claude-opus-4-5", 5.00, 25.00, 0.50),
        ("claude-sonnet-4", 3.00, 15.00, 0.30),
        ("claude-haiku-4-5", 1.00, 5.00, 0.10),
        ("claude-3-7-sonnet", 3.00, 15.00, 0.30),
        ("claude-3-5-sonnet", 3.00, 15.00, 0.30),
        ("claude-3-5-haiku", 0.80, 4.00, 0.08),
        ("claude-3-haiku", 0.25, 1.25, 0.03),
    ];
    TABLE
        .iter()
        .map(|&(model, input, output, cached)| {
            (
                model.to_string(),
                ModelPrice {
                    input_per_mtok: input,
                    output_per_mtok: output,
                    cached_input_per_mtok: Some(cached),
                },
            )
        })
        .collect()
}

/// A `prices` table in the config extends the built-in one instead of
/// silently dropping every model it does not mention.
fn prices_over_defaults<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ModelPrice>, D::Error> {
    let given = BTreeMap::<String, ModelPrice>::deserialize(d)?;
    let mut prices = default_prices();
    prices.extend(given);
    Ok(prices)
}

impl GenaiConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.agent_id_attributes.len() > MAX_IDENTITY_ATTRIBUTES {
            issues.push(ConfigIssue::new(
                "agent_id_attributes",
                format!(
                    "at most {MAX_IDENTITY_ATTRIBUTES} attributes, got {}",
                    self.agent_id_attributes.len()
                ),
            ));
        }
        if self.agent_id_attributes.iter().any(|k| k.trim().is_empty()) {
            issues.push(ConfigIssue::new(
                "agent_id_attributes",
                "attribute keys must not be empty",
            ));
        }
        if self.placeholder_agents.len() > MAX_PLACEHOLDERS {
            issues.push(ConfigIssue::new(
                "placeholder_agents",
                format!(
                    "at most {MAX_PLACEHOLDERS} names, got {}",
                    self.placeholder_agents.len()
                ),
            ));
        }
        if self.prices.len() > MAX_PRICES {
            issues.push(ConfigIssue::new(
                "prices",
                format!("at most {MAX_PRICES} models, got {}", self.prices.len()),
            ));
        }
        for (model, price) in &self.prices {
            if model.trim().is_empty() {
                issues.push(ConfigIssue::new("prices", "model names must not be empty"));
            }
            let fields = [
                ("input_per_mtok", Some(price.input_per_mtok)),
                ("output_per_mtok", Some(price.output_per_mtok)),
                ("cached_input_per_mtok", price.cached_input_per_mtok),
            ];
            for (field, value) in fields {
                let Some(value) = value else { continue };
                if !(value.is_finite() && (0.0..=MAX_PRICE_PER_MTOK).contains(&value)) {
                    issues.push(ConfigIssue::new(
                        format!("prices.{model}.{field}"),
                        format!(
                            "must be a price in USD per million tokens between 0 and {MAX_PRICE_PER_MTOK}, got {value}"
                        ),
                    ));
                }
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_the_agents_sdk_constants() {
        let config = GenaiConfig::default();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        for constant in ["agent", "OpenAI Agent"] {
            assert!(config.placeholder_agents.iter().any(|p| p == constant));
        }
        assert!(config.prices.contains_key("gpt-4o-mini"));
        assert!(config.prices.contains_key("claude-sonnet-4"));
    }

    #[test]
    fn a_prices_table_extends_the_built_in_one() {
        let config: GenaiConfig = toml::from_str(
            r#"
agent_id_attributes = ["app.agent_id"]
[prices."my-model"]
input_per_mtok = 1.0
output_per_mtok = 2.0
[prices."gpt-4o-mini"]
input_per_mtok = 9.0
output_per_mtok = 9.0
"#,
        )
        .unwrap();
        assert_eq!(config.agent_id_attributes, vec!["app.agent_id".to_string()]);
        assert_eq!(config.prices["my-model"].input_per_mtok, 1.0);
        assert_eq!(config.prices["gpt-4o-mini"].input_per_mtok, 9.0);
        assert!(config.prices.contains_key("gpt-4o"), "built-ins kept");
        assert!(config.validate().is_empty());
    }

    #[test]
    fn negative_or_non_finite_prices_are_rejected_with_their_key() {
        let mut config = GenaiConfig::default();
        config.prices.insert(
            "bad".into(),
            ModelPrice {
                input_per_mtok: -1.0,
                output_per_mtok: f64::NAN,
                cached_input_per_mtok: Some(f64::INFINITY),
            },
        );
        let keys: Vec<String> = config.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            vec![
                "prices.bad.input_per_mtok",
                "prices.bad.output_per_mtok",
                "prices.bad.cached_input_per_mtok"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<GenaiConfig>("agent_ids = []").unwrap_err();
        assert!(err.to_string().contains("agent_ids"), "{err}");
        let err = toml::from_str::<GenaiConfig>("[prices.x]\ninput = 1.0").unwrap_err();
        assert!(err.to_string().contains("input"), "{err}");
    }
}
