//! The event outbox: durable appends in order, acks, the bound and its drop
//! policy, and delivery to a real OTLP/gRPC logs receiver that is down at
//! first, across a restart of the store.

use agent_immune::exporters::otlp_client::{OtlpClientConfig, Protocol, RetryConfig};
use agent_immune::immune::event::{AttrValue, Event, Severity};
use agent_immune::state::{OutboxDelivery, StateConfig, StateWriter, Store};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use redb::{Database, TableDefinition};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    (tmp, dir)
}

fn open_with(dir: &Path, config: &StateConfig) -> Store {
    Store::open(dir, config).unwrap()
}

fn open(dir: &Path) -> Store {
    open_with(dir, &StateConfig::default())
}

fn event(id: &str, i: i64) -> Event {
    Event {
        id: id.into(),
        name: "agent_immune.infection",
        time: 1_700_000_000_000_000_000 + i as u64,
        severity: Severity::Warn,
        agent_id: "planner".into(),
        trace_id: Some([0xab; 16]),
        span_id: Some([0xcd; 8]),
        body: format!("planner infected ({i})"),
        attributes: vec![
            ("agent_immune.sequence".into(), AttrValue::Int(i)),
            ("agent_immune.max_deviation".into(), AttrValue::Double(7.5)),
        ],
    }
}

fn events(from: i64, to: i64) -> Vec<Event> {
    (from..to).map(|i| event(&format!("ev-{i}"), i)).collect()
}

#[test]
fn appends_are_ordered_acks_delete_and_sequence_numbers_never_go_back() {
    let (_tmp, dir) = data_dir();
    let last_seq = {
        let store = open(&dir);
        let mut batch = events(0, 3);
        batch.push(event("", 3));
        let outcome = store.append_events(batch).unwrap();
        let seqs: Vec<_> = outcome.appended.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(outcome.appended[0].id, "ev-0");
        // An event without an id gets a stable one: run id and sequence.
        assert_eq!(outcome.appended[3].id, format!("{}-4", store.run_id()));
        assert_eq!((outcome.pending, outcome.dropped_oldest), (4, 0));

        let pending = store.outbox_pending(2, usize::MAX).unwrap();
        let ids: Vec<_> = pending.events.iter().map(|(_, e)| e.id.as_str()).collect();
        assert_eq!(ids, ["ev-0", "ev-1"]);
        assert_eq!(pending.last_seq, Some(2));
        assert_eq!(pending.events[0].1, event("ev-0", 0), "read back exactly");
        assert_eq!(store.outbox_ack(2).unwrap(), 2);
        assert_eq!(store.outbox_size().unwrap().0, 2);
        assert_eq!(store.metrics().outbox_pending.get(), 2);
        assert_eq!(store.outbox_ack(4).unwrap(), 2);
        assert_eq!(store.outbox_size().unwrap(), (0, 0));
        4
    };
    let store = open(&dir);
    let outcome = store.append_events(events(10, 11)).unwrap();
    assert_eq!(outcome.appended[0].seq, last_seq + 1, "after a restart too");
}

