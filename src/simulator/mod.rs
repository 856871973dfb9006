//! A simulated agent fleet: realistic OTLP GenAI traces of many agents,
//! each with its own personality and noise, with infections injected on a
//! schedule, and a control API through which agent-immune quarantines and
//! heals them (`agent-immune simulate`).

mod agent;
pub mod cli;
mod control;
pub mod demo;
mod driver;
mod fleet;
mod handle;
mod injection;
mod options;
mod personality;
mod random;

pub use agent::SimAgent;
pub use driver::Report;
pub use fleet::{AgentStatus, ControlCall};
pub use handle::Simulator;
pub use injection::{InfectionKind, Injection, Target};
pub use options::SimulatorOptions;
pub use personality::Personality;
pub use random::Rng;
