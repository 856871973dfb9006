//! `Executors`: the targets built from `[executors]`, and the routing that
//! picks one per agent. The pipeline holds one and calls `execute`.

use super::agent_control_grpc::AgentControlGrpcTarget;
use super::composite::CompositeTarget;
use super::config::{ExecutorsConfig, TargetConfig};
use super::container::ContainerTarget;
use super::http_control::HttpControlTarget;
use super::noop::{NOOP_ID, NoopTarget};
use super::process::ProcessTarget;
use super::request::{ActionOutcome, ActionRequest};
use super::routing::RouteRule;
use super::target::{EnforcementTarget, run_with_timeout};
use crate::config::ConfigIssue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Why `[executors]` could not be built: every problem, keys relative to
/// `[executors]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid [executors] config: {}", describe(.0))]
pub struct ExecutorsError(pub Vec<ConfigIssue>);

fn describe(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("{}: {}", i.key, i.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The enforcement targets and the routing between them.
pub struct Executors {
    targets: BTreeMap<String, Arc<dyn EnforcementTarget>>,
    rules: Vec<RouteRule>,
    default: Arc<dyn EnforcementTarget>,
}

impl Executors {
    /// Observe only: every agent goes to the noop target.
    pub fn observe_only() -> Self {
        let noop: Arc<dyn EnforcementTarget> = Arc::new(NoopTarget::new(NOOP_ID));
        Self {
            targets: BTreeMap::from([(NOOP_ID.to_string(), noop.clone())]),
            rules: Vec::new(),
            default: noop,
        }
    }

    /// Validates the config and builds every target. Needs no runtime:
    /// connections are made on first use.
    pub fn from_config(config: &ExecutorsConfig) -> Result<Self, ExecutorsError> {
        Self::from_config_with(config, &BTreeMap::new())
    }

    /// As `from_config`, with the enforcement handles of running receivers
    /// (the LLM proxy's gateway), by receiver id, for `llm_proxy` targets.
    pub fn from_config_with(
        config: &ExecutorsConfig,
        gateways: &BTreeMap<String, Arc<dyn EnforcementTarget>>,
    ) -> Result<Self, ExecutorsError> {
        let issues = config.validate();
        if !issues.is_empty() {
            return Err(ExecutorsError(issues));
        }
        let mut targets: BTreeMap<String, Arc<dyn EnforcementTarget>> = BTreeMap::new();
        targets.insert(NOOP_ID.to_string(), Arc::new(NoopTarget::new(NOOP_ID)));
        let mut errors = Vec::new();
        // Composites last: they hold their members.
        let (composites, simple): (Vec<_>, Vec<_>) = config
            .targets
            .iter()
            .partition(|(_, t)| matches!(t, TargetConfig::Composite(_)));
        for (id, target) in simple {
            let built = match target {
                TargetConfig::LlmProxy(_) => gateways.get(id).cloned().ok_or_else(|| {
                    format!("no [receivers.{id}] runs in this pipeline to enforce through")
                }),
                _ => build(id, target),
            };
            match built {
                Ok(built) => {
                    targets.insert(id.clone(), built);
                }
                Err(message) => errors.push(ConfigIssue::new(id.clone(), message)),
            }
        }
        for (id, target) in composites {
            let TargetConfig::Composite(composite) = target else {
                continue;
            };
            let members: Vec<_> = composite
                .targets
                .iter()
                .filter_map(|member| targets.get(member).cloned())
                .collect();
            if members.len() != composite.targets.len() {
                // A member failed to build; its own error is reported.
                continue;
            }
            targets.insert(
                id.clone(),
                Arc::new(CompositeTarget::new(id.clone(), members)),
            );
        }
        if !errors.is_empty() {
            return Err(ExecutorsError(errors));
        }
        let default = targets
            .get(config.default_target())
            .cloned()
            .ok_or_else(|| {
                ExecutorsError(vec![ConfigIssue::new(
                    "routing.default",
                    format!("target {:?} was not built", config.default_target()),
                )])
            })?;
        Ok(Self {
            targets,
            rules: config.routing.rules.clone(),
            default,
        })
    }

    /// The target that acts on this agent: the first matching rule's, else
    /// the default.
    pub fn target_for(
        &self,
        agent_id: &str,
        resource: &BTreeMap<String, String>,
    ) -> Arc<dyn EnforcementTarget> {
        self.rules
            .iter()
            .find(|rule| rule.matches(agent_id, resource))
            .and_then(|rule| self.targets.get(&rule.target))
            .unwrap_or(&self.default)
            .clone()
    }

    /// A target by id (`noop` always exists).
    pub fn target(&self, id: &str) -> Option<Arc<dyn EnforcementTarget>> {
        self.targets.get(id).cloned()
    }

    /// Routes and runs one action. Never hangs (every target has a
    /// timeout) and never fails the caller: a target that panics is a
    /// failed outcome too.
    pub async fn execute(&self, request: &ActionRequest) -> ActionOutcome {
        let target = self.target_for(&request.agent_id, &request.resource);
        let id = target.id().to_string();
        let owned = request.clone();
        let started = Instant::now();
        // Its own task, so a panicking target cannot take the caller down.
        let task = tokio::spawn(async move { run_with_timeout(target.as_ref(), &owned).await });
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                let mut outcome = ActionOutcome::failed(
                    &id,
                    format!("{} failed inside target {id}: {e}", request.action),
                );
                outcome.elapsed = started.elapsed();
                outcome
            }
        };
        let agent = &request.agent_id;
        if outcome.success {
            tracing::info!(agent, action = %request.action, target = %outcome.target, message = %outcome.message, "action done");
        } else {
            tracing::warn!(agent, action = %request.action, target = %outcome.target, message = %outcome.message, timed_out = outcome.timed_out, "action failed");
        }
        outcome
    }
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .field("rules", &self.rules.len())
            .field("default", &self.default.id())
            .finish()
    }
}

