//! The event outbox: events are appended in the same transaction as the
//! state change that produced them, numbered by a sequence that never goes
//! back, read in order and deleted only once the downstream acknowledged
//! them. Delivery is at-least-once: a crash between the downstream's
//! acknowledgement and the delete sends those events again, with the same
//! `event.id`, which a backend dedupes on.
//!
//! Bounded by count and bytes: beyond either, the oldest events are
//! dropped, counted and logged (a long outage keeps the newest).

use super::record::{self, RecordError};
use super::schema::{META, OUTBOX, meta_key};
use super::stored_event::StoredEvent;
use crate::immune::event::Event;
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

/// Largest stored event: an event is a line and a few attributes, so more
/// is a bug upstream; such an event is dropped and counted.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The outbox bound (from `[state]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_events: u64,
    pub max_bytes: u64,
}

/// One event written to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Outbox sequence number (order of delivery).
    pub seq: u64,
    /// The event's id: its own, or `<run id>-<seq>` when it had none.
    pub id: String,
}

/// What one append did to the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub appended: Vec<Appended>,
    /// Older events dropped to stay within the bound.
    pub dropped_oldest: u64,
    /// Events not stored because they were over [`MAX_EVENT_BYTES`].
    pub rejected: u64,
    /// Outbox size after the append.
    pub pending: u64,
    pub pending_bytes: u64,
}

/// Events read for delivery, in sequence order.
#[derive(Debug, Clone, Default)]
pub struct OutboxBatch {
    pub events: Vec<(u64, Event)>,
    /// Sequence numbers of stored events that cannot be read back (another
    /// record version, damage): they can never be sent, so acking past them
    /// drops them.
    pub unreadable: Vec<u64>,
    /// The highest sequence number in the batch (events or unreadable).
    pub last_seq: Option<u64>,
}

impl OutboxBatch {
    pub fn is_empty(&self) -> bool {
        self.last_seq.is_none()
    }
}

fn read_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, redb::StorageError> {
    Ok(meta
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map_or(0, u64::from_le_bytes))
}

/// Appends `events` inside `txn`, enforcing `limits`.
pub(crate) fn append_in(
    txn: &WriteTransaction,
    events: Vec<Event>,
    run_id: &str,
    limits: OutboxLimits,
) -> Result<AppendOutcome, redb::Error> {
    let mut meta = txn.open_table(META)?;
    let mut outbox = txn.open_table(OUTBOX)?;
    // Sequence numbers start at 1 so 0 can mean "nothing acked yet".
    let mut next = read_u64(&meta, meta_key::OUTBOX_NEXT_SEQ)?.max(1);
    let mut bytes = read_u64(&meta, meta_key::OUTBOX_BYTES)?;
    let mut outcome = AppendOutcome::default();
    for mut event in events {
        if event.id.is_empty() {
            event.id = format!("{run_id}-{next}");
        }
        let encoded = match record::encode("event", &StoredEvent::from_event(&event)) {
            Ok(encoded) if encoded.len() <= MAX_EVENT_BYTES => encoded,
            Ok(encoded) => {
                tracing::warn!(
                    event = event.name,
                    agent = event.agent_id,
                    bytes = encoded.len(),
                    "outbox: event over {MAX_EVENT_BYTES} bytes dropped"
                );
                outcome.rejected += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!(event = event.name, agent = event.agent_id, "outbox: {e}");
                outcome.rejected += 1;
                continue;
            }
        };
        outbox.insert(next, encoded.as_slice())?;
        bytes += encoded.len() as u64;
        outcome.appended.push(Appended {
            seq: next,
            id: event.id,
        });
        next += 1;
    }
    let mut len = outbox.len()?;
    while len > limits.max_events || bytes > limits.max_bytes {
        let Some((_, value)) = outbox.pop_first()? else {
            break;
        };
        bytes = bytes.saturating_sub(value.value().len() as u64);
        len -= 1;
        outcome.dropped_oldest += 1;
    }
    if len == 0 {
        // Heals a byte count that drifted (it cannot, but costs nothing).
        bytes = 0;
    }
    meta.insert(meta_key::OUTBOX_NEXT_SEQ, next.to_le_bytes().as_slice())?;
    meta.insert(meta_key::OUTBOX_BYTES, bytes.to_le_bytes().as_slice())?;
    outcome.pending = len;
    outcome.pending_bytes = bytes;
    Ok(outcome)
}

/// Deletes every event up to and including `up_to` inside `txn`; returns
/// (deleted, pending, pending bytes).
pub(crate) fn ack_in(txn: &WriteTransaction, up_to: u64) -> Result<(u64, u64, u64), redb::Error> {
    let mut meta = txn.open_table(META)?;
    let mut outbox = txn.open_table(OUTBOX)?;
    let mut bytes = read_u64(&meta, meta_key::OUTBOX_BYTES)?;
    let mut deleted = 0u64;
    outbox.retain_in(..=up_to, |_, value| {
        bytes = bytes.saturating_sub(value.len() as u64);
        deleted += 1;
        false
    })?;
    let len = outbox.len()?;
    if len == 0 {
        bytes = 0;
    }
    meta.insert(meta_key::OUTBOX_BYTES, bytes.to_le_bytes().as_slice())?;
    Ok((deleted, len, bytes))
}

/// Reads up to `max_events` events (and about `max_bytes` of them, at
/// least one) from the start of the outbox.
pub(crate) fn read_batch(
    outbox: &impl ReadableTable<u64, &'static [u8]>,
    max_events: usize,
    max_bytes: usize,
) -> Result<OutboxBatch, redb::Error> {
    let mut batch = OutboxBatch::default();
    let mut bytes = 0usize;
    for row in outbox.range::<u64>(..)?.take(max_events.max(1)) {
        let (seq, value) = row?;
        let (seq, value) = (seq.value(), value.value());
        if batch.last_seq.is_some() && bytes + value.len() > max_bytes {
            break;
        }
        bytes += value.len();
        batch.last_seq = Some(seq);
        match record::decode::<StoredEvent>(value) {
            Ok(stored) => batch.events.push((seq, stored.into_event())),
            Err(e @ (RecordError::Stale { .. } | RecordError::Malformed(_))) => {
                tracing::warn!("outbox: event {seq} cannot be read ({e}); it will be dropped");
                batch.unreadable.push(seq);
            }
        }
    }
    Ok(batch)
}

/// (events, bytes) pending, as the meta counters and table say.
pub(crate) fn size_of(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    outbox: &impl ReadableTableMetadata,
) -> Result<(u64, u64), redb::Error> {
    Ok((outbox.len()?, read_u64(meta, meta_key::OUTBOX_BYTES)?))
}
