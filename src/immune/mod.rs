//! The immune core: pure, synchronous, deterministic. Every function takes
//! the time it needs as an argument; what must happen outside leaves as
//! values (events and effects).

pub mod action;
pub mod agent;
pub mod agent_id;
pub mod anomaly;
pub mod baseline;
pub mod clock;
pub mod command;
pub mod config;
pub mod core;
pub mod correlator;
pub mod diagnosis;
pub mod effect;
pub mod episode;
pub mod event;
pub mod fleet;
pub mod healing;
pub mod lifecycle;
pub mod memory;
pub mod metric;
pub mod prompt;
pub mod recency;
pub mod report;
pub mod response;
pub mod sentinel;
pub mod snapshot;
pub mod timing;
pub mod vitals;
pub mod window;

#[cfg(test)]
mod testkit;
