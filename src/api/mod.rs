//! The management side: health, readiness and the pipeline's own metrics
//! (the operator API and dashboard build on this server).

pub mod config;
pub mod metrics;
pub mod server;
