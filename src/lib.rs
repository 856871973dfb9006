//! agent-immune: an immune system for AI agents, built as an
//! OpenTelemetry-collector-style pipeline.
//!
//! The module layout mirrors the pipeline config: `receivers`, `processors`,
//! `exporters` and `executors` are the components a `[pipelines.*]` table
//! wires together; `immune` is the pure domain core (no I/O, no clocks);
//! `pipeline` is the runtime that carries data between components.

pub mod api;
pub mod bench;
pub mod config;
pub mod escape;
pub mod executors;
pub mod exporters;
pub mod immune;
pub mod listener;
pub mod log_limit;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod runtime;
pub mod simulator;
pub mod state;
pub mod telemetry;
#[doc(hidden)]
pub mod testdata;
