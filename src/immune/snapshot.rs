//! What of an agent survives a restart: everything learned and decided
//! (baseline, lifecycle, episode with its approval and healing attempt,
//! immune memory), not the last few turns (the evaluation window refills
//! in five turns) nor the latest vitals.
//!
//! Plain externally-tagged serde, so compact non-self-describing formats
//! (postcard) can store it. Bump the store's record version when a field
//! changes.

use super::agent::AgentRecord;
use super::anomaly::AnomalySet;
use super::baseline::Baseline;
use super::config::ImmuneConfig;
use super::diagnosis::Diagnosis;
use super::episode::{Attempt, Episode};
use super::lifecycle::LifecycleState;
use super::memory::ImmuneMemory;
use super::vitals::UnixNanos;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub agent_id: String,
    pub baseline: Baseline,
    pub state: LifecycleState,
    pub since: UnixNanos,
    pub anomalous_streak: u32,
    pub sustained_ticks: u32,
    pub episode: Option<Episode>,
    pub memory: ImmuneMemory,
    pub showing: AnomalySet,
    pub last_diagnosis: Option<Diagnosis>,
    pub enforcement: Option<Attempt>,
    pub last_seen: UnixNanos,
}

impl AgentSnapshot {
    pub fn of(agent_id: &str, agent: &AgentRecord) -> Self {
        Self {
            agent_id: agent_id.to_string(),
            baseline: agent.baseline.clone(),
            state: agent.state,
            since: agent.since,
            anomalous_streak: agent.anomalous_streak,
            sustained_ticks: agent.sustained_ticks,
            episode: agent.episode.as_deref().cloned(),
            memory: agent.memory,
            showing: agent.showing,
            last_diagnosis: agent.last_diagnosis,
            enforcement: agent.enforcement,
            last_seen: agent.last_seen,
        }
    }

    /// The record again, with an empty evaluation window.
    pub fn into_record(self, config: &ImmuneConfig) -> AgentRecord {
        let mut agent = AgentRecord::new(config, self.since);
        agent.baseline = self.baseline;
        agent.state = self.state;
        agent.anomalous_streak = self.anomalous_streak;
        agent.sustained_ticks = self.sustained_ticks;
        agent.episode = self.episode.map(Box::new);
        agent.memory = self.memory;
        agent.showing = self.showing;
        agent.last_diagnosis = self.last_diagnosis;
        agent.enforcement = self.enforcement;
        agent.last_seen = self.last_seen;
        agent
    }

    /// The largest attempt id in the snapshot (new ids must be above it).
    pub fn max_attempt_id(&self) -> u64 {
        let ep = self.episode.as_ref();
        [
            ep.and_then(|e| e.healing).map(|a| a.id),
            ep.and_then(|e| e.drain).map(|a| a.id),
            self.enforcement.map(|a| a.id),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use crate::immune::core::ImmuneCore;
    use crate::immune::effect::Effect;
    use crate::immune::lifecycle::LifecycleState;
    use crate::immune::snapshot::AgentSnapshot;
    use crate::immune::testkit::{Harness, SimAgent};

    /// Through postcard, as the state store keeps it.
    fn stored(s: &AgentSnapshot) -> AgentSnapshot {
        let bytes = postcard::to_allocvec(s).unwrap();
        postcard::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn a_restored_agent_resumes_mid_episode_without_relearning() {
        let mut h = Harness::new();
        let mut agent = SimAgent::new("phoenix", 1);
        h.healthy(&mut agent, 100);
        agent.latency_ms *= 3.0;
        while h.core.state("phoenix") != Some(LifecycleState::Draining) {
            let v = agent.next_turn();
            h.turn(&v);
        }
        h.wait(30);
        assert_eq!(h.core.state("phoenix"), Some(LifecycleState::Healing));
        let changed: Vec<String> = h.core.drain_changed().collect();
        assert_eq!(changed, ["phoenix"]);
        assert_eq!(h.core.drain_changed().count(), 0);

        let snapshot = stored(&h.core.snapshot("phoenix").unwrap());
        assert_eq!(snapshot, h.core.snapshot("phoenix").unwrap());
        let experience = h.core.summary();

        // A new process.
        let mut again = Harness::of(ImmuneCore::new(h.core.config().clone()));
        again.now = h.now;
        again.core.restore(snapshot.clone()).unwrap();
        again.core.restore_experience(&experience);
        assert!(again.core.restore(snapshot).is_err(), "restored twice");
        assert_eq!(again.core.state("phoenix"), Some(LifecycleState::Healing));
        assert!(again.core.baseline("phoenix").unwrap().ready);
        assert_eq!(again.core.summary().monitored, 1);
        // The interrupted healing action times out and the next is tried,
        // with an attempt id never used before.
        let before = h.effects.iter().map(Effect::attempt_id).max().unwrap();
        again.wait(120);
        let Some(Effect::Heal { attempt_id, .. }) = again.last_effect() else {
            panic!("{:?}", again.effects)
        };
        assert!(attempt_id > before);
    }
}
