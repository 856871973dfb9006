//! turns processor: assembles the span facts of each trace into agent
//! turns and emits one `Vitals` per turn (DESIGN.md "Vitals").

mod assembler;
pub mod config;
mod turn;

pub use assembler::{TurnAssembler, TurnCounters};
pub use turn::turns_of_trace;

#[cfg(test)]
mod tests;
