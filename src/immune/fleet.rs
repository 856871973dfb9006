//! What the core knows of the whole fleet, as one small value: how many
//! agents are monitored, how many show each anomaly now, how healing
//! actions fared per diagnosis, and the operators' confidence feedback.
//!
//! Each shard's core keeps its own part up to date incrementally
//! (`ImmuneCore::summary`); the edge adds the parts up (`merge`) and hands
//! the sum back to every core (`ImmuneCore::set_fleet`). Reading it is
//! O(1), whatever the fleet size.

use super::action::Action;
use super::anomaly::{AnomalySet, AnomalyType};
use super::diagnosis::{Diagnosis, MAX_SHIFT};
use serde::{Deserialize, Serialize};

/// Actions indexed by their position in `Action::ALL`.
pub const ACTIONS: usize = Action::ALL.len();

pub fn action_index(action: Action) -> usize {
    action as usize
}

/// Outcomes of one action for one diagnosis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStats {
    /// Heals that passed probation.
    pub successes: u64,
    /// Heals whose action failed or whose probation failed.
    pub failures: u64,
}

impl ActionStats {
    /// Share of attempts that healed; None before any attempt.
    pub fn success_rate(&self) -> Option<f64> {
        let total = self.successes + self.failures;
        (total > 0).then(|| self.successes as f64 / total as f64)
    }
}

/// One row of the healing statistics, as the API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HealingStat {
    pub diagnosis: Diagnosis,
    pub action: Action,
    pub successes: u64,
    pub failures: u64,
    pub success_rate: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    /// Agents past their warmup.
    pub monitored: u64,
    /// Agents whose latest evaluation shows each anomaly type.
    pub showing: [u64; AnomalyType::COUNT],
    /// Healing outcomes per diagnosis and action.
    pub healing: [[ActionStats; ACTIONS]; Diagnosis::COUNT],
    /// Accumulated operator feedback per diagnosis type (confidence shift).
    pub confidence_shift: [f64; Diagnosis::COUNT],
}

impl FleetSummary {
    /// Adds another shard's part.
    pub fn merge(&mut self, other: &FleetSummary) {
        self.monitored += other.monitored;
        for (a, b) in self.showing.iter_mut().zip(other.showing) {
            *a += b;
        }
        for (row, other_row) in self.healing.iter_mut().zip(&other.healing) {
            for (a, b) in row.iter_mut().zip(other_row) {
                a.successes += b.successes;
                a.failures += b.failures;
            }
        }
        for (a, b) in self.confidence_shift.iter_mut().zip(other.confidence_shift) {
            *a = (*a + b).clamp(-MAX_SHIFT, MAX_SHIFT);
        }
    }

    /// This sum with one part brought up to date: `published` is the part
    /// as it went into the sum, `current` the same part now. A shard sees
    /// its own agents at once and the other shards' as of the last
    /// exchange.
    pub fn rebased(&self, published: &FleetSummary, current: &FleetSummary) -> FleetSummary {
        let count = |total: u64, was: u64, now: u64| total.saturating_sub(was).saturating_add(now);
        let mut fleet = *self;
        fleet.monitored = count(self.monitored, published.monitored, current.monitored);
        for i in 0..fleet.showing.len() {
            fleet.showing[i] = count(self.showing[i], published.showing[i], current.showing[i]);
        }
        for (d, row) in fleet.healing.iter_mut().enumerate() {
            for (a, stats) in row.iter_mut().enumerate() {
                let (was, now) = (published.healing[d][a], current.healing[d][a]);
                stats.successes = count(stats.successes, was.successes, now.successes);
                stats.failures = count(stats.failures, was.failures, now.failures);
            }
        }
        for (i, shift) in fleet.confidence_shift.iter_mut().enumerate() {
            *shift = (*shift - published.confidence_shift[i] + current.confidence_shift[i])
                .clamp(-MAX_SHIFT, MAX_SHIFT);
        }
        fleet
    }

    pub fn stats(&self, diagnosis: Diagnosis, action: Action) -> ActionStats {
        self.healing[diagnosis.index()][action_index(action)]
    }

