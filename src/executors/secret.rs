//! A credential from the config (a bearer token): usable, but no part of
//! it is ever printed by Debug or in logs.

use serde::{Deserialize, Serialize};

/// Longest accepted token; real bearer tokens are far shorter.
pub const MAX_SECRET_LEN: usize = 4096;

#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What logs may show: that there is a token, nothing of it.
    pub fn redacted(&self) -> &'static str {
        "set (redacted)"
    }

    /// Why the value cannot go into an `authorization` header, if it cannot.
    /// Never quotes the value.
    pub fn header_problem(&self) -> Option<String> {
        if self.0.is_empty() {
            return Some("must not be empty (leave the key out for no token)".into());
        }
        if self.0.len() > MAX_SECRET_LEN {
            return Some(format!("longer than {MAX_SECRET_LEN} bytes"));
        }
        if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Some("must be printable ASCII without spaces".into());
        }
        None
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown_in_full() {
        let long = Secret::new("abcdefghijklmnopqrstuvwxyz");
        assert!(!long.redacted().contains("abc"));
        assert_eq!(format!("{long:?}"), "Secret(set (redacted))");
        let short = Secret::new("hunter22");
        assert!(!format!("{short:?}").contains("hu"));
    }

    #[test]
    fn header_problems_do_not_quote_the_value() {
        let bad = Secret::new("two words");
        let problem = bad.header_problem().unwrap();
        assert!(!problem.contains("two"));
        assert!(Secret::new("").header_problem().is_some());
        assert!(Secret::new("tok-123").header_problem().is_none());
    }
}
