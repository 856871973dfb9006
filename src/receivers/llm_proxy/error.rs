//! The proxy's own answers, in OpenAI's error shape
//! (`{"error": {"message", "type", "code", "param"}}`) so every OpenAI SDK
//! surfaces them as ordinary API errors with a readable message.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Marks answers that came from the proxy rather than the upstream.
pub const PROXY_ERROR_HEADER: &str = "x-agent-immune-error";

/// One error answer.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `error.type` (e.g. `agent_quarantined`).
    pub kind: &'static str,
    /// OpenAI's `error.code`.
    pub code: &'static str,
    /// `Retry-After`, in seconds.
    pub retry_after_secs: Option<u64>,
    /// `x-should-retry`: the OpenAI SDKs honour it over their own retry
    /// rules, so a quarantined agent does not hammer the proxy.
    pub should_retry: Option<bool>,
}

impl ProxyError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code,
            retry_after_secs: None,
            should_retry: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn no_retry(mut self) -> Self {
        self.should_retry = Some(false);
        self
    }

    pub fn quarantined() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_quarantined",
            "agent_quarantined",
            "agent is quarantined by agent-immune",
        )
        .no_retry()
    }

    pub fn draining() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_draining",
            "agent_draining",
            "agent is being drained by agent-immune: in-flight requests may finish, new ones are refused",
        )
        .no_retry()
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
                "param": null,
            }
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        response
            .headers_mut()
            .insert(PROXY_ERROR_HEADER, HeaderValue::from_static(self.kind));
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(retry) = self.should_retry {
            response.headers_mut().insert(
                "x-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        response
    }
}
