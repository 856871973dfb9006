//! One generic pipeline for every signal: what a receiver received is queued,
//! as the original protobuf bytes, for every forwarding exporter, and (for a
//! traces pipeline with detection) recognised and routed to the detection
//! shards. A request is taken whole or refused whole with a retryable error:
//! queue space is reserved everywhere before anything is sent.

use super::consumer::{Consumer, Received, Refused};
use super::detection::DetectionRouter;
use crate::exporters::otlp_forward::ForwardItem;
use crate::telemetry::Telemetry;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A forwarding exporter's queue, with the name used in refusal messages.
#[derive(Clone)]
pub struct ForwardQueue {
    pub exporter: String,
    pub sender: mpsc::Sender<ForwardItem>,
}

pub struct SignalPipeline {
    name: String,
    forward: Vec<ForwardQueue>,
    detection: Option<DetectionRouter>,
    telemetry: Arc<Telemetry>,
}

impl SignalPipeline {
    pub fn new(
        name: String,
        forward: Vec<ForwardQueue>,
        detection: Option<DetectionRouter>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Self {
            name,
            forward,
            detection,
            telemetry,
        }
    }
}

impl Consumer for SignalPipeline {
    fn consume(&self, received: Received) -> Result<(), Refused> {
        let mut permits = Vec::with_capacity(self.forward.len());
        for queue in &self.forward {
            match queue.sender.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(mpsc::error::TrySendError::Full(())) => {
                    self.telemetry.forward.enqueue_failed.add(received.items);
                    return Err(Refused::Backpressure(format!(
                        "pipeline {}: sending queue of exporter {} is full",
                        self.name, queue.exporter
                    )));
                }
                Err(mpsc::error::TrySendError::Closed(())) => return Err(Refused::Unavailable),
            }
        }
        // Detection reserves its own queue space (or drops with a counter,
        // as configured) before anything is committed.
        let detection = match (&self.detection, &received.traces) {
            (Some(router), Some(request)) => Some(router.prepare(request)?),
            _ => None,
        };
        let item = ForwardItem {
            signal: received.signal,
            protobuf: received.protobuf,
            items: received.items,
        };
        for permit in permits {
            permit.send(item.clone());
        }
        if let Some(prepared) = detection {
            prepared.send();
        }
        Ok(())
    }
}
