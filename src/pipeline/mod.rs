//! The runtime that carries data between components.

pub mod consumer;
