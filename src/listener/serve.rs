//! The accept loop every listener runs: a slot per connection, deadlines
//! per connection, accept errors backed off, graceful shutdown.

use super::activity::{Activity, Expired, expired, hold_until_sent};
use super::config::ListenerConfig;
use super::metrics::ListenerMetrics;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// First pause after a failed accept; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// HTTP/2 keep-alive: a ping this often on a connection with requests in
/// flight, and the connection is closed when one goes unanswered this long.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection told to close (HTTP/2 GOAWAY) is dropped after this.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A bound listener with its limits, not yet serving.
pub struct HttpListener {
    tcp: TcpListener,
    config: ListenerConfig,
    metrics: Arc<ListenerMetrics>,
    builder: auto::Builder<TokioExecutor>,
}

impl HttpListener {
    /// HTTP/1.1 and HTTP/2 (h2c, by preface) on `tcp`.
    pub fn new(tcp: TcpListener, config: &ListenerConfig, metrics: Arc<ListenerMetrics>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Head deadlines are the connection's own (see `Connection::run`):
        // hyper's would also cut idle keep-alive connections at the header
        // timeout, and only for HTTP/1.
        builder.http1().header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        metrics
            .max_connections
            .set(i64::try_from(config.max_connections).unwrap_or(i64::MAX));
        Self {
            tcp,
            config: config.clone(),
            metrics,
            builder,
        }
    }

    /// HTTP/2 only (gRPC), with these flow-control windows.
    pub fn http2_only(mut self, stream_window: u32, connection_window: u32) -> Self {
        self.builder = self.builder.http2_only();
        self.builder
            .http2()
            .initial_stream_window_size(stream_window)
            .initial_connection_window_size(connection_window);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves `router` until `shutdown` resolves, then lets open
    /// connections finish their requests and returns once all are closed.
    /// Requests carry the peer as `ConnectInfo<SocketAddr>`.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        let builder = Arc::new(self.builder);
        let closing = CancellationToken::new();
        let mut connections = JoinSet::new();
        let mut backoff = MIN_BACKOFF;
        tokio::pin!(shutdown);
        loop {
            // A slot first: at the cap, new connections wait in the
            // kernel's backlog, costing no descriptor, until one closes.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    self.metrics.deferred_connections.inc();
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                        Some(_) = connections.join_next() => continue,
                        () = &mut shutdown => break,
                    }
                }
            };
            let (stream, peer) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = MIN_BACKOFF;
                        accepted
                    }
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        self.metrics.accept_errors.inc();
                        if backoff == MIN_BACKOFF {
                            tracing::warn!(
                                listener = %self.metrics.name,
                                "accept error: {e}; retrying with back-off (counted in agent_immune_listener_accept_errors)"
                            );
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = &mut shutdown => break,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
                Some(_) = connections.join_next() => continue,
                () = &mut shutdown => break,
            };
            self.metrics.open_connections.add(1);
            let connection = Connection {
                builder: builder.clone(),
                router: router.clone(),
                config: self.config.clone(),
                metrics: self.metrics.clone(),
                closing: closing.clone(),
                _slot: slot,
            };
            connections.spawn(connection.run(stream, peer));
        }
        closing.cancel();
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// Errors of one connection that was already gone when accepted; the
/// listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// One accepted connection; counted open from the accept until it is
/// dropped (closed, or aborted with the server).
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    config: ListenerConfig,
    metrics: Arc<ListenerMetrics>,
    closing: CancellationToken,
    /// The listener's slot, held until the connection closes.
    _slot: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.metrics.open_connections.add(-1);
    }
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        // Without TCP_NODELAY a response whose head and body go out in two
        // writes waits ~40 ms for the client's delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let (activity, requests) = Activity::new();
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = activity.begin();
            request.extensions_mut().insert(ConnectInfo(peer));
            let call = router.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = call.await?;
                Ok::<_, Infallible>(response.map(|body| hold_until_sent(body, in_flight)))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let deadline = expired(
            requests,
            self.config.read_header_timeout,
            self.config.idle_timeout,
        );
        tokio::pin!(deadline);
        let mut shutting_down = false;
        let outcome = loop {
            tokio::select! {
                outcome = conn.as_mut() => break outcome,
                reason = &mut deadline => {
                    match reason {
                        // Nothing worth a goodbye: drop it.
                        Expired::NoRequest => {
                            self.metrics.header_timeouts.inc();
                            break Ok(());
                        }
                        // Say goodbye (HTTP/2 GOAWAY), briefly.
                        Expired::Idle => {
                            self.metrics.idle_timeouts.inc();
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                            break Ok(());
                        }
                    }
                }
                () = self.closing.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = outcome {
            tracing::debug!(listener = %self.metrics.name, %peer, "connection closed: {e}");
        }
    }
}
