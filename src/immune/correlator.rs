//! The correlator: is this agent alone, or do other agents show the same
//! anomaly now? A cause shared by much of the fleet (a provider outage) is
//! not the agent's: alert, do not quarantine.

use super::anomaly::{AnomalySet, AnomalyType};
use super::config::ImmuneConfig;
use super::fleet::FleetSummary;
use serde::{Deserialize, Serialize};

/// A fleet-wide verdict needs at least this many other agents showing the
/// anomaly: two agents are not a fleet.
pub const MIN_FLEET_PEERS: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    AgentSpecific,
    PartialFleet,
    FleetWide,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AgentSpecific => "agent_specific",
            Scope::PartialFleet => "partial_fleet",
            Scope::FleetWide => "fleet_wide",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorrelationVerdict {
    pub scope: Scope,
    /// Share of the other monitored agents showing the most shared of this
    /// agent's anomaly types.
    pub share: f64,
    /// Other agents showing it.
    pub peers: u64,
    /// Other monitored agents.
    pub others: u64,
    /// The most shared anomaly type.
    pub kind: Option<AnomalyType>,
}

/// Judges `anomalies` of one agent against the fleet. `counted` is what
/// the summary already holds for this agent (its previous anomalies, and
/// whether it is among the monitored), so it is not its own peer.
///
/// The overlap is measured per anomaly type and the most shared type
/// decides: the summary has counts per type, not per agent, so agents
/// showing different overlapping types are not added up (a lower bound).
pub fn correlate(
    anomalies: AnomalySet,
    counted: AnomalySet,
    counted_as_monitored: bool,
    fleet: &FleetSummary,
    config: &ImmuneConfig,
) -> CorrelationVerdict {
    let others = fleet
        .monitored
        .saturating_sub(u64::from(counted_as_monitored));
    let mut best = (0u64, None);
    for kind in anomalies.iter() {
        let peers = fleet.showing[kind.index()]
            .saturating_sub(u64::from(counted.contains(kind)))
            .min(others);
        if peers > best.0 {
            best = (peers, Some(kind));
        }
    }
    let (peers, kind) = best;
    let share = if others == 0 {
        0.0
    } else {
        peers as f64 / others as f64
    };
    let scope = if share >= config.fleet_wide_share && peers >= MIN_FLEET_PEERS {
        Scope::FleetWide
    } else if share >= config.partial_fleet_share && peers >= 1 {
        Scope::PartialFleet
    } else {
        Scope::AgentSpecific
    };
    CorrelationVerdict {
        scope,
        share,
        peers,
        others,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(monitored: u64, latency: u64, tokens: u64) -> FleetSummary {
        let mut f = FleetSummary {
            monitored,
            ..FleetSummary::default()
        };
        f.showing[AnomalyType::LatencySpike.index()] = latency;
        f.showing[AnomalyType::TokenSpike.index()] = tokens;
        f
    }

    fn latency() -> AnomalySet {
        [AnomalyType::LatencySpike].into_iter().collect()
    }

    #[test]
    fn thresholds_are_thirty_and_fifteen_percent_of_the_others() {
        let config = ImmuneConfig::default();
        let none = AnomalySet::EMPTY;
        // 101 monitored including this agent: 100 others.
        let v = correlate(latency(), none, true, &fleet(101, 30, 0), &config);
        assert_eq!((v.scope, v.peers, v.others), (Scope::FleetWide, 30, 100));
        assert_eq!(v.kind, Some(AnomalyType::LatencySpike));
        let v = correlate(latency(), none, true, &fleet(101, 29, 0), &config);
        assert_eq!(v.scope, Scope::PartialFleet);
        let v = correlate(latency(), none, true, &fleet(101, 15, 0), &config);
        assert_eq!(v.scope, Scope::PartialFleet);
        let v = correlate(latency(), none, true, &fleet(101, 14, 80), &config);
        assert_eq!(
            v.scope,
            Scope::AgentSpecific,
            "other anomaly types do not overlap"
        );
    }

    #[test]
    fn the_agent_is_not_its_own_peer() {
        let config = ImmuneConfig::default();
        // Two agents, this one already counted as showing latency.
        let v = correlate(latency(), latency(), true, &fleet(2, 1, 0), &config);
        assert_eq!((v.peers, v.others, v.scope), (0, 1, Scope::AgentSpecific));
        // Alone in the fleet.
        let v = correlate(
            latency(),
            AnomalySet::EMPTY,
            false,
            &fleet(0, 0, 0),
            &config,
        );
        assert_eq!((v.share, v.scope), (0.0, Scope::AgentSpecific));
        // One other agent of two is 100%, but not a fleet.
        let v = correlate(latency(), AnomalySet::EMPTY, true, &fleet(2, 1, 0), &config);
        assert_eq!(v.scope, Scope::PartialFleet);
    }
}
