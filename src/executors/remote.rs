//! The keys every target reached over the network shares (`http_control`,
//! `agent_control_grpc`): a required address, an optional bearer token and
//! a timeout, validated the same way with the same messages.

use super::http_control::validate_timeout;
use super::secret::Secret;
use crate::config::ConfigIssue;
use std::time::Duration;

/// Where a remote target is reached, as written in its table.
pub(crate) struct RemoteAddress<'a> {
    /// The key that holds it (`base_url`, `endpoint`).
    pub key: &'static str,
    pub value: &'a str,
    /// Quoted when the key is missing, so the fix is one copy away.
    pub example: &'static str,
}

/// The issues with a remote target's shared keys: the address (required,
/// then checked by `parse`), `bearer_token` and `timeout`.
pub(crate) fn validate_remote<T>(
    address: RemoteAddress<'_>,
    parse: impl FnOnce(&str) -> Result<T, String>,
    bearer_token: Option<&Secret>,
    timeout: Duration,
) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    if address.value.is_empty() {
        let example = address.example;
        issues.push(ConfigIssue::new(
            address.key,
            format!("is required, e.g. {example:?}"),
        ));
    } else if let Err(problem) = parse(address.value) {
        issues.push(ConfigIssue::new(address.key, problem));
    }
    if let Some(problem) = bearer_token.and_then(Secret::header_problem) {
        issues.push(ConfigIssue::new("bearer_token", problem));
    }
    issues.extend(validate_timeout(timeout));
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(value: &str) -> RemoteAddress<'_> {
        RemoteAddress {
            key: "endpoint",
            value,
            example: "http://127.0.0.1:1",
        }
    }

    #[test]
    fn a_missing_address_quotes_the_example_and_skips_parsing() {
        let issues = validate_remote(
            address(""),
            |_| -> Result<(), String> { panic!("an empty address is not parsed") },
            None,
            Duration::from_secs(1),
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "endpoint");
        assert_eq!(
            issues[0].message,
            "is required, e.g. \"http://127.0.0.1:1\""
        );
    }

    #[test]
    fn each_bad_key_is_named_in_order() {
        let token = Secret::new("two words");
        let issues = validate_remote(
            address("x"),
            |_| Err::<(), _>("bad address".to_string()),
            Some(&token),
            Duration::ZERO,
        );
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["endpoint", "bearer_token", "timeout"]);
        assert_eq!(issues[0].message, "bad address");
        let good = validate_remote(address("x"), |_| Ok(()), None, Duration::from_secs(1));
        assert!(good.is_empty());
    }
}
