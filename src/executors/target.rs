//! The one trait every enforcement target implements, and the timeout that
//! wraps every call to one.

use super::request::{ActionOutcome, ActionRequest};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Default limit on one call to a target.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The future a target returns: boxed so the trait can be used as
/// `Arc<dyn EnforcementTarget>`.
pub type OutcomeFuture<'a> = Pin<Box<dyn Future<Output = ActionOutcome> + Send + 'a>>;

/// Something that can quarantine, release, drain or heal an agent: the
/// agent's own control API, its process, its container, agent-immune's own
/// LLM gateway…
///
/// An implementation reports every failure in the outcome (never panics,
/// never returns early with an error) and need not enforce its own timeout:
/// callers go through [`run_with_timeout`].
pub trait EnforcementTarget: Send + Sync {
    /// The component id from the config (`process`, `http_control/agent`).
    fn id(&self) -> &str;

    /// Upper bound on one call.
    fn timeout(&self) -> Duration;

    /// Carries out the action.
    fn execute<'a>(&'a self, request: &'a ActionRequest) -> OutcomeFuture<'a>;
}

impl std::fmt::Debug for dyn EnforcementTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnforcementTarget")
            .field("id", &self.id())
            .field("timeout", &self.timeout())
            .finish()
    }
}

/// Runs one action on `target`, cut off at the target's timeout: a hang
/// becomes a failed outcome that says it timed out. Fills in `elapsed`.
pub async fn run_with_timeout(
    target: &dyn EnforcementTarget,
    request: &ActionRequest,
) -> ActionOutcome {
    let started = Instant::now();
    let limit = target.timeout();
    let mut outcome = match tokio::time::timeout(limit, target.execute(request)).await {
        Ok(outcome) => outcome,
        Err(_) => ActionOutcome::timed_out(target.id(), request.action, limit),
    };
    if outcome.target.is_empty() {
        outcome.target = target.id().to_string();
    }
    outcome.elapsed = started.elapsed();
    outcome
}
