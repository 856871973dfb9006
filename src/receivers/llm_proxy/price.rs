//! Cost of a proxied call: tokens × the genai processor's price table (the
//! same `ModelPrice` entries and built-in defaults, so both paths price a
//! turn alike): exact model, else the longest prefix, so `gpt-4o-mini`
//! prices the dated `gpt-4o-mini-2024-07-18`; cached input at its own rate.

pub use crate::processors::genai::config::{ModelPrice, default_prices};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

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
