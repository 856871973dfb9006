//! The policy engine: rules from the config and from the management API,
//! checked before a request is forwarded. Model lists refuse with 403, rate
//! budgets with 429 and a `Retry-After`; alert-only rules only report.
//!
//! Every matching rule applies on its own (they are not merged): an agent
//! under two rules is held to the stricter of each limit. Budgets are per
//! rule and agent, bounded by `max_agents` (least recently seen forgotten).

use super::config::{PolicyRule, RESERVED_RULE_PREFIX};
use super::glob::Glob;
use super::lru::LruMap;
use super::rate::Bucket;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rule name reduce_autonomy's limits are reported under.
pub const REDUCE_AUTONOMY_RULE: &str = "agent-immune:reduce_autonomy";

/// Extra per-agent limits from an enforcement action (reduce_autonomy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExtraLimits {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u64,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The model is on a block list (403).
    ModelBlocked,
    /// The model is not on an allow list (403).
    ModelNotAllowed,
    /// Requests per minute spent (429).
    RequestRate,
    /// Tokens per minute spent (429).
    TokenRate,
}

impl RefusalKind {
    /// The `code` of the OpenAI-shaped error body.
    pub fn code(self) -> &'static str {
        match self {
            RefusalKind::ModelBlocked => "model_blocked",
            RefusalKind::ModelNotAllowed => "model_not_allowed",
            RefusalKind::RequestRate => "rate_limit_exceeded",
            RefusalKind::TokenRate => "tokens_per_minute_exceeded",
        }
    }

    pub fn is_throttle(self) -> bool {
        matches!(self, RefusalKind::RequestRate | RefusalKind::TokenRate)
    }
}

/// A rule's verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: RefusalKind,
    pub rule: String,
    pub message: String,
    /// For throttles: when a retry can succeed.
    pub retry_after: Option<Duration>,
}

/// What the engine decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; `alerts` are violations of alert-only rules, to log.
    Allow {
        alerts: Vec<Violation>,
    },
    Refuse(Violation),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("invalid rule: {0}")]
    Invalid(String),
    #[error("a rule named {0:?} already exists")]
    Duplicate(String),
}

#[derive(Debug)]
struct CompiledRule {
    rule: PolicyRule,
    agents: Glob,
    allow: Vec<Glob>,
    block: Vec<Glob>,
}

impl CompiledRule {
    fn compile(rule: PolicyRule) -> Result<Self, PolicyError> {
        let issues = rule.validate();
        if let Some(issue) = issues.first() {
            return Err(PolicyError::Invalid(format!(
                "{}: {}",
                issue.key, issue.message
            )));
        }
        let globs = |list: &[String]| {
            list.iter()
                .map(|p| Glob::new_case_insensitive(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(PolicyError::Invalid)
        };
        Ok(Self {
            agents: Glob::new(&rule.agents).map_err(PolicyError::Invalid)?,
            allow: globs(&rule.allow_models)?,
            block: globs(&rule.block_models)?,
            rule,
        })
    }

    fn model_violation(&self, model: &str) -> Option<Violation> {
        let shown: String = model.chars().take(100).collect();
        if let Some(glob) = self.block.iter().find(|g| g.matches(model)) {
            return Some(Violation {
                kind: RefusalKind::ModelBlocked,
                rule: self.rule.name.clone(),
                message: format!(
                    "model {shown:?} is blocked by policy {:?} (pattern {:?})",
                    self.rule.name,
                    glob.as_str()
                ),
                retry_after: None,
            });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|g| g.matches(model)) {
            return Some(Violation {
                kind: RefusalKind::ModelNotAllowed,
                rule: self.rule.name.clone(),
                message: format!(
                    "model {shown:?} is not allowed by policy {:?} (allowed: {})",
                    self.rule.name,
                    self.rule.allow_models.join(", ")
                ),
                retry_after: None,
            });
        }
        None
    }
}

/// One rule's budgets for one agent.
#[derive(Debug, Default)]
struct RuleBudgets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// A rate-limited rule as the check sees it (config rules and the
/// reduce_autonomy limits alike).
struct RateRule<'a> {
    name: &'a str,
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
    alert_only: bool,
}

#[derive(Debug)]
struct Inner {
    rules: Vec<CompiledRule>,
    /// Agent id → rule name → budgets.
    budgets: LruMap<HashMap<String, RuleBudgets>>,
}

/// The rate-limited rules that apply to `agent_id`.
fn rate_rules<'a>(
    rules: &'a [CompiledRule],
    agent_id: &str,
    extra: Option<&ExtraLimits>,
) -> Vec<RateRule<'a>> {
    let mut rules: Vec<RateRule<'a>> = rules
        .iter()
        .filter(|r| r.rule.requests_per_minute.is_some() || r.rule.tokens_per_minute.is_some())
        .filter(|r| r.agents.matches(agent_id))
        .map(|r| RateRule {
            name: &r.rule.name,
            requests_per_minute: r.rule.requests_per_minute.map(u64::from),
            tokens_per_minute: r.rule.tokens_per_minute,
            alert_only: r.rule.alert_only,
        })
        .collect();
    if let Some(extra) = extra {
        rules.push(RateRule {
            name: REDUCE_AUTONOMY_RULE,
            requests_per_minute: Some(u64::from(extra.requests_per_minute)),
            tokens_per_minute: Some(extra.tokens_per_minute),
            alert_only: false,
        });
    }
    rules
}

