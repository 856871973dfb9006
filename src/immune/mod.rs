//! The immune core: pure, synchronous, deterministic. Every function takes
//! the time it needs as an argument; effects leave as values (events).

pub mod action;
pub mod agent;
pub mod anomaly;
pub mod baseline;
pub mod config;
pub mod core;
pub mod event;
pub mod lifecycle;
pub mod metric;
pub mod prompt;
pub mod report;
pub mod sentinel;
pub mod vitals;
pub mod window;

#[cfg(test)]
mod testkit;
