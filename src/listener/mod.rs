//! Every HTTP and gRPC listener (OTLP/HTTP, OTLP/gRPC, the management API,
//! the LLM proxy) accepts through this one layer, so none of them can be
//! held open by clients that connect and say nothing, or trickle headers:
//!
//! - a cap on concurrent connections per listener: a connection holds a
//!   slot until it closes; at the cap the listener stops accepting and new
//!   connections wait in the kernel's backlog (they cost the process no file
//!   descriptor there, and are served as soon as a slot frees);
//! - a deadline for the first request's head (`read_header_timeout`), which
//!   for HTTP/2 includes the connection preface, and an `idle_timeout` for
//!   connections with no request in flight (a head still arriving is not in
//!   flight); HTTP/2 keep-alive pings find dead peers under long requests;
//! - accept errors (out of file descriptors) are counted and retried after
//!   a short back-off, never spun on and never fatal;
//! - at start the soft file-descriptor limit is raised to the hard one and
//!   the caps are fitted below it, the API keeping its own share, so that
//!   no listener can starve the others (or `/healthz`) of descriptors.

mod activity;
pub mod config;
pub mod fd_limit;
pub mod metrics;
mod serve;

pub use config::ListenerConfig;
pub use metrics::{ListenerMetrics, ListenerRegistry};
pub use serve::HttpListener;
