//! The store: one redb file in the data dir, held by one process.
//!
//! All methods block on disk I/O (a commit waits for fsync): call them from
//! startup code or a blocking task; async code uses
//! [`super::StateWriter`]. Every write transaction first takes the staged
//! (not yet flushed) writes, under one write gate, so a value never
//! overwrites a newer one and whatever was staged before a commit is
//! durable once that commit returns.

use super::config::StateConfig;
use super::data_dir::{DirChange, STATE_FILE, prepare_data_dir};
use super::error::StateError;
use super::lock::DirLock;
use super::metrics::StateMetrics;
use super::outbox::{self, AppendOutcome, OutboxBatch, OutboxLimits};
use super::random::random_bytes;
use super::record::{self, RecordError, StateRecord, check_key};
use super::recovery::{StoreWarning, open_db, storage};
use super::schema::{META, OUTBOX, Table, meta_key};
use super::staged::{Staged, StagedKey, StagedValue};
use crate::immune::event::Event;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A handle on the open store; cheap to clone, shared by every task.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    dir: PathBuf,
    path: PathBuf,
    lock: DirLock,
    warnings: Vec<StoreWarning>,
    fresh: bool,
    run_id: String,
    limits: OutboxLimits,
    staged: Staged,
    /// Serializes write transactions with the taking of staged writes.
    write_gate: Mutex<()>,
    /// Woken after events are appended.
    outbox_ready: Notify,
    metrics: StateMetrics,
    /// Set by [`Store::inject_write_failure`]: writes fail with it.
    write_failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

/// Changes applied together in one durable transaction: record puts and
/// deletes, and events for the outbox.
#[derive(Debug, Default)]
pub struct Commit {
    ops: Vec<Op>,
    events: Vec<Event>,
}

#[derive(Debug)]
enum Op {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
}

impl Commit {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under `key` in `table` (encoded now, so an error shows
    /// here, not at commit).
    pub fn put<T: StateRecord>(
        &mut self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<&mut Self, StateError> {
        check_key(table.name(), key)?;
        let bytes = record::encode(&format!("{} record {key:?}", table.name()), value)?;
        self.ops.push(Op::Put(table, key.to_string(), bytes));
        Ok(self)
    }

    pub fn delete(&mut self, table: Table, key: &str) -> &mut Self {
        self.ops.push(Op::Delete(table, key.to_string()));
        self
    }

    /// Appends an event to the outbox in the same transaction.
    pub fn event(&mut self, event: Event) -> &mut Self {
        self.events.push(event);
        self
    }

    pub fn events(&mut self, events: impl IntoIterator<Item = Event>) -> &mut Self {
        self.events.extend(events);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.events.is_empty()
    }
}

/// What a durable commit wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Staged writes that went in with it.
    pub flushed: usize,
    /// The outbox side (empty when the commit had no events).
    pub outbox: AppendOutcome,
}

/// Every readable record of a table, and what could not be read.
#[derive(Debug)]
pub struct Loaded<T> {
    /// By key, in key order.
    pub records: Vec<(String, T)>,
    /// Records skipped (key, why): another record version or damage. Each
    /// is logged; for agents it means that agent relearns.
    pub skipped: Vec<(String, RecordError)>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: prepares the dir
    /// owner-only, takes the lock, and opens the file, moving a corrupt or
    /// incompatible one aside (see [`Store::warnings`]).
    pub fn open(dir: &Path, config: &StateConfig) -> Result<Store, StateError> {
        let mut warnings = Vec::new();
        if let DirChange::Tightened { was } = prepare_data_dir(dir)? {
            warnings.push(StoreWarning::DirTightened {
                dir: dir.to_path_buf(),
                was,
            });
        }
        let lock = DirLock::acquire(dir)?;
        let path = dir.join(STATE_FILE);
        let opened = open_db(&path)?;
        warnings.extend(opened.warnings);
        let run_id = prepare_tables(&opened.db, &path)?;
        let store = Store {
            inner: Arc::new(Inner {
                db: opened.db,
                dir: dir.to_path_buf(),
                path,
                lock,
                warnings,
                fresh: opened.fresh,
                run_id,
                limits: OutboxLimits {
                    max_events: config.outbox_max_events as u64,
                    max_bytes: config.outbox_max_bytes,
                },
                staged: Staged::default(),
                write_gate: Mutex::new(()),
                outbox_ready: Notify::new(),
                metrics: StateMetrics::default(),
                write_failure: Mutex::new(None),
            }),
        };
        for warning in &store.inner.warnings {
            if !matches!(warning, StoreWarning::MovedAside { .. }) {
                tracing::warn!("{warning}");
            }
        }
        let (pending, bytes) = store.outbox_size()?;
        store.set_outbox_gauges(pending, bytes);
        tracing::info!(
            path = %store.inner.path.display(),
            run_id = store.inner.run_id,
            fresh = store.inner.fresh,
            outbox_pending = pending,
            "state store open"
        );
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn lock_path(&self) -> &Path {
        self.inner.lock.path()
    }

    /// What the operator should know about this open (already logged).
    pub fn warnings(&self) -> &[StoreWarning] {
        &self.inner.warnings
    }

    /// The file was created by this open (first start, or the old one was
    /// moved aside).
    pub fn is_fresh(&self) -> bool {
        self.inner.fresh
    }

    /// This installation's id: generated on the first start, the same on
    /// every restart of the same data dir.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    pub fn metrics(&self) -> &StateMetrics {
        &self.inner.metrics
    }

