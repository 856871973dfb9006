//! The store on a real filesystem: owner-only permissions, typed records,
//! staged writes and their flush, durable commits.

use agent_immune::state::{
    Commit, StateConfig, StateRecord, StateWriter, Store, StoreWarning, Table,
};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    state: String,
    turns: u64,
    mean: f64,
}

impl StateRecord for Snapshot {
    const VERSION: u16 = 1;
}

/// The same record after a shape change, as a later build would define it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SnapshotV2 {
    state: String,
    turns: u64,
    mean: f64,
    p95: f64,
}

impl StateRecord for SnapshotV2 {
    const VERSION: u16 = 2;
}

fn snapshot(state: &str, turns: u64) -> Snapshot {
    Snapshot {
        state: state.into(),
        turns,
        mean: turns as f64 / 2.0,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A data dir path inside a fresh temp dir (not yet created).
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state").join("agent-immune");
    (tmp, dir)
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StateConfig::default()).unwrap()
}

#[test]
fn a_new_data_dir_and_its_files_are_owner_only() {
    let (_tmp, dir) = data_dir();
    let store = open(&dir);
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("state.redb")), 0o600);
    assert_eq!(mode(&dir.join("lock")), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("lock")).unwrap().trim(),
        std::process::id().to_string()
    );
}

#[test]
fn an_open_data_dir_of_ours_is_tightened_with_a_warning() {
    let (_tmp, dir) = data_dir();
    drop(open(&dir));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("state.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let store = open(&dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("state.redb")), 0o600);
    assert_eq!(
        store.warnings(),
        [
            StoreWarning::DirTightened {
                dir: dir.clone(),
                was: 0o755
            },
            StoreWarning::FileTightened {
                path: dir.join("state.redb"),
                was: 0o644
            },
        ]
    );
    assert!(store.warnings()[0].to_string().contains("mode 0755"));
}

#[test]
fn an_open_directory_with_foreign_files_is_refused_not_chmodded() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("notes.txt"), "someone else's").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();

    let err = Store::open(&shared, &StateConfig::default()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&shared.display().to_string())
            && message.contains("mode 0755")
            && message.contains("dedicated directory"),
        "{message}"
    );
    assert_eq!(mode(&shared), 0o755, "left as it was");
    assert!(!shared.join("state.redb").exists());

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = Store::open(&file, &StateConfig::default()).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn records_round_trip_per_table_and_deletes_apply() {
    let (_tmp, dir) = data_dir();
    {
        let store = open(&dir);
        let mut commit = Commit::new();
        commit
            .put(Table::Agents, "planner", &snapshot("healthy", 40))
            .unwrap()
            .put(Table::Agents, "coder", &snapshot("quarantined", 12))
            .unwrap()
            .put(Table::Quarantine, "coder", &snapshot("since", 1))
            .unwrap()
            .put(Table::Approvals, "coder", &snapshot("pending", 0))
            .unwrap();
        store.commit(commit).unwrap();
        let mut commit = Commit::new();
        commit.delete(Table::Approvals, "coder");
        store.commit(commit).unwrap();
    }
    let store = open(&dir);
    let agents = store.load_agents::<Snapshot>().unwrap();
    let ids: Vec<_> = agents.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(ids, ["coder", "planner"], "in key order");
    assert_eq!(agents.records[1].1, snapshot("healthy", 40));
    assert!(agents.skipped.is_empty());
    assert_eq!(
        store.get::<Snapshot>(Table::Quarantine, "coder").unwrap(),
        Some(snapshot("since", 1))
    );
    assert_eq!(
        store.get::<Snapshot>(Table::Approvals, "coder").unwrap(),
        None
    );
    assert_eq!(
        store.get::<Snapshot>(Table::Feedback, "coder").unwrap(),
        None
    );
}

#[test]
fn records_of_another_version_are_skipped_and_counted_not_misread() {
    let (_tmp, dir) = data_dir();
    let store = open(&dir);
    let mut commit = Commit::new();
    commit
        .put(Table::Agents, "old", &snapshot("healthy", 1))
        .unwrap()
        .put(
            Table::Agents,
            "new",
            &SnapshotV2 {
                state: "healthy".into(),
                turns: 2,
                mean: 1.0,
                p95: 3.0,
            },
        )
        .unwrap();
    store.commit(commit).unwrap();

    let loaded = store.load_agents::<SnapshotV2>().unwrap();
    assert_eq!(loaded.records.len(), 1);
    assert_eq!(loaded.records[0].0, "new");
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].0, "old");
    assert!(loaded.skipped[0].1.to_string().contains("record version 1"));
    assert_eq!(store.metrics().skipped_records.get(), 1);
    let err = store.get::<SnapshotV2>(Table::Agents, "old").unwrap_err();
    assert!(err.to_string().contains("\"old\""), "{err}");
}

#[test]
fn staged_writes_are_visible_at_once_and_durable_only_after_a_flush() {
    let (_tmp, dir) = data_dir();
    {
        let store = open(&dir);
        store
            .stage(Table::Agents, "planner", &snapshot("healthy", 1))
            .unwrap();
        store
            .stage(Table::Agents, "planner", &snapshot("healthy", 2))
            .unwrap();
        assert_eq!(store.staged_len(), 1, "latest value per key");
        assert_eq!(
            store.get_agent::<Snapshot>("planner").unwrap(),
            Some(snapshot("healthy", 2))
        );
        assert_eq!(store.load_agents::<Snapshot>().unwrap().records.len(), 1);
        assert_eq!(store.flush().unwrap(), 1);
        assert_eq!(store.staged_len(), 0);
        // Staged after the flush and never flushed: the documented loss
        // window (at most one flush_interval of learning).
        store
            .stage(Table::Agents, "planner", &snapshot("healthy", 3))
            .unwrap();
        store
            .stage(Table::Agents, "coder", &snapshot("healthy", 1))
            .unwrap();
    }
    let store = open(&dir);
    assert_eq!(
        store.get_agent::<Snapshot>("planner").unwrap(),
        Some(snapshot("healthy", 2))
    );
    assert_eq!(store.get_agent::<Snapshot>("coder").unwrap(), None);
}

