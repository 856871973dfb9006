//! Receivers: where data enters the pipeline.

pub mod otlp;
