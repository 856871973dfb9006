//! Diagnosis: from what the sentinel saw and how far across the fleet it
//! spreads, ranked hypotheses of the cause, each with a confidence and one
//! line of reasoning. Operators correct the confidences with feedback.

use super::anomaly::{AnomalySet, AnomalyType};
use super::correlator::{CorrelationVerdict, Scope};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Diagnosis {
    PromptInjection,
    PromptDrift,
    InfiniteLoop,
    ToolInstability,
    MemoryCorruption,
    CostOverrun,
    ExternalCause,
    Unknown,
}

impl Diagnosis {
    pub const COUNT: usize = 8;
    pub const ALL: [Diagnosis; Diagnosis::COUNT] = [
        Diagnosis::PromptInjection,
        Diagnosis::PromptDrift,
        Diagnosis::InfiniteLoop,
        Diagnosis::ToolInstability,
        Diagnosis::MemoryCorruption,
        Diagnosis::CostOverrun,
        Diagnosis::ExternalCause,
        Diagnosis::Unknown,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Diagnosis::PromptInjection => "prompt_injection",
            Diagnosis::PromptDrift => "prompt_drift",
            Diagnosis::InfiniteLoop => "infinite_loop",
            Diagnosis::ToolInstability => "tool_instability",
            Diagnosis::MemoryCorruption => "memory_corruption",
            Diagnosis::CostOverrun => "cost_overrun",
            Diagnosis::ExternalCause => "external_cause",
            Diagnosis::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One candidate cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    pub diagnosis: Diagnosis,
    /// In [0.05, 1] after feedback.
    pub confidence: f64,
    pub reasoning: String,
}

/// What an operator says about a diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    /// The agent was not infected.
    FalsePositive,
    /// Infected, but not for the diagnosed reason.
    WrongDiagnosis,
    /// The cause was the model provider, not the agent.
    ProviderOutage,
    /// The diagnosis was right.
    Correct,
}

impl Feedback {
    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::FalsePositive => "false_positive",
            Feedback::WrongDiagnosis => "wrong_diagnosis",
            Feedback::ProviderOutage => "provider_outage",
            Feedback::Correct => "correct",
        }
    }

    /// Confidence shifts this feedback makes, per diagnosis type: the
    /// diagnosed type loses (or gains) confidence; a provider outage also
    /// makes an external cause more likely next time.
    pub fn shifts(self, diagnosed: Diagnosis) -> Vec<(Diagnosis, f64)> {
        match self {
            Feedback::FalsePositive => vec![(diagnosed, -0.05)],
            Feedback::WrongDiagnosis => vec![(diagnosed, -0.03)],
            Feedback::ProviderOutage => {
                let mut s = vec![(Diagnosis::ExternalCause, 0.05)];
                if diagnosed != Diagnosis::ExternalCause {
                    s.push((diagnosed, -0.03));
                }
                s
            }
            Feedback::Correct => vec![(diagnosed, 0.02)],
        }
    }
}

/// Clamp of every confidence after feedback.
pub const MIN_CONFIDENCE: f64 = 0.05;
pub const MAX_CONFIDENCE: f64 = 1.0;
/// Accumulated feedback shifts stay within this, so old feedback can be
/// outweighed by new.
pub const MAX_SHIFT: f64 = 0.9;

