//! Delivers the outbox to the events OTLP endpoint: the oldest events
//! first, one request at a time, deleted only after the downstream
//! acknowledged them. Failed attempts are retried forever with the
//! endpoint's `retry_on_failure` backoff (the Collector's 5s initial, 30s
//! max by default; a server's Retry-After is honoured; `max_elapsed_time`
//! does not apply): nothing is given up on while the process runs, and
//! what is still pending at exit is sent on the next start. A permanent
//! rejection (bad credentials, invalid data) is retried every
//! `max_interval` too: the events stay in the outbox, bounded by its size
//! limit, until the downstream is fixed.
//!
//! At-least-once: if the process dies after the downstream accepted a batch
//! but before the delete is committed, that batch is sent again on restart
//! with the same `event.id` values; backends dedupe on that attribute.

use super::error::StateError;
use super::outbox::OutboxBatch;
use super::store::Store;
use crate::exporters::SHUTDOWN_DRAIN_TIMEOUT;
use crate::exporters::events::{MAX_BATCH, otlp_logs};
use crate::exporters::otlp_client::retry::Backoff;
use crate::exporters::otlp_client::{
    ClientError, OtlpClient, OtlpClientConfig, RetryConfig, SendError,
};
use crate::immune::event::Event;
use crate::pipeline::consumer::Signal;
use crate::telemetry::Telemetry;
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Stored bytes per request: the OTLP encoding is about the same size, well
/// under the 4 MiB a gRPC receiver accepts by default.
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

pub struct OutboxDelivery {
    store: Store,
    client: OtlpClient,
    retry: RetryConfig,
    telemetry: Option<Arc<Telemetry>>,
    drain_timeout: Duration,
}

impl OutboxDelivery {
    /// A delivery to the endpoint of `cfg` (the events exporter's `otlp`
    /// table). Must be called inside a tokio runtime.
    pub fn new(store: Store, cfg: &OtlpClientConfig) -> Result<Self, ClientError> {
        Ok(Self {
            client: OtlpClient::new(cfg)?,
            retry: cfg.retry_on_failure.clone(),
            store,
            telemetry: None,
            drain_timeout: SHUTDOWN_DRAIN_TIMEOUT,
        })
    }

    /// Also count deliveries in the events exporter's metrics: `sent`, and
    /// `queue_size` as the outbox backlog.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// How long to keep sending after `cancel` (default 5s, as the
    /// exporters); what is left stays in the outbox for the next start.
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    pub fn spawn(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(cancel))
    }

    async fn run(self, cancel: CancellationToken) {
        let abandon = CancellationToken::new();
        let watchdog = {
            let (cancel, abandon, drain) = (cancel.clone(), abandon.clone(), self.drain_timeout);
            tokio::spawn(async move {
                cancel.cancelled().await;
                tokio::time::sleep(drain).await;
                abandon.cancel();
            })
        };
        let mut backoff = Backoff::new(&self.retry);
        while !abandon.is_cancelled() {
            let batch = match self.read().await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!("outbox: cannot read pending events: {e}");
                    if !pause(&abandon, backoff.next_delay()).await {
                        break;
                    }
                    continue;
                }
            };
            let Some(last_seq) = batch.last_seq else {
                if cancel.is_cancelled() {
                    break;
                }
                tokio::select! {
                    () = self.store.outbox_ready().notified() => {}
                    () = cancel.cancelled() => {}
                }
                continue;
            };
            let unreadable = batch.unreadable.len() as u64;
            let events: Vec<Event> = batch.events.into_iter().map(|(_, e)| e).collect();
            if !events.is_empty() {
                let request = encode(&events);
                let outcome = tokio::select! {
                    biased;
                    () = abandon.cancelled() => break,
                    outcome = self.client.send(Signal::Logs, request) => outcome,
                };
                if let Err(e) = outcome {
                    self.count_failure();
                    let delay = match &e {
                        SendError::Permanent { .. } => self.retry.max_interval,
                        SendError::Retryable { retry_after, .. } => {
                            backoff.next_delay().max(retry_after.unwrap_or_default())
                        }
                    };
                    tracing::warn!(
                        endpoint = self.client.endpoint(),
                        events = events.len(),
                        "outbox: delivery failed, events kept; retrying in {delay:?}: {e}"
                    );
                    if !pause(&abandon, delay).await {
                        break;
                    }
                    continue;
                }
                backoff = Backoff::new(&self.retry);
            }
            if let Err(e) = self.ack(last_seq).await {
                // Delivered but not deleted: sent again later (at-least-once).
                tracing::error!("outbox: cannot delete delivered events: {e}");
                if !pause(&abandon, backoff.next_delay()).await {
                    break;
                }
                continue;
            }
            self.count_delivered(events.len() as u64, unreadable);
        }
        watchdog.abort();
        if let Ok((pending, _)) = self.store.outbox_size()
            && pending > 0
        {
            tracing::info!(
                pending,
                "outbox: undelivered events kept for the next start"
            );
        }
    }

    async fn read(&self) -> Result<OutboxBatch, StateError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.outbox_pending(MAX_BATCH, MAX_BATCH_BYTES))
            .await
            .map_err(|e| StateError::Task(e.to_string()))?
    }

    async fn ack(&self, up_to: u64) -> Result<u64, StateError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.outbox_ack(up_to))
            .await
            .map_err(|e| StateError::Task(e.to_string()))?
    }

    fn count_delivered(&self, delivered: u64, unreadable: u64) {
        let metrics = self.store.metrics();
        metrics.outbox_delivered.add(delivered);
        if unreadable > 0 {
            metrics.outbox_dropped.add(unreadable);
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry.events.sent.add(delivered);
            telemetry
                .events
                .queue_size
                .set(metrics.outbox_pending.get());
        }
    }

    fn count_failure(&self) {
        self.store.metrics().outbox_send_failures.inc();
        if let Some(telemetry) = &self.telemetry {
            telemetry
                .events
                .queue_size
                .set(self.store.metrics().outbox_pending.get());
        }
    }
}

/// One OTLP logs request for `events`, encoded once for all its attempts
/// (as the events exporter's `send_batch` builds it).
fn encode(events: &[Event]) -> Bytes {
    let observed_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Bytes::from(otlp_logs::to_logs_request(events, observed_at).encode_to_vec())
}

/// Waits `delay`; false if `abandon` fired first.
async fn pause(abandon: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = abandon.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
