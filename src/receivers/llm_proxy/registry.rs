//! Discovery: every agent the proxy has seen, for the management API. Bounded
//! in agents (least recently seen forgotten first) and in the models and
//! source IPs kept per agent (most recent kept).

use super::fingerprint::{Fingerprint, IdentifiedBy};
use super::lru::LruMap;
use crate::immune::vitals::UnixNanos;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Mutex;

/// Most models and most source IPs kept per agent.
pub const MAX_VALUES_PER_AGENT: usize = 16;

/// One agent seen by the proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredAgent {
    pub agent_id: String,
    pub agent_type: String,
    pub identified_by: IdentifiedBy,
    /// Unix nanoseconds of the first and latest request.
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    /// Requests received, refused ones included.
    pub requests: u64,
    /// Requests the proxy refused (policy, quarantine, drain, revoked tools).
    pub refused: u64,
    /// Input + output tokens reported by the upstream.
    pub tokens: u64,
    /// Models requested, most recent last (at most 16).
    pub models: Vec<String>,
    /// Client IPs, most recent last (at most 16).
    pub source_ips: Vec<String>,
}

#[derive(Debug)]
pub struct AgentRegistry {
    agents: Mutex<LruMap<DiscoveredAgent>>,
}

impl AgentRegistry {
    pub fn new(max_agents: usize) -> Self {
        Self {
            agents: Mutex::new(LruMap::new(max_agents)),
        }
    }

    /// Records one request from `agent`, before its body is read.
    pub fn saw(&self, agent: &Fingerprint, ip: IpAddr, now: UnixNanos) {
        let mut agents = self.lock();
        let (entry, _) = agents.touch_or_insert_with(&agent.agent_id, || DiscoveredAgent {
            agent_id: agent.agent_id.clone(),
            agent_type: agent.agent_type.clone(),
            identified_by: agent.identified_by,
            first_seen: now,
            last_seen: now,
            requests: 0,
            refused: 0,
            tokens: 0,
            models: Vec::new(),
            source_ips: Vec::new(),
        });
        entry.last_seen = now;
        entry.requests = entry.requests.saturating_add(1);
        if entry.agent_type == "unknown" && agent.agent_type != "unknown" {
            entry.agent_type.clone_from(&agent.agent_type);
        }
        remember(&mut entry.source_ips, &ip.to_string());
    }

    /// Records the model a request from `agent_id` asked for.
    pub fn used_model(&self, agent_id: &str, model: &str) {
        if let Some(entry) = self.lock().peek_mut(agent_id) {
            remember(&mut entry.models, model);
        }
    }

    pub fn refused(&self, agent_id: &str) {
        if let Some(entry) = self.lock().peek_mut(agent_id) {
            entry.refused = entry.refused.saturating_add(1);
        }
    }

    pub fn add_tokens(&self, agent_id: &str, tokens: u64) {
        if let Some(entry) = self.lock().peek_mut(agent_id) {
            entry.tokens = entry.tokens.saturating_add(tokens);
        }
    }

    /// Every agent, most recently seen first.
    pub fn agents(&self) -> Vec<DiscoveredAgent> {
        let mut all: Vec<DiscoveredAgent> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.agent_id.cmp(&b.agent_id))
        });
        all
    }

    pub fn get(&self, agent_id: &str) -> Option<DiscoveredAgent> {
        self.lock().get(agent_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruMap<DiscoveredAgent>> {
        // The map stays consistent even if a holder panicked mid-update.
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `value` as the most recent, dropping the oldest beyond the cap.
fn remember(values: &mut Vec<String>, value: &str) {
    if let Some(pos) = values.iter().position(|v| v == value) {
        let v = values.remove(pos);
        values.push(v);
        return;
    }
    if values.len() >= MAX_VALUES_PER_AGENT {
        values.remove(0);
    }
    values.push(value.chars().take(128).collect());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(id: &str) -> Fingerprint {
        Fingerprint {
            agent_id: id.into(),
            agent_type: "openai-python".into(),
            identified_by: IdentifiedBy::Header,
        }
    }

    #[test]
    fn records_and_bounds() {
        let registry = AgentRegistry::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        registry.saw(&fp("a"), ip, 10);
        registry.used_model("a", "gpt-4o");
        registry.saw(&fp("a"), ip, 20);
        registry.used_model("a", "gpt-4o-mini");
        registry.add_tokens("a", 30);
        registry.refused("a");
        let a = registry.get("a").unwrap();
        assert_eq!((a.first_seen, a.last_seen, a.requests), (10, 20, 2));
        assert_eq!((a.tokens, a.refused), (30, 1));
        assert_eq!(a.models, ["gpt-4o", "gpt-4o-mini"]);
        assert_eq!(a.source_ips, ["127.0.0.1"]);

        registry.saw(&fp("b"), ip, 30);
        registry.saw(&fp("c"), ip, 40);
        let ids: Vec<String> = registry.agents().into_iter().map(|a| a.agent_id).collect();
        assert_eq!(ids, ["c", "b"], "a was the least recently seen");
    }

    #[test]
    fn per_agent_values_are_bounded() {
        let registry = AgentRegistry::new(10);
        for i in 0..40u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            registry.saw(&fp("a"), ip, u64::from(i));
            registry.used_model("a", &format!("m{i}"));
        }
        let a = registry.get("a").unwrap();
        assert_eq!(a.models.len(), MAX_VALUES_PER_AGENT);
        assert_eq!(a.models.last().unwrap(), "m39");
        assert_eq!(a.source_ips.len(), MAX_VALUES_PER_AGENT);
    }
}
