//! Healing ladders: per diagnosis, the actions to try in order, each
//! ending in reset_agent. Immune memory removes what already failed for
//! this agent; the fleet's experience moves what healed other agents
//! with the same diagnosis to the front.

use super::action::Action;
use super::diagnosis::Diagnosis;
use super::fleet::FleetSummary;
use super::memory::ImmuneMemory;

/// The ladder of a diagnosis, from DESIGN.md.
pub fn ladder(diagnosis: Diagnosis) -> &'static [Action] {
    use Action::*;
    match diagnosis {
        Diagnosis::PromptDrift => &[ResetMemory, RollbackPrompt, ReduceAutonomy, ResetAgent],
        Diagnosis::PromptInjection => &[RevokeTools, ResetMemory, RollbackPrompt, ResetAgent],
        Diagnosis::InfiniteLoop => &[RevokeTools, ReduceAutonomy, ResetMemory, ResetAgent],
        Diagnosis::ToolInstability => &[ReduceAutonomy, RollbackPrompt, ResetAgent],
        Diagnosis::MemoryCorruption => &[ResetMemory, ResetAgent],
        Diagnosis::CostOverrun => &[ReduceAutonomy, RollbackPrompt, ResetMemory, ResetAgent],
        Diagnosis::ExternalCause => &[ReduceAutonomy, ResetAgent],
        Diagnosis::Unknown => &[ResetMemory, ReduceAutonomy, ResetAgent],
    }
}

/// What is left to try for this agent and diagnosis, in order: the ladder
/// without the actions that failed for it, the rest ordered by how often
/// they healed other agents with this diagnosis (ties keep the ladder's
/// order). reset_agent, the most drastic, stays last.
pub fn plan(diagnosis: Diagnosis, memory: &ImmuneMemory, fleet: &FleetSummary) -> Vec<Action> {
    let mut rest: Vec<Action> = ladder(diagnosis)
        .iter()
        .copied()
        .filter(|a| !memory.has_failed(diagnosis, *a) && *a != Action::ResetAgent)
        .collect();
    rest.sort_by_key(|a| std::cmp::Reverse(fleet.stats(diagnosis, *a).successes));
    if !memory.has_failed(diagnosis, Action::ResetAgent) {
        rest.push(Action::ResetAgent);
    }
    rest
}

pub fn next_action(
    diagnosis: Diagnosis,
    memory: &ImmuneMemory,
    fleet: &FleetSummary,
) -> Option<Action> {
    plan(diagnosis, memory, fleet).first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ladder_heals_and_ends_in_reset_agent() {
        for d in Diagnosis::ALL {
            let l = ladder(d);
            assert_eq!(l.last(), Some(&Action::ResetAgent), "{d}");
            assert!(l.iter().all(|a| a.is_healing()), "{d}");
        }
        assert_eq!(
            ladder(Diagnosis::PromptDrift),
            [
                Action::ResetMemory,
                Action::RollbackPrompt,
                Action::ReduceAutonomy,
                Action::ResetAgent
            ]
        );
    }

    #[test]
    fn a_failed_action_is_never_planned_again_for_that_diagnosis() {
        let mut memory = ImmuneMemory::default();
        let fleet = FleetSummary::default();
        memory.record_failure(Diagnosis::Unknown, Action::ResetMemory);
        assert_eq!(
            plan(Diagnosis::Unknown, &memory, &fleet),
            [Action::ReduceAutonomy, Action::ResetAgent]
        );
        // Another diagnosis still may use it.
        assert_eq!(
            next_action(Diagnosis::MemoryCorruption, &memory, &fleet),
            Some(Action::ResetMemory)
        );
        memory.record_failure(Diagnosis::Unknown, Action::ReduceAutonomy);
        memory.record_failure(Diagnosis::Unknown, Action::ResetAgent);
        assert_eq!(next_action(Diagnosis::Unknown, &memory, &fleet), None);
    }

    #[test]
    fn what_healed_other_agents_goes_first_but_reset_agent_stays_last() {
        let memory = ImmuneMemory::default();
        let mut fleet = FleetSummary::default();
        fleet.record_outcome(Diagnosis::PromptDrift, Action::ReduceAutonomy, true);
        fleet.record_outcome(Diagnosis::PromptDrift, Action::ReduceAutonomy, true);
        fleet.record_outcome(Diagnosis::PromptDrift, Action::RollbackPrompt, true);
        for _ in 0..10 {
            fleet.record_outcome(Diagnosis::PromptDrift, Action::ResetAgent, true);
        }
        // Successes for another diagnosis do not count.
        fleet.record_outcome(Diagnosis::Unknown, Action::ResetMemory, true);
        assert_eq!(
            plan(Diagnosis::PromptDrift, &memory, &fleet),
            [
                Action::ReduceAutonomy,
                Action::RollbackPrompt,
                Action::ResetMemory,
                Action::ResetAgent
            ]
        );
    }
}