#[test]
fn the_bound_drops_the_oldest_and_counts_them() {
    let (_tmp, dir) = data_dir();
    let config = StateConfig {
        outbox_max_events: 10,
        ..StateConfig::default()
    };
    let store = open_with(&dir, &config);
    store.append_events(events(0, 6)).unwrap();
    let outcome = store.append_events(events(6, 25)).unwrap();
    assert_eq!(outcome.dropped_oldest, 15);
    assert_eq!(outcome.pending, 10);
    assert_eq!(store.metrics().outbox_dropped.get(), 15);
    let pending = store.outbox_pending(100, usize::MAX).unwrap();
    let ids: Vec<_> = pending.events.iter().map(|(_, e)| e.id.clone()).collect();
    let newest: Vec<_> = (15..25).map(|i| format!("ev-{i}")).collect();
    assert_eq!(ids, newest, "the newest are kept");

    // By bytes: 1 MiB of outbox, events of about 10 KiB.
    let (_tmp2, dir2) = data_dir();
    let config = StateConfig {
        outbox_max_bytes: 1024 * 1024,
        ..StateConfig::default()
    };
    let store = open_with(&dir2, &config);
    let big: Vec<_> = (0..200)
        .map(|i| {
            let mut e = event(&format!("big-{i}"), i);
            e.body = "x".repeat(10 * 1024);
            e
        })
        .collect();
    let outcome = store.append_events(big).unwrap();
    assert!(
        outcome.dropped_oldest > 0 && outcome.pending_bytes <= 1024 * 1024,
        "{outcome:?}"
    );
    assert_eq!(outcome.pending + outcome.dropped_oldest, 200);
    let first = store.outbox_pending(1, usize::MAX).unwrap();
    assert_eq!(
        first.events[0].1.id,
        format!("big-{}", outcome.dropped_oldest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_stored_events_are_dropped_and_counted_not_stuck_on() {
    let (_tmp, dir) = data_dir();
    open(&dir).append_events(events(0, 3)).unwrap();
    {
        // Damage the second event while the store is closed.
        let db = Database::open(dir.join("state.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let outbox: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
        txn.open_table(outbox)
            .unwrap()
            .insert(2, [9u8, 9, 9].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open(&dir);
    let batch = store.outbox_pending(10, usize::MAX).unwrap();
    assert_eq!(batch.unreadable, [2]);
    let ids: Vec<_> = batch.events.iter().map(|(_, e)| e.id.as_str()).collect();
    assert_eq!(ids, ["ev-0", "ev-2"]);
    assert_eq!(batch.last_seq, Some(3));

    let addr = free_port().await;
    let sink = Arc::new(LogsSink::default());
    let server = serve(addr, sink.clone()).await;
    let cancel = CancellationToken::new();
    let delivery = OutboxDelivery::new(store.clone(), &client_config(addr))
        .unwrap()
        .spawn(cancel.clone());
    sink.wait_for(2).await;
    assert_eq!(sink.ids(), ["ev-0", "ev-2"]);
    // Counted once the batch is deleted (after the delete, so wait for both).
    wait_until(|| store.outbox_size().unwrap().0 == 0 && store.metrics().outbox_dropped.get() > 0)
        .await;
    assert_eq!(store.metrics().outbox_dropped.get(), 1);
    cancel.cancel();
    delivery.await.unwrap();
    server.cancel();
}

/// Polls `condition` until it holds (fails after 20s).
async fn wait_until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition within 20s");
}

// ---- delivery to a real OTLP/gRPC logs receiver

#[derive(Default)]
struct LogsSink {
    records: Mutex<Vec<LogRecord>>,
    requests: Mutex<usize>,
    /// Answered before accepting anything.
    failures: Mutex<VecDeque<tonic::Status>>,
    changed: tokio::sync::Notify,
}

#[tonic::async_trait]
impl LogsService for LogsSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        *self.requests.lock().unwrap() += 1;
        if let Some(status) = self.failures.lock().unwrap().pop_front() {
            self.changed.notify_waiters();
            return Err(status);
        }
        let request = request.into_inner();
        let mut records = self.records.lock().unwrap();
        for rl in request.resource_logs {
            for sl in rl.scope_logs {
                records.extend(sl.log_records);
            }
        }
        drop(records);
        self.changed.notify_waiters();
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl LogsSink {
    fn ids(&self) -> Vec<String> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let attr = r.attributes.iter().find(|kv| kv.key == "event.id").unwrap();
                match attr.value.as_ref().unwrap().value.as_ref().unwrap() {
                    Value::StringValue(s) => s.clone(),
                    other => panic!("event.id is {other:?}"),
                }
            })
            .collect()
    }

    /// Waits until `n` records arrived (or fails after 20s).
    async fn wait_for(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let changed = self.changed.notified();
                if self.records.lock().unwrap().len() >= n {
                    return;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {n} records arrived",
                self.records.lock().unwrap().len()
            )
        });
    }
}

/// A port nothing listens on (for now).
async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

async fn serve(addr: SocketAddr, sink: Arc<LogsSink>) -> CancellationToken {
    let listener = TcpListener::bind(addr).await.unwrap();
    let cancel = CancellationToken::new();
    let server = tonic::transport::Server::builder()
        .add_service(LogsServiceServer::from_arc(sink))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            cancel.clone().cancelled_owned(),
        );
    tokio::spawn(server);
    cancel
}

