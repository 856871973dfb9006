//! Per-minute budgets as token buckets: full at `limit`, refilled at
//! `limit` per minute. Requests take one unit before forwarding; tokens are
//! only known from the response, so they are charged afterwards and may
//! take the balance below zero (the agent then waits until it is positive).
//! Time is passed in so tests need no clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Bucket {
    limit: f64,
    level: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket of `limit` units per minute.
    pub fn per_minute(limit: u64, now: Instant) -> Self {
        let limit = limit.max(1) as f64;
        Self {
            limit,
            level: limit,
            updated: now,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit as u64
    }

    /// Keeps the balance but adopts a new limit (a rule edited at runtime).
    pub fn set_limit(&mut self, limit: u64, now: Instant) {
        self.refill(now);
        self.limit = limit.max(1) as f64;
        self.level = self.level.min(self.limit);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.limit / 60.0).min(self.limit);
        self.updated = now;
    }

    /// Time until `units` could be taken; zero when they can be now.
    pub fn wait_for(&mut self, units: f64, now: Instant) -> Duration {
        self.refill(now);
        let missing = units - self.level;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing * 60.0 / self.limit)
        }
    }

    /// Takes `units`; call only after `wait_for` returned zero.
    pub fn take(&mut self, units: f64, now: Instant) {
        self.refill(now);
        self.level -= units;
    }

    /// Charges `units` after the fact; the balance may go negative, down to
    /// one minute's worth of debt so one huge response cannot lock an agent
    /// out for hours.
    pub fn charge(&mut self, units: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level - units).max(-self.limit);
    }

    /// Time until the balance is positive again (for token budgets, which
    /// admit a request while any budget is left).
    pub fn wait_for_positive(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.level > 0.0 {
            Duration::ZERO
        } else {
            // Strictly positive: a hair more than the debt.
            Duration::from_secs_f64((-self.level + 1e-6) * 60.0 / self.limit)
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute() {
        let t0 = Instant::now();
        let mut bucket = Bucket::per_minute(2, t0);
        for _ in 0..2 {
            assert_eq!(bucket.wait_for(1.0, t0), Duration::ZERO);
            bucket.take(1.0, t0);
        }
        // Empty: one unit refills in 30 s.
        let wait = bucket.wait_for(1.0, t0);
        assert!((wait.as_secs_f64() - 30.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(retry_after_secs(wait), 30);
        assert_eq!(
            bucket.wait_for(1.0, t0 + Duration::from_secs(30)),
            Duration::ZERO
        );
    }

    #[test]
    fn tokens_charged_afterwards_go_into_bounded_debt() {
        let t0 = Instant::now();
        let mut bucket = Bucket::per_minute(600, t0);
        bucket.charge(900.0, t0);
        let wait = bucket.wait_for_positive(t0);
        assert!((wait.as_secs_f64() - 30.0).abs() < 0.01, "{wait:?}");
        bucket.charge(1_000_000.0, t0);
        let wait = bucket.wait_for_positive(t0);
        assert!(wait <= Duration::from_secs(61), "debt is capped: {wait:?}");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
