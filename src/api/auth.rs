//! The API key check: `X-API-Key: <key>` or `Authorization: Bearer <key>`,
//! verified in constant time by the state's [`ApiKey`]. Without a key in
//! force, guarded endpoints refuse (fail closed). No part of any key is
//! ever logged; refusals are logged at a bounded rate and counted.

use super::error::ApiError;
use super::server::ApiState;
use crate::log_limit::LogEvery;
use crate::state::ApiKey;
use crate::state::api_key::MAX_API_KEY_LEN;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, readiness, the dashboard page, the OpenAPI document).
    Open,
    /// Anyone unless `[api] read_requires_key` is set.
    Read,
    /// Key holders only (commands, feedback, ingest, policy changes).
    Write,
}

pub const API_KEY_HEADER: &str = "x-api-key";

/// The key a request carries, if any. `X-API-Key` wins over
/// `Authorization`; a value that is not text counts as a wrong key.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(API_KEY_HEADER) {
        return Some(v.to_str().unwrap_or("\u{0}").trim());
    }
    let auth = headers.get(axum::http::header::AUTHORIZATION)?;
    let auth = auth.to_str().unwrap_or("\u{0}").trim();
    match auth.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
        // Another scheme (Basic ...) is not our key.
        _ => Some("\u{0}"),
    }
}

/// Checks `headers` for the key when `access` requires one.
pub fn check(
    access: Access,
    key: Option<&ApiKey>,
    read_requires_key: bool,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let needed = match access {
        Access::Open => false,
        Access::Read => read_requires_key,
        Access::Write => true,
    };
    if !needed {
        return Ok(());
    }
    let Some(key) = key else {
        return Err(ApiError::unavailable(
            "no API key configured: this endpoint is refused until the service has one (set AGENT_IMMUNE_API_KEY, or add a [state] table to generate and keep one)",
        ));
    };
    let Some(candidate) = presented(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing API key: send it as X-API-Key or Authorization: Bearer",
        ));
    };
    if candidate.len() > MAX_API_KEY_LEN || !key.verify(candidate) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key"));
    }
    Ok(())
}

/// Failed authentications are logged at most this often (each line says
/// how many it stands for); every one is counted on `/metrics`.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);
static REFUSED_LOG: LogEvery = LogEvery::new(REFUSED_LOG_INTERVAL);

/// Logs a refusal for a missing or wrong key when a line is due. Nothing of
/// any key, expected or presented, is logged.
fn refused_logged() {
    if let Some(refused) = REFUSED_LOG.occurred(Instant::now()) {
        tracing::warn!(
            refused,
            "management API refused requests with a missing or wrong API key \
             (logged at most every {}s; all counted in agent_immune_api_unauthorized_requests)",
            REFUSED_LOG_INTERVAL.as_secs()
        );
    }
}

/// Middleware guarding a route that needs `Read` access.
pub async fn require_read(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    guard(Access::Read, &state, request, next).await
}

/// Middleware guarding a route that needs `Write` access.
pub async fn require_write(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    guard(Access::Write, &state, request, next).await
}

async fn guard(access: Access, state: &ApiState, request: Request, next: Next) -> Response {
    match check(
        access,
        state.api_key.as_ref(),
        state.config.read_requires_key,
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED {
                state.counters.unauthorized.inc();
                refused_logged();
            }
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn presented_key_sources() {
        assert_eq!(presented(&headers(&[("x-api-key", "k1")])), Some("k1"));
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer k2")])),
            Some("k2")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "bearer  k3 ")])),
            Some("k3")
        );
        assert_eq!(
            presented(&headers(&[
                ("x-api-key", "k1"),
                ("authorization", "Bearer k2")
            ])),
            Some("k1")
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Basic abc")])),
            Some("\u{0}")
        );
        assert_eq!(presented(&HeaderMap::new()), None);
    }

    #[test]
    fn open_and_read_need_no_key_by_default() {
        let none = HeaderMap::new();
        assert!(check(Access::Open, None, true, &none).is_ok());
        assert!(check(Access::Read, None, false, &none).is_ok());
        // Fail closed: no key in force refuses guarded endpoints.
        let e = check(Access::Write, None, false, &none).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("no API key configured"));
        let e = check(Access::Read, None, true, &none).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
