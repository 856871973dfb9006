//! What a connection is doing, for its deadlines: how many requests are in
//! flight (a request is in flight from its head until its response body is
//! sent or dropped), and when the connection last became idle.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// The requests in flight on one connection.
#[derive(Clone)]
pub struct Activity(Arc<watch::Sender<usize>>);

/// Held while one request is in flight.
pub struct InFlight(Arc<watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No complete request head within `read_header_timeout` of the accept.
    NoRequest,
    /// No request in flight for `idle_timeout`.
    Idle,
}

impl Activity {
    pub fn new() -> (Self, watch::Receiver<usize>) {
        let (tx, rx) = watch::channel(0);
        (Self(Arc::new(tx)), rx)
    }

    pub fn begin(&self) -> InFlight {
        self.0.send_modify(|n| *n += 1);
        InFlight(self.0.clone())
    }
}

/// The response body, holding `in_flight` until it is sent or dropped (a
/// streamed answer is still a request in flight).
pub fn hold_until_sent(body: axum::body::Body, in_flight: InFlight) -> axum::body::Body {
    axum::body::Body::new(body.map_frame(move |frame: hyper::body::Frame<Bytes>| {
        let _held = &in_flight;
        frame
    }))
}

/// Resolves when the connection has been without a request too long: at
/// first `first_request` after the accept, then `idle` after the last
/// request ended. Never while a request is in flight.
pub async fn expired(
    mut requests: watch::Receiver<usize>,
    first_request: Duration,
    idle: Duration,
) -> Expired {
    let mut deadline = Instant::now() + first_request;
    let mut reason = Expired::NoRequest;
    loop {
        let idle_now = *requests.borrow() == 0;
        tokio::select! {
            () = sleep_until(deadline), if idle_now => return reason,
            changed = requests.changed() => {
                if changed.is_err() {
                    // The connection's service is gone: so is the connection.
                    std::future::pending::<()>().await;
                }
                // A request began or ended: the idle clock starts again.
                deadline = Instant::now() + idle;
                reason = Expired::Idle;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deadlines_pass_only_without_a_request_in_flight() {
        let first = Duration::from_millis(100);
        let idle = Duration::from_millis(300);
        let (activity, rx) = Activity::new();
        let started = Instant::now();
        assert_eq!(expired(rx.clone(), first, idle).await, Expired::NoRequest);
        assert!(started.elapsed() >= first);

        let watchdog = tokio::spawn(expired(rx, first, idle));
        let request = activity.begin();
        tokio::time::sleep(idle * 2).await;
        assert!(!watchdog.is_finished(), "a request is in flight");
        let ended = Instant::now();
        drop(request);
        assert_eq!(watchdog.await.unwrap(), Expired::Idle);
        assert!(ended.elapsed() >= idle);
    }
}
