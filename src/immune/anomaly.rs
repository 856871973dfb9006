//! The kinds of anomaly the sentinel raises, and a set of them in one word
//! (so the fleet summary can count agents per kind in O(1)).

use super::metric::Metric;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyType {
    TokenSpike,
    LatencySpike,
    ToolExplosion,
    HighRetryRate,
    InputTokenSpike,
    OutputTokenSpike,
    CostSpike,
    ErrorRateSpike,
    PromptChange,
}

impl AnomalyType {
    pub const COUNT: usize = 9;
    pub const ALL: [AnomalyType; AnomalyType::COUNT] = [
        AnomalyType::TokenSpike,
        AnomalyType::LatencySpike,
        AnomalyType::ToolExplosion,
        AnomalyType::HighRetryRate,
        AnomalyType::InputTokenSpike,
        AnomalyType::OutputTokenSpike,
        AnomalyType::CostSpike,
        AnomalyType::ErrorRateSpike,
        AnomalyType::PromptChange,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyType::TokenSpike => "token_spike",
            AnomalyType::LatencySpike => "latency_spike",
            AnomalyType::ToolExplosion => "tool_explosion",
            AnomalyType::HighRetryRate => "high_retry_rate",
            AnomalyType::InputTokenSpike => "input_token_spike",
            AnomalyType::OutputTokenSpike => "output_token_spike",
            AnomalyType::CostSpike => "cost_spike",
            AnomalyType::ErrorRateSpike => "error_rate_spike",
            AnomalyType::PromptChange => "prompt_change",
        }
    }

    /// The metric a rise of which is this anomaly (none for prompt_change).
    pub fn metric(self) -> Option<Metric> {
        Some(match self {
            AnomalyType::TokenSpike => Metric::Tokens,
            AnomalyType::LatencySpike => Metric::LatencyMs,
            AnomalyType::ToolExplosion => Metric::ToolCalls,
            AnomalyType::HighRetryRate => Metric::RetryRate,
            AnomalyType::InputTokenSpike => Metric::InputTokens,
            AnomalyType::OutputTokenSpike => Metric::OutputTokens,
            AnomalyType::CostSpike => Metric::CostUsd,
            AnomalyType::ErrorRateSpike => Metric::ErrorRate,
            AnomalyType::PromptChange => return None,
        })
    }

    /// The anomaly a rise of this metric is.
    pub fn of_metric(metric: Metric) -> AnomalyType {
        match metric {
            Metric::LatencyMs => AnomalyType::LatencySpike,
            Metric::Tokens => AnomalyType::TokenSpike,
            Metric::InputTokens => AnomalyType::InputTokenSpike,
            Metric::OutputTokens => AnomalyType::OutputTokenSpike,
            Metric::ToolCalls => AnomalyType::ToolExplosion,
            Metric::CostUsd => AnomalyType::CostSpike,
            Metric::RetryRate => AnomalyType::HighRetryRate,
            Metric::ErrorRate => AnomalyType::ErrorRateSpike,
        }
    }
}

impl std::fmt::Display for AnomalyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of anomaly types (serialized as a list of names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "Vec<AnomalyType>", from = "Vec<AnomalyType>")]
pub struct AnomalySet(u16);

impl From<AnomalySet> for Vec<AnomalyType> {
    fn from(set: AnomalySet) -> Self {
        set.iter().collect()
    }
}

impl From<Vec<AnomalyType>> for AnomalySet {
    fn from(kinds: Vec<AnomalyType>) -> Self {
        kinds.into_iter().collect()
    }
}

impl AnomalySet {
    pub const EMPTY: AnomalySet = AnomalySet(0);

    pub fn insert(&mut self, kind: AnomalyType) {
        self.0 |= 1 << kind.index();
    }

    pub fn contains(self, kind: AnomalyType) -> bool {
        self.0 & (1 << kind.index()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when the two sets share a kind.
    pub fn overlaps(self, other: AnomalySet) -> bool {
        self.0 & other.0 != 0
    }

    pub fn iter(self) -> impl Iterator<Item = AnomalyType> {
        AnomalyType::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }

    /// snake_case names, in a stable order.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|k| k.as_str().to_string()).collect()
    }
}

impl FromIterator<AnomalyType> for AnomalySet {
    fn from_iter<I: IntoIterator<Item = AnomalyType>>(iter: I) -> Self {
        let mut set = AnomalySet::EMPTY;
        for k in iter {
            set.insert(k);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_maps_to_its_anomaly_and_back() {
        for m in Metric::ALL {
            assert_eq!(AnomalyType::of_metric(m).metric(), Some(m));
        }
        assert_eq!(AnomalyType::PromptChange.metric(), None);
        for (i, k) in AnomalyType::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn sets_hold_and_overlap() {
        let a: AnomalySet = [AnomalyType::TokenSpike, AnomalyType::PromptChange]
            .into_iter()
            .collect();
        assert_eq!(a.len(), 2);
        assert!(a.contains(AnomalyType::PromptChange));
        assert!(!a.contains(AnomalyType::CostSpike));
        assert_eq!(a.names(), ["token_spike", "prompt_change"]);
        let b: AnomalySet = [AnomalyType::PromptChange].into_iter().collect();
        assert!(a.overlaps(b));
        assert!(!b.overlaps(AnomalySet::EMPTY));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"["token_spike","prompt_change"]"#);
        assert_eq!(serde_json::from_str::<AnomalySet>(&json).unwrap(), a);
    }
}