/// Ranked, deduplicated hypotheses (highest confidence first; `unknown`
/// always present as the last resort). `shift` is the accumulated operator
/// feedback per diagnosis type.
pub fn diagnose(
    anomalies: AnomalySet,
    correlation: &CorrelationVerdict,
    shift: &[f64; Diagnosis::COUNT],
) -> Vec<Hypothesis> {
    use AnomalyType as A;
    let has = |k| anomalies.contains(k);
    let tokens = has(A::TokenSpike) || has(A::InputTokenSpike) || has(A::OutputTokenSpike);
    let errors = has(A::ErrorRateSpike) || has(A::HighRetryRate);
    let mut found: Vec<Hypothesis> = Vec::with_capacity(Diagnosis::COUNT);
    let mut add = |diagnosis, confidence: f64, reasoning: String| {
        found.push(Hypothesis {
            diagnosis,
            confidence,
            reasoning,
        });
    };

    if has(A::PromptChange) {
        if has(A::ToolExplosion) || tokens || errors {
            add(
                Diagnosis::PromptInjection,
                0.8,
                "the system prompt changed and the agent's behaviour changed with it (tools, tokens or errors)".into(),
            );
            add(
                Diagnosis::PromptDrift,
                0.45,
                "the system prompt differs from the one the baseline was learned with".into(),
            );
        } else {
            add(
                Diagnosis::PromptDrift,
                0.75,
                "the system prompt differs from the one the baseline was learned with".into(),
            );
            add(
                Diagnosis::PromptInjection,
                0.4,
                "a changed system prompt can carry injected instructions".into(),
            );
        }
    }
    if has(A::ToolExplosion) {
        let (c, why) = if tokens || has(A::LatencySpike) || has(A::CostSpike) {
            (
                0.75,
                "tool calls exploded together with tokens, time or cost: the agent is looping",
            )
        } else {
            (
                0.6,
                "tool calls per turn exploded: the agent is likely looping on its tools",
            )
        };
        add(Diagnosis::InfiniteLoop, c, why.into());
    }
    if errors {
        let c = if has(A::ToolExplosion) { 0.55 } else { 0.65 };
        add(
            Diagnosis::ToolInstability,
            c,
            "most recent turns fail or retry: a tool or dependency the agent calls is unstable"
                .into(),
        );
    }
    if has(A::InputTokenSpike) && !has(A::PromptChange) {
        add(
            Diagnosis::MemoryCorruption,
            0.6,
            "input tokens grew with the same prompt: the agent's context or memory is bloating"
                .into(),
        );
    }
    if has(A::CostSpike) || has(A::OutputTokenSpike) || has(A::TokenSpike) {
        add(
            Diagnosis::CostOverrun,
            if has(A::CostSpike) { 0.55 } else { 0.45 },
            "each turn spends far more tokens or money than learned".into(),
        );
    }
    match correlation.scope {
        Scope::FleetWide => add(
            Diagnosis::ExternalCause,
            0.9,
            format!(
                "{:.0}% of the other agents show the same anomaly: the cause is shared (provider, network)",
                correlation.share * 100.0
            ),
        ),
        Scope::PartialFleet => add(
            Diagnosis::ExternalCause,
            0.6,
            format!(
                "{:.0}% of the other agents show the same anomaly: a shared dependency is likely",
                correlation.share * 100.0
            ),
        ),
        Scope::AgentSpecific => {
            if has(A::LatencySpike) && anomalies.len() == 1 {
                add(
                    Diagnosis::ExternalCause,
                    0.5,
                    "only latency rose: a slow provider or tool backend is the usual cause".into(),
                );
            }
        }
    }
    add(
        Diagnosis::Unknown,
        0.2,
        format!(
            "anomalies {} fit no specific cause well",
            anomalies.names().join(", ")
        ),
    );

    // Deduplicate (keep the most confident reasoning per type), apply
    // feedback, rank.
    let mut best: Vec<Hypothesis> = Vec::with_capacity(found.len());
    for h in found {
        match best.iter_mut().find(|b| b.diagnosis == h.diagnosis) {
            Some(b) if b.confidence >= h.confidence => {}
            Some(b) => *b = h,
            None => best.push(h),
        }
    }
    for h in &mut best {
        h.confidence =
            (h.confidence + shift[h.diagnosis.index()]).clamp(MIN_CONFIDENCE, MAX_CONFIDENCE);
    }
    // Stable: ties keep the order of specificity above; unknown stays last.
    best.sort_by(|a, b| {
        (a.diagnosis == Diagnosis::Unknown)
            .cmp(&(b.diagnosis == Diagnosis::Unknown))
            .then(b.confidence.total_cmp(&a.confidence))
    });
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnomalyType as A;

    fn set(kinds: &[AnomalyType]) -> AnomalySet {
        kinds.iter().copied().collect()
    }

    fn scope(scope: Scope, share: f64) -> CorrelationVerdict {
        CorrelationVerdict {
            scope,
            share,
            peers: 0,
            others: 10,
            kind: None,
        }
    }

    fn top(kinds: &[AnomalyType]) -> Diagnosis {
        diagnose(set(kinds), &scope(Scope::AgentSpecific, 0.0), &[0.0; 8])[0].diagnosis
    }

    #[test]
    fn each_pattern_has_its_likely_cause_first() {
        assert_eq!(top(&[A::PromptChange]), Diagnosis::PromptDrift);
        assert_eq!(
            top(&[A::PromptChange, A::ToolExplosion]),
            Diagnosis::PromptInjection
        );
        assert_eq!(
            top(&[A::ToolExplosion, A::TokenSpike]),
            Diagnosis::InfiniteLoop
        );
        assert_eq!(top(&[A::ErrorRateSpike]), Diagnosis::ToolInstability);
        assert_eq!(
            top(&[A::InputTokenSpike, A::TokenSpike]),
            Diagnosis::MemoryCorruption
        );
        assert_eq!(top(&[A::CostSpike]), Diagnosis::CostOverrun);
        assert_eq!(top(&[A::LatencySpike]), Diagnosis::ExternalCause);
    }

    #[test]
    fn hypotheses_are_ranked_deduplicated_and_end_in_unknown() {
        let h = diagnose(
            set(&[
                A::PromptChange,
                A::ToolExplosion,
                A::TokenSpike,
                A::ErrorRateSpike,
            ]),
            &scope(Scope::PartialFleet, 0.2),
            &[0.0; 8],
        );
        let kinds: Vec<_> = h.iter().map(|h| h.diagnosis).collect();
        let mut unique = kinds.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), kinds.len(), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&Diagnosis::Unknown));
        assert!(
            h.windows(2)
                .take(h.len() - 2)
                .all(|w| w[0].confidence >= w[1].confidence)
        );
        assert!(h.iter().all(|h| !h.reasoning.is_empty()));
    }

    #[test]
    fn the_fleet_makes_an_external_cause_likely() {
        let h = diagnose(
            set(&[A::LatencySpike]),
            &scope(Scope::FleetWide, 0.4),
            &[0.0; 8],
        );
        assert_eq!(h[0].diagnosis, Diagnosis::ExternalCause);
        assert_eq!(h[0].confidence, 0.9);
        assert!(h[0].reasoning.contains("40%"), "{}", h[0].reasoning);
    }

    #[test]
    fn feedback_shifts_confidence_within_bounds() {
        let mut shift = [0.0; 8];
        for (d, s) in Feedback::FalsePositive.shifts(Diagnosis::PromptDrift) {
            shift[d.index()] += s;
        }
        let h = diagnose(
            set(&[A::PromptChange]),
            &scope(Scope::AgentSpecific, 0.0),
            &shift,
        );
        assert_eq!(h[0].diagnosis, Diagnosis::PromptDrift);
        assert!((h[0].confidence - 0.70).abs() < 1e-12);
        shift[Diagnosis::PromptDrift.index()] = -0.9;
        let h = diagnose(
            set(&[A::PromptChange]),
            &scope(Scope::AgentSpecific, 0.0),
            &shift,
        );
        assert_eq!(h[0].diagnosis, Diagnosis::PromptInjection);
        let drift = h
            .iter()
            .find(|h| h.diagnosis == Diagnosis::PromptDrift)
            .unwrap();
        assert_eq!(drift.confidence, MIN_CONFIDENCE);
        assert_eq!(
            Feedback::WrongDiagnosis.shifts(Diagnosis::InfiniteLoop),
            [(Diagnosis::InfiniteLoop, -0.03)]
        );
        let outage = Feedback::ProviderOutage.shifts(Diagnosis::ToolInstability);
        assert!(outage.contains(&(Diagnosis::ExternalCause, 0.05)));
    }
}