fn client_config(addr: SocketAddr) -> OtlpClientConfig {
    OtlpClientConfig {
        timeout: Duration::from_secs(2),
        retry_on_failure: RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            // Ignored by the outbox: it never gives up.
            max_elapsed_time: Duration::from_millis(1),
            ..RetryConfig::default()
        },
        ..OtlpClientConfig::new(format!("http://{addr}"), Protocol::Grpc)
    }
}

/// Waits until the delivery has failed at least `n` times.
async fn wait_for_failures(store: &Store, n: u64) {
    wait_until(|| store.metrics().outbox_send_failures.get() >= n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_a_restart_lose_nothing_and_keep_the_order() {
    let (_tmp, dir) = data_dir();
    let addr = free_port().await;
    let expected: Vec<_> = (0..1200).map(|i| format!("ev-{i}")).collect();

    // First run: events appended while the receiver is down; delivery
    // keeps failing; the process stops before anything got through.
    {
        let writer = StateWriter::new(open(&dir));
        writer.append_events(events(0, 700)).await.unwrap();
        let cancel = CancellationToken::new();
        let delivery = OutboxDelivery::new(writer.store().clone(), &client_config(addr))
            .unwrap()
            .with_drain_timeout(Duration::from_millis(50))
            .spawn(cancel.clone());
        writer.append_events(events(700, 1000)).await.unwrap();
        wait_for_failures(writer.store(), 3).await;
        cancel.cancel();
        delivery.await.unwrap();
        assert_eq!(writer.store().outbox_size().unwrap().0, 1000, "all kept");
        assert_eq!(writer.store().metrics().outbox_delivered.get(), 0);
    }

    // Second run on the same data dir: still down at first, then the
    // receiver comes up on that port.
    let store = open(&dir);
    let cancel = CancellationToken::new();
    let delivery = OutboxDelivery::new(store.clone(), &client_config(addr))
        .unwrap()
        .spawn(cancel.clone());
    store.append_events(events(1000, 1200)).unwrap();
    wait_for_failures(&store, 1).await;
    let sink = Arc::new(LogsSink::default());
    let server = serve(addr, sink.clone()).await;

    sink.wait_for(1200).await;
    assert_eq!(sink.ids(), expected, "each once, in the order appended");
    let first = sink.records.lock().unwrap()[0].clone();
    assert_eq!(first.event_name, "agent_immune.infection");
    assert_eq!(first.trace_id, vec![0xab; 16]);
    assert!(*sink.requests.lock().unwrap() >= 3, "sent in batches");

    // Acked and deleted once delivered.
    // Counted after the delete: wait for both.
    wait_until(|| {
        store.outbox_size().unwrap().0 == 0 && store.metrics().outbox_delivered.get() >= 1200
    })
    .await;
    assert_eq!(store.metrics().outbox_delivered.get(), 1200);

    // New events keep flowing without waiting for a retry timer.
    store.append_events(events(1200, 1201)).unwrap();
    sink.wait_for(1201).await;
    cancel.cancel();
    delivery.await.unwrap();
    server.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_rejection_keeps_the_events_until_the_downstream_accepts() {
    let (_tmp, dir) = data_dir();
    let addr = free_port().await;
    let sink = Arc::new(LogsSink::default());
    sink.failures.lock().unwrap().extend([
        tonic::Status::unauthenticated("bad token"),
        tonic::Status::invalid_argument("nope"),
    ]);
    let server = serve(addr, sink.clone()).await;
    let store = open(&dir);
    store.append_events(events(0, 5)).unwrap();
    let cancel = CancellationToken::new();
    let delivery = OutboxDelivery::new(store.clone(), &client_config(addr))
        .unwrap()
        .spawn(cancel.clone());
    sink.wait_for(5).await;
    assert_eq!(
        sink.ids(),
        (0..5).map(|i| format!("ev-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(*sink.requests.lock().unwrap(), 3);
    assert_eq!(store.metrics().outbox_send_failures.get(), 2);
    cancel.cancel();
    delivery.await.unwrap();
    server.cancel();
}
