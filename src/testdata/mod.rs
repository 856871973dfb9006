//! Test data shared by unit tests, integration tests, benches and the
//! simulator: the recorded GenAI captures as real OTLP requests, and
//! synthetic agent traces. Not part of the product's API.

mod fixture;
mod kv;
mod synthetic;

pub use fixture::{Fixture, fixture_paths, fixtures_dir, load_fixture, parse_fixture};
pub use kv::{kv, kv_bool, kv_f64, kv_i64, kv_str, kv_str_array};
pub use synthetic::{AgentTrace, DEFAULT_START, request_of};
