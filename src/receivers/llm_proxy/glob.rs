//! A tiny glob for agent ids and model names: `*` matches any run of
//! characters (including none), `?` exactly one; everything else literally.
//! Enough for `support-*` or `gpt-4o*`, without a regex engine.

/// Longest pattern accepted, so matching stays cheap on every request.
pub const MAX_GLOB_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    chars: Vec<char>,
    case_insensitive: bool,
}

impl Glob {
    /// A case-sensitive glob (agent ids are exact identities).
    pub fn new(pattern: &str) -> Result<Self, String> {
        Self::build(pattern, false)
    }

    /// A case-insensitive glob (model names: `GPT-4o` must not slip past a
    /// block on `gpt-4o*`).
    pub fn new_case_insensitive(pattern: &str) -> Result<Self, String> {
        Self::build(pattern, true)
    }

    fn build(pattern: &str, case_insensitive: bool) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty pattern; use \"*\" to match everything".to_string());
        }
        let count = pattern.chars().count();
        if count > MAX_GLOB_CHARS {
            return Err(format!(
                "pattern is {count} characters long; at most {MAX_GLOB_CHARS} are allowed"
            ));
        }
        let chars = if case_insensitive {
            pattern.to_lowercase().chars().collect()
        } else {
            pattern.chars().collect()
        };
        Ok(Self {
            text: pattern.to_string(),
            chars,
            case_insensitive,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.case_insensitive {
            let lower: Vec<char> = text.to_lowercase().chars().collect();
            matches(&self.chars, &lower)
        } else {
            let chars: Vec<char> = text.chars().collect();
            matches(&self.chars, &chars)
        }
    }
}

use crate::config::glob::matches;

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).unwrap().matches(text)
    }

    #[test]
    fn star_and_question_mark() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("support-*", "support-eu"));
        assert!(m("support-*", "support-"));
        assert!(!m("support-*", "supportx"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*-bot-*", "eu-bot-7"));
        assert!(m("a*b*c", "aXXbYYbc"));
        assert!(!m("a*b*c", "aXXbYYb"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn case_rules() {
        assert!(!m("gpt-4o*", "GPT-4o-mini"));
        let ci = Glob::new_case_insensitive("gpt-4o*").unwrap();
        assert!(ci.matches("GPT-4O-mini"));
        assert_eq!(ci.as_str(), "gpt-4o*");
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = "*a".repeat(100);
        let text = "a".repeat(5000) + "b";
        assert!(!m(&pattern, &text));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new(&"x".repeat(MAX_GLOB_CHARS + 1)).is_err());
    }
}