    /// Makes every later write transaction (commit, flush, outbox append)
    /// fail with `reason`, as a full or failing disk would, until called
    /// with `None`. A seam for tests of what the pipeline does when the
    /// store cannot write; nothing in the service calls it.
    pub fn inject_write_failure(&self, reason: Option<&str>) {
        *self
            .inner
            .write_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason.map(str::to_string);
    }

    // ---- records

    /// Keeps `value` in memory until the next flush (no disk I/O): for
    /// frequent updates such as baselines, where losing the last flush
    /// interval on a crash is acceptable.
    pub fn stage<T: StateRecord>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        check_key(table.name(), key)?;
        let bytes = record::encode(&format!("{} record {key:?}", table.name()), value)?;
        self.inner.staged.put(table, key, Some(bytes))?;
        self.inner.metrics.staged.set(self.staged_len() as i64);
        Ok(())
    }

    /// Deletes the record under `key` at the next flush (no disk I/O); a
    /// value staged later wins, as with [`Self::stage`].
    pub fn stage_delete(&self, table: Table, key: &str) -> Result<(), StateError> {
        check_key(table.name(), key)?;
        self.inner.staged.put(table, key, None)?;
        self.inner.metrics.staged.set(self.staged_len() as i64);
        Ok(())
    }

    pub fn staged_len(&self) -> usize {
        self.inner.staged.len()
    }

    /// The record under `key`, staged or stored.
    pub fn get<T: StateRecord>(&self, table: Table, key: &str) -> Result<Option<T>, StateError> {
        let decode = |bytes: &[u8]| {
            record::decode::<T>(bytes).map_err(|e| StateError::Decode {
                table: table.name(),
                key: key.to_string(),
                message: e.to_string(),
            })
        };
        if let Some(staged) = self.inner.staged.get(table, key) {
            return staged.map(|bytes| decode(&bytes)).transpose();
        }
        let read = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
        let records = read
            .open_table(table.definition())
            .map_err(|e| self.storage(e))?;
        let value = records.get(key).map_err(|e| self.storage(e))?;
        value.map(|v| decode(v.value())).transpose()
    }

    /// Every record of `table` (staged ones included), skipping those that
    /// cannot be read as `T`.
    pub fn load_all<T: StateRecord>(&self, table: Table) -> Result<Loaded<T>, StateError> {
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        {
            let read = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
            let records = read
                .open_table(table.definition())
                .map_err(|e| self.storage(e))?;
            for row in records.range::<&str>(..).map_err(|e| self.storage(e))? {
                let (key, value) = row.map_err(|e| self.storage(e))?;
                raw.insert(key.value().to_string(), value.value().to_vec());
            }
        }
        for (key, staged) in self.inner.staged.of_table(table) {
            match staged {
                Some(bytes) => raw.insert(key, bytes),
                None => raw.remove(&key),
            };
        }
        let mut loaded = Loaded {
            records: Vec::with_capacity(raw.len()),
            skipped: Vec::new(),
        };
        for (key, bytes) in raw {
            match record::decode::<T>(&bytes) {
                Ok(value) => loaded.records.push((key, value)),
                Err(e) => {
                    tracing::warn!(table = table.name(), key, "stored record skipped: {e}");
                    self.inner.metrics.skipped_records.inc();
                    loaded.skipped.push((key, e));
                }
            }
        }
        Ok(loaded)
    }

