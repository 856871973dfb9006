//! turns processor.
