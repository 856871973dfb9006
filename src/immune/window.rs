//! The evaluation window: an agent's last few turns. The sustained view is
//! judged on it, and a turn is learned only once it has left the window
//! with no anomaly raised while it was inside, so an infection that builds
//! up over a few turns is never learned as normal.

use super::baseline::LearnedTurn;
use super::config::MAX_EVALUATION_WINDOW;
use super::metric::Metric;
use super::prompt::PromptHash;
use std::collections::VecDeque;

/// One turn in the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowTurn {
    pub turn: LearnedTurn,
    /// An anomaly was raised while the turn was in the window.
    pub tainted: bool,
    /// Already learned (warmup turns are learned as they arrive).
    pub learned: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationWindow {
    turns: VecDeque<WindowTurn>,
    capacity: usize,
}

impl EvaluationWindow {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, MAX_EVALUATION_WINDOW);
        Self {
            turns: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.turns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Adds the newest turn; returns the oldest when it leaves the window.
    pub fn push(&mut self, turn: WindowTurn) -> Option<WindowTurn> {
        let left = if self.turns.len() == self.capacity {
            self.turns.pop_front()
        } else {
            None
        };
        self.turns.push_back(turn);
        left
    }

    pub fn latest(&self) -> Option<&WindowTurn> {
        self.turns.back()
    }

    pub fn latest_mut(&mut self) -> Option<&mut WindowTurn> {
        self.turns.back_mut()
    }

    /// An anomaly was raised: no turn now in the window may be learned.
    pub fn taint_all(&mut self) {
        for t in &mut self.turns {
            t.tainted = true;
        }
    }

    /// Forget the turns (after a heal, probation judges fresh turns only).
    pub fn clear(&mut self) {
        self.turns.clear();
    }

    /// Median of a metric over the window's turns that have a value.
    pub fn median(&self, metric: Metric) -> Option<f64> {
        let mut values = [0.0f64; MAX_EVALUATION_WINDOW];
        let mut n = 0;
        for t in &self.turns {
            let v = t.turn.values[metric.index()];
            if v.is_finite() {
                values[n] = v;
                n += 1;
            }
        }
        let values = &mut values[..n];
        values.sort_by(f64::total_cmp);
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(values[n / 2]),
            _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    }

    /// Turns showing a rate metric (errors, retries).
    pub fn showing(&self, metric: Metric) -> usize {
        self.turns
            .iter()
            .filter(|t| t.turn.values[metric.index()] > 0.0)
            .count()
    }

    /// Turns carrying a prompt hash the predicate rejects.
    pub fn prompts_where(
        &self,
        mut pred: impl FnMut(PromptHash) -> bool,
    ) -> (usize, Option<PromptHash>) {
        let mut count = 0;
        let mut newest = None;
        for t in &self.turns {
            if let Some(h) = t.turn.prompt
                && pred(h)
            {
                count += 1;
                newest = Some(h);
            }
        }
        (count, newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(v: f64) -> WindowTurn {
        WindowTurn {
            turn: LearnedTurn {
                values: [v; Metric::COUNT],
                prompt: None,
                usage_known: true,
            },
            tainted: false,
            learned: false,
        }
    }

    #[test]
    fn the_oldest_turn_leaves_when_full() {
        let mut w = EvaluationWindow::new(3);
        assert!(w.push(turn(1.0)).is_none());
        assert!(w.push(turn(2.0)).is_none());
        assert!(w.push(turn(3.0)).is_none());
        let left = w.push(turn(4.0)).unwrap();
        assert_eq!(left.turn.values[0], 1.0);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn median_ignores_one_outlier_and_missing_values() {
        let mut w = EvaluationWindow::new(5);
        for v in [1.0, 100.0, 2.0, f64::NAN, 3.0] {
            w.push(turn(v));
        }
        assert_eq!(w.median(Metric::LatencyMs), Some(2.5));
        w.push(turn(1.5));
        w.push(turn(1.5));
        // 100 and 1.0 left: 1.5, 1.5, 2, 3.
        assert_eq!(w.median(Metric::LatencyMs), Some(1.75));
    }

    #[test]
    fn taint_marks_every_turn_inside() {
        let mut w = EvaluationWindow::new(2);
        w.push(turn(1.0));
        w.push(turn(1.0));
        w.taint_all();
        w.push(turn(1.0));
        assert!(w.push(turn(1.0)).unwrap().tainted);
        assert!(!w.latest().unwrap().tainted);
    }
}
