//! The sending queue's front: bounded in requests and in bytes (the
//! Collector's `sizer: bytes`), so a next hop that stops answering can hold
//! at most `queue_size_mib` of requests here however large each one is.
//!
//! Bytes are held from the moment a request is queued until its send has
//! finished (retries included): a request being retried is still memory.

use super::ForwardItem;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// No room in requests or in bytes: retryable.
    Full,
    /// The exporter has stopped.
    Closed,
}

/// A request on its way to the senders, with the bytes it holds.
pub(super) struct Queued {
    pub item: ForwardItem,
    pub _bytes: OwnedSemaphorePermit,
}

/// The pipeline's handle on one forwarding exporter's queue.
#[derive(Clone)]
pub struct SendingQueue {
    /// The exporter's id, for refusal messages.
    pub exporter: String,
    sender: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    byte_capacity: usize,
}

/// Room reserved for one request, in requests and in bytes.
pub struct Reservation<'a> {
    permit: mpsc::Permit<'a, Queued>,
    bytes: OwnedSemaphorePermit,
}

impl Reservation<'_> {
    pub fn send(self, item: ForwardItem) {
        self.permit.send(Queued {
            item,
            _bytes: self.bytes,
        });
    }
}

/// The senders' end of the queue.
pub(crate) struct QueueReceiver {
    pub(super) rx: mpsc::Receiver<Queued>,
    bytes: Arc<Semaphore>,
    byte_capacity: usize,
}

impl QueueReceiver {
    /// Bytes held by queued and in-flight requests.
    pub(super) fn held_bytes(&self) -> usize {
        self.byte_capacity
            .saturating_sub(self.bytes.available_permits())
    }
}

/// A queue of at most `requests` requests and `byte_capacity` bytes, named
/// `exporter` in refusals.
pub(crate) fn sending_queue(
    exporter: &str,
    requests: usize,
    byte_capacity: usize,
) -> (SendingQueue, QueueReceiver) {
    let (sender, rx) = mpsc::channel(requests);
    let bytes = Arc::new(Semaphore::new(byte_capacity));
    let queue = SendingQueue {
        exporter: exporter.to_string(),
        sender,
        bytes: bytes.clone(),
        byte_capacity,
    };
    let receiver = QueueReceiver {
        rx,
        bytes,
        byte_capacity,
    };
    (queue, receiver)
}

impl SendingQueue {
    /// A cheap look before a request is decoded: closed, or no room left
    /// in requests or bytes.
    pub fn has_room(&self) -> Result<(), QueueRefusal> {
        if self.sender.is_closed() {
            return Err(QueueRefusal::Closed);
        }
        if self.sender.capacity() == 0 || self.bytes.available_permits() == 0 {
            return Err(QueueRefusal::Full);
        }
        Ok(())
    }

    /// Reserves room for a request of `bytes`. A request larger than the
    /// whole byte bound takes all of it (it waits for an empty queue rather
    /// than being refused forever).
    pub fn try_reserve(&self, bytes: usize) -> Result<Reservation<'_>, QueueRefusal> {
        let permit = match self.sender.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => return Err(QueueRefusal::Full),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(QueueRefusal::Closed),
        };
        let wanted = u32::try_from(bytes.min(self.byte_capacity)).unwrap_or(u32::MAX);
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(wanted)
            .map_err(|_| QueueRefusal::Full)?;
        Ok(Reservation { permit, bytes })
    }

    /// Queues `item`, waiting for room (for tests and tools; the pipeline
    /// never waits, it reserves).
    pub async fn send(&self, item: ForwardItem) -> Result<(), QueueRefusal> {
        let wanted = u32::try_from(item.protobuf.len().min(self.byte_capacity)).unwrap_or(u32::MAX);
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(wanted)
            .await
            .map_err(|_| QueueRefusal::Closed)?;
        self.sender
            .send(Queued {
                item,
                _bytes: bytes,
            })
            .await
            .map_err(|_| QueueRefusal::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::consumer::Signal;
    use bytes::Bytes;

    fn item(len: usize) -> ForwardItem {
        ForwardItem {
            signal: Signal::Traces,
            protobuf: Bytes::from(vec![0u8; len]),
            items: 1,
        }
    }

    #[test]
    fn bytes_bound_the_queue_until_the_send_is_done() {
        let (queue, mut receiver) = sending_queue("otlp_forward", 100, 1000);
        queue.try_reserve(600).unwrap().send(item(600));
        assert_eq!(receiver.held_bytes(), 600);
        // Room in requests, not in bytes: refused, retryable.
        assert_eq!(queue.try_reserve(500).err(), Some(QueueRefusal::Full));
        queue.try_reserve(400).unwrap().send(item(400));
        assert_eq!(queue.has_room(), Err(QueueRefusal::Full));
        // Taken by a sender: still held; done (dropped): released.
        let taken = receiver.rx.try_recv().unwrap();
        assert_eq!(receiver.held_bytes(), 1000);
        drop(taken);
        assert_eq!(receiver.held_bytes(), 400);
        assert_eq!(queue.has_room(), Ok(()));
    }

    #[test]
    fn a_request_larger_than_the_bound_waits_for_an_empty_queue() {
        let (queue, mut receiver) = sending_queue("otlp_forward", 100, 1000);
        queue.try_reserve(1).unwrap().send(item(1));
        assert_eq!(queue.try_reserve(5000).err(), Some(QueueRefusal::Full));
        drop(receiver.rx.try_recv().unwrap());
        queue.try_reserve(5000).unwrap().send(item(5000));
        assert_eq!(receiver.held_bytes(), 1000);
        receiver.rx.close();
        assert_eq!(queue.try_reserve(0).err(), Some(QueueRefusal::Closed));
    }
}
