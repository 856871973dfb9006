//! The llm_proxy receiver: an OpenAI-compatible reverse proxy. Agents with
//! no OpenTelemetry at all set `OPENAI_BASE_URL=http://<endpoint>/v1`; every
//! request/response pair becomes one turn's vitals, and the proxy doubles as
//! the enforcement target with the lowest latency (quarantine, drain,
//! throttles, revoked tools) and a policy engine.
//!
//! Bind first, then serve until cancelled:
//!
//! ```ignore
//! let proxy = LlmProxy::bind(&cfg).await?;
//! let enforcement = proxy.enforcement(); // for the executors
//! let registry = proxy.registry();       // for the management API
//! let task = proxy.serve(vitals_consumer, telemetry, cancel.clone());
//! ```

pub mod config;
pub mod enforcement;
pub mod error;
pub mod fingerprint;
pub mod glob;
pub mod headers;
pub mod identity;
mod lru;
pub mod metrics;
pub mod policy;
pub mod price;
mod proxy;
mod rate;
pub mod registry;
pub mod request;
pub mod response;
pub mod rewrite;
pub mod routing;
pub mod sse;
mod target;
pub mod tee;
pub mod turn;

pub use config::LlmProxyConfig;
pub use enforcement::{AgentRestrictions, EnforcementResult, ProxyEnforcement, ReducedAutonomy};
pub use policy::PolicyEngine;
pub use registry::{AgentRegistry, DiscoveredAgent};

use crate::listener::HttpListener;
use crate::pipeline::consumer::VitalsConsumer;
use crate::telemetry::Telemetry;
use proxy::ProxyState;
use routing::Routing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// After cancellation, how long in-flight requests get to finish before the
/// server is dropped. Long streams are cut at this point.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum LlmProxyError {
    #[error("invalid llm_proxy receiver config: {0}")]
    Config(String),
    #[error("cannot listen for the LLM proxy on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the LLM proxy's HTTP client: {0}")]
    Client(String),
    #[error("LLM proxy server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound, not yet serving, LLM proxy. Its registry, policies and
/// enforcement handle exist from here on and stay shared with the server.
pub struct LlmProxy {
    listener: TcpListener,
    addr: SocketAddr,
    cfg: LlmProxyConfig,
    client: reqwest::Client,
    routing: Routing,
    policies: Arc<PolicyEngine>,
    registry: Arc<AgentRegistry>,
    enforcement: ProxyEnforcement,
    /// The receiver's id, naming its listener in the metrics.
    name: String,
    gateway: identity::Gateway,
}

impl std::fmt::Debug for LlmProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmProxy")
            .field("addr", &self.addr)
            .finish()
    }
}

impl LlmProxy {
    /// Validates the config and binds the listen address.
    pub async fn bind(cfg: &LlmProxyConfig) -> Result<Self, LlmProxyError> {
        if let Some(issue) = cfg.validate().first() {
            return Err(LlmProxyError::Config(format!(
                "{}: {}",
                issue.key, issue.message
            )));
        }
        let routing = Routing::from_config(cfg).map_err(LlmProxyError::Config)?;
        let gateway = identity::Gateway::new(cfg).map_err(LlmProxyError::Config)?;
        let policies = PolicyEngine::new(&cfg.policies, cfg.max_agents)
            .map_err(|e| LlmProxyError::Config(format!("policies: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            // A redirect is the client's business (and could point anywhere).
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| LlmProxyError::Client(e.to_string()))?;
        let wanted = cfg.endpoint_addr().map_err(LlmProxyError::Config)?;
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|source| LlmProxyError::Bind {
                addr: wanted,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(wanted);
        tracing::info!(
            "LLM proxy listening on {addr} (agents use OPENAI_BASE_URL=http://{addr}/v1)"
        );
        Ok(Self {
            listener,
            addr,
            cfg: cfg.clone(),
            client,
            routing,
            policies: Arc::new(policies),
            registry: Arc::new(AgentRegistry::new(cfg.max_agents)),
            enforcement: ProxyEnforcement::new(&cfg.reduce_autonomy, cfg.drain_timeout),
            name: "llm_proxy".to_string(),
            gateway,
        })
    }

    /// Names the receiver (its id) in the listener metrics.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// The bound address (the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The enforcement handle (quarantine, drain, release, healing).
    pub fn enforcement(&self) -> ProxyEnforcement {
        self.enforcement.clone()
    }

    /// The agents seen so far (discovery).
    pub fn registry(&self) -> Arc<AgentRegistry> {
        self.registry.clone()
    }

    /// The policy engine, for runtime add/remove/list.
    pub fn policies(&self) -> Arc<PolicyEngine> {
        self.policies.clone()
    }

    /// Serves until `cancel`, then shuts down within [`SHUTDOWN_GRACE`].
    pub fn serve(
        self,
        vitals: Arc<dyn VitalsConsumer>,
        telemetry: Arc<Telemetry>,
        cancel: CancellationToken,
    ) -> JoinHandle<Result<(), LlmProxyError>> {
        let state = Arc::new(ProxyState {
            client: self.client,
            routing: self.routing,
            policies: self.policies,
            registry: self.registry,
            enforcement: self.enforcement,
            gateway: self.gateway,
            vitals,
            telemetry,
            max_body_bytes: self.cfg.max_request_body_bytes(),
            upstream_timeout: self.cfg.upstream_timeout,
            revoke_tools_mode: self.cfg.revoke_tools_mode,
            prices: self.cfg.prices,
            ids: turn::TurnIds::default(),
        });
        let router = axum::Router::new()
            .fallback(proxy::handle)
            .with_state(state.clone());
        let metrics = state.telemetry.listeners.register(&self.name);
        let listener = HttpListener::new(self.listener, &self.cfg.listener, metrics);
        tokio::spawn(async move {
            let stop = cancel.child_token();
            let server = listener.serve(router, stop.clone().cancelled_owned());
            let mut server = tokio::spawn(server);
            tokio::select! {
                joined = &mut server => return joined_result(joined),
                () = cancel.cancelled() => {}
            }
            stop.cancel();
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(joined) => joined_result(joined),
                Err(_) => {
                    tracing::warn!(
                        "LLM proxy: requests still in flight after {SHUTDOWN_GRACE:?}, closing them"
                    );
                    server.abort();
                    Ok(())
                }
            }
        })
    }
}

fn joined_result(
    joined: Result<std::io::Result<()>, tokio::task::JoinError>,
) -> Result<(), LlmProxyError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::error!("LLM proxy server failed: {e}");
            Err(LlmProxyError::Serve(e))
        }
        Err(e) => Err(LlmProxyError::Serve(std::io::Error::other(e.to_string()))),
    }
}
