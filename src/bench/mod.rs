//! `agent-immune bench`: throughput against Rotel, detection latency and
//! memory per agent, each against the real release binary in its own
//! process, measured from outside through /proc. Not timed tests: numbers
//! to read, on whatever machine runs them.

pub mod cli;
mod events;
mod latency;
mod load;
mod memory;
mod sink;
mod target;
mod throughput;

pub use crate::receivers::otlp::protowalk::count_spans;

/// Wall-clock time in Unix nanoseconds, for span timestamps.
fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
