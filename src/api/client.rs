//! A client of the management API, for the CLI: typed answers, and errors
//! that say what to do (API not running, key missing or wrong, unknown
//! agent, wrong state).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The environment variable the CLI reads the key from.
pub const API_KEY_ENV: &str = crate::state::API_KEY_ENV;
pub const DEFAULT_API: &str = "http://127.0.0.1:8090";
/// Longest answer read (a page of the largest size fits many times).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Agents asked for per page when listing the fleet: the API's maximum.
const AGENTS_PAGE: usize = super::handlers::MAX_AGENTS_PAGE;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    #[error(
        "cannot reach the agent-immune API at {url} ({reason}); is `agent-immune run` running, and is --api right?"
    )]
    Unreachable { url: String, reason: String },
    #[error("the API refused the key ({status}: {message}); set {API_KEY_ENV} to the API key")]
    Unauthorized { status: u16, message: String },
    #[error("{message} ({status})")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status behind the error, when the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Unauthorized { status, .. } | ClientError::Refused { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// One agent, as the CLI shows it (the fields it needs; the rest ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct AgentRow {
    pub agent_id: String,
    pub state: String,
    pub since: u64,
    pub deviation: Option<f64>,
    pub last_vitals: Option<LastVitals>,
    pub baseline: Option<BaselineRow>,
}

/// One page of `GET /api/v1/agents`.
#[derive(Debug, Deserialize)]
struct AgentPageRow {
    agents: Vec<AgentRow>,
    next_cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LastVitals {
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BaselineRow {
    pub turns: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApprovalRow {
    pub agent_id: String,
    pub state: String,
    pub approval: serde_json::Value,
    pub max_deviation: f64,
    pub infection: InfectionRow,
    pub hypotheses: Vec<HypothesisRow>,
    pub reasoning: String,
}

impl ApprovalRow {
    /// "pending", "rejected", ... (the tag of the approval status).
    pub fn status(&self) -> String {
        match &self.approval {
            serde_json::Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
            serde_json::Value::String(s) => s.clone(),
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InfectionRow {
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HypothesisRow {
    pub diagnosis: String,
    pub confidence: f64,
    pub reasoning: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FeedbackRow {
    pub agent: String,
    pub actual_cause: String,
    pub diagnosis: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

pub struct ApiClient {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8090`),
    /// sending `key` when given.
    pub fn new(base: &str, key: Option<String>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        if reqwest::Url::parse(&base)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return Err(ClientError::BadUrl(base));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::BadUrl(format!("{base}: {e}")))?;
        Ok(Self {
            base,
            key: key.filter(|k| !k.is_empty()),
            http,
        })
    }

    /// Every monitored agent, sorted by id: the listing page by page,
    /// following its cursor.
    pub async fn agents(&self) -> Result<Vec<AgentRow>, ClientError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/agents?limit={AGENTS_PAGE}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode(c)));
            }
            let page: AgentPageRow = self.call(reqwest::Method::GET, &path, None).await?;
            all.extend(page.agents);
            match page.next_cursor {
                // A cursor must move on, or the listing would never end.
                Some(next) if cursor.as_ref() == Some(&next) => {
                    return Err(ClientError::BadAnswer {
                        url: format!("{}{path}", self.base),
                        reason: "the same cursor twice".into(),
                    });
                }
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn approvals(&self, status: Option<&str>) -> Result<Vec<ApprovalRow>, ClientError> {
        let path = match status {
            Some(s) => format!("/api/v1/approvals?status={}", encode(s)),
            None => "/api/v1/approvals".to_string(),
        };
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// `verb` is approve, reject, heal or reset-baseline.
    pub async fn command(&self, agent: &str, verb: &str) -> Result<AgentRow, ClientError> {
        let path = format!("/api/v1/agents/{}/{verb}", encode(agent));
        self.call(reqwest::Method::POST, &path, Some(Vec::new()))
            .await
    }

    pub async fn feedback(
        &self,
        agent: &str,
        cause: &str,
        notes: Option<&str>,
    ) -> Result<FeedbackRow, ClientError> {
        let body = serde_json::json!({"agent": agent, "actual_cause": cause, "notes": notes});
        let body = serde_json::to_vec(&body).map_err(|e| ClientError::BadAnswer {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        self.call(reqwest::Method::POST, "/api/v1/feedback", Some(body))
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(key) = &self.key {
            request = request.header("X-API-Key", key);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: reason(&e),
        })?;
        let status = response.status();
        let bytes = read_capped(response)
            .await
            .map_err(|reason| ClientError::BadAnswer {
                url: url.clone(),
                reason,
            })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| {
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
                });
            return Err(if status.as_u16() == 401 {
                ClientError::Unauthorized {
                    status: 401,
                    message,
                }
            } else {
                ClientError::Refused {
                    status: status.as_u16(),
                    message,
                }
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url,
            reason: e.to_string(),
        })
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The most telling cause of a transport error ("Connection refused").
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", TIMEOUT.as_secs());
    }
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("billing-agent_1.x~"), "billing-agent_1.x~");
        assert_eq!(encode("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }

    #[test]
    fn refuses_non_http_urls() {
        assert!(matches!(
            ApiClient::new("127.0.0.1:8090", None),
            Err(ClientError::BadUrl(_))
        ));
        assert!(ApiClient::new("http://127.0.0.1:8090/", None).is_ok());
    }
}
