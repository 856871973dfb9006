//! Test data shared by unit tests, integration tests, benches and the
//! simulator: the recorded GenAI captures as real OTLP requests, synthetic
//! agent traces, and hand-made spans. Not part of the product's API.

mod event;
mod fixture;
mod kv;
mod span;
mod synthetic;

pub use event::infection_event;
pub use fixture::{Fixture, fixture_paths, fixtures_dir, load_fixture, parse_fixture};
pub use kv::{kv, kv_bool, kv_f64, kv_i64, kv_nested, kv_str, kv_str_array};
pub use span::{failed, request, request_with_resource, span, span_id, trace_id};
pub use synthetic::{AgentTrace, DEFAULT_START, request_of};
