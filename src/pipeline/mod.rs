//! The runtime that carries data between components.

pub mod budget;
pub mod consumer;
pub mod detection;
pub mod fleet;
pub mod persist;
pub mod service;
pub mod shard;
pub mod signal_pipeline;
