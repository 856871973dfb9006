//! A state file that cannot be used (random bytes, truncated, another
//! schema version, not agent-immune's) is reported, moved aside intact, and
//! the store starts fresh instead of failing to start.

use agent_immune::state::{
    Commit, SCHEMA_VERSION, StateConfig, StateRecord, Store, StoreWarning, Table,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    turns: u64,
    mean: f64,
}

impl StateRecord for Snapshot {
    const VERSION: u16 = 1;
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StateConfig::default()).unwrap()
}

fn moved_aside(store: &Store) -> (String, PathBuf) {
    let moved: Vec<_> = store
        .warnings()
        .iter()
        .filter_map(|w| match w {
            StoreWarning::MovedAside { reason, moved_to } => {
                Some((reason.clone(), moved_to.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(moved.len(), 1, "warnings: {:?}", store.warnings());
    moved.into_iter().next().unwrap()
}

/// The store works after recovery: a record written is read back.
fn assert_usable(store: &Store) {
    assert!(store.is_fresh());
    let mut commit = Commit::new();
    commit
        .put(
            Table::Agents,
            "planner",
            &Snapshot {
                turns: 3,
                mean: 1.5,
            },
        )
        .unwrap();
    store.commit(commit).unwrap();
    assert_eq!(
        store.get_agent::<Snapshot>("planner").unwrap(),
        Some(Snapshot {
            turns: 3,
            mean: 1.5
        })
    );
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn random_bytes_are_moved_aside_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("state.redb"), &garbage).unwrap();

    let store = open(dir.path());
    let (reason, moved_to) = moved_aside(&store);
    assert!(reason.contains("corrupt"), "{reason}");
    let name = file_name(&moved_to);
    assert!(name.starts_with("state.redb.corrupt-"), "{name}");
    assert!(std::fs::read(&moved_to).unwrap() == garbage, "kept intact");
    assert_usable(&store);
}

#[test]
fn a_truncated_file_is_moved_aside_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let mut commit = Commit::new();
        for i in 0..500 {
            commit
                .put(
                    Table::Agents,
                    &format!("agent-{i}"),
                    &Snapshot {
                        turns: i,
                        mean: i as f64,
                    },
                )
                .unwrap();
        }
        store.commit(commit).unwrap();
    }
    let path = dir.path().join("state.redb");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();

    let store = open(dir.path());
    let (reason, moved_to) = moved_aside(&store);
    assert!(reason.contains("corrupt"), "{reason}");
    assert!(file_name(&moved_to).starts_with("state.redb.corrupt-"));
    assert_eq!(std::fs::read(&moved_to).unwrap().len(), bytes.len() / 3);
    assert_eq!(store.load_agents::<Snapshot>().unwrap().records.len(), 0);
    assert_usable(&store);
}

#[test]
fn another_schema_version_is_moved_aside_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let other = SCHEMA_VERSION + 98;
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
            let mut meta = txn.open_table(meta).unwrap();
            meta.insert("schema_version", other.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    let (reason, moved_to) = moved_aside(&store);
    assert!(
        reason.contains(&format!("schema version {other}"))
            && reason.contains(&format!("this build uses {SCHEMA_VERSION}")),
        "{reason}"
    );
    let name = file_name(&moved_to);
    assert!(name.starts_with(&format!("state.redb.v{other}-")), "{name}");
    // Still the old store, readable by the build that wrote it.
    let old = Database::open(&moved_to).unwrap();
    let read = old.begin_read().unwrap();
    let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let version = read
        .open_table(meta)
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(version, other.to_le_bytes());
    assert_usable(&store);
}

#[test]
fn a_redb_file_without_our_schema_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: TableDefinition<u64, u64> = TableDefinition::new("someone_elses");
            txn.open_table(table).unwrap().insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    let (reason, moved_to) = moved_aside(&store);
    assert!(reason.contains("no schema version"), "{reason}");
    assert!(file_name(&moved_to).starts_with("state.redb.v0-"));
    assert_usable(&store);
}

#[test]
fn a_healthy_file_is_reopened_untouched_and_recovery_repeats_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    // Created by the store (a tempdir itself is 0755: that would warn).
    let dir = tmp.path().join("data");
    let run_id = {
        let store = open(&dir);
        assert!(store.is_fresh(), "fresh");
        assert!(store.warnings().is_empty(), "{:?}", store.warnings());
        assert_usable(&store);
        store.run_id().to_string()
    };
    let store = open(&dir);
    assert!(!store.is_fresh() && store.warnings().is_empty());
    assert_eq!(store.run_id(), run_id, "run id is stable across restarts");
    assert_eq!(store.load_agents::<Snapshot>().unwrap().records.len(), 1);
    drop(store);

    // Two recoveries in a row keep both moved-aside files.
    for _ in 0..2 {
        std::fs::write(dir.join("state.redb"), b"not a database at all").unwrap();
        let store = open(&dir);
        moved_aside(&store);
        assert_ne!(store.run_id(), run_id, "a fresh store is a new run");
    }
    let aside = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("state.redb.corrupt-")
        })
        .count();
    assert_eq!(aside, 2);
}
