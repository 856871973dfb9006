//! What both protocols do once a request is read: find the signal's
//! consumer, decode, hand over, and count the outcome.

use super::decode::{self, DecodeError};
use crate::pipeline::consumer::{Consumer, Received, Refused, Signal};
use crate::telemetry::Telemetry;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

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
pub enum Payload<'a> {
    Protobuf(Bytes),
    Json(&'a [u8]),
}

/// Why a request was not accepted.
#[derive(Debug)]
pub enum Rejection {
    Malformed(DecodeError),
    Refused(Refused),
}

/// Shared by the gRPC and HTTP servers.
pub struct Ingest {
    consumers: Consumers,
    telemetry: Arc<Telemetry>,
}

impl Ingest {
    pub fn new(consumers: Consumers, telemetry: Arc<Telemetry>) -> Self {
        Self {
            consumers,
            telemetry,
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

    /// Counts a request rejected before decoding (unreadable body, bad gzip).
    pub fn count_malformed(&self) {
        self.telemetry.receiver.malformed_requests.inc();
    }

    /// Decodes the payload and hands it to the signal's consumer.
    pub fn ingest(
        &self,
        signal: Signal,
        protocol: &'static str,
        payload: Payload<'_>,
    ) -> Result<(), Rejection> {
        let consumer = self.consumer(signal, protocol)?;
        if let (Err(refused), Payload::Protobuf(bytes)) = (consumer.has_room(), &payload) {
            // Saturated: refused before decoding, its items counted by a
            // walk over the bytes (JSON is decoded and refused as usual).
            let items = super::protowalk::count_items(signal, bytes).unwrap_or(0);
            return Err(self.refuse(signal, protocol, items, refused));
        }
        let (bytes, decoded) = match payload {
            Payload::Protobuf(bytes) => (bytes.len(), decode::from_protobuf(signal, bytes)),
            Payload::Json(body) => (body.len(), decode::from_json(signal, body)),
        };
        let received: Received = decoded.map_err(|e| {
            self.telemetry.receiver.malformed_requests.inc();
            tracing::warn!(
                signal = signal.as_str(),
                protocol,
                bytes,
                "OTLP request rejected: {}",
                e.log_message
            );
            Rejection::Malformed(e)
        })?;
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
