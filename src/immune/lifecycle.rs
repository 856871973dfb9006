//! The lifecycle of a monitored agent.
//!
//! INITIALIZING → HEALTHY → SUSPECTED → DRAINING → QUARANTINED → HEALING →
//! PROBATION → HEALTHY, and EXHAUSTED when every healing action failed or
//! the operator rejected healing. The transitions and their guards are in
//! `response`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LifecycleState {
    /// Learning the baseline; nothing is judged yet.
    Initializing,
    Healthy,
    /// An anomaly was seen; the agent keeps running while it is watched.
    Suspected,
    /// Confirmed: in-flight work may finish before quarantine.
    Draining,
    Quarantined,
    /// A healing action is under way.
    Healing,
    /// Healed; fresh turns must stay normal before the agent is HEALTHY.
    Probation,
    /// Nothing left to try, or healing was rejected: waits for an operator.
    Exhausted,
}

impl LifecycleState {
    pub const ALL: [LifecycleState; 8] = [
        LifecycleState::Initializing,
        LifecycleState::Healthy,
        LifecycleState::Suspected,
        LifecycleState::Draining,
        LifecycleState::Quarantined,
        LifecycleState::Healing,
        LifecycleState::Probation,
        LifecycleState::Exhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::Initializing => "INITIALIZING",
            LifecycleState::Healthy => "HEALTHY",
            LifecycleState::Suspected => "SUSPECTED",
            LifecycleState::Draining => "DRAINING",
            LifecycleState::Quarantined => "QUARANTINED",
            LifecycleState::Healing => "HEALING",
            LifecycleState::Probation => "PROBATION",
            LifecycleState::Exhausted => "EXHAUSTED",
        }
    }
}

impl std::fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
