//! One generic pipeline for every signal: what a receiver received is queued,
//! as the original protobuf bytes, for every forwarding exporter, and (for a
//! traces pipeline with detection) recognised and routed to the detection
//! shards. A request is taken whole or refused whole with a retryable error:
//! queue space is reserved everywhere before anything is sent.

use super::consumer::{Consumer, Received, Refused};
use super::detection::DetectionRouter;
use crate::exporters::otlp_forward::{ForwardItem, QueueRefusal, SendingQueue};
use crate::telemetry::Telemetry;
use std::sync::Arc;

pub struct SignalPipeline {
    name: String,
    forward: Vec<SendingQueue>,
    detection: Option<DetectionRouter>,
    telemetry: Arc<Telemetry>,
}

impl SignalPipeline {
    pub fn new(
        name: String,
        forward: Vec<SendingQueue>,
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

impl SignalPipeline {
    fn refusal(&self, queue: &SendingQueue, refusal: QueueRefusal) -> Refused {
        match refusal {
            QueueRefusal::Full => Refused::Backpressure(format!(
                "pipeline {}: sending queue of exporter {} is full",
                self.name, queue.exporter
            )),
            QueueRefusal::Closed => Refused::Unavailable,
        }
    }
}

impl Consumer for SignalPipeline {
    fn has_room(&self) -> Result<(), Refused> {
        for queue in &self.forward {
            queue.has_room().map_err(|r| self.refusal(queue, r))?;
        }
        match &self.detection {
            Some(router) => router.has_room(),
            None => Ok(()),
        }
    }

    fn consume(&self, mut received: Received) -> Result<(), Refused> {
        let mut permits = Vec::with_capacity(self.forward.len());
        for queue in &self.forward {
            match queue.try_reserve(received.protobuf.len()) {
                Ok(permit) => permits.push(permit),
                Err(refusal) => {
                    if refusal == QueueRefusal::Full {
                        self.telemetry.forward.enqueue_failed.add(received.items);
                    }
                    return Err(self.refusal(queue, refusal));
                }
            }
        }
        // Detection reserves its own queue space (or drops with a counter,
        // as configured) before anything is committed.
        // The budget reservation goes with the span facts to the shards;
        // without detection it is released when this request is done.
        let detection = match (&self.detection, &received.traces) {
            (Some(router), Some(request)) => {
                Some(router.prepare(request, received.reservation.take())?)
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::service::WhenFull;
    use crate::exporters::otlp_forward::sending_queue;
    use crate::processors::genai::Recogniser;
    use crate::processors::genai::config::GenaiConfig;
    use tokio::sync::mpsc;

    /// A pipeline whose detection shard is full, with `forward_room` (0 or 1)
    /// room in its forwarding queue; the receivers keep the queues open.
    fn pipeline(forward_room: usize, when_full: WhenFull) -> (SignalPipeline, impl Sized) {
        let telemetry = Arc::new(Telemetry::default());
        let (queue, forward_rx) = sending_queue("otlp_forward", 1, 1024);
        if forward_room == 0 {
            queue.try_reserve(0).unwrap().send(ForwardItem {
                signal: crate::pipeline::consumer::Signal::Traces,
                protobuf: bytes::Bytes::new(),
                items: 0,
            });
        }
        let (shard, shard_rx) = mpsc::channel(1);
        shard.try_send(Default::default()).ok();
        let router = DetectionRouter::new(
            Arc::new(Recogniser::new(&GenaiConfig::default())),
            vec![shard],
            when_full,
            telemetry.clone(),
        );
        let pipeline = SignalPipeline::new("traces".into(), vec![queue], Some(router), telemetry);
        (pipeline, (forward_rx, shard_rx))
    }

    #[test]
    fn room_is_looked_at_before_decoding_in_every_queue() {
        // The detection shard is full: refused when refusing, not when
        // dropping detection input.
        let (p, _rx) = pipeline(1, WhenFull::Refuse);
        let refused = p.has_room().unwrap_err();
        assert_eq!(
            refused,
            Refused::Backpressure("detection queue is full".into())
        );
        let (p, _rx) = pipeline(1, WhenFull::Drop);
        assert_eq!(p.has_room(), Ok(()));
        // A full forwarding queue refuses whatever detection does.
        let (p, _rx) = pipeline(0, WhenFull::Drop);
        let refused = p.has_room().unwrap_err();
        assert!(
            refused.to_string().contains("exporter otlp_forward"),
            "{refused}"
        );
    }
}
