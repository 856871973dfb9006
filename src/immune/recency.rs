//! Which monitored agent may give up its place when the table is full: the
//! least recently seen one that holds nothing an operator needs.
//!
//! Agents are kept in order of their last turn, in two tiers: INITIALIZING
//! and HEALTHY agents go first; SUSPECTED ones (an anomaly is being
//! watched, nothing was done yet) only when no other is left, so a flood
//! of new names cannot wash out a detection under way before the idle
//! agents. DRAINING, QUARANTINED, HEALING, PROBATION and EXHAUSTED agents
//! (an effect sent, an approval pending, a heal being proven) are never in
//! the order: they stay until an operator or their lifecycle moves them.
//! Every step is O(log n); nothing scans the table.

use super::lifecycle::LifecycleState;
use std::collections::BTreeMap;

/// Where an agent stands in the eviction order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    tier: usize,
    tick: u64,
}

const TIERS: usize = 2;

/// The eviction tier of an agent in `state`; `None`: never evicted.
fn tier(state: LifecycleState) -> Option<usize> {
    match state {
        LifecycleState::Initializing | LifecycleState::Healthy => Some(0),
        LifecycleState::Suspected => Some(1),
        LifecycleState::Draining
        | LifecycleState::Quarantined
        | LifecycleState::Healing
        | LifecycleState::Probation
        | LifecycleState::Exhausted => None,
    }
}

#[derive(Debug, Default)]
pub struct Recency {
    tick: u64,
    /// Per tier: use tick → agent id, least recent first.
    order: [BTreeMap<u64, String>; TIERS],
}

impl Recency {
    /// Puts `id` (now in `state`, formerly at `place`) where it belongs:
    /// newest in its tier when `seen` (a turn arrived), else where it was
    /// unless its tier changed; out of the order when it must be kept.
    pub fn place(
        &mut self,
        id: &str,
        place: &mut Option<Place>,
        state: LifecycleState,
        seen: bool,
    ) {
        let wanted = tier(state);
        if let Some(at) = *place
            && !seen
            && Some(at.tier) == wanted
        {
            return;
        }
        // Reuse the id's allocation when it moves.
        let key = place
            .take()
            .and_then(|at| self.order[at.tier].remove(&at.tick));
        let Some(tier) = wanted else { return };
        self.tick += 1;
        let key = key.unwrap_or_else(|| id.to_string());
        self.order[tier].insert(self.tick, key);
        *place = Some(Place {
            tier,
            tick: self.tick,
        });
    }

    /// Takes the agent out of the order (it is gone).
    pub fn forget(&mut self, place: Option<Place>) {
        if let Some(at) = place {
            self.order[at.tier].remove(&at.tick);
        }
    }

    /// Takes the agent to evict out of the order: the least recently seen
    /// of the first tier that has one; `None` when every agent must stay.
    pub fn pop_evictable(&mut self) -> Option<String> {
        self.order
            .iter_mut()
            .find_map(|tier| tier.pop_first().map(|(_, id)| id))
    }

    /// Agents that could be evicted.
    pub fn evictable(&self) -> usize {
        self.order.iter().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::*;

    #[test]
    fn the_least_recently_seen_idle_agent_goes_first_then_suspected_never_held() {
        let mut recency = Recency::default();
        let mut places = [None; 4];
        let states = [Healthy, Suspected, Initializing, Quarantined];
        for (i, state) in states.iter().enumerate() {
            recency.place(&format!("a{i}"), &mut places[i], *state, true);
        }
        assert_eq!(recency.evictable(), 3);
        assert!(places[3].is_none());
        // a0 is seen again: a2 is now the least recent idle agent.
        recency.place("a0", &mut places[0], Healthy, true);
        // A state change without a turn keeps the place.
        let before = places[2];
        recency.place("a2", &mut places[2], Healthy, false);
        assert_eq!(places[2], before);
        assert_eq!(recency.pop_evictable().as_deref(), Some("a2"));
        assert_eq!(recency.pop_evictable().as_deref(), Some("a0"));
        assert_eq!(recency.pop_evictable().as_deref(), Some("a1"));
        assert_eq!(recency.pop_evictable(), None);
        // An agent that becomes protected leaves the order; back to
        // healthy, it is evictable again.
        let mut place = None;
        recency.place("b", &mut place, Healthy, true);
        recency.place("b", &mut place, Draining, false);
        assert_eq!(recency.evictable(), 0);
        recency.place("b", &mut place, Healthy, false);
        assert_eq!(recency.pop_evictable().as_deref(), Some("b"));
    }
}
