//! An agent's clock as seen from ours: turn end times are the agent's, and
//! probation must tell a turn lived before the heal from one lived after.
//!
//! One-way observations cannot separate clock skew from transit and export
//! delay, so the offset is estimated as the smallest `our time − end time`
//! among recent turns (the turn exported soonest after it ended), and it is
//! applied only when it is too large to be delay: clocks within
//! `SKEW_TOLERANCE` are taken to agree.

use super::vitals::UnixNanos;

/// Offsets below this are export and transit delay, not skew.
pub const SKEW_TOLERANCE_NS: u64 = 2_000_000_000;
/// Turns per bucket of the sliding minimum: the estimate follows a changed
/// agent clock within two buckets.
const BUCKET: u32 = 32;

/// Sliding minimum of `our time − agent end time` over the last 32–64
/// turns. Fixed size; not stored (re-learned within a few turns).
#[derive(Debug, Clone, Copy)]
pub struct AgentClock {
    current: i64,
    previous: i64,
    seen: u32,
}

impl Default for AgentClock {
    fn default() -> Self {
        Self {
            current: i64::MAX,
            previous: i64::MAX,
            seen: 0,
        }
    }
}

impl AgentClock {
    /// A turn ending at `end` (agent clock) was judged at `now` (ours).
    pub fn observe(&mut self, end: UnixNanos, now: UnixNanos) {
        if self.seen.is_multiple_of(BUCKET) {
            self.previous = self.current;
            self.current = i64::MAX;
        }
        self.seen = self.seen.wrapping_add(1);
        let offset = (i128::from(now) - i128::from(end))
            .clamp(i128::from(i64::MIN + 1), i128::from(i64::MAX - 1));
        self.current = self.current.min(offset as i64);
    }

    /// The skew to add to the agent's times to place them on ours: zero
    /// until known, or while within the tolerance.
    pub fn skew(&self) -> i64 {
        let offset = self.current.min(self.previous);
        if offset == i64::MAX || offset.unsigned_abs() <= SKEW_TOLERANCE_NS {
            0
        } else {
            offset
        }
    }

    /// `end` (agent clock) on our clock.
    pub fn to_ours(&self, end: UnixNanos) -> i128 {
        i128::from(end) + i128::from(self.skew())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn delay_is_not_skew_and_skew_is_the_smallest_offset() {
        let mut clock = AgentClock::default();
        assert_eq!(clock.skew(), 0, "unknown");
        // Same clock, turns exported 0.1–1.5 s after they ended.
        for (i, delay) in [1_500, 100, 900, 300].iter().enumerate() {
            let end = 1_000 * S + i as u64 * S;
            clock.observe(end, end + delay * 1_000_000);
        }
        assert_eq!(clock.skew(), 0);
        // An agent an hour behind, with the same delays.
        let mut behind = AgentClock::default();
        for (i, delay) in [1_500u64, 100, 900].iter().enumerate() {
            let ours = 10_000 * S + i as u64 * S;
            behind.observe(ours - 3_600 * S, ours + delay * 1_000_000);
        }
        assert_eq!(behind.skew(), (3_600 * S + 100_000_000) as i64);
        assert_eq!(behind.to_ours(5_000 * S), (8_600 * S + 100_000_000) as i128);
    }

    #[test]
    fn a_changed_agent_clock_is_followed_within_two_buckets() {
        let mut clock = AgentClock::default();
        let mut ours = 100_000 * S;
        for _ in 0..40 {
            ours += S;
            clock.observe(ours - 3_600 * S, ours);
        }
        assert_eq!(clock.skew(), (3_600 * S) as i64);
        // The agent's clock is corrected.
        for _ in 0..2 * BUCKET {
            ours += S;
            clock.observe(ours, ours);
        }
        assert_eq!(clock.skew(), 0);
    }
}