fn build(id: &str, target: &TargetConfig) -> Result<Arc<dyn EnforcementTarget>, String> {
    Ok(match target {
        TargetConfig::Noop(_) => Arc::new(NoopTarget::new(id)),
        TargetConfig::HttpControl(c) => Arc::new(HttpControlTarget::new(id, c)?),
        TargetConfig::AgentControlGrpc(c) => Arc::new(AgentControlGrpcTarget::new(id, c)?),
        TargetConfig::Process(c) => Arc::new(ProcessTarget::new(id, c)),
        TargetConfig::Container(c) => Arc::new(ContainerTarget::new(id, c)?),
        TargetConfig::Composite(_) => {
            return Err("composites are built after their members".into());
        }
        TargetConfig::LlmProxy(_) => {
            return Err("llm_proxy targets are the receiver's gateway, given at start".into());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::action::Action;

    fn executors(text: &str) -> Executors {
        Executors::from_config(&toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn routes_by_rule_then_default() {
        let executors = executors(
            r#"[process]
               pids = { "billing-eu" = 4242 }
               [container]
               [routing]
               default = "noop"
               [[routing.rules]]
               agents = ["billing-*"]
               target = "process"
               [[routing.rules]]
               resource_attribute = { key = "container.runtime", value = "docker" }
               target = "container""#,
        );
        let none = BTreeMap::new();
        let docker = BTreeMap::from([("container.runtime".to_string(), "docker".to_string())]);
        assert_eq!(executors.target_for("billing-eu", &docker).id(), "process");
        assert_eq!(executors.target_for("support", &docker).id(), "container");
        assert_eq!(executors.target_for("support", &none).id(), "noop");
    }

    #[test]
    fn invalid_config_is_an_error_listing_every_problem() {
        let config: ExecutorsConfig = toml::from_str(
            r#"[http_control]
               [routing]
               default = "nope""#,
        )
        .unwrap();
        let err = Executors::from_config(&config).unwrap_err();
        let keys: Vec<_> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["http_control.base_url", "routing.default"]);
        assert!(err.to_string().starts_with("invalid [executors] config: "));
    }

    #[tokio::test]
    async fn observe_only_by_default() {
        let executors = Executors::observe_only();
        let outcome = executors
            .execute(&ActionRequest::new("any", Action::Quarantine))
            .await;
        assert!(outcome.success);
        assert_eq!(outcome.target, "noop");
    }

    /// Panics when asked to act.
    struct Panicking;

    impl EnforcementTarget for Panicking {
        fn id(&self) -> &str {
            "panicking"
        }
        fn timeout(&self) -> std::time::Duration {
            std::time::Duration::from_secs(1)
        }
        fn execute<'a>(&'a self, _: &'a ActionRequest) -> super::super::target::OutcomeFuture<'a> {
            Box::pin(async { panic!("target bug") })
        }
    }

    #[tokio::test]
    async fn a_panicking_target_is_a_failed_outcome() {
        let mut executors = Executors::observe_only();
        executors.default = Arc::new(Panicking);
        let outcome = executors
            .execute(&ActionRequest::new("any", Action::ResetMemory))
            .await;
        assert!(!outcome.success);
        assert_eq!(outcome.target, "panicking");
        assert!(
            outcome
                .message
                .contains("reset_memory failed inside target panicking"),
            "{}",
            outcome.message
        );
    }
}
