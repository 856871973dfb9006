//! The state store's own counters, for the management API's metrics page.

use crate::telemetry::{Counter, Gauge};

#[derive(Debug, Default)]
pub struct StateMetrics {
    /// Events written to the outbox.
    pub outbox_appended: Counter,
    /// Events the downstream acknowledged (then deleted from the outbox).
    pub outbox_delivered: Counter,
    /// Events dropped by the outbox bound (oldest first), too large to
    /// store, or unreadable.
    pub outbox_dropped: Counter,
    /// Failed delivery attempts (each is retried).
    pub outbox_send_failures: Counter,
    /// Events waiting in the outbox.
    pub outbox_pending: Gauge,
    /// Bytes of events waiting in the outbox.
    pub outbox_pending_bytes: Gauge,
    /// Write transactions committed (flushes and immediate commits).
    pub commits: Counter,
    /// Write transactions that failed (their staged writes are kept).
    pub commit_failures: Counter,
    /// Staged writes waiting for the next flush.
    pub staged: Gauge,
    /// Stored records skipped on load (another record version, malformed).
    pub skipped_records: Counter,
}
