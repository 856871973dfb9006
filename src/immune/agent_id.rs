//! What an agent id is, whichever way it arrived (OTLP, JSON ingest, the
//! LLM proxy's `X-Agent-ID`, an API path): at most [`MAX_AGENT_ID_CHARS`]
//! characters, no control characters, not only whitespace, and trimmed of
//! surrounding whitespace. The same name therefore names the same agent on
//! every path. Characters, not bytes, so the OpenAPI document can state the
//! rule exactly (`maxLength` counts characters).
//!
//! Sources that can be answered with an error ([`parse`]) refuse a name
//! that is not one; sources that cannot refuse a single name (a span's
//! `service.name`) take [`normalise`]: control characters replaced by
//! U+FFFD, cut at a character boundary. A name [`parse`] accepts is one
//! [`normalise`] leaves as it is.

use super::core::MAX_AGENT_ID_LEN;
use std::borrow::Cow;

/// Longest agent id, in characters (before trimming).
pub const MAX_AGENT_ID_CHARS: usize = 128;
// Any id the rule accepts is one the core monitors.
const _: () = assert!(MAX_AGENT_ID_CHARS * 4 <= MAX_AGENT_ID_LEN);

/// Shown in place of a control character.
const REPLACEMENT: char = '\u{FFFD}';

/// Why a name is not an agent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AgentIdError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {MAX_AGENT_ID_CHARS} characters")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// The agent id `raw` names (trimmed), or why it names none.
pub fn parse(raw: &str) -> Result<&str, AgentIdError> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(AgentIdError::Empty);
    }
    if raw.chars().nth(MAX_AGENT_ID_CHARS).is_some() {
        return Err(AgentIdError::TooLong);
    }
    if raw.chars().any(char::is_control) {
        return Err(AgentIdError::ControlCharacter);
    }
    Ok(id)
}

/// The agent id closest to `raw`: trimmed, control characters replaced,
/// cut to [`MAX_AGENT_ID_CHARS`]; `None` when nothing is left.
pub fn normalise(raw: &str) -> Option<Cow<'_, str>> {
    match parse(raw) {
        Ok(id) => return Some(Cow::Borrowed(id)),
        Err(AgentIdError::Empty) => return None,
        Err(_) => {}
    }
    let mut id: String = raw
        .trim()
        .chars()
        .take(MAX_AGENT_ID_CHARS)
        .map(|c| if c.is_control() { REPLACEMENT } else { c })
        .collect();
    // Cutting can leave whitespace at the end.
    let kept = id.trim_end().len();
    id.truncate(kept);
    Some(Cow::Owned(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_trims_and_refuses_what_is_no_id() {
        assert_eq!(parse("  billing\u{3000}"), Ok("billing"));
        assert_eq!(parse("billing\t"), Err(AgentIdError::ControlCharacter));
        assert_eq!(parse(" \t "), Err(AgentIdError::Empty));
        assert_eq!(
            parse(&"é".repeat(MAX_AGENT_ID_CHARS)),
            Ok(&*"é".repeat(MAX_AGENT_ID_CHARS))
        );
        assert_eq!(
            parse(&"x".repeat(MAX_AGENT_ID_CHARS + 1)),
            Err(AgentIdError::TooLong)
        );
        assert_eq!(parse("a\nb"), Err(AgentIdError::ControlCharacter));
        assert_eq!(parse("a\u{9b}b"), Err(AgentIdError::ControlCharacter));
    }

    #[test]
    fn normalise_replaces_controls_and_cuts_at_the_limit() {
        let forged = "evil\n2099-01-01T00:00:00.000Z WARN  agent=billing FORGED\x1b[31m";
        let id = normalise(forged).unwrap();
        assert!(!id.chars().any(char::is_control));
        assert!(id.starts_with("evil\u{FFFD}2099") && id.ends_with("FORGED\u{FFFD}[31m"));
        let long = "é".repeat(MAX_AGENT_ID_CHARS * 3);
        assert_eq!(normalise(&long).unwrap(), "é".repeat(MAX_AGENT_ID_CHARS));
        assert_eq!(normalise("  "), None);
    }

    #[test]
    fn what_parse_accepts_normalise_keeps() {
        for raw in ["billing", " planner-1 ", "ünïcode agent", "a/b:c"] {
            assert_eq!(normalise(raw).as_deref(), parse(raw).ok());
        }
        // And a normalised id is always one parse accepts, unchanged.
        for raw in ["x\ny", &"é ".repeat(600), "\u{7f}z", " \u{85}a"] {
            let id = normalise(raw).unwrap();
            assert_eq!(parse(&id), Ok(&*id));
        }
    }
}
