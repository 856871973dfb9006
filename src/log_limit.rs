//! A log line that a client can trigger at will (a failed authentication)
//! is written at most once per interval, carrying how many occurrences it
//! stands for, so nobody can flood the log by repeating a bad request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogEvery {
    interval: Duration,
    /// When the last line was written, and the occurrences since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence at `now`; when a line is due, the occurrences
    /// it stands for (this one included).
    pub fn occurred(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere mid-update; the pair
        // is still a valid pair.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, pending) = &mut *state;
        *pending += 1;
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.interval) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_since() {
        let every = LogEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(every.occurred(t0), Some(1));
        for i in 1..=99 {
            assert_eq!(every.occurred(t0 + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(every.occurred(t0 + Duration::from_secs(10)), Some(100));
        assert_eq!(every.occurred(t0 + Duration::from_secs(11)), None);
        assert_eq!(every.occurred(t0 + Duration::from_secs(21)), Some(2));
    }
}
