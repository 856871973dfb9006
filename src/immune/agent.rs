//! One monitored agent: its baseline, its recent turns, where it is in its
//! lifecycle, and what the API shows of it. Fixed, small memory.

use super::anomaly::AnomalySet;
use super::baseline::{Baseline, LearnedTurn};
use super::clock::AgentClock;
use super::config::ImmuneConfig;
use super::diagnosis::Diagnosis;
use super::episode::{Attempt, Episode};
use super::lifecycle::LifecycleState;
use super::memory::ImmuneMemory;
use super::metric::Metric;
use super::prompt::PromptHash;
use super::recency::Place;
use super::sentinel::Evaluation;
use super::vitals::{UnixNanos, Vitals};
use super::window::{EvaluationWindow, WindowTurn};

#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub baseline: Baseline,
    pub window: EvaluationWindow,
    pub state: LifecycleState,
    /// When the agent entered its current state.
    pub since: UnixNanos,
    /// Anomalous evaluations in a row.
    pub anomalous_streak: u32,
    /// Sustained-anomalous evaluations since the agent became SUSPECTED.
    pub sustained_ticks: u32,
    /// From the confirmed infection until HEALTHY again: one infection
    /// event per episode, however long it lasts.
    pub episode: Option<Box<Episode>>,
    pub memory: ImmuneMemory,
    /// Anomalies of the latest evaluation, as counted in the fleet summary.
    pub showing: AnomalySet,
    /// Diagnosis of the latest episode (for operator feedback after it).
    pub last_diagnosis: Option<Diagnosis>,
    /// The latest quarantine or release sent out.
    pub enforcement: Option<Attempt>,
    pub last_vitals: Option<Vitals>,
    pub last_evaluation: Option<Evaluation>,
    pub last_seen: UnixNanos,
    /// The fleet exchange count when the agent became SUSPECTED (not
    /// stored: exchanges count from zero again after a restart).
    pub suspected_at_exchange: u64,
    /// A drain is called for but waits for the fleet's view (see
    /// `correlation_hold`); not stored.
    pub drain_held: bool,
    /// The agent's clock as seen from ours, learned while it ran freely:
    /// places its turns on our timeline. Not stored.
    pub clock: AgentClock,
    /// The agent's own spans report its turns (then the LLM proxy's view
    /// of its calls is not judged again). Not stored.
    pub traced: bool,
    /// Its place in the eviction order (`None`: must be kept). Not stored.
    pub recency: Option<Place>,
}

impl AgentRecord {
    pub fn new(config: &ImmuneConfig, now: UnixNanos) -> Self {
        Self {
            baseline: Baseline::default(),
            window: EvaluationWindow::new(config.evaluation_window),
            state: LifecycleState::Initializing,
            since: now,
            anomalous_streak: 0,
            sustained_ticks: 0,
            episode: None,
            memory: ImmuneMemory::default(),
            showing: AnomalySet::EMPTY,
            last_diagnosis: None,
            enforcement: None,
            last_vitals: None,
            last_evaluation: None,
            last_seen: now,
            suspected_at_exchange: 0,
            drain_held: false,
            clock: AgentClock::default(),
            traced: false,
            recency: None,
        }
    }
}

impl AgentRecord {
    /// The turn events about this agent link to: the infection's while in
    /// an episode, else the latest.
    pub fn link(&self) -> super::report::Link {
        match (&self.episode, &self.last_vitals) {
            (Some(e), _) => Some((e.infection.trace_id, e.infection.span_id)),
            (None, Some(v)) => Some((v.trace_id, v.root_span_id)),
            (None, None) => None,
        }
    }
}

/// A turn's vitals as the baseline learns them.
pub fn learned_turn(vitals: &Vitals) -> LearnedTurn {
    LearnedTurn {
        values: Metric::ALL.map(|m| m.learn_value(vitals)),
        prompt: vitals.prompt_hash.as_deref().map(PromptHash::new),
        usage_known: vitals.usage_known,
    }
}

/// A fresh turn entering the window.
pub fn window_turn(vitals: &Vitals) -> WindowTurn {
    WindowTurn {
        turn: learned_turn(vitals),
        tainted: false,
        learned: false,
    }
}
