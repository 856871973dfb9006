//! The async face of the store for the pipeline: stage frequent updates
//! (baselines) in memory, flushed every `flush_interval` in one transaction
//! off the hot path; commit state transitions, approvals, decisions and
//! events at once, durable before the caller acts on them. Disk I/O runs on
//! tokio's blocking pool.

use super::error::StateError;
use super::outbox::AppendOutcome;
use super::record::StateRecord;
use super::schema::Table;
use super::store::{Commit, Committed, Store};
use crate::immune::event::Event;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct StateWriter {
    store: Store,
}

impl StateWriter {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Keeps `value` for the next flush; no disk I/O. A crash before that
    /// flush loses it (at most `flush_interval` of learning).
    pub fn stage<T: StateRecord>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        self.store.stage(table, key, value)
    }

    /// [`Self::stage`] into the per-agent table.
    pub fn stage_agent<T: StateRecord>(
        &self,
        agent_id: &str,
        snapshot: &T,
    ) -> Result<(), StateError> {
        self.store.stage(Table::Agents, agent_id, snapshot)
    }

    /// Stages the deletion of an agent's record (evicted from the core).
    pub fn stage_forget_agent(&self, agent_id: &str) -> Result<(), StateError> {
        self.store.stage_delete(Table::Agents, agent_id)
    }

    /// Writes everything staged now; returns how many records.
    pub async fn flush(&self) -> Result<usize, StateError> {
        let store = self.store.clone();
        blocking(move || store.flush()).await
    }

    /// Commits `commit` (and everything staged before it) in one
    /// transaction; durable on disk when this returns, so the caller may
    /// then act on it or acknowledge it.
    pub async fn commit_now(&self, commit: Commit) -> Result<Committed, StateError> {
        let store = self.store.clone();
        blocking(move || store.commit(commit)).await
    }

    /// Appends events to the outbox durably.
    pub async fn append_events(&self, events: Vec<Event>) -> Result<AppendOutcome, StateError> {
        let store = self.store.clone();
        blocking(move || store.append_events(events)).await
    }

    /// Flushes every `interval` until `cancel` fires, then once more. A
    /// failed flush keeps its records staged for the next one.
    pub fn spawn_flusher(&self, interval: Duration, cancel: CancellationToken) -> JoinHandle<()> {
        let writer = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                if writer.store.staged_len() == 0 {
                    continue;
                }
                if let Err(e) = writer.flush().await {
                    tracing::error!("state flush failed (will retry): {e}");
                }
            }
            match writer.flush().await {
                Ok(n) if n > 0 => tracing::debug!(records = n, "state flushed at shutdown"),
                Ok(_) => {}
                Err(e) => tracing::error!("state flush at shutdown failed: {e}"),
            }
        })
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StateError::Task(e.to_string()))?
}
