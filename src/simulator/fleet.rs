//! The simulated fleet: every agent, looked up by id, shared between the
//! driver (which draws turns) and the control API (which pauses and heals).

use super::agent::{Pause, SimAgent};
use super::injection::{InfectionKind, Injection, select};
use super::personality::Personality;
use super::random::Rng;
use crate::immune::action::Action;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// Control calls remembered for the status endpoint and tests.
const MAX_CONTROL_LOG: usize = 10_000;

/// One control call as the agent saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlCall {
    pub agent_id: String,
    pub action: Action,
    /// Time since the simulator's start.
    pub at_ms: u64,
    pub result: String,
}

/// What one agent looks like from outside.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStatus {
    pub agent_id: String,
    pub model: String,
    pub turns: u64,
    pub skipped_turns: u64,
    /// "running", "draining" or "quarantined".
    pub state: &'static str,
    pub infections: Vec<String>,
    pub heals: Vec<Action>,
    pub cured: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("no agent {0:?} in this simulator")]
    UnknownAgent(String),
}

pub struct SimFleet {
    agents: Vec<SimAgent>,
    by_id: HashMap<String, usize>,
    control_log: Vec<ControlCall>,
}

impl SimFleet {
    pub fn new(size: usize, seed: u64) -> Self {
        let agents: Vec<SimAgent> = (0..size)
            .map(|i| {
                SimAgent::new(
                    Personality::draw(i, size, seed),
                    Rng::stream(seed ^ 0xa5a5, i as u64),
                )
            })
            .collect();
        let by_id = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id().to_string(), i))
            .collect();
        Self {
            agents,
            by_id,
            control_log: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.id().to_string()).collect()
    }

    pub fn agent_mut(&mut self, index: usize) -> Option<&mut SimAgent> {
        self.agents.get_mut(index)
    }

    /// The agents an injection hits, or why none can be (checked before
    /// the run starts, so a typo fails fast).
    pub fn resolve(&self, injection: &Injection) -> Result<Vec<usize>, String> {
        let ids = self.ids();
        select(&injection.target, &ids).map_err(|e| format!("--inject {injection}: {e}"))
    }

    /// Starts `kind` on the given agents at `now`; returns their ids.
    pub fn infect(
        &mut self,
        agents: &[usize],
        kind: InfectionKind,
        now: Duration,
        lasts: Option<Duration>,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(agents.len());
        for &i in agents {
            if let Some(a) = self.agents.get_mut(i) {
                a.infect(kind, now, lasts);
                ids.push(a.id().to_string());
            }
        }
        ids
    }

    /// Applies a control call from agent-immune.
    pub fn control(
        &mut self,
        agent_id: &str,
        action: Action,
        now: Duration,
    ) -> Result<String, ControlError> {
        let index = *self
            .by_id
            .get(agent_id)
            .ok_or_else(|| ControlError::UnknownAgent(agent_id.to_string()))?;
        let result = self.agents[index].control(action);
        if self.control_log.len() >= MAX_CONTROL_LOG {
            self.control_log.remove(0);
        }
        self.control_log.push(ControlCall {
            agent_id: agent_id.to_string(),
            action,
            at_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            result: result.clone(),
        });
        Ok(result)
    }

    pub fn control_log(&self) -> &[ControlCall] {
        &self.control_log
    }

    pub fn status(&self, agent_id: &str) -> Option<AgentStatus> {
        self.by_id
            .get(agent_id)
            .map(|&i| status_of(&self.agents[i]))
    }

    pub fn statuses(&self) -> Vec<AgentStatus> {
        self.agents.iter().map(status_of).collect()
    }
}

fn status_of(a: &SimAgent) -> AgentStatus {
    AgentStatus {
        agent_id: a.id().to_string(),
        model: a.personality.model.to_string(),
        turns: a.turns,
        skipped_turns: a.skipped_turns,
        state: match a.pause {
            None => "running",
            Some(Pause::Draining) => "draining",
            Some(Pause::Quarantined) => "quarantined",
        },
        infections: a
            .infections
            .iter()
            .map(|i| i.kind.as_str().to_string())
            .collect(),
        heals: a.heals.clone(),
        cured: a.cured.iter().map(|k| k.as_str().to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_calls_reach_the_named_agent_and_are_logged() {
        let mut fleet = SimFleet::new(4, 1);
        let id = fleet.ids()[2].clone();
        fleet.infect(&[2], InfectionKind::InfiniteLoop, Duration::ZERO, None);
        assert_eq!(fleet.status(&id).unwrap().infections, vec!["infinite_loop"]);
        fleet
            .control(&id, Action::Quarantine, Duration::from_millis(5))
            .unwrap();
        assert_eq!(fleet.status(&id).unwrap().state, "quarantined");
        let healed = fleet
            .control(&id, Action::RevokeTools, Duration::from_millis(9))
            .unwrap();
        assert!(healed.contains("cured infinite_loop"), "{healed}");
        let status = fleet.status(&id).unwrap();
        assert!(status.infections.is_empty());
        assert_eq!(status.cured, vec!["infinite_loop"]);
        assert_eq!(fleet.control_log().len(), 2);
        assert_eq!(fleet.control_log()[1].at_ms, 9);
        assert_eq!(
            fleet.control("nobody", Action::Release, Duration::ZERO),
            Err(ControlError::UnknownAgent("nobody".into()))
        );
        assert_eq!(
            fleet
                .statuses()
                .iter()
                .filter(|s| s.state == "running")
                .count(),
            3
        );
    }
}
