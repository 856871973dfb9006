//! What both protocols do once a request is read: find the signal's
//! consumer, decode, hand over, and count the outcome.

use super::decode::{self, DecodeError};
use super::shape::RequestLimits;
use crate::pipeline::budget::{MemoryBudget, OverBudget};
use crate::pipeline::consumer::{Consumer, Received, Refused, Signal};
use crate::telemetry::Telemetry;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a client is asked to wait after a retryable refusal (Retry-After,
/// gRPC RetryInfo). Short: the queue drains in well under a second.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where each signal goes; `None` means no pipeline takes that signal and the
/// receiver answers 404 / UNIMPLEMENTED for it.
#[derive(Clone, Default)]
pub struct Consumers {
    pub traces: Option<Arc<dyn Consumer>>,
    pub metrics: Option<Arc<dyn Consumer>>,
    pub logs: Option<Arc<dyn Consumer>>,
}

impl Consumers {
    pub fn get(&self, signal: Signal) -> Option<&Arc<dyn Consumer>> {
        match signal {
            Signal::Traces => self.traces.as_ref(),
            Signal::Metrics => self.metrics.as_ref(),
            Signal::Logs => self.logs.as_ref(),
        }
    }
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumers")
            .field("traces", &self.traces.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("logs", &self.logs.is_some())
            .finish()
    }
}

/// The body of a request, in the encoding it came in.
pub enum Payload {
    Protobuf(Bytes),
    Json(Bytes),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Protobuf(bytes) | Payload::Json(bytes) => bytes.len(),
        }
    }
}

/// Why a request was not accepted.
#[derive(Debug)]
pub enum Rejection {
    Malformed(DecodeError),
    /// Beyond a per-request limit (items, attributes, decoded size): a
    /// permanent error naming the limit (400 / INVALID_ARGUMENT).
    Limit(String),
    Refused(Refused),
}

/// Shared by the gRPC and HTTP servers.
pub struct Ingest {
    consumers: Consumers,
    telemetry: Arc<Telemetry>,
    limits: RequestLimits,
    budget: Arc<MemoryBudget>,
    /// Decodes run on blocking threads, this many at once, so a heavy
    /// request never holds up the runtime that answers health checks.
    decodes: Arc<Semaphore>,
}

