//! API errors: a status and a JSON body `{"error": "...", "field": "..."}`
//! (`field` only when one input field is to blame).

use crate::immune::command::CommandError;
use crate::pipeline::fleet::FleetError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 400 blaming one input field; the message starts with its name.
    pub fn field(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {problem}"),
            field: Some(field),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn unknown_agent(agent_id: &str) -> Self {
        Self::not_found(format!("agent {agent_id:?} is not monitored"))
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Stopped => Self::unavailable("the pipeline is stopping"),
            FleetError::Full => Self::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            FleetError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            FleetError::Command(c) => c.into(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let status = match &e {
            CommandError::UnknownAgent(_) => StatusCode::NOT_FOUND,
            // The agent exists but is not in a state the command applies to.
            CommandError::NotPending { .. }
            | CommandError::NothingToHeal { .. }
            | CommandError::AlreadyHealing { .. }
            | CommandError::UnknownAttempt { .. }
            | CommandError::NoDiagnosis { .. } => StatusCode::CONFLICT,
            // Never produced by an operator command; a fault if it is.
            CommandError::CannotRestore { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            // Retryable: the store writes again later.
            CommandError::NotDurable { .. } => return Self::unavailable(e.to_string()),
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.message,
            field: self.field.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        // Overload is retryable: say when (the OTLP receivers' delay).
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::receivers::otlp::RETRY_DELAY.as_secs().max(1)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"agent-immune\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immune::lifecycle::LifecycleState;

    #[test]
    fn command_errors_map_to_statuses() {
        let unknown: ApiError = CommandError::UnknownAgent("a".into()).into();
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        let not_pending: ApiError = CommandError::NotPending {
            agent: "a".into(),
            state: LifecycleState::Healthy,
        }
        .into();
        assert_eq!(not_pending.status, StatusCode::CONFLICT);
        assert!(not_pending.message.contains("HEALTHY"), "{not_pending:?}");
        let stopped: ApiError = FleetError::Stopped.into();
        assert_eq!(stopped.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn field_errors_name_the_field() {
        let e = ApiError::field("latency_ms", "must be finite");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "latency_ms: must be finite");
        assert_eq!(e.field.as_deref(), Some("latency_ms"));
    }
}