    /// Convenience for the per-agent snapshot.
    pub fn get_agent<T: StateRecord>(&self, agent_id: &str) -> Result<Option<T>, StateError> {
        self.get(Table::Agents, agent_id)
    }

    pub fn load_agents<T: StateRecord>(&self) -> Result<Loaded<T>, StateError> {
        self.load_all(Table::Agents)
    }

    /// Writes every staged value in one transaction; returns how many.
    pub fn flush(&self) -> Result<usize, StateError> {
        self.write(Vec::new(), Vec::new()).map(|c| c.flushed)
    }

    /// Applies `commit` (with everything staged before it) in one
    /// transaction, durable on disk when this returns.
    pub fn commit(&self, commit: Commit) -> Result<Committed, StateError> {
        self.write(commit.ops, commit.events)
    }

    /// Appends events to the outbox durably (one transaction).
    pub fn append_events(&self, events: Vec<Event>) -> Result<AppendOutcome, StateError> {
        self.write(Vec::new(), events).map(|c| c.outbox)
    }

    fn write(&self, ops: Vec<Op>, events: Vec<Event>) -> Result<Committed, StateError> {
        let _gate = self
            .inner
            .write_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let staged = self.inner.staged.take_all();
        if staged.is_empty() && ops.is_empty() && events.is_empty() {
            return Ok(Committed::default());
        }
        let has_events = !events.is_empty();
        let injected = self
            .inner
            .write_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let result = match injected {
            Some(message) => Err(redb::Error::Io(std::io::Error::other(message))),
            None => self.write_txn(&staged, ops, events),
        };
        let metrics = &self.inner.metrics;
        match result {
            Ok(outbox) => {
                metrics.commits.inc();
                metrics.staged.set(self.staged_len() as i64);
                if has_events {
                    self.after_append(&outbox);
                }
                Ok(Committed {
                    flushed: staged.len(),
                    outbox,
                })
            }
            Err(e) => {
                metrics.commit_failures.inc();
                self.inner.staged.restore(staged);
                metrics.staged.set(self.staged_len() as i64);
                Err(self.storage(e))
            }
        }
    }

    fn write_txn(
        &self,
        staged: &[(StagedKey, StagedValue)],
        ops: Vec<Op>,
        events: Vec<Event>,
    ) -> Result<AppendOutcome, redb::Error> {
        let txn = self.inner.db.begin_write()?;
        for table in Table::ALL {
            let staged_here = staged.iter().filter(|((t, _), _)| *t == table);
            let ops_here = ops.iter().filter(|op| match op {
                Op::Put(t, ..) | Op::Delete(t, _) => *t == table,
            });
            apply(&txn, table, staged_here, ops_here)?;
        }
        let outcome = if events.is_empty() {
            AppendOutcome::default()
        } else {
            outbox::append_in(&txn, events, &self.inner.run_id, self.inner.limits)?
        };
        txn.commit()?;
        Ok(outcome)
    }

    // ---- outbox

