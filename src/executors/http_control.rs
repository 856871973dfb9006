//! `[executors.http_control]`: the agent's own HTTP control API.
//! `POST {base_url}/control/<action>` (reset-memory, rollback-prompt,
//! reduce-autonomy, revoke-tools, reset-agent, quarantine, release, drain)
//! with a JSON body `{agent_id, action, diagnosis, reason, event_id,
//! parameters}` and an optional bearer token; any 2xx is success.

use super::remote::{RemoteAddress, validate_remote};
use super::request::{ActionOutcome, ActionRequest, MAX_MESSAGE_CHARS, truncate};
use super::secret::Secret;
use super::target::{DEFAULT_TIMEOUT, EnforcementTarget, OutcomeFuture};
use crate::config::ConfigIssue;
use crate::immune::action::Action;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Most of an answer's body that is read (the rest is discarded).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most of an answer's body quoted in the outcome.
const MAX_BODY_CHARS: usize = 200;
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// How much later than the target's timeout the client gives up by itself.
pub(crate) const BACKSTOP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpControlConfig {
    /// Base URL of the agent's control API, e.g. "http://127.0.0.1:9000"
    /// (actions go to `{base_url}/control/<action>`). Required.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <token>`; use `${env:VAR}`. Never
    /// logged beyond its first characters. Default none.
    pub bearer_token: Option<Secret>,
    /// Limit on one call, connection included. Default "10s".
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
}

impl Default for HttpControlConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            bearer_token: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl HttpControlConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let base_url = RemoteAddress {
            key: "base_url",
            value: &self.base_url,
            example: "http://127.0.0.1:9000",
        };
        validate_remote(
            base_url,
            parse_base_url,
            self.bearer_token.as_ref(),
            self.timeout,
        )
    }
}

/// Shared by every target with a `timeout` key.
pub(crate) fn validate_timeout(timeout: Duration) -> Option<ConfigIssue> {
    (timeout.is_zero() || timeout > MAX_TIMEOUT).then(|| {
        ConfigIssue::new(
            "timeout",
            format!(
                "must be between 1ms and {}",
                humantime::format_duration(MAX_TIMEOUT)
            ),
        )
    })
}

fn parse_base_url(base_url: &str) -> Result<reqwest::Url, String> {
    let url =
        reqwest::Url::parse(base_url).map_err(|e| format!("invalid URL {base_url:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // It would show in every message and log line; tokens go in bearer_token.
        return Err("must not hold credentials (use bearer_token)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(url)
}

/// The path segment for an action: `reset_memory` → `reset-memory`.
pub fn action_path(action: Action) -> String {
    action.as_str().replace('_', "-")
}

/// The JSON body of a control call.
#[derive(Debug, Serialize)]
struct ControlBody<'a> {
    agent_id: &'a str,
    action: &'static str,
    diagnosis: Option<&'a str>,
    reason: &'a str,
    event_id: &'a str,
    parameters: &'a std::collections::BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct HttpControlTarget {
    id: String,
    base_url: String,
    bearer_token: Option<Secret>,
    timeout: Duration,
    client: reqwest::Client,
}

impl HttpControlTarget {
    pub fn new(id: impl Into<String>, config: &HttpControlConfig) -> Result<Self, String> {
        let id = id.into();
        parse_base_url(&config.base_url)?;
        let client = reqwest::Client::builder()
            // A redirect could carry the token elsewhere; a control API
            // answers where it is asked.
            .redirect(reqwest::redirect::Policy::none())
            // A backstop only: run_with_timeout cuts the call at `timeout`
            // first, so the outcome says it timed out in one consistent way.
            .timeout(config.timeout.saturating_add(BACKSTOP))
            .user_agent(concat!("agent-immune/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        tracing::debug!(
            target_id = %id,
            base_url = %config.base_url,
            bearer_token = config.bearer_token.as_ref().map_or("none", Secret::redacted),
            "http_control target ready"
        );
        Ok(Self {
            id,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            bearer_token: config.bearer_token.clone(),
            timeout: config.timeout,
            client,
        })
    }

    async fn call(&self, request: &ActionRequest) -> ActionOutcome {
        let url = format!("{}/control/{}", self.base_url, action_path(request.action));
        let body = ControlBody {
            agent_id: &request.agent_id,
            action: request.action.as_str(),
            diagnosis: request.diagnosis.as_deref(),
            reason: &request.reason,
            event_id: &request.event_id,
            parameters: &request.parameters,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(e) => return ActionOutcome::failed(&self.id, format!("cannot encode body: {e}")),
        };
        let mut builder = self
            .client
            .post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = &self.bearer_token {
            builder = builder.bearer_auth(token.expose());
        }
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                // The URL is already in the message; the cause is what matters.
                let e = e.without_url();
                return ActionOutcome::failed(
                    &self.id,
                    format!("POST {url} failed: {}", error_chain(&e)),
                );
            }
        };
        let status = response.status();
        let body = read_capped(&mut response).await;
        let text = truncate(String::from_utf8_lossy(&body).trim(), MAX_BODY_CHARS);
        if status.is_success() {
            let message = if text.is_empty() {
                format!("POST {url}: {status}")
            } else {
                format!("POST {url}: {status}: {text}")
            };
            ActionOutcome::ok(&self.id, message)
        } else {
            let message = if text.is_empty() {
                format!("POST {url} answered {status}")
            } else {
                format!("POST {url} answered {status}: {text}")
            };
            ActionOutcome::failed(&self.id, truncate(&message, MAX_MESSAGE_CHARS))
        }
    }
}

/// Reads at most `MAX_BODY_BYTES` of the body; a body that fails midway
/// keeps what was read.
async fn read_capped(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// reqwest's top-level message is often just "error sending request"; the
/// cause (connection refused, timed out) is what an operator needs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl EnforcementTarget for HttpControlTarget {
    fn id(&self) -> &str {
        &self.id
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn execute<'a>(&'a self, request: &'a ActionRequest) -> OutcomeFuture<'a> {
        Box::pin(self.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_kebab_case() {
        assert_eq!(action_path(Action::ResetMemory), "reset-memory");
        assert_eq!(action_path(Action::Quarantine), "quarantine");
    }

    #[test]
    fn validation_names_each_key() {
        let cfg: HttpControlConfig = toml::from_str(
            r#"base_url = "ftp://x"
               bearer_token = "has space"
               timeout = "0s""#,
        )
        .unwrap();
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["base_url", "bearer_token", "timeout"]);
        let keys: Vec<_> = HttpControlConfig::default()
            .validate()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys, ["base_url"]);
        assert!(toml::from_str::<HttpControlConfig>("url = \"http://x\"").is_err());
        let with_password = HttpControlConfig {
            base_url: "http://ops:hunter2@agent:9000".into(),
            ..Default::default()
        };
        let issue = &with_password.validate()[0];
        assert_eq!(issue.key, "base_url");
        assert!(!issue.message.contains("hunter2"), "{}", issue.message);
    }
}
