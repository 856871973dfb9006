//! What the core asks the outside world to do, as values. Executors carry
//! effects out and report back with `ImmuneCore::action_result`, quoting
//! the attempt id.

use super::action::Action;
use super::diagnosis::Diagnosis;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Stop sending the agent new work; let in-flight work finish.
    Drain { agent_id: String, attempt_id: u64 },
    /// Block the agent.
    Quarantine { agent_id: String, attempt_id: u64 },
    /// Unblock the agent (probation, operator release).
    Release { agent_id: String, attempt_id: u64 },
    /// Run one healing action.
    Heal {
        agent_id: String,
        action: Action,
        diagnosis: Diagnosis,
        attempt_id: u64,
    },
}

impl Effect {
    pub fn agent_id(&self) -> &str {
        match self {
            Effect::Drain { agent_id, .. }
            | Effect::Quarantine { agent_id, .. }
            | Effect::Release { agent_id, .. }
            | Effect::Heal { agent_id, .. } => agent_id,
        }
    }

    pub fn attempt_id(&self) -> u64 {
        match self {
            Effect::Drain { attempt_id, .. }
            | Effect::Quarantine { attempt_id, .. }
            | Effect::Release { attempt_id, .. }
            | Effect::Heal { attempt_id, .. } => *attempt_id,
        }
    }

    /// The action an executor performs.
    pub fn action(&self) -> Action {
        match self {
            Effect::Drain { .. } => Action::Drain,
            Effect::Quarantine { .. } => Action::Quarantine,
            Effect::Release { .. } => Action::Release,
            Effect::Heal { action, .. } => *action,
        }
    }
}
