//! What the immune response asks of an enforcement target, and what came of
//! it. An outcome is a fact the healer learns from: success or failure, in
//! words, from which target, and how long it took.

use crate::immune::action::Action;
use crate::immune::event::AttrValue;
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest message kept in an outcome; a target's answer (an HTTP body, a
/// CLI's stderr) is cut to this so events stay small.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// One action to carry out on one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRequest {
    /// The agent, as agent-immune identifies it (`gen_ai.agent.id` or name).
    pub agent_id: String,
    pub action: Action,
    /// The diagnosis the action is meant to heal (e.g. `prompt_injection`).
    pub diagnosis: Option<String>,
    /// Why, in words, for the agent's own logs.
    pub reason: String,
    /// Id of the event that asked for the action, for correlation.
    pub event_id: String,
    /// The agent's resource attributes that routing and targets read
    /// (`host.name`, `process.pid`, `container.id`, `k8s.deployment.name`…);
    /// see `ExecutorsConfig::resource_keys` for which ones matter.
    pub resource: BTreeMap<String, String>,
    /// Action-specific settings passed through to the agent
    /// (e.g. `max_tokens` for reduce_autonomy).
    pub parameters: BTreeMap<String, String>,
}

impl ActionRequest {
    /// A request with no diagnosis, reason, resource or parameters.
    pub fn new(agent_id: impl Into<String>, action: Action) -> Self {
        Self {
            agent_id: agent_id.into(),
            action,
            diagnosis: None,
            reason: String::new(),
            event_id: String::new(),
            resource: BTreeMap::new(),
            parameters: BTreeMap::new(),
        }
    }
}

/// What came of one action.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOutcome {
    /// True when the action took effect.
    pub success: bool,
    /// What happened, in words (at most `MAX_MESSAGE_CHARS`).
    pub message: String,
    /// Id of the target that acted (for a composite, the member whose answer
    /// this is).
    pub target: String,
    /// Wall time of the call, timeout included.
    pub elapsed: Duration,
    /// True when the target was cut off by its timeout.
    pub timed_out: bool,
}

impl ActionOutcome {
    pub fn ok(target: &str, message: impl Into<String>) -> Self {
        Self::new(true, target, message.into())
    }

    pub fn failed(target: &str, message: impl Into<String>) -> Self {
        Self::new(false, target, message.into())
    }

    /// The failure of a call cut off by its timeout.
    pub fn timed_out(target: &str, action: Action, limit: Duration) -> Self {
        let mut outcome = Self::failed(
            target,
            format!(
                "{action} timed out after {} (target {target} did not answer in time)",
                humantime::format_duration(limit)
            ),
        );
        outcome.timed_out = true;
        outcome
    }

    fn new(success: bool, target: &str, message: String) -> Self {
        Self {
            success,
            message: truncate(&message, MAX_MESSAGE_CHARS),
            target: target.to_string(),
            elapsed: Duration::ZERO,
            timed_out: false,
        }
    }

    /// Typed attributes for the event that reports this outcome.
    pub fn event_attributes(&self, request: &ActionRequest) -> Vec<(String, AttrValue)> {
        let mut attrs = vec![
            (
                "agent_immune.action".to_string(),
                AttrValue::Str(request.action.as_str().to_string()),
            ),
            (
                "agent_immune.action.target".to_string(),
                AttrValue::Str(self.target.clone()),
            ),
            (
                "agent_immune.action.success".to_string(),
                AttrValue::Bool(self.success),
            ),
            (
                "agent_immune.action.timed_out".to_string(),
                AttrValue::Bool(self.timed_out),
            ),
            (
                "agent_immune.action.elapsed_ms".to_string(),
                AttrValue::Int(i64::try_from(self.elapsed.as_millis()).unwrap_or(i64::MAX)),
            ),
            (
                "agent_immune.action.message".to_string(),
                AttrValue::Str(self.message.clone()),
            ),
        ];
        if let Some(diagnosis) = &request.diagnosis {
            attrs.push((
                "agent_immune.diagnosis".to_string(),
                AttrValue::Str(diagnosis.clone()),
            ));
        }
        attrs
    }
}

/// `text` cut to at most `max` characters, marked with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => {
            let mut cut = text[..end].to_string();
            cut.push('…');
            cut
        }
    }
}

/// An action's name in words ("reset memory"), for messages.
pub fn action_words(action: Action) -> String {
    action.as_str().replace('_', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc…");
        assert_eq!(truncate("ééé", 2), "éé…");
    }

    #[test]
    fn messages_are_bounded() {
        let outcome = ActionOutcome::failed("noop", "x".repeat(10_000));
        assert_eq!(outcome.message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn timeout_message_says_so() {
        let outcome = ActionOutcome::timed_out(
            "http_control",
            Action::ResetMemory,
            Duration::from_millis(300),
        );
        assert!(!outcome.success);
        assert!(outcome.timed_out);
        assert!(
            outcome.message.contains("timed out after 300ms"),
            "{}",
            outcome.message
        );
    }

    #[test]
    fn event_attributes_are_typed() {
        let mut request = ActionRequest::new("a", Action::RevokeTools);
        request.diagnosis = Some("prompt_injection".into());
        let mut outcome = ActionOutcome::ok("process", "done");
        outcome.elapsed = Duration::from_millis(42);
        let attrs = outcome.event_attributes(&request);
        assert!(attrs.contains(&(
            "agent_immune.action".into(),
            AttrValue::Str("revoke_tools".into())
        )));
        assert!(attrs.contains(&("agent_immune.action.elapsed_ms".into(), AttrValue::Int(42))));
        assert!(attrs.contains(&(
            "agent_immune.diagnosis".into(),
            AttrValue::Str("prompt_injection".into())
        )));
    }
}
