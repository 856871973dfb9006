//! The proxy's enforcement handle as one of the executors' targets.

use super::enforcement::ProxyEnforcement;
use crate::executors::request::{ActionOutcome, ActionRequest};
use crate::executors::target::{EnforcementTarget, OutcomeFuture};
use std::time::Duration;

/// Margin over the drain wait, so a drain that reports stragglers is not
/// itself cut off as a timeout.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

impl EnforcementTarget for ProxyEnforcement {
    fn id(&self) -> &str {
        ProxyEnforcement::id(self)
    }

    fn timeout(&self) -> Duration {
        self.drain_timeout() + TIMEOUT_MARGIN
    }

    fn execute<'a>(&'a self, request: &'a ActionRequest) -> OutcomeFuture<'a> {
        Box::pin(async move {
            let result = self
                .apply(&request.agent_id, request.action, &request.parameters)
                .await;
            if result.success {
                ActionOutcome::ok(self.id(), result.message)
            } else {
                ActionOutcome::failed(self.id(), result.message)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executors::target::run_with_timeout;
    use crate::immune::action::Action;
    use crate::receivers::llm_proxy::config::ReduceAutonomyConfig;

    #[tokio::test]
    async fn runs_as_an_executors_target() {
        let enforcement =
            ProxyEnforcement::new(&ReduceAutonomyConfig::default(), Duration::from_millis(50))
                .with_id("llm_proxy/eu");
        let target: &dyn EnforcementTarget = &enforcement;
        assert_eq!(target.timeout(), Duration::from_millis(1050));
        let outcome = run_with_timeout(target, &ActionRequest::new("a", Action::Quarantine)).await;
        assert!(outcome.success, "{}", outcome.message);
        assert_eq!(outcome.target, "llm_proxy/eu");
        assert!(enforcement.restrictions("a").quarantined);
        let outcome = run_with_timeout(target, &ActionRequest::new("a", Action::ResetAgent)).await;
        assert!(!outcome.success);
        assert!(!outcome.timed_out);
    }
}
