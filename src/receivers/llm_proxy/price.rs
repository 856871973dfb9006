//! Cost of a proxied call: tokens × a per-model price table. The genai
//! processor has no price table yet, so the proxy carries its own; the key
//! is a model name, matched exactly or as the longest prefix, so
//! `gpt-4o-mini` prices the dated `gpt-4o-mini-2024-07-18`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// USD per million input (prompt) tokens.
    pub input_usd_per_million: f64,
    /// USD per million output (completion) tokens.
    pub output_usd_per_million: f64,
}

/// The built-in table (OpenAI list prices, standard tier, USD per million
/// tokens, as of 2025). Set `prices` in the config to replace it.
pub fn default_prices() -> BTreeMap<String, ModelPrice> {
    [
        ("gpt-4o", 2.50, 10.00),
        ("gpt-4o-mini", 0.15, 0.60),
        ("gpt-4.1", 2.00, 8.00),
        ("gpt-4.1-mini", 0.40, 1.60),
        ("gpt-4.1-nano", 0.10, 0.40),
        ("gpt-5", 1.25, 10.00),
        ("gpt-5-mini", 0.25, 2.00),
        ("gpt-5-nano", 0.05, 0.40),
        ("o3", 2.00, 8.00),
        ("o4-mini", 1.10, 4.40),
        ("gpt-3.5-turbo", 0.50, 1.50),
    ]
    .into_iter()
    .map(|(model, input, output)| {
        (
            model.to_string(),
            ModelPrice {
                input_usd_per_million: input,
                output_usd_per_million: output,
            },
        )
    })
    .collect()
}

/// The price of `model`: the exact entry, else the longest key that is a
/// prefix of it; `None` when the table has neither.
pub fn price_of<'a>(
    prices: &'a BTreeMap<String, ModelPrice>,
    model: &str,
) -> Option<&'a ModelPrice> {
    if let Some(price) = prices.get(model) {
        return Some(price);
    }
    prices
        .iter()
        .filter(|(key, _)| model.starts_with(key.as_str()))
        .max_by_key(|(key, _)| key.len())
        .map(|(_, price)| price)
}

/// Cost in USD; 0 when the model has no price.
pub fn cost_usd(
    prices: &BTreeMap<String, ModelPrice>,
    model: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> f64 {
    price_of(prices, model).map_or(0.0, |p| {
        (input_tokens as f64 * p.input_usd_per_million
            + output_tokens as f64 * p.output_usd_per_million)
            / 1_000_000.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let prices = default_prices();
        let mini = price_of(&prices, "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.input_usd_per_million, 0.15);
        let full = price_of(&prices, "gpt-4o-2024-08-06").unwrap();
        assert_eq!(full.input_usd_per_million, 2.50);
        assert!(price_of(&prices, "llama3").is_none());
    }

    #[test]
    fn cost_is_tokens_times_price() {
        let prices = default_prices();
        let cost = cost_usd(&prices, "gpt-4o-mini", 1_000_000, 2_000_000);
        assert!((cost - (0.15 + 1.20)).abs() < 1e-9);
        assert_eq!(cost_usd(&prices, "unknown-model", 10, 10), 0.0);
    }
}
