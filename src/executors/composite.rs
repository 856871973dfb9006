//! `[executors.composite]`: ordered fallback. Each member is tried in turn,
//! each under its own timeout; the first success wins and its message says
//! which members failed before it.

use super::request::{ActionOutcome, ActionRequest, truncate};
use super::target::{EnforcementTarget, OutcomeFuture, run_with_timeout};
use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Most members in one composite.
pub const MAX_MEMBERS: usize = 16;
/// Room for the bookkeeping between members, so the composite's own limit
/// never fires before the last member's does.
const MARGIN: Duration = Duration::from_secs(1);
/// Most of one member's failure quoted in the composite's message.
const MAX_FAILURE_CHARS: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompositeConfig {
    /// Target ids tried in order until one succeeds, e.g.
    /// `["agent_control_grpc", "process"]`; not another composite. Its limit
    /// is the sum of theirs. Required.
    pub targets: Vec<String>,
}

impl CompositeConfig {
    /// Checks the list itself; the executors config checks that each id is
    /// declared.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.targets.is_empty() {
            issues.push(ConfigIssue::new(
                "targets",
                "needs at least one target id, e.g. [\"http_control\", \"process\"]",
            ));
        }
        if self.targets.len() > MAX_MEMBERS {
            issues.push(ConfigIssue::new(
                "targets",
                format!("at most {MAX_MEMBERS} targets"),
            ));
        }
        for (i, id) in self.targets.iter().enumerate() {
            if self.targets[..i].contains(id) {
                issues.push(ConfigIssue::new(
                    "targets",
                    format!("{id:?} is listed twice"),
                ));
            }
        }
        issues
    }
}

pub struct CompositeTarget {
    id: String,
    members: Vec<Arc<dyn EnforcementTarget>>,
    timeout: Duration,
}

impl CompositeTarget {
    pub fn new(id: impl Into<String>, members: Vec<Arc<dyn EnforcementTarget>>) -> Self {
        let timeout = members
            .iter()
            .fold(MARGIN, |sum, m| sum.saturating_add(m.timeout()));
        Self {
            id: id.into(),
            members,
            timeout,
        }
    }

    async fn fall_back(&self, request: &ActionRequest) -> ActionOutcome {
        let mut failures = Vec::new();
        let mut all_timed_out = !self.members.is_empty();
        for member in &self.members {
            let outcome = run_with_timeout(member.as_ref(), request).await;
            if outcome.success {
                let mut outcome = outcome;
                if !failures.is_empty() {
                    outcome.message = truncate(
                        &format!("{} (after: {})", outcome.message, failures.join("; ")),
                        super::request::MAX_MESSAGE_CHARS,
                    );
                }
                return outcome;
            }
            all_timed_out &= outcome.timed_out;
            failures.push(format!(
                "{} failed: {}",
                outcome.target,
                truncate(&outcome.message, MAX_FAILURE_CHARS)
            ));
        }
        let mut outcome = ActionOutcome::failed(
            &self.id,
            format!(
                "all {} targets failed: {}",
                self.members.len(),
                failures.join("; ")
            ),
        );
        outcome.timed_out = all_timed_out;
        outcome
    }
}

impl std::fmt::Debug for CompositeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members: Vec<&str> = self.members.iter().map(|m| m.id()).collect();
        f.debug_struct("CompositeTarget")
            .field("id", &self.id)
            .field("members", &members)
            .finish()
    }
}

impl EnforcementTarget for CompositeTarget {
    fn id(&self) -> &str {
        &self.id
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn execute<'a>(&'a self, request: &'a ActionRequest) -> OutcomeFuture<'a> {
        Box::pin(self.fall_back(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executors::noop::NoopTarget;
    use crate::immune::action::Action;

    /// Always fails, for the fallback order.
    struct Broken;

    impl EnforcementTarget for Broken {
        fn id(&self) -> &str {
            "broken"
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn execute<'a>(&'a self, _: &'a ActionRequest) -> OutcomeFuture<'a> {
            Box::pin(std::future::ready(ActionOutcome::failed("broken", "down")))
        }
    }

    #[tokio::test]
    async fn first_success_wins_and_names_earlier_failures() {
        let composite = CompositeTarget::new(
            "composite",
            vec![Arc::new(Broken), Arc::new(NoopTarget::new("noop"))],
        );
        assert_eq!(composite.timeout(), Duration::from_secs(3));
        let outcome = run_with_timeout(&composite, &ActionRequest::new("a", Action::Release)).await;
        assert!(outcome.success);
        assert_eq!(outcome.target, "noop");
        assert_eq!(
            outcome.message,
            "observe only: release not enforced (after: broken failed: down)"
        );
    }

    #[tokio::test]
    async fn all_failing_is_one_failure() {
        let composite = CompositeTarget::new("composite", vec![Arc::new(Broken)]);
        let outcome = run_with_timeout(&composite, &ActionRequest::new("a", Action::Release)).await;
        assert!(!outcome.success);
        assert_eq!(outcome.target, "composite");
        assert_eq!(outcome.message, "all 1 targets failed: broken failed: down");
    }

    #[test]
    fn validation() {
        let keys = |c: CompositeConfig| c.validate().into_iter().map(|i| i.key).collect::<Vec<_>>();
        assert_eq!(keys(CompositeConfig::default()), ["targets"]);
        let twice = CompositeConfig {
            targets: vec!["a".into(), "a".into()],
        };
        assert_eq!(keys(twice), ["targets"]);
    }
}
