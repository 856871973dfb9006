//! `[executors.agent_control_grpc]`: the AgentControl gRPC service
//! (proto/agent_immune/control/v1/control.proto) on the agent or its
//! supervisor. The answer's `success` and `message` become the outcome; a
//! gRPC error (unreachable, unimplemented, unauthenticated) is a failure
//! naming the status.

use super::control_proto::ControlRequest;
use super::control_proto::agent_control_client::AgentControlClient;
use super::http_control::BACKSTOP;
use super::remote::{RemoteAddress, validate_remote};
use super::request::{ActionOutcome, ActionRequest};
use super::secret::Secret;
use super::target::{DEFAULT_TIMEOUT, EnforcementTarget, OutcomeFuture};
use crate::config::ConfigIssue;
use crate::immune::action::Action;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::OnceCell;
use tonic::transport::{Channel, Endpoint};

/// Largest answer accepted from an agent.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentControlGrpcConfig {
    /// The AgentControl server, with scheme, e.g. "http://127.0.0.1:50051"
    /// (plaintext HTTP/2; put TLS in a sidecar). Required.
    pub endpoint: String,
    /// Sent as `authorization: Bearer <token>` metadata; use `${env:VAR}`.
    /// Default none.
    pub bearer_token: Option<Secret>,
    /// Limit on one call, connection included. Default "10s".
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for AgentControlGrpcConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bearer_token: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl AgentControlGrpcConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let endpoint = RemoteAddress {
            key: "endpoint",
            value: &self.endpoint,
            example: "http://127.0.0.1:50051",
        };
        validate_remote(
            endpoint,
            parse_endpoint,
            self.bearer_token.as_ref(),
            self.timeout,
        )
    }
}

fn parse_endpoint(endpoint: &str) -> Result<Endpoint, String> {
    if !endpoint.starts_with("http://") {
        return Err(format!(
            "must start with http:// (plaintext gRPC), got {endpoint:?}"
        ));
    }
    let endpoint = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("invalid endpoint {endpoint:?}: {e}"))?;
    if endpoint
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        // It would show in every message; tokens go in bearer_token.
        return Err("must not hold credentials (use bearer_token)".into());
    }
    Ok(endpoint)
}

#[derive(Debug)]
pub struct AgentControlGrpcTarget {
    id: String,
    endpoint: Endpoint,
    bearer_token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    timeout: Duration,
    // Created on first use: a lazy channel needs a running tokio runtime,
    // which building the targets from config does not.
    client: OnceCell<AgentControlClient<Channel>>,
}

impl AgentControlGrpcTarget {
    pub fn new(id: impl Into<String>, config: &AgentControlGrpcConfig) -> Result<Self, String> {
        // A backstop only: run_with_timeout cuts the call at `timeout` first.
        let endpoint =
            parse_endpoint(&config.endpoint)?.timeout(config.timeout.saturating_add(BACKSTOP));
        let bearer_token = match &config.bearer_token {
            None => None,
            Some(token) => Some(
                format!("Bearer {}", token.expose())
                    .parse()
                    .map_err(|_| "bearer_token is not a valid header value".to_string())?,
            ),
        };
        Ok(Self {
            id: id.into(),
            endpoint,
            bearer_token,
            timeout: config.timeout,
            client: OnceCell::new(),
        })
    }

    async fn call(&self, request: &ActionRequest) -> ActionOutcome {
        let mut client = self
            .client
            .get_or_init(|| async {
                AgentControlClient::new(self.endpoint.connect_lazy())
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
            })
            .await
            .clone();
        let mut message = tonic::Request::new(ControlRequest {
            agent_id: request.agent_id.clone(),
            reason: request.reason.clone(),
            diagnosis: request.diagnosis.clone().unwrap_or_default(),
            event_id: request.event_id.clone(),
            parameters: request.parameters.clone().into_iter().collect(),
        });
        if let Some(token) = &self.bearer_token {
            message
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        let method = method_name(request.action);
        let answer = match request.action {
            Action::Quarantine => client.quarantine(message).await,
            Action::Release => client.release(message).await,
            Action::Drain => client.drain(message).await,
            Action::ResetMemory => client.reset_memory(message).await,
            Action::RollbackPrompt => client.rollback_prompt(message).await,
            Action::ReduceAutonomy => client.reduce_autonomy(message).await,
            Action::RevokeTools => client.revoke_tools(message).await,
            Action::ResetAgent => client.reset_agent(message).await,
        };
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                let message = if response.message.is_empty() {
                    format!("AgentControl.{method}: success={}", response.success)
                } else {
                    format!("AgentControl.{method}: {}", response.message)
                };
                if response.success {
                    ActionOutcome::ok(&self.id, message)
                } else {
                    ActionOutcome::failed(&self.id, message)
                }
            }
            Err(status) => ActionOutcome::failed(
                &self.id,
                format!(
                    "AgentControl.{method} at {} failed: {:?}: {}",
                    self.endpoint.uri(),
                    status.code(),
                    status.message()
                ),
            ),
        }
    }
}

/// The RPC's name as in the proto, for messages.
pub fn method_name(action: Action) -> &'static str {
    match action {
        Action::Quarantine => "Quarantine",
        Action::Release => "Release",
        Action::Drain => "Drain",
        Action::ResetMemory => "ResetMemory",
        Action::RollbackPrompt => "RollbackPrompt",
        Action::ReduceAutonomy => "ReduceAutonomy",
        Action::RevokeTools => "RevokeTools",
        Action::ResetAgent => "ResetAgent",
    }
}

impl EnforcementTarget for AgentControlGrpcTarget {
    fn id(&self) -> &str {
        &self.id
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn execute<'a>(&'a self, request: &'a ActionRequest) -> OutcomeFuture<'a> {
        Box::pin(self.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_must_be_plaintext_http() {
        let cfg = AgentControlGrpcConfig {
            endpoint: "https://agent:50051".into(),
            ..Default::default()
        };
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["endpoint"]);
        let cfg = AgentControlGrpcConfig {
            endpoint: "http://127.0.0.1:50051".into(),
            ..Default::default()
        };
        assert!(cfg.validate().is_empty());
        assert!(AgentControlGrpcTarget::new("g", &cfg).is_ok());
        let cfg = AgentControlGrpcConfig {
            endpoint: "http://ops:hunter2@127.0.0.1:50051".into(),
            ..Default::default()
        };
        let issues = cfg.validate();
        assert_eq!(issues.len(), 1);
        assert!(
            !issues[0].message.contains("hunter2"),
            "{}",
            issues[0].message
        );
    }
}
