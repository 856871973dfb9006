//! The operators' side: the management REST API under `/api/v1` (fleet,
//! approvals, commands, feedback, events, JSON vitals ingest, the LLM
//! proxy's discovery and policies), health, readiness, the pipeline's own
//! metrics, the OpenAPI document, the dashboard page, and the client the
//! CLI uses to talk to it all.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
mod cursor;
pub mod error;
mod handlers;
pub mod ingest;
pub mod metrics;
pub mod pages;
mod proxy;
mod query;
pub mod server;
pub mod views;
