//! The cost of one LLM call from its tokens and the configured price table.

use super::config::ModelPrice;
use std::collections::{BTreeMap, HashMap};

/// Prices by exact model name, then by the longest matching prefix.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    exact: HashMap<String, ModelPrice>,
    /// Longest first, so the first prefix that matches is the most specific.
    by_prefix: Vec<(String, ModelPrice)>,
}

/// Token counts of one call, as they are priced.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    /// Input tokens served from the prompt cache (included in `input`).
    pub cached_input: u64,
}

impl PriceTable {
    pub fn new(prices: &BTreeMap<String, ModelPrice>) -> Self {
        let mut by_prefix: Vec<(String, ModelPrice)> =
            prices.iter().map(|(k, v)| (k.clone(), *v)).collect();
        by_prefix.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self {
            exact: prices.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            by_prefix,
        }
    }

    /// The price of `model`: exact entry, else the longest prefix; a
    /// provider prefix such as `openai/` is tried without it as well.
    pub fn price_of(&self, model: &str) -> Option<&ModelPrice> {
        self.lookup(model).or_else(|| {
            model
                .rsplit_once('/')
                .and_then(|(_, bare)| self.lookup(bare))
        })
    }

    fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        if model.is_empty() {
            return None;
        }
        self.exact.get(model).or_else(|| {
            self.by_prefix
                .iter()
                .find(|(key, _)| model.starts_with(key.as_str()))
                .map(|(_, price)| price)
        })
    }

    /// Cost in USD, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Option<f64> {
        let price = self.price_of(model)?;
        let cached = usage.cached_input.min(usage.input);
        let fresh = usage.input - cached;
        let cached_price = price.cached_input_per_mtok.unwrap_or(price.input_per_mtok);
        let usd = (fresh as f64 * price.input_per_mtok
            + cached as f64 * cached_price
            + usage.output as f64 * price.output_per_mtok)
            / 1_000_000.0;
        usd.is_finite().then_some(usd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processors::genai::config::default_prices;

    #[test]
    fn dated_models_match_their_longest_prefix() {
        let table = PriceTable::new(&default_prices());
        let mini = table.price_of("gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.input_per_mtok, 0.15);
        let big = table.price_of("gpt-4o-2024-08-06").unwrap();
        assert_eq!(big.input_per_mtok, 2.50);
        assert_eq!(
            table.price_of("openai/gpt-4o-mini").unwrap().input_per_mtok,
            0.15
        );
        assert!(table.price_of("fail-429").is_none());
        assert!(table.price_of("").is_none());
    }

    #[test]
    fn cached_tokens_are_priced_at_the_cache_rate() {
        let table = PriceTable::new(&default_prices());
        let usage = TokenUsage {
            input: 1_000_000,
            output: 1_000_000,
            cached_input: 400_000,
        };
        let cost = table.cost("gpt-4o-mini", usage).unwrap();
        let expected = 0.6 * 0.15 + 0.4 * 0.075 + 0.60;
        assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
        // More cached than input is clamped, never negative.
        let odd = TokenUsage {
            input: 10,
            output: 0,
            cached_input: 50,
        };
        assert!(table.cost("gpt-4o-mini", odd).unwrap() >= 0.0);
    }
}
