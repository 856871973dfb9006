//! Whether the store takes writes. A decision is acted on only once it is
//! committed; while commits fail, each detection shard holds its decisions
//! back and reports here, and readiness is false with the reason until
//! every shard has committed again.

use crate::telemetry::Counter;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct StoreHealth {
    /// Shards whose last commit failed, with its error.
    failing: Mutex<BTreeMap<usize, String>>,
    /// Commits of decisions that failed (each retried; nothing acted on).
    pub failed_commits: Counter,
}

impl StoreHealth {
    /// Shard `shard`'s commit failed with `reason`.
    pub fn failed(&self, shard: usize, reason: String) {
        self.failed_commits.inc();
        self.lock().insert(shard, reason);
    }

    /// Shard `shard` committed again.
    pub fn recovered(&self, shard: usize) {
        self.lock().remove(&shard);
    }

    /// Why decisions are held back, if they are.
    pub fn unwritable(&self) -> Option<String> {
        self.lock().values().next().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, String>> {
        // Plain inserts and removes: a panic elsewhere leaves the map sound.
        self.failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritable_until_every_failing_shard_recovers() {
        let health = StoreHealth::default();
        assert_eq!(health.unwritable(), None);
        health.failed(0, "disk full".into());
        health.failed(1, "disk full".into());
        health.recovered(0);
        assert_eq!(health.unwritable().as_deref(), Some("disk full"));
        health.recovered(1);
        assert_eq!(health.unwritable(), None);
        assert_eq!(health.failed_commits.get(), 2);
    }
}
