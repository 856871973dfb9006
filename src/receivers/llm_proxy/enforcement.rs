//! The proxy as an enforcement target: a handle sharing state with the
//! running proxy, so a decision takes effect on the agent's next request.
//!
//! - quarantine: every request answered 503 `agent_quarantined` at once, and
//!   the agent's in-flight requests are cut (a runaway stream stops now);
//! - drain: new requests refused (503 `agent_draining`) while in-flight ones
//!   finish; the action reports when they have;
//! - release: quarantine and drain lifted, traffic flows again (healing
//!   restrictions stay until `restore`);
//! - reduce_autonomy: a strict rate limit, token budget and output-token cap;
//! - revoke_tools: tools stripped from requests, or tool requests refused;
//! - reset_memory, rollback_prompt, reset_agent: not possible from the LLM
//!   traffic alone; reported as unsupported (a failed outcome).

use super::config::ReduceAutonomyConfig;
use super::error::ProxyError;
use crate::immune::action::Action;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The default id of the proxy as an enforcement target.
pub const TARGET_ID: &str = "llm_proxy";

/// Limits in force while an agent's autonomy is reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReducedAutonomy {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
    /// Cap on each request's output tokens.
    pub max_tokens: u64,
}

impl From<&ReduceAutonomyConfig> for ReducedAutonomy {
    fn from(cfg: &ReduceAutonomyConfig) -> Self {
        Self {
            requests_per_minute: cfg.requests_per_minute,
            tokens_per_minute: cfg.tokens_per_minute,
            max_tokens: cfg.max_tokens,
        }
    }
}

/// What the proxy currently enforces on one agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AgentRestrictions {
    pub quarantined: bool,
    pub draining: bool,
    pub reduced_autonomy: Option<ReducedAutonomy>,
    pub tools_revoked: bool,
}

impl AgentRestrictions {
    fn is_clear(&self) -> bool {
        *self == Self::default()
    }
}

/// The result of one action, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcementResult {
    pub success: bool,
    pub message: String,
}

impl EnforcementResult {
    fn ok(message: impl Into<String>) -> Self {
        Self {
            success: true,
            message: message.into(),
        }
    }

    fn failed(message: impl Into<String>) -> Self {
        Self {
            success: false,
            message: message.into(),
        }
    }
}

#[derive(Debug)]
struct AgentControl {
    restrictions: AgentRestrictions,
    in_flight: usize,
    /// Cancelled by quarantine: every in-flight request of the agent stops.
    cut: CancellationToken,
}

