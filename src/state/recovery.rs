//! Opening the database file so that a bad file never stops the process
//! for good: a corrupt file, or one of another schema version, is reported,
//! renamed aside (`state.redb.corrupt-<time>`, `state.redb.v<N>-<time>`)
//! for inspection, and a fresh store is started. Errors of the environment
//! (permissions, a full disk) are returned instead: the file may be fine,
//! and moving it would lose good state.

use super::data_dir::{FILE_MODE, restrict_file};
use super::error::StateError;
use super::schema::{META, SCHEMA_VERSION, meta_key};
use redb::backends::FileBackend;
use redb::{Database, DatabaseError, ReadableDatabase, StorageError, TableError};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

/// Page cache of the store: the state is small, most of it read once at
/// start.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Something the operator should know about the opened store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreWarning {
    /// The data dir was open to other users; now 0700.
    DirTightened { dir: PathBuf, was: u32 },
    /// A state file was open to other users; now 0600.
    FileTightened { path: PathBuf, was: u32 },
    /// The old state file could not be used and was renamed; the store
    /// starts empty.
    MovedAside { reason: String, moved_to: PathBuf },
}

impl std::fmt::Display for StoreWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DirTightened { dir, was } => write!(
                f,
                "data dir {} was open to other users (mode {was:04o}); set to 0700",
                dir.display()
            ),
            Self::FileTightened { path, was } => write!(
                f,
                "{} was open to other users (mode {was:04o}); set to 0600",
                path.display()
            ),
            Self::MovedAside { reason, moved_to } => write!(
                f,
                "state file {reason}: moved aside to {} and starting with empty state (baselines relearn, nothing pending)",
                moved_to.display()
            ),
        }
    }
}

/// Why an existing file is not used.
enum Unusable {
    Corrupt(String),
    OtherSchema(Option<u32>),
}

pub(crate) struct OpenedDb {
    pub db: Database,
    pub warnings: Vec<StoreWarning>,
    /// The file was created (or recreated) by this open.
    pub fresh: bool,
}

/// Opens `path`, moving a corrupt or incompatible file aside once.
pub(crate) fn open_db(path: &Path) -> Result<OpenedDb, StateError> {
    let mut warnings = Vec::new();
    if path.exists()
        && let Some(was) = restrict_file(path)?
    {
        warnings.push(StoreWarning::FileTightened {
            path: path.to_path_buf(),
            was,
        });
    }
    let existed = path.metadata().is_ok_and(|m| m.len() > 0);
    let unusable = match try_open(path)? {
        Ok(db) => match schema_of(&db, path)? {
            Schema::Current => {
                return Ok(OpenedDb {
                    db,
                    warnings,
                    fresh: !existed,
                });
            }
            Schema::Empty => {
                init_meta(&db, path)?;
                return Ok(OpenedDb {
                    db,
                    warnings,
                    fresh: true,
                });
            }
            Schema::Other(version) => Unusable::OtherSchema(version),
        },
        Err(unusable) => unusable,
    };
    let (reason, suffix) = match unusable {
        Unusable::Corrupt(message) => (format!("is corrupt ({message})"), "corrupt".to_string()),
        Unusable::OtherSchema(Some(v)) => (
            format!("has schema version {v}, this build uses {SCHEMA_VERSION}"),
            format!("v{v}"),
        ),
        Unusable::OtherSchema(None) => (
            "has tables but no schema version (not written by agent-immune?)".to_string(),
            "v0".to_string(),
        ),
    };
    let moved_to = move_aside(path, &suffix)?;
    let warning = StoreWarning::MovedAside { reason, moved_to };
    tracing::error!("{warning}");
    warnings.push(warning);
    let db = match try_open(path)? {
        Ok(db) => db,
        Err(Unusable::Corrupt(m)) => {
            return Err(storage(
                path,
                format!("a fresh store cannot be created: {m}"),
            ));
        }
        Err(Unusable::OtherSchema(_)) => {
            return Err(storage(path, "a fresh store cannot be created".to_string()));
        }
    };
    init_meta(&db, path)?;
    Ok(OpenedDb {
        db,
        warnings,
        fresh: true,
    })
}

