//! genai processor.
