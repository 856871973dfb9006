//! A credential from the config (a bearer token): usable, but never printed
//! in full by Debug or in logs.

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

    /// What logs may show: the first 4 characters of a long token, nothing
    /// of a short one (4 characters of an 8-character token is half of it).
    pub fn redacted(&self) -> String {
        if self.0.chars().count() >= 16 {
            let prefix: String = self.0.chars().take(4).collect();
            format!("{prefix}…")
        } else {
            "…".to_string()
        }
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
        assert_eq!(long.redacted(), "abcd…");
        assert_eq!(format!("{long:?}"), "Secret(abcd…)");
        let short = Secret::new("hunter22");
        assert_eq!(short.redacted(), "…");
        assert!(!format!("{short:?}").contains("hunter"));
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
