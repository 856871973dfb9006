//! Pipeline configuration (TOML, modelled on the Collector's YAML).
//!
//! Each component's config type lives next to the component; this module
//! only holds what they share and the top-level document.

pub mod document;
pub mod duration;
pub mod env;
pub mod glob;
pub mod service;

/// One problem found while validating a component's config: the key (relative
/// to the component's table) and what is wrong with it. The loader turns it
/// into an error naming the file, line and full key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
