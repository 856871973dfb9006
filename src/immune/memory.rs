//! Immune memory of one agent: which healing actions already failed for it,
//! per diagnosis, so none is ever tried twice. One byte per diagnosis.

use super::action::Action;
use super::diagnosis::Diagnosis;
use super::fleet::action_index;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImmuneMemory {
    /// Per diagnosis, a bit per action (by `action_index`).
    failed: [u8; Diagnosis::COUNT],
}

impl ImmuneMemory {
    pub fn has_failed(&self, diagnosis: Diagnosis, action: Action) -> bool {
        self.failed[diagnosis.index()] & (1 << action_index(action)) != 0
    }

    pub fn record_failure(&mut self, diagnosis: Diagnosis, action: Action) {
        self.failed[diagnosis.index()] |= 1 << action_index(action);
    }

    /// The operator asked to heal anyway: everything may be tried again.
    pub fn forget(&mut self, diagnosis: Diagnosis) {
        self.failed[diagnosis.index()] = 0;
    }

    /// The actions that failed for a diagnosis, in `Action::ALL` order.
    pub fn failed_actions(&self, diagnosis: Diagnosis) -> Vec<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| self.has_failed(diagnosis, *a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_per_diagnosis() {
        let mut m = ImmuneMemory::default();
        m.record_failure(Diagnosis::PromptDrift, Action::ResetMemory);
        assert!(m.has_failed(Diagnosis::PromptDrift, Action::ResetMemory));
        assert!(!m.has_failed(Diagnosis::InfiniteLoop, Action::ResetMemory));
        assert!(!m.has_failed(Diagnosis::PromptDrift, Action::RollbackPrompt));
        assert_eq!(
            m.failed_actions(Diagnosis::PromptDrift),
            [Action::ResetMemory]
        );
        m.forget(Diagnosis::PromptDrift);
        assert!(m.failed_actions(Diagnosis::PromptDrift).is_empty());
    }
}
