//! Durable state: an embedded, crash-safe store (redb, one file) in an
//! owner-only data dir, so a restart resumes where it stopped: baselines
//! without relearning, quarantines, pending approvals, immune memory,
//! operator feedback, the run id, the API key's hash, and an outbox of
//! events not yet delivered.
//!
//! - [`Store`]: open (lock, permissions, recovery of a bad file), typed
//!   records, durable commits, the outbox. Blocking.
//! - [`StateWriter`]: the async face: staged writes flushed every
//!   `flush_interval`, and `commit_now` for what must be durable first.
//! - [`OutboxDelivery`]: sends the outbox to the events endpoint,
//!   at-least-once, in order, deduplicable by `event.id`.
//! - [`api_key`]: the management/ingest key (env wins; else generated once).

pub mod api_key;
pub mod config;
pub mod data_dir;
pub mod delivery;
pub mod error;
pub mod health;
mod lock;
pub mod metrics;
pub mod outbox;
mod random;
pub mod record;
mod recovery;
pub mod schema;
mod staged;
pub mod store;
mod stored_event;
pub mod writer;

pub use api_key::{API_KEY_ENV, ApiKey, ApiKeySource, resolve_api_key, resolve_api_key_from_env};
pub use config::StateConfig;
pub use data_dir::{DATA_DIR_ENV, DataDirInputs, DataDirSource, resolve_data_dir};
pub use delivery::OutboxDelivery;
pub use error::StateError;
pub use health::StoreHealth;
pub use outbox::{AppendOutcome, Appended, OutboxBatch};
pub use record::{RecordError, StateRecord};
pub use recovery::StoreWarning;
pub use schema::{SCHEMA_VERSION, Table};
pub use store::{Commit, Committed, Loaded, Store};
pub use writer::StateWriter;
