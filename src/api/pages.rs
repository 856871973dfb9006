//! The endpoints at the root: health, readiness, Prometheus metrics, the
//! OpenAPI document and the dashboard page (both embedded in the binary).

use super::metrics;
use super::server::Shared;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

/// The OpenAPI 3 document of this API (kept in the repository).
pub const OPENAPI: &str = include_str!("openapi.json");
/// The dashboard: one page, inline script and style, no build step.
pub const DASHBOARD: &str = include_str!("dashboard.html");

const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, JSON)],
        r#"{"status":"ok"}"#,
    )
}

pub async fn readyz(State(state): State<Shared>) -> impl IntoResponse {
    let not_ready = |reason: Option<String>| {
        let body = match reason {
            Some(reason) => serde_json::json!({"status": "not ready", "reason": reason}),
            None => serde_json::json!({"status": "not ready"}),
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, JSON)],
            body.to_string(),
        )
    };
    if !state.ready.load(Ordering::Relaxed) {
        return not_ready(None);
    }
    // Decisions are held back while the store refuses writes.
    if let Some(reason) = state.telemetry.state.unwritable() {
        return not_ready(Some(format!(
            "the state store cannot write ({reason}); decisions are held until it does"
        )));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, JSON)],
        r#"{"status":"ready"}"#.to_string(),
    )
}

pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    // Agent counts come from the shards; a stopping fleet leaves them out
    // rather than failing the scrape.
    let by_state = match &state.fleet {
        Some(fleet) => fleet.stats().await.ok().map(|s| s.by_state),
        None => None,
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        metrics::render(&state.telemetry, by_state.as_ref())
            + &metrics::render_api(&state.counters),
    )
}

pub async fn openapi() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], OPENAPI)
}

pub async fn dashboard() -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, dashboard_csp().clone()),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        DASHBOARD,
    )
        .into_response()
}

/// Only the page's own inline script and style may run (by hash), and it
/// may talk only to this origin.
fn dashboard_csp() -> &'static HeaderValue {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    CSP.get_or_init(|| {
        let script = inline_hash(DASHBOARD, "<script>", "</script>");
        let style = inline_hash(DASHBOARD, "<style>", "</style>");
        let policy = format!(
            "default-src 'none'; script-src '{script}'; style-src '{style}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
    })
}

/// `sha256-<base64>` of the text between the first `open` and `close`.
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    let body = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inner, _)| inner);
    format!("sha256-{}", base64(&Sha256::digest(body.as_bytes())))
}

/// Standard base64 with padding (a CSP hash is the only use).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn csp_hashes_the_inline_script_and_style() {
        let page = "<style>a{}</style><script>x()</script>";
        assert_eq!(
            inline_hash(page, "<script>", "</script>"),
            format!("sha256-{}", base64(&Sha256::digest(b"x()")))
        );
        let csp = dashboard_csp().to_str().unwrap().to_string();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe-inline"));
        // One inline script and one style block: the hashes cover all.
        assert_eq!(DASHBOARD.matches("<script").count(), 1);
        assert_eq!(DASHBOARD.matches("<style").count(), 1);
    }

    #[test]
    fn openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    }
}
