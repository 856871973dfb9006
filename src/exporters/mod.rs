//! Exporters: where data and events leave the pipeline.
//!
//! `otlp_client` is the one OTLP sender (gRPC or HTTP, retry policy);
//! `otlp_forward` passes received requests on unchanged; `events` turns
//! immune events into OTLP log records and console lines.

pub mod events;
pub mod otlp_client;
pub mod otlp_forward;

use std::time::Duration;

/// After shutdown begins, how long an exporter keeps sending what is queued
/// before it gives up and counts the rest as failed.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
