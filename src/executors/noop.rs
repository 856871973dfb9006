//! `[executors.noop]`: observe only. Every action "succeeds" without
//! touching the agent, so the immune response runs and reports in full
//! while nothing is enforced. The default target.

use super::request::{ActionOutcome, ActionRequest};
use super::target::{EnforcementTarget, OutcomeFuture};
use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The id of the built-in noop target, usable without declaring it.
pub const NOOP_ID: &str = "noop";

/// `[executors.noop]` takes no keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoopConfig {}

impl NoopConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        Vec::new()
    }
}

#[derive(Debug)]
pub struct NoopTarget {
    id: String,
}

impl NoopTarget {
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

impl EnforcementTarget for NoopTarget {
    fn id(&self) -> &str {
        &self.id
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn execute<'a>(&'a self, request: &'a ActionRequest) -> OutcomeFuture<'a> {
        let outcome = ActionOutcome::ok(
            &self.id,
            format!("observe only: {} not enforced", request.action),
        );
        Box::pin(std::future::ready(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::action::Action;

    #[tokio::test]
    async fn observes_only() {
        let target = NoopTarget::new(NOOP_ID);
        let request = ActionRequest::new("a", Action::Quarantine);
        let outcome = super::super::target::run_with_timeout(&target, &request).await;
        assert!(outcome.success);
        assert_eq!(outcome.message, "observe only: quarantine not enforced");
        assert_eq!(outcome.target, "noop");
    }
}
