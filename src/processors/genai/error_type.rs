//! One name per kind of failure, whatever the instrumentation wrote:
//! `RateLimitError` (Traceloop), `<class 'openai.RateLimitError'>`
//! (util-genai 1.1b0) and `openai.RateLimitError` (an OpenInference
//! exception event) are the same error to a baseline.

/// Longest error type kept.
pub const MAX_ERROR_TYPE_BYTES: usize = 64;

/// The bare type name: the `<class '...'>` wrapper and the module path
/// removed. `None` when nothing is left.
pub fn normalise(raw: &str) -> Option<&str> {
    let mut s = raw.trim();
    if let Some(inner) = s
        .strip_prefix("<class '")
        .and_then(|r| r.strip_suffix("'>"))
    {
        s = inner;
    }
    if let Some((_, last)) = s.rsplit_once('.')
        && !last.is_empty()
    {
        s = last;
    }
    let s = super::value::truncated(s, MAX_ERROR_TYPE_BYTES);
    (!s.is_empty()).then_some(s)
}

/// The HTTP status in an OpenAI-SDK style message, `Error code: 429 - {...}`.
pub fn status_in_message(message: &str) -> Option<u16> {
    let (_, rest) = message.split_once("Error code: ")?;
    let digits = rest.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if rest.as_bytes().get(3).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    digits.parse().ok().filter(|s| (100..=599).contains(s))
}

/// An exception class name leading a status description, as in
/// `TimeoutError: time service timed out`.
pub fn type_leading_message(message: &str) -> Option<&str> {
    let (head, _) = message.split_once(':')?;
    let head = head.trim();
    let looks_like_type = !head.is_empty()
        && head.len() <= MAX_ERROR_TYPE_BYTES
        && head.starts_with(|c: char| c.is_ascii_alphabetic())
        && head
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if looks_like_type {
        normalise(head)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_rate_limit_is_one_type() {
        for raw in [
            "RateLimitError",
            "<class 'openai.RateLimitError'>",
            "openai.RateLimitError",
            " openai.RateLimitError ",
        ] {
            assert_eq!(normalise(raw), Some("RateLimitError"), "{raw}");
        }
        assert_eq!(normalise("429"), Some("429"));
        assert_eq!(normalise("_OTHER"), Some("_OTHER"));
        assert_eq!(normalise(""), None);
        assert_eq!(normalise("<class ''>"), None);
        assert_eq!(normalise("trailing."), Some("trailing."));
        assert!(normalise(&"x".repeat(1000)).unwrap().len() <= MAX_ERROR_TYPE_BYTES);
    }

    #[test]
    fn status_codes_are_found_in_sdk_messages() {
        assert_eq!(
            status_in_message("Error code: 429 - {'error': {'message': 'Rate limit'}}"),
            Some(429)
        );
        assert_eq!(
            status_in_message("RateLimitError: Error code: 500 - x"),
            Some(500)
        );
        assert_eq!(status_in_message("Error code: 42"), None);
        assert_eq!(status_in_message("Error code: 4290"), None);
        assert_eq!(status_in_message("Error code: 999"), None);
        assert_eq!(status_in_message("no code"), None);
        assert_eq!(status_in_message("Error code: é12"), None);
    }

    #[test]
    fn a_leading_class_name_is_a_type_but_prose_is_not() {
        assert_eq!(
            type_leading_message("TimeoutError: time service timed out"),
            Some("TimeoutError")
        );
        assert_eq!(
            type_leading_message("Error running tool (non-fatal): {'tool_name': 'get_time'}"),
            None
        );
        assert_eq!(type_leading_message("no colon"), None);
    }
}