impl Default for AgentControl {
    fn default() -> Self {
        Self {
            restrictions: AgentRestrictions::default(),
            in_flight: 0,
            cut: CancellationToken::new(),
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// Only agents with a restriction or a request in flight have an entry,
    /// so the map is bounded by decisions and concurrency, not by traffic.
    agents: Mutex<HashMap<String, AgentControl>>,
    /// Woken whenever an agent's last in-flight request ends.
    idle: Notify,
    reduce_defaults: ReducedAutonomy,
    drain_timeout: Duration,
}

/// A handle on the running proxy's enforcement state; cheap to clone. It
/// is an [`EnforcementTarget`](crate::executors::target::EnforcementTarget)
/// (see `target.rs`).
#[derive(Debug, Clone)]
pub struct ProxyEnforcement {
    shared: Arc<Shared>,
    id: Arc<str>,
}

/// A request let through: what applies to it, and its in-flight slot.
#[derive(Debug)]
pub struct Admitted {
    pub restrictions: AgentRestrictions,
    /// Cancelled when the agent is quarantined mid-request.
    pub cut: CancellationToken,
    _slot: InFlight,
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
struct InFlight {
    shared: Arc<Shared>,
    agent_id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut agents = lock(&self.shared.agents);
        if let Some(control) = agents.get_mut(&self.agent_id) {
            control.in_flight = control.in_flight.saturating_sub(1);
            if control.in_flight == 0 {
                if control.restrictions.is_clear() {
                    agents.remove(&self.agent_id);
                }
                self.shared.idle.notify_waiters();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProxyEnforcement {
    pub fn new(reduce_defaults: &ReduceAutonomyConfig, drain_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                agents: Mutex::new(HashMap::new()),
                idle: Notify::new(),
                reduce_defaults: reduce_defaults.into(),
                drain_timeout,
            }),
            id: Arc::from(TARGET_ID),
        }
    }

    /// The same handle under another target id (the executors config's
    /// component id, e.g. `llm_proxy/eu`).
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = Arc::from(id);
        self
    }

    /// The target id outcomes are reported under.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How long `drain` waits for in-flight requests.
    pub fn drain_timeout(&self) -> Duration {
        self.shared.drain_timeout
    }

    /// Lets a request from `agent_id` in, or refuses it (quarantine, drain).
    /// Checking and counting happen under one lock, so a drain never misses
    /// a request that was admitted just before it.
    pub fn admit(&self, agent_id: &str) -> Result<Admitted, ProxyError> {
        let mut agents = lock(&self.shared.agents);
        let control = agents.entry(agent_id.to_string()).or_default();
        if control.restrictions.quarantined {
            return Err(ProxyError::quarantined());
        }
        if control.restrictions.draining {
            return Err(ProxyError::draining());
        }
        control.in_flight += 1;
        Ok(Admitted {
            restrictions: control.restrictions,
            cut: control.cut.clone(),
            _slot: InFlight {
                shared: self.shared.clone(),
                agent_id: agent_id.to_string(),
            },
        })
    }

    /// Quarantines the agent; returns how many in-flight requests were cut.
    pub fn quarantine(&self, agent_id: &str) -> usize {
        let mut agents = lock(&self.shared.agents);
        let control = agents.entry(agent_id.to_string()).or_default();
        control.restrictions.quarantined = true;
        control.restrictions.draining = false;
        control.cut.cancel();
        control.cut = CancellationToken::new();
        control.in_flight
    }

    /// Lifts quarantine and drain; true when either was in force.
    pub fn release(&self, agent_id: &str) -> bool {
        self.update(agent_id, |r| {
            let was = r.quarantined || r.draining;
            r.quarantined = false;
            r.draining = false;
            was
        })
    }

    /// Refuses new requests from the agent and waits up to `timeout` for
    /// its in-flight ones to finish. `Err(n)`: n still running at the end.
    pub async fn drain(&self, agent_id: &str, timeout: Duration) -> Result<(), usize> {
        {
            let mut agents = lock(&self.shared.agents);
            let control = agents.entry(agent_id.to_string()).or_default();
            if !control.restrictions.quarantined {
                control.restrictions.draining = true;
            }
        }
        let wait = async {
            loop {
                let idle = self.shared.idle.notified();
                tokio::pin!(idle);
                // Register before checking, so a wake-up in between is kept.
                idle.as_mut().enable();
                if self.in_flight(agent_id) == 0 {
                    return;
                }
                idle.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.in_flight(agent_id)),
        }
    }

    /// Puts the agent under reduced autonomy (`None`: the configured limits).
    pub fn reduce_autonomy(&self, agent_id: &str, limits: Option<ReducedAutonomy>) {
        let limits = limits.unwrap_or(self.shared.reduce_defaults);
        self.update(agent_id, |r| r.reduced_autonomy = Some(limits));
    }

    /// Revokes the agent's tools (stripped or refused, per config).
    pub fn revoke_tools(&self, agent_id: &str) {
        self.update(agent_id, |r| r.tools_revoked = true);
    }

    /// Lifts every restriction on the agent (after a successful probation,
    /// or by an operator). True when any was in force.
    pub fn restore(&self, agent_id: &str) -> bool {
        self.update(agent_id, |r| {
            let was = !r.is_clear();
            *r = AgentRestrictions::default();
            was
        })
    }

    /// What is enforced on the agent now.
    pub fn restrictions(&self, agent_id: &str) -> AgentRestrictions {
        lock(&self.shared.agents)
            .get(agent_id)
            .map(|c| c.restrictions)
            .unwrap_or_default()
    }

    /// Every agent under some restriction, by id.
    pub fn restricted_agents(&self) -> BTreeMap<String, AgentRestrictions> {
        lock(&self.shared.agents)
            .iter()
            .filter(|(_, c)| !c.restrictions.is_clear())
            .map(|(id, c)| (id.clone(), c.restrictions))
            .collect()
    }

    /// Requests of the agent currently being proxied.
    pub fn in_flight(&self, agent_id: &str) -> usize {
        lock(&self.shared.agents)
            .get(agent_id)
            .map_or(0, |c| c.in_flight)
    }

    fn update<T>(&self, agent_id: &str, change: impl FnOnce(&mut AgentRestrictions) -> T) -> T {
        let mut agents = lock(&self.shared.agents);
        let control = agents.entry(agent_id.to_string()).or_default();
        let result = change(&mut control.restrictions);
        if control.restrictions.is_clear() && control.in_flight == 0 {
            agents.remove(agent_id);
        }
        result
    }

    /// Carries out one action on one agent (what the executors call through
    /// the `EnforcementTarget` trait). `parameters` may override the
    /// reduce_autonomy limits (`requests_per_minute`, `tokens_per_minute`,
    /// `max_tokens`). Never fails silently: an action the proxy cannot carry
    /// out is a failed result saying why.
    pub async fn apply(
        &self,
        agent_id: &str,
        action: Action,
        parameters: &BTreeMap<String, String>,
    ) -> EnforcementResult {
        match action {
            Action::Quarantine => {
                let cut = self.quarantine(agent_id);
                tracing::info!(agent_id, cut, "llm_proxy: agent quarantined");
                EnforcementResult::ok(format!(
                    "agent {agent_id} quarantined at the LLM proxy: its requests are answered 503 ({cut} in-flight cut)"
                ))
            }
            Action::Release => {
                let was = self.release(agent_id);
                tracing::info!(agent_id, "llm_proxy: agent released");
                EnforcementResult::ok(if was {
                    format!("agent {agent_id} released at the LLM proxy: traffic flows again")
                } else {
                    format!("agent {agent_id} was not quarantined at the LLM proxy")
                })
            }
            Action::Drain => {
                let timeout = self.shared.drain_timeout;
                tracing::info!(agent_id, "llm_proxy: draining agent");
                match self.drain(agent_id, timeout).await {
                    Ok(()) => EnforcementResult::ok(format!(
                        "agent {agent_id} drained at the LLM proxy: no request in flight, new ones refused"
                    )),
                    Err(left) => EnforcementResult::failed(format!(
                        "agent {agent_id}: {left} request(s) still in flight after {}; new ones are refused",
                        humantime::format_duration(timeout)
                    )),
                }
            }
            Action::ReduceAutonomy => match self.reduced_limits(parameters) {
                Ok(limits) => {
                    self.reduce_autonomy(agent_id, Some(limits));
                    tracing::info!(agent_id, ?limits, "llm_proxy: autonomy reduced");
                    EnforcementResult::ok(format!(
                        "agent {agent_id} limited at the LLM proxy to {} requests/min, {} tokens/min, {} output tokens per request",
                        limits.requests_per_minute, limits.tokens_per_minute, limits.max_tokens
                    ))
                }
                Err(message) => EnforcementResult::failed(message),
            },
            Action::RevokeTools => {
                self.revoke_tools(agent_id);
                tracing::info!(agent_id, "llm_proxy: tools revoked");
                EnforcementResult::ok(format!(
                    "tools revoked for agent {agent_id} at the LLM proxy"
                ))
            }
            Action::ResetMemory | Action::RollbackPrompt | Action::ResetAgent => {
                EnforcementResult::failed(format!(
                    "the LLM proxy cannot {}: it only sees the agent's LLM traffic; use a target that reaches the agent itself (control API, process, container)",
                    action.as_str().replace('_', " ")
                ))
            }
        }
    }

    /// The configured limits, overridden by the action's parameters.
    fn reduced_limits(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> Result<ReducedAutonomy, String> {
        let mut limits = self.shared.reduce_defaults;
        let number = |key: &str| -> Result<Option<u64>, String> {
            match parameters.get(key) {
                None => Ok(None),
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!(
                        "reduce_autonomy parameter {key} must be a whole number above 0, got {:?}",
                        text.chars().take(40).collect::<String>()
                    )),
                },
            }
        };
        if let Some(n) = number("requests_per_minute")? {
            limits.requests_per_minute = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = number("tokens_per_minute")? {
            limits.tokens_per_minute = n;
        }
        if let Some(n) = number("max_tokens")? {
            limits.max_tokens = n;
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enforcement() -> ProxyEnforcement {
        ProxyEnforcement::new(&ReduceAutonomyConfig::default(), Duration::from_millis(200))
    }

    #[test]
    fn quarantine_refuses_and_release_lets_through() {
        let e = enforcement();
        let admitted = e.admit("a").unwrap();
        assert_eq!(e.in_flight("a"), 1);
        assert_eq!(e.quarantine("a"), 1);
        assert!(admitted.cut.is_cancelled(), "in-flight requests are cut");
        let refused = e.admit("a").unwrap_err();
        assert_eq!(refused.kind, "agent_quarantined");
        assert!(e.admit("b").is_ok(), "other agents unaffected");
        drop(admitted);
        assert_eq!(e.in_flight("a"), 0);
        assert!(e.release("a"));
        let again = e.admit("a").unwrap();
        assert!(!again.cut.is_cancelled());
        drop(again);
        assert!(e.restricted_agents().is_empty(), "no state left behind");
    }

    #[tokio::test]
    async fn drain_waits_for_in_flight_requests() {
        let e = enforcement();
        let admitted = e.admit("a").unwrap();
        let drainer = {
            let e = e.clone();
            tokio::spawn(async move { e.drain("a", Duration::from_secs(10)).await })
        };
        // New requests are refused while draining.
        loop {
            if e.restrictions("a").draining {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(e.admit("a").unwrap_err().kind, "agent_draining");
        assert!(!drainer.is_finished());
        drop(admitted);
        assert_eq!(drainer.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn drain_reports_stragglers() {
        let e = enforcement();
        let _admitted = e.admit("a").unwrap();
        let result = e.apply("a", Action::Drain, &BTreeMap::new()).await;
        assert!(!result.success);
        assert!(
            result.message.contains("1 request(s) still in flight"),
            "{}",
            result.message
        );
    }

    #[tokio::test]
    async fn healing_actions() {
        let e = enforcement();
        let params: BTreeMap<String, String> =
            [("max_tokens".to_string(), "50".to_string())].into();
        let result = e.apply("a", Action::ReduceAutonomy, &params).await;
        assert!(result.success, "{}", result.message);
        let reduced = e.restrictions("a").reduced_autonomy.unwrap();
        assert_eq!((reduced.max_tokens, reduced.requests_per_minute), (50, 6));
        let bad: BTreeMap<String, String> = [("max_tokens".to_string(), "-1".to_string())].into();
        assert!(!e.apply("a", Action::ReduceAutonomy, &bad).await.success);

        assert!(
            e.apply("a", Action::RevokeTools, &BTreeMap::new())
                .await
                .success
        );
        assert!(e.restrictions("a").tools_revoked);
        // Release lifts quarantine only; restore lifts everything.
        e.quarantine("a");
        e.release("a");
        assert!(e.restrictions("a").tools_revoked);
        assert!(e.restore("a"));
        assert_eq!(e.restrictions("a"), AgentRestrictions::default());

        for action in [
            Action::ResetMemory,
            Action::RollbackPrompt,
            Action::ResetAgent,
        ] {
            let result = e.apply("a", action, &BTreeMap::new()).await;
            assert!(!result.success);
            assert!(result.message.contains("cannot"), "{}", result.message);
        }
    }
}
