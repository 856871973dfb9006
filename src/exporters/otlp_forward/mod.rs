//! `otlp_forward`: passes received requests on to the next collector as the
//! exact bytes they arrived as. A queue bounded in requests and in bytes in
//! front of `num_consumers` concurrent senders, each with the retry policy.
//!
//! The pipeline holds the [`SendingQueue`] and enqueues with `try_reserve`,
//! so it can refuse a request (retryable, upstream) when any queue is full
//! rather than drop it here.

pub mod config;
mod queue;

pub use config::{OtlpForwardConfig, SendingQueueConfig};
pub(crate) use queue::sending_queue;
pub use queue::{QueueRefusal, Reservation, SendingQueue};

use super::SHUTDOWN_DRAIN_TIMEOUT;
use super::otlp_client::{ClientError, OtlpClient};
use crate::pipeline::consumer::Signal;
use crate::telemetry::Telemetry;
use bytes::Bytes;
use queue::{QueueReceiver, Queued};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// How often the queue-size gauge is refreshed while nothing moves.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// One request to forward.
#[derive(Debug, Clone)]
pub struct ForwardItem {
    pub signal: Signal,
    /// OTLP protobuf Export*ServiceRequest bytes, sent as they are.
    pub protobuf: Bytes,
    /// Spans, log records or data points in it (for the counters).
    pub items: u64,
}

/// Starts the exporter, named `id` in refusals. It runs until every
/// [`SendingQueue`] is dropped or `cancel`
/// fires; either way it then stops taking new requests and sends what is
/// queued for up to [`SHUTDOWN_DRAIN_TIMEOUT`], counting the rest as failed.
/// Must be called inside a tokio runtime.
pub fn start(
    id: &str,
    cfg: &OtlpForwardConfig,
    telemetry: Arc<Telemetry>,
    cancel: CancellationToken,
) -> Result<(SendingQueue, JoinHandle<()>), ClientError> {
    if let Some(issue) = cfg.validate().first() {
        return Err(ClientError(format!("{}: {}", issue.key, issue.message)));
    }
    let client = Arc::new(OtlpClient::new(&cfg.client())?);
    let (queue, receiver) = sending_queue(
        id,
        cfg.sending_queue.queue_size,
        cfg.sending_queue.queue_bytes(),
    );
    let forwarder = Forwarder {
        client,
        telemetry,
        queue: receiver,
        in_flight: JoinSet::new(),
        num_consumers: cfg.sending_queue.num_consumers,
        abandon: CancellationToken::new(),
    };
    tracing::info!(
        endpoint = cfg.endpoint,
        protocol = ?cfg.protocol,
        "otlp_forward exporter started"
    );
    Ok((queue, tokio::spawn(forwarder.run(cancel))))
}

struct Forwarder {
    client: Arc<OtlpClient>,
    telemetry: Arc<Telemetry>,
    queue: QueueReceiver,
    in_flight: JoinSet<()>,
    num_consumers: usize,
    /// Fired at the drain deadline: retries and attempts stop.
    abandon: CancellationToken,
}

impl Forwarder {
    async fn run(mut self, cancel: CancellationToken) {
        let mut refresh = tokio::time::interval(GAUGE_REFRESH);
        // Normal operation: at most num_consumers sends at once; the rest
        // wait in the channel, where the pipeline sees the queue fill.
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(_) = self.in_flight.join_next() => {}
                item = self.queue.rx.recv(), if self.in_flight.len() < self.num_consumers => match item {
                    Some(item) => self.spawn_send(item),
                    None => break, // every sender dropped: the pipeline is done
                },
                _ = refresh.tick() => {}
            }
            self.update_gauge();
        }
        self.drain().await;
    }

    fn spawn_send(&mut self, queued: Queued) {
        let client = self.client.clone();
        let telemetry = self.telemetry.clone();
        let abandon = self.abandon.clone();
        self.in_flight.spawn(async move {
            // The request's bytes stay reserved until this send is done.
            let Queued { item, _bytes } = queued;
            let ForwardItem {
                signal,
                protobuf,
                items,
            } = item;
            match client.send_with_retry(signal, protobuf, &abandon).await {
                Ok(()) => telemetry.forward.sent.add(items),
                Err(e) => {
                    telemetry.forward.send_failed.add(items);
                    tracing::warn!(
                        signal = signal.as_str(),
                        items,
                        endpoint = client.endpoint(),
                        "otlp_forward dropped a request: {e}"
                    );
                }
            }
        });
    }

    /// Shutdown: refuse new requests, send what is queued until the deadline,
    /// then abandon the rest (counted as failed).
    async fn drain(mut self) {
        self.queue.rx.close();
        let queued = self.queue.rx.len();
        if queued > 0 || !self.in_flight.is_empty() {
            tracing::info!(
                queued,
                in_flight = self.in_flight.len(),
                "otlp_forward draining"
            );
        }
        let deadline = tokio::time::sleep(SHUTDOWN_DRAIN_TIMEOUT);
        tokio::pin!(deadline);
        let mut queue_done = false;
        while !(queue_done && self.in_flight.is_empty()) {
            tokio::select! {
                biased;
                () = &mut deadline => break,
                Some(_) = self.in_flight.join_next() => {}
                item = self.queue.rx.recv(), if !queue_done && self.in_flight.len() < self.num_consumers => match item {
                    Some(item) => self.spawn_send(item),
                    None => queue_done = true,
                },
            }
            self.update_gauge();
        }
        // Past the deadline: stop retries and attempts; their requests count
        // as failed in their own tasks.
        self.abandon.cancel();
        while self.in_flight.join_next().await.is_some() {}
        let mut abandoned = 0;
        while let Ok(queued) = self.queue.rx.try_recv() {
            abandoned += 1;
            self.telemetry.forward.send_failed.add(queued.item.items);
        }
        if abandoned > 0 {
            tracing::warn!(
                requests = abandoned,
                "otlp_forward: shutdown deadline {SHUTDOWN_DRAIN_TIMEOUT:?} passed; queued requests dropped"
            );
        }
        self.update_gauge();
    }

    fn update_gauge(&self) {
        let forward = &self.telemetry.forward;
        forward
            .queue_size
            .set(i64::try_from(self.queue.rx.len()).unwrap_or(i64::MAX));
        forward
            .queue_bytes
            .set(i64::try_from(self.queue.held_bytes()).unwrap_or(i64::MAX));
    }
}
