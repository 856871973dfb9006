//! Support for `tests/deploy_examples.rs`: reading the deployment example
//! in `deploy/`, moving its compose network onto loopback, Loki's OTLP
//! mapping, the names a LogQL / PromQL query uses, and the processes and
//! stand-ins the stack test runs.

pub mod compose;
pub mod files;
pub mod grafana;
pub mod localizer;
pub mod logql_check;
pub mod loki_mapping;
pub mod processes;
pub mod queries;
pub mod records;
pub mod stand_ins;
