//! Cost of a proxied call: tokens × a per-model price table, with the same
//! keys, defaults and matching as the genai processor's `prices` (exact
//! model, else the longest prefix, so `gpt-4o-mini` prices the dated
//! `gpt-4o-mini-2024-07-18`; cached input at its own rate). The genai
//! module was not yet part of the crate when this was written, so the proxy
//! carries the table itself; it can switch to the genai types unchanged.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

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

/// List prices (standard tier, USD per million tokens) of common OpenAI
/// models, as of 2025.
pub fn default_prices() -> BTreeMap<String, ModelPrice> {
    const TABLE: &[(&str, f64, f64, f64)] = &[
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
pub fn prices_over_defaults<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ModelPrice>, D::Error> {
    let given = BTreeMap::<String, ModelPrice>::deserialize(d)?;
    let mut prices = default_prices();
    prices.extend(given);
    Ok(prices)
}

/// The price of `model`: the exact entry, else the longest key that is a
/// prefix of it; a provider prefix such as `openai/` is tried without it.
pub fn price_of<'a>(
    prices: &'a BTreeMap<String, ModelPrice>,
    model: &str,
) -> Option<&'a ModelPrice> {
    let lookup = |model: &str| {
        if model.is_empty() {
            return None;
        }
        prices.get(model).or_else(|| {
            prices
                .iter()
                .filter(|(key, _)| model.starts_with(key.as_str()))
                .max_by_key(|(key, _)| key.len())
                .map(|(_, price)| price)
        })
    };
    lookup(model).or_else(|| model.rsplit_once('/').and_then(|(_, bare)| lookup(bare)))
}

/// Cost in USD of `input` tokens (of which `cached_input` came from the
/// prompt cache) and `output` tokens; 0 when the model has no price.
pub fn cost_usd(
    prices: &BTreeMap<String, ModelPrice>,
    model: &str,
    input: u64,
    cached_input: u64,
    output: u64,
) -> f64 {
    let Some(price) = price_of(prices, model) else {
        return 0.0;
    };
    let cached = cached_input.min(input);
    let fresh = input - cached;
    let cached_price = price.cached_input_per_mtok.unwrap_or(price.input_per_mtok);
    let usd = (fresh as f64 * price.input_per_mtok
        + cached as f64 * cached_price
        + output as f64 * price.output_per_mtok)
        / 1_000_000.0;
    if usd.is_finite() { usd } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let prices = default_prices();
        let mini = price_of(&prices, "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.input_per_mtok, 0.15);
        let full = price_of(&prices, "gpt-4o-2024-08-06").unwrap();
        assert_eq!(full.input_per_mtok, 2.50);
        assert_eq!(
            price_of(&prices, "openai/gpt-4o-mini")
                .unwrap()
                .input_per_mtok,
            0.15
        );
        assert!(price_of(&prices, "llama3").is_none());
        assert!(price_of(&prices, "").is_none());
    }

    #[test]
    fn cost_is_tokens_times_price_with_cached_input_at_its_rate() {
        let prices = default_prices();
        let cost = cost_usd(&prices, "gpt-4o-mini", 1_000_000, 0, 2_000_000);
        assert!((cost - (0.15 + 1.20)).abs() < 1e-9);
        let cost = cost_usd(&prices, "gpt-4o-mini", 1_000_000, 400_000, 0);
        assert!((cost - (0.6 * 0.15 + 0.4 * 0.075)).abs() < 1e-12);
        assert!(cost_usd(&prices, "gpt-4o-mini", 10, 50, 0) >= 0.0);
        assert_eq!(cost_usd(&prices, "unknown-model", 10, 0, 10), 0.0);
    }

    #[test]
    fn configured_prices_extend_the_defaults() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "prices_over_defaults")]
            prices: BTreeMap<String, ModelPrice>,
        }
        let t: T = toml::from_str(
            "[prices.my-model]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n[prices.gpt-4o]\ninput_per_mtok = 9.0\noutput_per_mtok = 9.0",
        )
        .unwrap();
        assert_eq!(t.prices["my-model"].output_per_mtok, 2.0);
        assert_eq!(t.prices["gpt-4o"].input_per_mtok, 9.0);
        assert!(t.prices.contains_key("gpt-4o-mini"));
    }
}
