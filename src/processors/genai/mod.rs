//! genai processor: recognises the LLM, tool and agent spans of the
//! conventions real instrumentations emit (OpenTelemetry GenAI current and
//! legacy, OpenInference, OpenLLMetry/Traceloop) and keeps, per span, only
//! what turn vitals need (`SpanFacts`). The mapping is the one in
//! `shared/fixtures/genai-spans/README.md`.

pub mod config;
pub(crate) mod content;
mod error_type;
mod facts;
mod intern;
mod price;
mod recogniser;
mod scan;
mod value;

pub use facts::{ResourceFacts, SpanClass, SpanFacts};
pub use price::{PriceTable, TokenUsage};
pub use recogniser::{Recogniser, RecogniserStats};
pub use value::MAX_TOKENS;

#[cfg(test)]
mod recogniser_tests;
