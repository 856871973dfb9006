//! Why an operator command or an executor result could not be applied.

use super::lifecycle::LifecycleState;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("agent {0:?} is not monitored")]
    UnknownAgent(String),
    #[error("agent {agent:?} has no pending approval (it is {state})")]
    NotPending {
        agent: String,
        state: LifecycleState,
    },
    #[error("agent {agent:?} has no infection to heal (it is {state})")]
    NothingToHeal {
        agent: String,
        state: LifecycleState,
    },
    #[error("agent {agent:?} is already being healed (it is {state})")]
    AlreadyHealing {
        agent: String,
        state: LifecycleState,
    },
    #[error("agent {agent:?} has no action attempt {attempt_id} waiting for a result")]
    UnknownAttempt { agent: String, attempt_id: u64 },
    #[error("agent {agent:?} has not been diagnosed yet")]
    NoDiagnosis { agent: String },
    #[error("cannot restore agent {agent:?}: {reason}")]
    CannotRestore { agent: String, reason: String },
    /// The state store refused the commit: the decision is not
    /// acknowledged (retry once `/readyz` is ready again).
    #[error(
        "the state store cannot write ({reason}); the decision is not acknowledged: retry once /readyz reports ready"
    )]
    NotDurable { reason: String },
}
