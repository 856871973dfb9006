//! One infection episode of an agent: from the confirmed infection to
//! HEALTHY again (or EXHAUSTED). Only agents in an episode carry one.

use super::action::Action;
use super::anomaly::AnomalySet;
use super::correlator::CorrelationVerdict;
use super::diagnosis::{Diagnosis, Hypothesis};
use super::fleet::action_index;
use super::sentinel::View;
use super::vitals::{SpanId, TraceId, UnixNanos};
use serde::{Deserialize, Serialize};

/// The confirmed infection, as the approval queue and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Infection {
    pub confirmed_at: UnixNanos,
    pub max_deviation: f64,
    pub anomalies: AnomalySet,
    pub view: Option<View>,
    /// The offending turn.
    #[serde(with = "hex_bytes")]
    pub trace_id: TraceId,
    #[serde(with = "hex_bytes")]
    pub span_id: SpanId,
    /// `token_spike 8.1σ latest (observed …, baseline …)`.
    pub description: String,
}

/// Externally tagged (`{"pending":{"since":…}}`): the state store's
/// encoding is not self-describing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    NotNeeded,
    Pending { since: UnixNanos },
    Approved { at: UnixNanos },
    Rejected { at: UnixNanos },
}

/// An effect sent out and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub id: u64,
    pub action: Action,
    /// For healing actions.
    pub diagnosis: Option<Diagnosis>,
    pub started: UnixNanos,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub started: UnixNanos,
    pub infection: Infection,
    /// Largest deviation seen during the episode (decides approval).
    pub max_deviation: f64,
    pub correlation: CorrelationVerdict,
    /// Ranked; `hypothesis` is the one being healed.
    pub hypotheses: Vec<Hypothesis>,
    pub hypothesis: usize,
    pub approval: Approval,
    /// When approval was asked for (kept after the decision).
    pub approval_requested_at: Option<UnixNanos>,
    /// The healing action under way or on probation.
    pub healing: Option<Attempt>,
    /// The drain waiting to finish.
    pub drain: Option<Attempt>,
    /// Healing actions run in this episode.
    pub heal_attempts: u32,
    /// Actions that failed in this episode, whatever the diagnosis (a bit
    /// per action): not tried again for another hypothesis.
    pub failed_here: u8,
    pub probation_turns: u32,
    pub probation_ticks: u32,
}

impl Episode {
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        self.hypotheses.get(self.hypothesis).map(|h| h.diagnosis)
    }

    pub fn failed_here(&self, action: Action) -> bool {
        self.failed_here & (1 << action_index(action)) != 0
    }

    pub fn record_failure_here(&mut self, action: Action) {
        self.failed_here |= 1 << action_index(action);
    }
}

/// Trace and span ids as lowercase hex, as OTLP/JSON and Jaeger show them.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&text, &mut out).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid id {text:?}: {e} (expected {} hex digits)",
                2 * N
            ))
        })?;
        Ok(out)
    }
}
