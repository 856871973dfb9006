//! `events`: every immune event goes to the console at once and, when an
//! OTLP endpoint is configured, out as an OTLP log record. Events queued
//! together are sent together (up to [`MAX_BATCH`] per request), one
//! request at a time, with the retry policy; the console never waits on the
//! network.
//!
//! [`send_batch`] is the delivery step on its own (Ok only once the
//! downstream acknowledged), so a durable outbox can drive it.

pub mod config;
pub mod console;
pub mod otlp_logs;

pub use config::{ConsoleFormat, EventsConfig};

use super::SHUTDOWN_DRAIN_TIMEOUT;
use super::otlp_client::{ClientError, OtlpClient, SendError};
use crate::immune::event::Event;
use crate::pipeline::consumer::Signal;
use crate::telemetry::Telemetry;
use bytes::Bytes;
use prost::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Most events in one ExportLogsServiceRequest.
pub const MAX_BATCH: usize = 512;

/// Starts the exporter. It runs until every `Sender` is dropped or `cancel`
/// fires; then it prints what is queued and sends it for up to
/// [`SHUTDOWN_DRAIN_TIMEOUT`], counting what is left as failed. Use
/// [`enqueue`] to hand it events without waiting. Must be called inside a
/// tokio runtime.
pub fn start(
    cfg: &EventsConfig,
    telemetry: Arc<Telemetry>,
    cancel: CancellationToken,
) -> Result<(mpsc::Sender<Event>, JoinHandle<()>), ClientError> {
    if let Some(issue) = cfg.validate().first() {
        return Err(ClientError(format!("{}: {}", issue.key, issue.message)));
    }
    let client = cfg
        .otlp
        .as_ref()
        .map(OtlpClient::new)
        .transpose()?
        .map(Arc::new);
    let (tx, rx) = mpsc::channel(cfg.queue_size);
    let exporter = EventsExporter {
        rx,
        console: cfg.console.then_some(cfg.console_format),
        client,
        pending: VecDeque::new(),
        capacity: cfg.queue_size,
        telemetry,
        abandon: CancellationToken::new(),
    };
    Ok((tx, tokio::spawn(exporter.run(cancel))))
}

/// Queues `event` without waiting; a full (or closed) queue drops it and
/// counts it in `enqueue_failed`. Returns whether it was queued.
pub fn enqueue(tx: &mpsc::Sender<Event>, event: Event, telemetry: &Telemetry) -> bool {
    match tx.try_send(event) {
        Ok(()) => true,
        Err(e) => {
            telemetry.events.enqueue_failed.inc();
            let event = match &e {
                mpsc::error::TrySendError::Full(event)
                | mpsc::error::TrySendError::Closed(event) => event,
            };
            tracing::warn!(
                event = event.name,
                agent = event.agent_id,
                "event dropped: events queue full or closed"
            );
            false
        }
    }
}

/// Sends `events` as one OTLP logs request with the client's retry policy;
/// `Ok` only once the downstream acknowledged it.
pub async fn send_batch(
    client: &OtlpClient,
    events: &[Event],
    abandon: &CancellationToken,
) -> Result<(), SendError> {
    let observed_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let request = otlp_logs::to_logs_request(events, observed_at);
    client
        .send_with_retry(Signal::Logs, Bytes::from(request.encode_to_vec()), abandon)
        .await
}

struct EventsExporter {
    rx: mpsc::Receiver<Event>,
    console: Option<ConsoleFormat>,
    client: Option<Arc<OtlpClient>>,
    /// Printed, waiting to be sent (only with an OTLP endpoint).
    pending: VecDeque<Event>,
    capacity: usize,
    telemetry: Arc<Telemetry>,
    /// Fired at the shutdown deadline: retries and attempts stop.
    abandon: CancellationToken,
}

impl EventsExporter {
    async fn run(mut self, cancel: CancellationToken) {
        let mut received = Vec::with_capacity(MAX_BATCH);
        // At most one request in flight: events reach the backend in order.
        let mut sending: JoinSet<(u64, Result<(), SendError>)> = JoinSet::new();
        let mut queue_open = true;
        let mut draining = false;
        let deadline = tokio::time::sleep(SHUTDOWN_DRAIN_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            if sending.is_empty() {
                self.start_send(&mut sending);
            }
            self.update_gauge();
            if !queue_open && sending.is_empty() && self.pending.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled(), if !draining => {
                    draining = true;
                    self.rx.close();
                    deadline.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_DRAIN_TIMEOUT);
                }
                () = &mut deadline, if draining && !self.abandon.is_cancelled() => {
                    tracing::warn!(
                        pending = self.pending.len(),
                        "events: shutdown deadline {SHUTDOWN_DRAIN_TIMEOUT:?} passed; unsent events dropped"
                    );
                    self.abandon.cancel();
                }
                Some(joined) = sending.join_next() => self.count(joined),
                n = self.rx.recv_many(&mut received, MAX_BATCH), if queue_open => {
                    if n == 0 {
                        // Closed and empty: every sender dropped, or cancel.
                        queue_open = false;
                        if !draining {
                            draining = true;
                            deadline.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_DRAIN_TIMEOUT);
                        }
                    } else {
                        self.take(&mut received);
                    }
                }
            }
        }
        self.update_gauge();
    }

    /// Prints newly received events and queues them for sending.
    fn take(&mut self, received: &mut Vec<Event>) {
        if let Some(format) = self.console {
            let stdout = std::io::stdout();
            if let Err(e) = console::write_lines(&mut stdout.lock(), format, received) {
                tracing::debug!("events: console write failed: {e}");
            }
        }
        if self.client.is_none() {
            received.clear();
            return;
        }
        self.pending.extend(received.drain(..));
        let overflow = self.pending.len().saturating_sub(self.capacity);
        if overflow > 0 {
            // The downstream has been failing for a while; keep the newest.
            self.pending.drain(..overflow);
            self.telemetry.events.send_failed.add(overflow as u64);
            tracing::warn!(
                dropped = overflow,
                "events: send backlog full; oldest events dropped"
            );
        }
    }

    fn start_send(&mut self, sending: &mut JoinSet<(u64, Result<(), SendError>)>) {
        let Some(client) = &self.client else { return };
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len().min(MAX_BATCH);
        let batch: Vec<Event> = self.pending.drain(..n).collect();
        let client = client.clone();
        let abandon = self.abandon.clone();
        sending.spawn(async move {
            let result = send_batch(&client, &batch, &abandon).await;
            (batch.len() as u64, result)
        });
    }

    fn count(&self, joined: Result<(u64, Result<(), SendError>), tokio::task::JoinError>) {
        match joined {
            Ok((n, Ok(()))) => self.telemetry.events.sent.add(n),
            Ok((n, Err(e))) => {
                self.telemetry.events.send_failed.add(n);
                tracing::warn!(
                    events = n,
                    "events: OTLP export failed, events dropped: {e}"
                );
            }
            Err(e) => tracing::error!("events: send task failed: {e}"),
        }
    }

    fn update_gauge(&self) {
        let queued = self.rx.len() + self.pending.len();
        self.telemetry
            .events
            .queue_size
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
    }
}
