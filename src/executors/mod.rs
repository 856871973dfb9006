//! Executors: enforcement targets that quarantine and heal agents.

/// The AgentControl gRPC protocol (proto/agent_immune/control/v1).
pub mod control_proto {
    tonic::include_proto!("agent_immune.control.v1");
}
