//! Receivers: where data enters the pipeline.

pub mod llm_proxy;
pub mod otlp;
