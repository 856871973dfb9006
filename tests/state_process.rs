//! The store across real processes: the lock refuses a second process on
//! the same data dir (naming the holder's pid), and a process killed with
//! SIGKILL in the middle of committing loses nothing it had committed.
//!
//! The second process is this test binary itself, started on one of the
//! ignored helper tests below with `STATE_CHILD_DIR` set.

use agent_immune::immune::event::{Event, Severity};
use agent_immune::state::{Commit, StateConfig, StateError, StateRecord, Store, Table};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHILD_DIR_ENV: &str = "STATE_CHILD_DIR";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    turns: u64,
}

impl StateRecord for Snapshot {
    const VERSION: u16 = 1;
}

/// A child process, killed when dropped so a failing test leaves none
/// behind.
struct ChildProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildProcess {
    fn spawn(helper: &str, dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                helper,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                if line.is_err() || tx.send(line.unwrap_or_default()).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// What follows `marker` on the next output line that has it (libtest
    /// prints its own text too, even on the same line); panics if the
    /// child exits or stays silent for 30s first.
    fn next_line(&self, marker: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no {marker:?} from the child: {e}"));
            if let Some(at) = line.find(marker) {
                return line[at + marker.len()..].trim_end().to_string();
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait until it is gone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn event(i: u64) -> Event {
    Event {
        id: format!("ev-{i}"),
        name: "agent_immune.lifecycle",
        time: i,
        severity: Severity::Info,
        agent_id: format!("agent-{i}"),
        trace_id: None,
        span_id: None,
        body: format!("transition {i}"),
        attributes: Vec::new(),
    }
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused_with_the_holders_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut child = ChildProcess::spawn("child_holds_the_store", &dir);
    child.next_line("READY");

    let err = Store::open(&dir, &StateConfig::default()).unwrap_err();
    match &err {
        StateError::Locked { dir: d, holder } => {
            assert_eq!(d, &dir);
            assert_eq!(*holder, Some(child.pid()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&dir.display().to_string())
            && message.contains(&format!("pid {}", child.pid()))
            && message.contains("--data-dir"),
        "{message}"
    );

    // The kernel drops the lock with the process, however it ends.
    child.kill();
    let store = Store::open(&dir, &StateConfig::default()).unwrap();
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
}

#[test]
fn sigkill_while_committing_loses_nothing_that_was_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut child = ChildProcess::spawn("child_commits_until_killed", &dir);
    let mut last = 0;
    while last < 40 {
        last = child.next_line("COMMITTED ").parse().unwrap();
    }
    // Killed while it keeps committing: likely mid-transaction.
    child.kill();

    let store = Store::open(&dir, &StateConfig::default()).unwrap();
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
    for i in 0..=last {
        assert_eq!(
            store.get_agent::<Snapshot>(&format!("agent-{i}")).unwrap(),
            Some(Snapshot { turns: i }),
            "agent-{i} was committed"
        );
    }
    // A value staged before a commit went to disk with that commit.
    for i in 0..last {
        assert_eq!(
            store
                .get::<Snapshot>(Table::Feedback, &format!("staged-{i}"))
                .unwrap(),
            Some(Snapshot { turns: i }),
            "staged-{i} went with commit {}",
            i + 1
        );
    }
    let batch = store.outbox_pending(100_000, usize::MAX).unwrap();
    let ids: Vec<_> = batch.events.iter().map(|(_, e)| e.id.clone()).collect();
    assert!(ids.len() as u64 > last, "{} events", ids.len());
    let expected: Vec<_> = (0..ids.len()).map(|i| format!("ev-{i}")).collect();
    assert_eq!(ids, expected, "every committed event, in order");
    assert!(batch.events.windows(2).all(|w| w[0].0 < w[1].0));
}

// ---- helpers run in the child process

fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_DIR_ENV).map(Into::into)
}

#[test]
#[ignore = "helper: run by a_second_process_on_the_same_data_dir_is_refused_with_the_holders_pid"]
fn child_holds_the_store() {
    let Some(dir) = child_dir() else { return };
    let _store = Store::open(&dir, &StateConfig::default()).unwrap();
    println!("READY");
    // Holds the store until the parent kills it or closes stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
#[ignore = "helper: run by sigkill_while_committing_loses_nothing_that_was_committed"]
fn child_commits_until_killed() {
    let Some(dir) = child_dir() else { return };
    let store = Store::open(&dir, &StateConfig::default()).unwrap();
    for i in 0.. {
        let mut commit = Commit::new();
        commit
            .put(Table::Agents, &format!("agent-{i}"), &Snapshot { turns: i })
            .unwrap()
            .event(event(i));
        store.commit(commit).unwrap();
        println!("COMMITTED {i}");
        store
            .stage(
                Table::Feedback,
                &format!("staged-{i}"),
                &Snapshot { turns: i },
            )
            .unwrap();
    }
}
