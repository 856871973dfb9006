//! A reference AgentControl server that an agent written in Rust embeds:
//! it answers the eight RPCs by calling the agent's own handler, so the
//! agent only decides what "reset memory" means for it.
//!
//! ```no_run
//! use agent_immune::executors::agent_control_server::{AgentControlService, ControlCall};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let service = AgentControlService::new(|call: ControlCall| async move {
//!     // e.g. clear the conversation for call.action == Action::ResetMemory
//!     Ok::<_, String>(format!("{} done for {}", call.action, call.agent_id))
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! service.serve(listener, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

use super::control_proto::agent_control_server::{AgentControl, AgentControlServer};
use super::control_proto::{ControlRequest, ControlResponse};
use super::secret::Secret;
use crate::immune::action::Action;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Largest request accepted (requests are a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One call from agent-immune, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCall {
    pub action: Action,
    pub agent_id: String,
    pub reason: String,
    /// Empty when the action heals no particular diagnosis.
    pub diagnosis: String,
    pub event_id: String,
    pub parameters: HashMap<String, String>,
}

/// `Ok(message)`: the action took effect; `Err(message)`: it did not, and why.
pub type ControlResult = Result<String, String>;

pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = ControlResult> + Send + 'a>>;

/// What the agent does for each call. Closures
/// `Fn(ControlCall) -> impl Future<Output = ControlResult>` implement it.
pub trait ControlHandler: Send + Sync + 'static {
    fn handle(&self, call: ControlCall) -> ControlFuture<'_>;
}

impl<F, Fut> ControlHandler for F
where
    F: Fn(ControlCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ControlResult> + Send + 'static,
{
    fn handle(&self, call: ControlCall) -> ControlFuture<'_> {
        Box::pin(self(call))
    }
}

/// The AgentControl service around a handler.
pub struct AgentControlService<H> {
    handler: Arc<H>,
    bearer_token: Option<Secret>,
}

impl<H: ControlHandler> AgentControlService<H> {
    pub fn new(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
            bearer_token: None,
        }
    }

    /// Requires `authorization: Bearer <token>` on every call; others are
    /// refused with UNAUTHENTICATED.
    pub fn with_bearer_token(mut self, token: Secret) -> Self {
        self.bearer_token = Some(token);
        self
    }

    /// The tonic service, to add to a server the agent already runs.
    pub fn into_server(self) -> AgentControlServer<Self> {
        AgentControlServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Serves on `listener` until `cancel` fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(self.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                cancel.cancelled_owned(),
            )
            .await
    }

    async fn dispatch(
        &self,
        action: Action,
        request: Request<ControlRequest>,
    ) -> Result<Response<ControlResponse>, Status> {
        if let Some(expected) = &self.bearer_token {
            let given = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            // Constant time, so the token does not leak through timing.
            let matches =
                given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.expose().as_bytes())));
            if !matches {
                return Err(Status::unauthenticated("missing or wrong bearer token"));
            }
        }
        let request = request.into_inner();
        if request.agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id is empty"));
        }
        let call = ControlCall {
            action,
            agent_id: request.agent_id,
            reason: request.reason,
            diagnosis: request.diagnosis,
            event_id: request.event_id,
            parameters: request.parameters,
        };
        let reply = match self.handler.handle(call).await {
            Ok(message) => ControlResponse {
                success: true,
                message,
            },
            Err(message) => ControlResponse {
                success: false,
                message,
            },
        };
        Ok(Response::new(reply))
    }
}

type RpcResult = Result<Response<ControlResponse>, Status>;

#[tonic::async_trait]
impl<H: ControlHandler> AgentControl for AgentControlService<H> {
    async fn quarantine(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::Quarantine, request).await
    }

    async fn release(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::Release, request).await
    }

    async fn drain(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::Drain, request).await
    }

    async fn reset_memory(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::ResetMemory, request).await
    }

    async fn rollback_prompt(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::RollbackPrompt, request).await
    }

    async fn reduce_autonomy(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::ReduceAutonomy, request).await
    }

    async fn revoke_tools(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::RevokeTools, request).await
    }

    async fn reset_agent(&self, request: Request<ControlRequest>) -> RpcResult {
        self.dispatch(Action::ResetAgent, request).await
    }
}
