//! Processors: genai (span -> LLM/tool/agent call), turns (trace -> turn
//! vitals), immune (vitals -> detection and response).

pub mod genai;
pub mod turns;