    /// Every (diagnosis, action) tried at least once, with its outcomes.
    pub fn action_stats(&self) -> Vec<HealingStat> {
        Diagnosis::ALL
            .into_iter()
            .flat_map(|diagnosis| {
                Action::ALL.into_iter().filter_map(move |action| {
                    let stats = self.stats(diagnosis, action);
                    (stats.successes + stats.failures > 0).then(|| HealingStat {
                        diagnosis,
                        action,
                        successes: stats.successes,
                        failures: stats.failures,
                        success_rate: stats.success_rate().unwrap_or(0.0),
                    })
                })
            })
            .collect()
    }

    /// An agent's latest anomalies changed from `before` to `after`.
    pub fn update_showing(&mut self, before: AnomalySet, after: AnomalySet) {
        for kind in AnomalyType::ALL {
            let i = kind.index();
            match (before.contains(kind), after.contains(kind)) {
                (true, false) => self.showing[i] = self.showing[i].saturating_sub(1),
                (false, true) => self.showing[i] += 1,
                _ => {}
            }
        }
    }

    pub fn record_outcome(&mut self, diagnosis: Diagnosis, action: Action, healed: bool) {
        let s = &mut self.healing[diagnosis.index()][action_index(action)];
        if healed {
            s.successes += 1;
        } else {
            s.failures += 1;
        }
    }

    pub fn shift_confidence(&mut self, diagnosis: Diagnosis, delta: f64) {
        let s = &mut self.confidence_shift[diagnosis.index()];
        *s = (*s + delta).clamp(-MAX_SHIFT, MAX_SHIFT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up() {
        let mut a = FleetSummary {
            monitored: 3,
            ..FleetSummary::default()
        };
        a.update_showing(
            AnomalySet::EMPTY,
            [AnomalyType::LatencySpike].into_iter().collect(),
        );
        a.record_outcome(Diagnosis::Unknown, Action::ResetMemory, true);
        a.shift_confidence(Diagnosis::Unknown, -0.05);
        let mut b = a;
        b.record_outcome(Diagnosis::Unknown, Action::ResetMemory, false);
        let mut sum = FleetSummary::default();
        sum.merge(&a);
        sum.merge(&b);
        assert_eq!(sum.monitored, 6);
        assert_eq!(sum.showing[AnomalyType::LatencySpike.index()], 2);
        let s = sum.stats(Diagnosis::Unknown, Action::ResetMemory);
        assert_eq!((s.successes, s.failures), (2, 1));
        assert!((s.success_rate().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((sum.confidence_shift[Diagnosis::Unknown.index()] + 0.1).abs() < 1e-12);
        let rows = sum.action_stats();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].diagnosis, rows[0].action),
            (Diagnosis::Unknown, Action::ResetMemory)
        );
        assert!((rows[0].success_rate - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn showing_follows_an_agents_changes() {
        let mut f = FleetSummary::default();
        let spike: AnomalySet = [AnomalyType::TokenSpike].into_iter().collect();
        f.update_showing(AnomalySet::EMPTY, spike);
        f.update_showing(spike, spike);
        assert_eq!(f.showing[AnomalyType::TokenSpike.index()], 1);
        f.update_showing(spike, AnomalySet::EMPTY);
        f.update_showing(spike, AnomalySet::EMPTY);
        assert_eq!(f.showing[AnomalyType::TokenSpike.index()], 0);
    }

    #[test]
    fn a_rebased_sum_sees_its_own_part_now_and_the_others_as_exchanged() {
        let latency: AnomalySet = [AnomalyType::LatencySpike].into_iter().collect();
        let mut mine = FleetSummary {
            monitored: 2,
            ..FleetSummary::default()
        };
        let mut theirs = mine;
        theirs.update_showing(AnomalySet::EMPTY, latency);
        let mut total = FleetSummary::default();
        total.merge(&mine);
        total.merge(&theirs);
        let published = mine;
        // Since the exchange: one of mine shows latency, one healing
        // worked, and a third agent is monitored.
        mine.update_showing(AnomalySet::EMPTY, latency);
        mine.record_outcome(Diagnosis::Unknown, Action::ResetMemory, true);
        mine.monitored += 1;
        let now = total.rebased(&published, &mine);
        assert_eq!(now.monitored, 5);
        assert_eq!(now.showing[AnomalyType::LatencySpike.index()], 2);
        assert_eq!(
            now.stats(Diagnosis::Unknown, Action::ResetMemory).successes,
            1
        );
        // Nothing changed: the sum itself.
        assert_eq!(total.rebased(&published, &published), total);
    }
}