impl Ingest {
    pub fn new(
        consumers: Consumers,
        telemetry: Arc<Telemetry>,
        limits: RequestLimits,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            consumers,
            telemetry,
            limits,
            budget,
            decodes: Arc::new(Semaphore::new(cpus.max(2))),
        }
    }

    /// The signal's consumer; checked before reading a body, so a request
    /// for a signal nobody takes costs nothing.
    pub fn consumer(
        &self,
        signal: Signal,
        protocol: &'static str,
    ) -> Result<&Arc<dyn Consumer>, Rejection> {
        self.consumers.get(signal).ok_or_else(|| {
            let refused = Refused::NoPipeline(signal.as_str());
            tracing::warn!(
                signal = signal.as_str(),
                protocol,
                "OTLP request refused: {refused}"
            );
            Rejection::Refused(refused)
        })
    }

    /// Refuses (retryably) while resident memory is above the limit; checked
    /// before a body is read and again before it is decoded.
    pub fn admit(&self, signal: Signal, protocol: &'static str) -> Result<(), Rejection> {
        self.budget.check_resident().map_err(|refused| {
            self.telemetry.receiver.memory_refused_requests.inc();
            self.refuse(signal, protocol, 0, refused)
        })
    }

    /// Counts a request rejected before decoding (unreadable body, bad gzip).
    pub fn count_malformed(&self) {
        self.telemetry.receiver.malformed_requests.inc();
    }

    /// Decodes the payload off the runtime's threads and hands it to the
    /// signal's consumer.
    pub async fn ingest(
        self: &Arc<Self>,
        signal: Signal,
        protocol: &'static str,
        payload: Payload,
    ) -> Result<(), Rejection> {
        self.consumer(signal, protocol)?;
        self.admit(signal, protocol)?;
        let permit = self
            .decodes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Rejection::Refused(Refused::Unavailable))?;
        let this = self.clone();
        let decoding = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.ingest_now(signal, protocol, payload)
        });
        decoding.await.unwrap_or_else(|e| {
            tracing::error!(
                signal = signal.as_str(),
                protocol,
                "OTLP decode failed: {e}"
            );
            Err(Rejection::Refused(Refused::Unavailable))
        })
    }

    /// Walks the bytes (limits, decoded size, nesting), reserves the
    /// decoded size, decodes and hands over; blocking.
    fn ingest_now(
        &self,
        signal: Signal,
        protocol: &'static str,
        payload: Payload,
    ) -> Result<(), Rejection> {
        let consumer = self.consumer(signal, protocol)?;
        if let (Err(refused), Payload::Protobuf(bytes)) = (consumer.has_room(), &payload) {
            // Saturated: refused before decoding, its items counted by a
            // walk over the bytes (JSON is decoded and refused as usual).
            let items = super::protowalk::count_items(signal, bytes).unwrap_or(0);
            return Err(self.refuse(signal, protocol, items, refused));
        }
        let bytes = payload.len();
        let shape = match &payload {
            Payload::Protobuf(body) => {
                super::protowalk::shape(signal, body, self.limits.max_value_depth).map_err(|e| {
                    self.malformed(signal, protocol, bytes, decode::not_protobuf(signal, &e))
                })?
            }
            Payload::Json(body) => super::jsonscan::shape(body, self.limits.max_value_depth),
        };
        if let Some(message) = shape.exceeds(&self.limits) {
            return Err(self.over_limit(signal, protocol, message));
        }
        // A request with too-deep values is decoded from a blanked copy.
        let copy = if shape.too_deep.is_empty() {
            0
        } else {
            bytes as u64
        };
        let reservation = match self
            .budget
            .reserve(shape.decoded_bytes.saturating_add(copy))
        {
            Ok(reservation) => reservation,
            Err(OverBudget::Never { needed, budget }) => {
                let message = format!(
                    "request would take about {} MiB decoded, more than the whole decoded_budget_mib ({} MiB)",
                    needed >> 20,
                    budget >> 20
                );
                return Err(self.over_limit(signal, protocol, message));
            }
            Err(OverBudget::Now(refused)) => {
                self.telemetry.receiver.memory_refused_requests.inc();
                return Err(self.refuse(signal, protocol, shape.items, refused));
            }
        };
        if !shape.too_deep.is_empty() {
            let values = shape.too_deep.len() as u64;
            self.telemetry.receiver.truncated_values.add(values);
            tracing::debug!(
                signal = signal.as_str(),
                protocol,
                values,
                "OTLP attribute values nested deeper than max_attribute_depth truncated"
            );
        }
        let decoded = match payload {
            Payload::Protobuf(body) => decode::from_protobuf(signal, body, &shape.too_deep),
            Payload::Json(body) => decode::from_json(signal, &body, &shape.too_deep),
        };
        let mut received: Received =
            decoded.map_err(|e| self.malformed(signal, protocol, bytes, e))?;
        received.reservation = Some(reservation);
        let items = received.items;
        match consumer.consume(received) {
            Ok(()) => {
                self.telemetry.receiver.accepted.get(signal).add(items);
                tracing::debug!(
                    signal = signal.as_str(),
                    protocol,
                    items,
                    bytes,
                    "OTLP request accepted"
                );
                Ok(())
            }
            Err(refused) => Err(self.refuse(signal, protocol, items, refused)),
        }
    }

    fn malformed(
        &self,
        signal: Signal,
        protocol: &'static str,
        bytes: usize,
        e: DecodeError,
    ) -> Rejection {
        self.telemetry.receiver.malformed_requests.inc();
        tracing::warn!(
            signal = signal.as_str(),
            protocol,
            bytes,
            "OTLP request rejected: {}",
            e.log_message
        );
        Rejection::Malformed(e)
    }

    fn over_limit(&self, signal: Signal, protocol: &'static str, message: String) -> Rejection {
        self.telemetry.receiver.over_limit_requests.inc();
        tracing::warn!(
            signal = signal.as_str(),
            protocol,
            "OTLP request rejected: {message}"
        );
        Rejection::Limit(message)
    }

    fn refuse(
        &self,
        signal: Signal,
        protocol: &'static str,
        items: u64,
        refused: Refused,
    ) -> Rejection {
        self.telemetry.receiver.refused.get(signal).add(items);
        tracing::warn!(
            signal = signal.as_str(),
            protocol,
            items,
            "OTLP request refused: {refused}"
        );
        Rejection::Refused(refused)
    }
}