/// The database, or why the file's content is unusable; `Err` for errors
/// of the environment.
fn try_open(path: &Path) -> Result<Result<Database, Unusable>, StateError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|source| StateError::Io {
            what: "cannot open state file",
            path: path.to_path_buf(),
            source,
        })?;
    // The integrity check verifies every page's checksum, so a damaged file
    // is reported here rather than trusted (a plain open may panic on it);
    // the panic guard is a second line for what the check cannot see.
    let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let backend = FileBackend::new(file)?;
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create_with_backend(backend)
    }));
    match opened {
        Ok(Ok(db)) => Ok(Ok(db)),
        Ok(Err(e)) => classify(path, e).map(Err),
        Err(panic) => Ok(Err(Unusable::Corrupt(format!(
            "the database panicked reading it: {}",
            panic_message(&panic)
        )))),
    }
}

fn classify(path: &Path, error: DatabaseError) -> Result<Unusable, StateError> {
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Err(StateError::Locked {
                dir: path.parent().unwrap_or(path).to_path_buf(),
                holder: None,
            })
        }
        DatabaseError::RepairAborted => Ok(Unusable::Corrupt("repair aborted".into())),
        DatabaseError::UpgradeRequired(format) => Ok(Unusable::Corrupt(format!(
            "redb file format {format}, which this build cannot read"
        ))),
        DatabaseError::Storage(StorageError::Corrupted(message)) => Ok(Unusable::Corrupt(message)),
        DatabaseError::Storage(StorageError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            Ok(Unusable::Corrupt(e.to_string()))
        }
        other => Err(storage(path, other.to_string())),
    }
}

enum Schema {
    Current,
    /// No tables at all: a new file.
    Empty,
    /// Another layout; `None` when there is no version at all.
    Other(Option<u32>),
}

fn schema_of(db: &Database, path: &Path) -> Result<Schema, StateError> {
    let read = db.begin_read().map_err(|e| storage(path, e.to_string()))?;
    let meta = match read.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => {
            let tables = read
                .list_tables()
                .map_err(|e| storage(path, e.to_string()))?
                .count();
            return Ok(if tables == 0 {
                Schema::Empty
            } else {
                Schema::Other(None)
            });
        }
        // A `meta` of other key/value types is another layout.
        Err(TableError::TableTypeMismatch { .. } | TableError::TypeDefinitionChanged { .. }) => {
            return Ok(Schema::Other(None));
        }
        Err(e) => return Err(storage(path, e.to_string())),
    };
    let version = meta
        .get(meta_key::SCHEMA_VERSION)
        .map_err(|e| storage(path, e.to_string()))?
        .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
        .map(u32::from_le_bytes);
    Ok(match version {
        Some(SCHEMA_VERSION) => Schema::Current,
        other => Schema::Other(other),
    })
}

fn init_meta(db: &Database, path: &Path) -> Result<(), StateError> {
    let write = db.begin_write().map_err(|e| storage(path, e.to_string()))?;
    {
        let mut meta = write
            .open_table(META)
            .map_err(|e| storage(path, e.to_string()))?;
        meta.insert(
            meta_key::SCHEMA_VERSION,
            SCHEMA_VERSION.to_le_bytes().as_slice(),
        )
        .map_err(|e| storage(path, e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        meta.insert(meta_key::CREATED_AT, now.to_le_bytes().as_slice())
            .map_err(|e| storage(path, e.to_string()))?;
    }
    write.commit().map_err(|e| storage(path, e.to_string()))
}

/// Renames `path` to `<path>.<suffix>-<UTC time>` (with `-N` if taken).
fn move_aside(path: &Path, suffix: &str) -> Result<PathBuf, StateError> {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let base = format!("{}.{suffix}-{stamp}", path.display());
    let mut target = PathBuf::from(&base);
    // Same-second collisions only; the cap keeps a broken filesystem
    // (exists() always true) from looping forever.
    for n in 1..=1000 {
        if !target.exists() {
            break;
        }
        target = PathBuf::from(format!("{base}-{n}"));
    }
    std::fs::rename(path, &target).map_err(|source| StateError::Io {
        what: "cannot move aside unusable state file",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(target)
}

pub(crate) fn storage(path: &Path, message: String) -> StateError {
    StateError::Storage {
        path: path.to_path_buf(),
        message,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}
