//! What can go wrong with the state store, each message naming the path or
//! record concerned.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The data directory cannot be used (missing parent, wrong owner, too
    /// open and not ours to tighten...).
    #[error("data dir {}: {message}", path.display())]
    DataDir { path: PathBuf, message: String },
    /// Another process holds the data directory's lock.
    #[error(
        "data dir {} is in use by another agent-immune process ({}); stop it, or give this one another --data-dir",
        dir.display(),
        holder.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    Locked { dir: PathBuf, holder: Option<u32> },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The embedded database failed (I/O underneath, usually).
    #[error("state store {}: {message}", path.display())]
    Storage { path: PathBuf, message: String },
    /// A value could not be encoded, or is over the size limit.
    #[error("cannot store {what}: {message}")]
    Encode { what: String, message: String },
    /// A stored value could not be read back as the requested type.
    #[error("stored {table} record {key:?} is unreadable: {message}")]
    Decode {
        table: &'static str,
        key: String,
        message: String,
    },
    /// Staged writes are piling up because flushes keep failing.
    #[error("{0}")]
    Backlog(String),
    /// The OS random source failed.
    #[error("OS random number generator failed: {0}")]
    Random(String),
    /// A blocking store task could not run (runtime shutting down).
    #[error("state store task failed: {0}")]
    Task(String),
}