    /// Up to `max_events` of the oldest events (about `max_bytes` of them,
    /// at least one), in order.
    pub fn outbox_pending(
        &self,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<OutboxBatch, StateError> {
        let read = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
        let table = read.open_table(OUTBOX).map_err(|e| self.storage(e))?;
        outbox::read_batch(&table, max_events, max_bytes).map_err(|e| self.storage(e))
    }

    /// Deletes every event up to and including `up_to` (the downstream
    /// acknowledged them); returns how many were deleted.
    pub fn outbox_ack(&self, up_to: u64) -> Result<u64, StateError> {
        let _gate = self
            .inner
            .write_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = (|| -> Result<_, redb::Error> {
            let txn = self.inner.db.begin_write()?;
            let counts = outbox::ack_in(&txn, up_to)?;
            txn.commit()?;
            Ok(counts)
        })();
        let (deleted, pending, bytes) = result.map_err(|e| self.storage(e))?;
        self.inner.metrics.commits.inc();
        self.set_outbox_gauges(pending, bytes);
        Ok(deleted)
    }

    /// (events, bytes) waiting in the outbox.
    pub fn outbox_size(&self) -> Result<(u64, u64), StateError> {
        let read = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
        let meta = read.open_table(META).map_err(|e| self.storage(e))?;
        let table = read.open_table(OUTBOX).map_err(|e| self.storage(e))?;
        outbox::size_of(&meta, &table).map_err(|e| self.storage(e))
    }

    /// Woken whenever events are appended (for the delivery task).
    pub fn outbox_ready(&self) -> &Notify {
        &self.inner.outbox_ready
    }

    pub fn outbox_limits(&self) -> OutboxLimits {
        self.inner.limits
    }

    fn after_append(&self, outcome: &AppendOutcome) {
        let metrics = &self.inner.metrics;
        metrics.outbox_appended.add(outcome.appended.len() as u64);
        let dropped = outcome.dropped_oldest + outcome.rejected;
        if dropped > 0 {
            metrics.outbox_dropped.add(dropped);
        }
        if outcome.dropped_oldest > 0 {
            tracing::warn!(
                dropped = outcome.dropped_oldest,
                pending = outcome.pending,
                max_events = self.inner.limits.max_events,
                max_bytes = self.inner.limits.max_bytes,
                "outbox full (events endpoint unreachable?): oldest events dropped"
            );
        }
        self.set_outbox_gauges(outcome.pending, outcome.pending_bytes);
        self.inner.outbox_ready.notify_one();
    }

    fn set_outbox_gauges(&self, pending: u64, bytes: u64) {
        let metrics = &self.inner.metrics;
        metrics
            .outbox_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        metrics
            .outbox_pending_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    // ---- store-wide values (API key, run id)

    pub(crate) fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let read = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
        let meta = read.open_table(META).map_err(|e| self.storage(e))?;
        let value = meta.get(key).map_err(|e| self.storage(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub(crate) fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let _gate = self
            .inner
            .write_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.inner.db.begin_write()?;
            txn.open_table(META)?.insert(key, value)?;
            txn.commit()?;
            Ok(())
        })();
        result.map_err(|e| self.storage(e))
    }

    pub(crate) fn meta_delete(&self, key: &str) -> Result<(), StateError> {
        let _gate = self
            .inner
            .write_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.inner.db.begin_write()?;
            txn.open_table(META)?.remove(key)?;
            txn.commit()?;
            Ok(())
        })();
        result.map_err(|e| self.storage(e))
    }

    fn storage(&self, error: impl Into<redb::Error>) -> StateError {
        storage(&self.inner.path, error.into().to_string())
    }
}

/// Staged values first, then the commit's own operations in order: the
/// commit's are newer.
fn apply<'a>(
    txn: &WriteTransaction,
    table: Table,
    staged: impl Iterator<Item = &'a (StagedKey, StagedValue)>,
    ops: impl Iterator<Item = &'a Op>,
) -> Result<(), redb::Error> {
    let mut staged = staged.peekable();
    let mut ops = ops.peekable();
    if staged.peek().is_none() && ops.peek().is_none() {
        return Ok(());
    }
    let mut records = txn.open_table(table.definition())?;
    for ((_, key), value) in staged {
        match value {
            Some(value) => records.insert(key.as_str(), value.as_slice())?,
            None => records.remove(key.as_str())?,
        };
    }
    for op in ops {
        match op {
            Op::Put(_, key, value) => {
                records.insert(key.as_str(), value.as_slice())?;
            }
            Op::Delete(_, key) => {
                records.remove(key.as_str())?;
            }
        }
    }
    Ok(())
}

/// Creates every table (so reads never meet a missing one) and the run id
/// if this is a new store; returns the run id.
fn prepare_tables(db: &Database, path: &Path) -> Result<String, StateError> {
    let fail = |e: redb::Error| storage(path, e.to_string());
    let txn = db.begin_write().map_err(|e| fail(e.into()))?;
    let run_id = (|| -> Result<Result<String, StateError>, redb::Error> {
        for table in Table::ALL {
            txn.open_table(table.definition())?;
        }
        txn.open_table(OUTBOX)?;
        let mut meta = txn.open_table(META)?;
        let existing = meta
            .get(meta_key::RUN_ID)?
            .and_then(|v| String::from_utf8(v.value().to_vec()).ok())
            .filter(|id| !id.is_empty());
        if let Some(id) = existing {
            return Ok(Ok(id));
        }
        let id = match random_bytes::<16>() {
            Ok(bytes) => hex::encode(bytes),
            Err(e) => return Ok(Err(e)),
        };
        meta.insert(meta_key::RUN_ID, id.as_bytes())?;
        Ok(Ok(id))
    })()
    .map_err(fail)??;
    txn.commit().map_err(|e| fail(e.into()))?;
    Ok(run_id)
}
