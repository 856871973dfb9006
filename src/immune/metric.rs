//! The metrics the baseline learns from each turn's vitals, and the scale
//! each is learned on. Production vitals are heavy-tailed: magnitudes are
//! close to lognormal, so they are learned on a log1p scale; tool calls are
//! small counts, learned linearly; errors and retries are rates (the share
//! of turns that show them).

use super::config::ImmuneConfig;
use super::vitals::Vitals;
use serde::{Deserialize, Serialize};

/// Cost is learned in micro-dollars so that log1p is a log, not ~identity
/// (a turn costs fractions of a cent).
const MICRO_USD: f64 = 1e6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    LatencyMs,
    Tokens,
    InputTokens,
    OutputTokens,
    ToolCalls,
    CostUsd,
    RetryRate,
    ErrorRate,
}

/// How a metric's values are learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// ln(1 + x): multiplicative changes are additive.
    Log1p,
    /// The value itself.
    Linear,
    /// 1 when the turn shows it, else 0; the window's share is the rate.
    Rate,
}

impl Scale {
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Log1p => "log1p",
            Scale::Linear => "linear",
            Scale::Rate => "rate",
        }
    }
}

impl Metric {
    pub const COUNT: usize = 8;
    pub const ALL: [Metric; Metric::COUNT] = [
        Metric::LatencyMs,
        Metric::Tokens,
        Metric::InputTokens,
        Metric::OutputTokens,
        Metric::ToolCalls,
        Metric::CostUsd,
        Metric::RetryRate,
        Metric::ErrorRate,
    ];

    /// Position in per-metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// snake_case name, used in event attributes (`agent_immune.observed.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LatencyMs => "latency_ms",
            Metric::Tokens => "tokens",
            Metric::InputTokens => "input_tokens",
            Metric::OutputTokens => "output_tokens",
            Metric::ToolCalls => "tool_calls",
            Metric::CostUsd => "cost_usd",
            Metric::RetryRate => "retry_rate",
            Metric::ErrorRate => "error_rate",
        }
    }

    pub fn scale(self) -> Scale {
        match self {
            Metric::LatencyMs
            | Metric::Tokens
            | Metric::InputTokens
            | Metric::OutputTokens
            | Metric::CostUsd => Scale::Log1p,
            Metric::ToolCalls => Scale::Linear,
            Metric::RetryRate | Metric::ErrorRate => Scale::Rate,
        }
    }

    /// True for what the agent itself burns in a turn, judged on the latest
    /// turn alone as well. Not latency: a slow turn is most often the
    /// provider's.
    pub fn has_latest_view(self) -> bool {
        matches!(
            self,
            Metric::Tokens
                | Metric::InputTokens
                | Metric::OutputTokens
                | Metric::ToolCalls
                | Metric::CostUsd
        )
    }

    /// True for the token-derived metrics, which are only a lower bound when
    /// a call reported no usage.
    pub fn from_usage(self) -> bool {
        matches!(
            self,
            Metric::Tokens | Metric::InputTokens | Metric::OutputTokens | Metric::CostUsd
        )
    }

    /// Absolute σ floor on the learning scale.
    pub fn stddev_floor(self, config: &ImmuneConfig) -> f64 {
        match self.scale() {
            Scale::Log1p => config.log_stddev_floor,
            Scale::Linear => config.tools_stddev_floor,
            Scale::Rate => config.rate_stddev_floor,
        }
    }

    /// The turn's value on the learning scale; NaN when the vitals carry no
    /// usable value (negative or non-finite numbers from a broken exporter).
    pub fn learn_value(self, vitals: &Vitals) -> f64 {
        let natural = match self {
            Metric::LatencyMs => vitals.latency_ms,
            Metric::Tokens => vitals.total_tokens() as f64,
            Metric::InputTokens => vitals.input_tokens as f64,
            Metric::OutputTokens => vitals.output_tokens as f64,
            Metric::ToolCalls => f64::from(vitals.tool_calls),
            Metric::CostUsd => vitals.cost_usd * MICRO_USD,
            Metric::RetryRate => return f64::from(u8::from(vitals.retries > 0)),
            Metric::ErrorRate => return f64::from(u8::from(vitals.errors > 0)),
        };
        if !(natural.is_finite() && natural >= 0.0) {
            return f64::NAN;
        }
        match self.scale() {
            Scale::Log1p => natural.ln_1p(),
            Scale::Linear | Scale::Rate => natural,
        }
    }

    /// A learning-scale value back in natural units (ms, tokens, calls, USD,
    /// share of turns).
    pub fn natural(self, learned: f64) -> f64 {
        let value = match self.scale() {
            Scale::Log1p => learned.exp_m1(),
            Scale::Linear | Scale::Rate => learned,
        };
        if self == Metric::CostUsd {
            value / MICRO_USD
        } else {
            value
        }
    }

    /// The value of `learned` on the learning scale, formatted for a human.
    pub fn describe(self, learned: f64) -> String {
        let v = self.natural(learned);
        match self {
            Metric::LatencyMs => format!("{v:.0} ms"),
            Metric::Tokens => format!("{v:.0} tokens"),
            Metric::InputTokens => format!("{v:.0} input tokens"),
            Metric::OutputTokens => format!("{v:.0} output tokens"),
            Metric::ToolCalls => format!("{v:.1} tool calls"),
            Metric::CostUsd => format!("${v:.4}"),
            Metric::RetryRate => format!("{:.0}% of turns retried", v * 100.0),
            Metric::ErrorRate => format!("{:.0}% of turns failed", v * 100.0),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_all() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn magnitudes_are_log1p_and_round_trip() {
        let vitals = Vitals {
            latency_ms: 999.0,
            input_tokens: 700,
            output_tokens: 300,
            tool_calls: 3,
            cost_usd: 0.0125,
            retries: 2,
            errors: 0,
            ..Vitals::default()
        };
        assert!((Metric::LatencyMs.learn_value(&vitals) - 1000f64.ln()).abs() < 1e-12);
        assert!((Metric::Tokens.learn_value(&vitals) - 1001f64.ln()).abs() < 1e-12);
        assert_eq!(Metric::ToolCalls.learn_value(&vitals), 3.0);
        assert_eq!(Metric::RetryRate.learn_value(&vitals), 1.0);
        assert_eq!(Metric::ErrorRate.learn_value(&vitals), 0.0);
        for m in Metric::ALL {
            let learned = m.learn_value(&vitals);
            let back = m.natural(learned);
            let expected = match m {
                Metric::LatencyMs => 999.0,
                Metric::Tokens => 1000.0,
                Metric::InputTokens => 700.0,
                Metric::OutputTokens => 300.0,
                Metric::ToolCalls => 3.0,
                Metric::CostUsd => 0.0125,
                Metric::RetryRate => 1.0,
                Metric::ErrorRate => 0.0,
            };
            assert!((back - expected).abs() < 1e-9, "{m}: {back} != {expected}");
        }
        assert_eq!(
            Metric::CostUsd.describe(Metric::CostUsd.learn_value(&vitals)),
            "$0.0125"
        );
    }

    #[test]
    fn broken_numbers_are_missing_not_zero() {
        let vitals = Vitals {
            latency_ms: f64::NAN,
            cost_usd: -1.0,
            ..Vitals::default()
        };
        assert!(Metric::LatencyMs.learn_value(&vitals).is_nan());
        assert!(Metric::CostUsd.learn_value(&vitals).is_nan());
    }
}
