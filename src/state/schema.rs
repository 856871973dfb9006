//! The store's layout: which tables exist and the schema version that names
//! this layout. Bump [`SCHEMA_VERSION`] when a table is renamed, retyped or
//! its keys change meaning; a file of another version is moved aside on
//! open. (A record type's own shape is versioned per record, see
//! [`super::record::StateRecord`].)

use redb::TableDefinition;

pub const SCHEMA_VERSION: u32 = 1;

/// Store-wide values: schema version, run id, API key hash, outbox cursor.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Pending events, by sequence number.
pub const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

pub mod meta_key {
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const RUN_ID: &str = "run_id";
    pub const CREATED_AT: &str = "created_at";
    pub const API_KEY: &str = "api_key";
    /// The next outbox sequence number: kept so numbers are never reused,
    /// even after the outbox emptied.
    pub const OUTBOX_NEXT_SEQ: &str = "outbox_next_seq";
    /// Bytes of the stored events, kept in step with the outbox.
    pub const OUTBOX_BYTES: &str = "outbox_bytes";
}

/// The keyed record tables the core's state goes into. Keys are strings
/// (agent ids, approval ids...); values any [`super::record::StateRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Per agent: baseline, lifecycle state and history (the core's
    /// per-agent snapshot).
    Agents,
    /// Pending and rejected approvals.
    Approvals,
    /// Immune memory: failed actions per agent and diagnosis, fleet
    /// success counts.
    ImmuneMemory,
    /// Operator feedback (false positive, wrong diagnosis).
    Feedback,
    /// Quarantined agents.
    Quarantine,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Agents,
        Table::Approvals,
        Table::ImmuneMemory,
        Table::Feedback,
        Table::Quarantine,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Table::Agents => "agents",
            Table::Approvals => "approvals",
            Table::ImmuneMemory => "immune_memory",
            Table::Feedback => "feedback",
            Table::Quarantine => "quarantine",
        }
    }

    pub(crate) const fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}