#[test]
fn a_commit_carries_what_was_staged_before_it_and_its_own_value_wins() {
    let (_tmp, dir) = data_dir();
    {
        let store = open(&dir);
        store
            .stage(Table::Agents, "planner", &snapshot("healthy", 7))
            .unwrap();
        store
            .stage(Table::Agents, "coder", &snapshot("healthy", 5))
            .unwrap();
        let mut commit = Commit::new();
        commit
            .put(Table::Agents, "coder", &snapshot("draining", 6))
            .unwrap();
        let committed = store.commit(commit).unwrap();
        assert_eq!(committed.flushed, 2);
        assert_eq!(store.staged_len(), 0);
    }
    let store = open(&dir);
    assert_eq!(
        store.get_agent::<Snapshot>("planner").unwrap(),
        Some(snapshot("healthy", 7))
    );
    assert_eq!(
        store.get_agent::<Snapshot>("coder").unwrap(),
        Some(snapshot("draining", 6))
    );
}

#[tokio::test]
async fn the_flusher_writes_staged_baselines_each_interval_and_at_shutdown() {
    let (_tmp, dir) = data_dir();
    let store = open(&dir);
    let writer = StateWriter::new(store.clone());
    let cancel = CancellationToken::new();
    let flusher = writer.spawn_flusher(Duration::from_millis(20), cancel.clone());

    writer
        .stage_agent("planner", &snapshot("healthy", 1))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while store.metrics().commits.get() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a flush within the interval");
    assert_eq!(store.staged_len(), 0);

    writer
        .stage_agent("coder", &snapshot("healthy", 2))
        .unwrap();
    cancel.cancel();
    flusher.await.unwrap();
    assert_eq!(store.staged_len(), 0, "flushed at shutdown");
    drop((writer, store));

    let store = open(&dir);
    assert_eq!(store.load_agents::<Snapshot>().unwrap().records.len(), 2);
}

#[tokio::test]
async fn commit_now_is_durable_when_it_returns() {
    let (_tmp, dir) = data_dir();
    let writer = StateWriter::new(open(&dir));
    let mut commit = Commit::new();
    commit
        .put(Table::Approvals, "coder", &snapshot("pending", 0))
        .unwrap();
    writer.commit_now(commit).await.unwrap();
    drop(writer);
    let store = open(&dir);
    assert_eq!(
        store.get::<Snapshot>(Table::Approvals, "coder").unwrap(),
        Some(snapshot("pending", 0))
    );
}

#[test]
fn oversized_keys_and_values_are_refused_with_their_names() {
    let (_tmp, dir) = data_dir();
    let store = open(&dir);
    let long_key = "a".repeat(5000);
    let err = store
        .stage(Table::Agents, &long_key, &snapshot("healthy", 1))
        .unwrap_err();
    assert!(err.to_string().contains("agents"), "{err}");
    let huge = Snapshot {
        state: "x".repeat(17 * 1024 * 1024),
        turns: 0,
        mean: 0.0,
    };
    let err = Commit::new()
        .put(Table::Agents, "planner", &huge)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("agents record \"planner\"") && err.contains("allowed"),
        "{err}"
    );
}

#[test]
fn a_staged_delete_hides_the_record_at_once_and_removes_it_at_the_flush() {
    let (_tmp, dir) = data_dir();
    {
        let store = open(&dir);
        for id in ["evicted", "kept"] {
            store
                .stage(Table::Agents, id, &snapshot("healthy", 1))
                .unwrap();
        }
        store.flush().unwrap();
        store.stage_delete(Table::Agents, "evicted").unwrap();
        assert_eq!(store.get_agent::<Snapshot>("evicted").unwrap(), None);
        let loaded = store.load_agents::<Snapshot>().unwrap();
        let ids: Vec<_> = loaded.records.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ids, ["kept"]);
        assert_eq!(store.flush().unwrap(), 1);
    }
    let store = open(&dir);
    assert_eq!(store.get_agent::<Snapshot>("evicted").unwrap(), None);
    assert_eq!(
        store.get_agent::<Snapshot>("kept").unwrap(),
        Some(snapshot("healthy", 1))
    );
}

#[test]
fn an_injected_write_failure_fails_every_write_and_keeps_what_was_staged() {
    let (_tmp, dir) = data_dir();
    let store = open(&dir);
    store
        .stage(Table::Agents, "planner", &snapshot("healthy", 1))
        .unwrap();
    store.inject_write_failure(Some("disk full (injected)"));
    let mut commit = Commit::new();
    commit
        .put(Table::Agents, "coder", &snapshot("quarantined", 2))
        .unwrap();
    let error = store.commit(commit).unwrap_err().to_string();
    assert!(error.contains("disk full (injected)"), "{error}");
    assert!(store.flush().is_err());
    assert_eq!(store.metrics().commit_failures.get(), 2);
    assert_eq!(store.staged_len(), 1, "staged writes are kept for later");
    store.inject_write_failure(None);
    assert_eq!(store.flush().unwrap(), 1);
    assert_eq!(
        store.get_agent::<Snapshot>("planner").unwrap(),
        Some(snapshot("healthy", 1))
    );
}