/// The bucket for a limit, created full, following a changed limit, and
/// dropped when the limit is gone.
fn sync_bucket(slot: &mut Option<Bucket>, limit: Option<u64>, now: Instant) -> Option<&mut Bucket> {
    match limit {
        None => {
            *slot = None;
            None
        }
        Some(limit) => {
            let bucket = slot.get_or_insert_with(|| Bucket::per_minute(limit, now));
            if bucket.limit() != limit {
                bucket.set_limit(limit, now);
            }
            Some(bucket)
        }
    }
}

#[derive(Debug)]
pub struct PolicyEngine {
    inner: Mutex<Inner>,
}

impl PolicyEngine {
    /// An engine with the configured rules (validated again here).
    pub fn new(rules: &[PolicyRule], max_agents: usize) -> Result<Self, PolicyError> {
        let mut compiled: Vec<CompiledRule> = Vec::with_capacity(rules.len());
        for rule in rules {
            if compiled.iter().any(|c| c.rule.name == rule.name) {
                return Err(PolicyError::Duplicate(rule.name.clone()));
            }
            compiled.push(CompiledRule::compile(rule.clone())?);
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                rules: compiled,
                budgets: LruMap::new(max_agents),
            }),
        })
    }

    /// The rules in force, in evaluation order.
    pub fn list(&self) -> Vec<PolicyRule> {
        self.lock().rules.iter().map(|c| c.rule.clone()).collect()
    }

    /// Adds a rule at runtime; it applies from the next request.
    pub fn add(&self, rule: PolicyRule) -> Result<(), PolicyError> {
        let compiled = CompiledRule::compile(rule)?;
        let mut inner = self.lock();
        if inner
            .rules
            .iter()
            .any(|c| c.rule.name == compiled.rule.name)
        {
            return Err(PolicyError::Duplicate(compiled.rule.name));
        }
        inner.rules.push(compiled);
        Ok(())
    }

    /// Removes the rule named `name` and its budgets; false when none had
    /// that name.
    pub fn remove(&self, name: &str) -> bool {
        if name.starts_with(RESERVED_RULE_PREFIX) {
            return false;
        }
        let mut inner = self.lock();
        let before = inner.rules.len();
        inner.rules.retain(|c| c.rule.name != name);
        if inner.rules.len() == before {
            return false;
        }
        for budgets in inner.budgets.values_mut() {
            budgets.remove(name);
        }
        true
    }

    /// Checks one request from `agent_id` for `model`, with `extra` limits
    /// when the agent's autonomy is reduced. An allowed request takes one
    /// unit from each request budget; a refused one takes nothing.
    pub fn check(
        &self,
        agent_id: &str,
        model: Option<&str>,
        extra: Option<&ExtraLimits>,
        now: Instant,
    ) -> Verdict {
        let mut inner = self.lock();
        let mut alerts = Vec::new();
        if let Some(model) = model {
            for rule in inner.rules.iter().filter(|r| r.agents.matches(agent_id)) {
                if let Some(violation) = rule.model_violation(model) {
                    if rule.rule.alert_only {
                        alerts.push(violation);
                    } else {
                        return Verdict::Refuse(violation);
                    }
                }
            }
        }
        let inner = &mut *inner;
        let rate_rules = rate_rules(&inner.rules, agent_id, extra);
        if rate_rules.is_empty() {
            return Verdict::Allow { alerts };
        }
        let (budgets, _) = inner.budgets.touch_or_insert_with(agent_id, HashMap::new);
        let mut refusal: Option<Violation> = None;
        for rule in &rate_rules {
            let budget = budgets.entry(rule.name.to_string()).or_default();
            let mut found = Vec::new();
            if let Some(wait) = sync_bucket(&mut budget.requests, rule.requests_per_minute, now)
                .map(|b| b.wait_for(1.0, now))
                .filter(|w| !w.is_zero())
            {
                found.push(Violation {
                    kind: RefusalKind::RequestRate,
                    rule: rule.name.to_string(),
                    message: format!(
                        "agent exceeded {} requests per minute (policy {:?})",
                        rule.requests_per_minute.unwrap_or_default(),
                        rule.name
                    ),
                    retry_after: Some(wait),
                });
            }
            if let Some(wait) = sync_bucket(&mut budget.tokens, rule.tokens_per_minute, now)
                .map(|b| b.wait_for_positive(now))
                .filter(|w| !w.is_zero())
            {
                found.push(Violation {
                    kind: RefusalKind::TokenRate,
                    rule: rule.name.to_string(),
                    message: format!(
                        "agent exceeded {} tokens per minute (policy {:?})",
                        rule.tokens_per_minute.unwrap_or_default(),
                        rule.name
                    ),
                    retry_after: Some(wait),
                });
            }
            for violation in found {
                if rule.alert_only {
                    alerts.push(violation);
                } else if refusal
                    .as_ref()
                    .is_none_or(|r| r.retry_after < violation.retry_after)
                {
                    // The longest wait: retrying earlier would only be refused again.
                    refusal = Some(violation);
                }
            }
        }
        if let Some(violation) = refusal {
            return Verdict::Refuse(violation);
        }
        for rule in &rate_rules {
            if let Some(bucket) = budgets.get_mut(rule.name).and_then(|b| b.requests.as_mut()) {
                // An alert-only rule's empty bucket stays empty, not negative.
                if bucket.wait_for(1.0, now).is_zero() {
                    bucket.take(1.0, now);
                }
            }
        }
        Verdict::Allow { alerts }
    }

    /// Charges the tokens of a finished response to the agent's token
    /// budgets (each matching rule's, and reduce_autonomy's).
    pub fn charge_tokens(
        &self,
        agent_id: &str,
        tokens: u64,
        extra: Option<&ExtraLimits>,
        now: Instant,
    ) {
        if tokens == 0 {
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let rate_rules = rate_rules(&inner.rules, agent_id, extra);
        if rate_rules.iter().all(|r| r.tokens_per_minute.is_none()) {
            return;
        }
        let (budgets, _) = inner.budgets.touch_or_insert_with(agent_id, HashMap::new);
        for rule in &rate_rules {
            let budget = budgets.entry(rule.name.to_string()).or_default();
            if let Some(bucket) = sync_bucket(&mut budget.tokens, rule.tokens_per_minute, now) {
                bucket.charge(tokens as f64, now);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, agents: &str) -> PolicyRule {
        PolicyRule {
            name: name.into(),
            agents: agents.into(),
            ..Default::default()
        }
    }

    fn refused(verdict: &Verdict) -> Option<RefusalKind> {
        match verdict {
            Verdict::Refuse(v) => Some(v.kind),
            Verdict::Allow { .. } => None,
        }
    }

    #[test]
    fn model_block_and_allow_lists() {
        let engine = PolicyEngine::new(
            &[
                PolicyRule {
                    block_models: vec!["o1*".into()],
                    ..rule("no-o1", "*")
                },
                PolicyRule {
                    allow_models: vec!["gpt-4o-mini*".into()],
                    ..rule("cheap", "support-*")
                },
            ],
            100,
        )
        .unwrap();
        let now = Instant::now();
        assert_eq!(
            refused(&engine.check("x", Some("O1-preview"), None, now)),
            Some(RefusalKind::ModelBlocked)
        );
        assert_eq!(refused(&engine.check("x", Some("gpt-4o"), None, now)), None);
        assert_eq!(
            refused(&engine.check("support-1", Some("gpt-4o"), None, now)),
            Some(RefusalKind::ModelNotAllowed)
        );
        assert_eq!(
            refused(&engine.check("support-1", Some("gpt-4o-mini-2024-07-18"), None, now)),
            None
        );
        // No model in the request: model lists do not apply.
        assert_eq!(refused(&engine.check("support-1", None, None, now)), None);
    }

    #[test]
    fn request_rate_refuses_with_retry_after_and_takes_nothing_when_refused() {
        let engine = PolicyEngine::new(
            &[PolicyRule {
                requests_per_minute: Some(2),
                ..rule("rpm", "*")
            }],
            100,
        )
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(refused(&engine.check("a", None, None, t0)), None);
        assert_eq!(refused(&engine.check("a", None, None, t0)), None);
        let Verdict::Refuse(v) = engine.check("a", None, None, t0) else {
            panic!("third request in the same instant must be refused");
        };
        assert_eq!(v.kind, RefusalKind::RequestRate);
        assert_eq!(v.rule, "rpm");
        assert_eq!(v.retry_after, Some(Duration::from_secs(30)));
        // Another agent has its own budget.
        assert_eq!(refused(&engine.check("b", None, None, t0)), None);
        // Half a minute later one request is back.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(refused(&engine.check("a", None, None, t1)), None);
        assert!(refused(&engine.check("a", None, None, t1)).is_some());
    }

    #[test]
    fn token_budget_is_charged_after_the_response() {
        let engine = PolicyEngine::new(
            &[PolicyRule {
                tokens_per_minute: Some(100),
                ..rule("tpm", "a")
            }],
            100,
        )
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(refused(&engine.check("a", None, None, t0)), None);
        engine.charge_tokens("a", 150, None, t0);
        let Verdict::Refuse(v) = engine.check("a", None, None, t0) else {
            panic!("budget spent");
        };
        assert_eq!(v.kind, RefusalKind::TokenRate);
        // 50 tokens of debt at 100/min: back after 30 s.
        let wait = v.retry_after.unwrap().as_secs_f64();
        assert!((wait - 30.0).abs() < 0.01, "{wait}");
        assert_eq!(
            refused(&engine.check("a", None, None, t0 + Duration::from_secs(31))),
            None
        );
    }

    #[test]
    fn alert_only_rules_report_without_refusing() {
        let engine = PolicyEngine::new(
            &[PolicyRule {
                requests_per_minute: Some(1),
                block_models: vec!["gpt-4o".into()],
                alert_only: true,
                ..rule("watch", "*")
            }],
            100,
        )
        .unwrap();
        let now = Instant::now();
        let Verdict::Allow { alerts } = engine.check("a", Some("gpt-4o"), None, now) else {
            panic!("alert-only never refuses");
        };
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, RefusalKind::ModelBlocked);
        let Verdict::Allow { alerts } = engine.check("a", None, None, now) else {
            panic!("alert-only never refuses");
        };
        assert_eq!(alerts[0].kind, RefusalKind::RequestRate);
    }

    #[test]
    fn extra_limits_apply_to_the_reduced_agent_only() {
        let engine = PolicyEngine::new(&[], 100).unwrap();
        let extra = ExtraLimits {
            requests_per_minute: 1,
            tokens_per_minute: 1000,
        };
        let now = Instant::now();
        assert_eq!(refused(&engine.check("a", None, Some(&extra), now)), None);
        let Verdict::Refuse(v) = engine.check("a", None, Some(&extra), now) else {
            panic!("reduced to 1 rpm");
        };
        assert_eq!(v.rule, REDUCE_AUTONOMY_RULE);
        assert_eq!(refused(&engine.check("a", None, None, now)), None);
    }

    #[test]
    fn runtime_add_list_remove() {
        let engine = PolicyEngine::new(&[], 100).unwrap();
        let r = PolicyRule {
            requests_per_minute: Some(1),
            ..rule("late", "a")
        };
        engine.add(r.clone()).unwrap();
        assert_eq!(
            engine.add(r.clone()),
            Err(PolicyError::Duplicate("late".into()))
        );
        assert!(matches!(
            engine.add(rule("nothing", "*")),
            Err(PolicyError::Invalid(_))
        ));
        assert_eq!(engine.list(), [r]);
        let now = Instant::now();
        assert_eq!(refused(&engine.check("a", None, None, now)), None);
        assert!(refused(&engine.check("a", None, None, now)).is_some());
        assert!(engine.remove("late"));
        assert!(!engine.remove("late"));
        assert!(!engine.remove(REDUCE_AUTONOMY_RULE));
        assert_eq!(refused(&engine.check("a", None, None, now)), None);
    }
}
