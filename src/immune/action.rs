//! The actions the immune response can take on an agent: enforcement
//! (quarantine, release, drain) and the healing actions of the ladders.
//! Executors carry them out; the core only decides.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Quarantine,
    Release,
    Drain,
    ResetMemory,
    RollbackPrompt,
    ReduceAutonomy,
    RevokeTools,
    ResetAgent,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Quarantine,
        Action::Release,
        Action::Drain,
        Action::ResetMemory,
        Action::RollbackPrompt,
        Action::ReduceAutonomy,
        Action::RevokeTools,
        Action::ResetAgent,
    ];

    /// snake_case name, as in events and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Quarantine => "quarantine",
            Action::Release => "release",
            Action::Drain => "drain",
            Action::ResetMemory => "reset_memory",
            Action::RollbackPrompt => "rollback_prompt",
            Action::ReduceAutonomy => "reduce_autonomy",
            Action::RevokeTools => "revoke_tools",
            Action::ResetAgent => "reset_agent",
        }
    }

    /// True for the healing actions (the ladders), false for enforcement.
    pub fn is_healing(self) -> bool {
        !matches!(self, Action::Quarantine | Action::Release | Action::Drain)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
