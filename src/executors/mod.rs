//! Executors: enforcement targets that quarantine and heal agents.
//!
//! One trait ([`EnforcementTarget`]), many targets, each configured as an
//! `[executors.<type>[/<name>]]` table and chosen per agent by
//! `[executors.routing]`. Every call is cut off at the target's timeout and
//! ends in an [`ActionOutcome`] that says what happened: a failed action is
//! a fact the healer learns from, never a crash and never a hang.
//!
//! Use: `Executors::from_config(&config)?` once, then
//! `executors.execute(&ActionRequest { .. }).await` per action.

pub mod agent_control_grpc;
pub mod agent_control_server;
pub mod composite;
pub mod config;
pub mod container;
pub mod http_control;
pub mod noop;
pub mod process;
mod remote;
pub mod request;
pub mod router;
pub mod routing;
pub mod secret;
pub mod target;

pub use config::{ExecutorsConfig, TargetConfig};
pub use request::{ActionOutcome, ActionRequest};
pub use router::{Executors, ExecutorsError};
pub use target::{EnforcementTarget, OutcomeFuture, run_with_timeout};

/// The AgentControl gRPC protocol (proto/agent_immune/control/v1).
pub mod control_proto {
    tonic::include_proto!("agent_immune.control.v1");
}
