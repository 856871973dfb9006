//! Where and how an exporter sends OTLP: endpoint, protocol, compression,
//! headers, timeout and retry policy. Shared by `otlp_forward` (whose keys
//! are the same, flat in its table) and `events.otlp`.

use super::retry::RetryConfig;
use crate::config::ConfigIssue;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest per-request timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Header values are tokens or keys, not documents.
const MAX_HEADER_VALUE_LEN: usize = 8192;

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC (`{endpoint}` is the server, e.g. "http://collector:4317").
    #[default]
    Grpc,
    /// OTLP/HTTP protobuf, POST to `{endpoint}/v1/{traces,metrics,logs}`.
    Http,
}

/// Request compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpClientConfig {
    /// Where to send, with scheme: "http://host:4317" (gRPC) or
    /// "http://host:4318" (HTTP; signal paths are appended). Required.
    pub endpoint: String,
    /// `grpc` (default) or `http` (OTLP/HTTP protobuf).
    pub protocol: Protocol,
    /// `none` (default) or `gzip`.
    pub compression: Compression,
    /// Extra request headers (gRPC metadata), e.g. an authorization header;
    /// use `${env:VAR}` for secrets. Default none.
    pub headers: BTreeMap<String, String>,
    /// Timeout of one send attempt. Default "5s".
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
    /// Retry policy for retryable failures.
    pub retry_on_failure: RetryConfig,
}

impl Default for OtlpClientConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: Protocol::Grpc,
            compression: Compression::None,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

impl OtlpClientConfig {
    /// A config for `endpoint` with every other setting at its default.
    pub fn new(endpoint: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(message) = self.parsed_endpoint() {
            issues.push(ConfigIssue::new("endpoint", message));
        }
        for (name, value) in &self.headers {
            if let Err(message) = check_header(name, value) {
                issues.push(ConfigIssue::new(format!("headers.{name}"), message));
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            issues.push(ConfigIssue::new(
                "timeout",
                format!("must be between 1ms and {MAX_TIMEOUT:?}"),
            ));
        }
        issues.extend(
            self.retry_on_failure
                .validate()
                .into_iter()
                .map(|i| ConfigIssue::new(format!("retry_on_failure.{}", i.key), i.message)),
        );
        issues
    }

    /// The endpoint as a URI, checked for a scheme this build can speak.
    pub(crate) fn parsed_endpoint(&self) -> Result<http::Uri, String> {
        if self.endpoint.is_empty() {
            return Err("is required, e.g. \"http://127.0.0.1:4317\"".to_string());
        }
        let uri: http::Uri = self
            .endpoint
            .parse()
            .map_err(|e| format!("{:?} is not a URL: {e}", self.endpoint))?;
        match (uri.scheme_str(), self.protocol) {
            (Some("http"), _) | (Some("https"), Protocol::Http) => {}
            (Some("https"), Protocol::Grpc) => {
                return Err(format!(
                    "{:?}: gRPC over TLS is not supported by this build; use protocol = \"http\" for https, or a plaintext http:// endpoint",
                    self.endpoint
                ));
            }
            (None, _) => {
                return Err(format!(
                    "{:?} has no scheme; write \"http://{}\"",
                    self.endpoint, self.endpoint
                ));
            }
            (Some(other), _) => {
                return Err(format!("{:?}: unsupported scheme {other:?}", self.endpoint));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{:?} has no host", self.endpoint));
        }
        Ok(uri)
    }
}

pub(crate) fn check_header(name: &str, value: &str) -> Result<(), String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(format!("value longer than {MAX_HEADER_VALUE_LEN} bytes"));
    }
    // The value is a secret more often than not: never echo it.
    http::HeaderValue::from_str(value)
        .map_err(|_| "value contains characters not allowed in a header".to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_an_endpoint() {
        let cfg = OtlpClientConfig::default();
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["endpoint"]);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert!(
            OtlpClientConfig::new("http://127.0.0.1:4317", Protocol::Grpc)
                .validate()
                .is_empty()
        );
    }

    #[test]
    fn endpoint_problems_are_explained() {
        let issue = |endpoint: &str, protocol| {
            OtlpClientConfig::new(endpoint, protocol).validate()[0]
                .message
                .clone()
        };
        assert!(issue("localhost:4317", Protocol::Grpc).contains("no scheme"));
        assert!(issue("https://x:4317", Protocol::Grpc).contains("TLS"));
        assert!(issue("ftp://x", Protocol::Http).contains("unsupported scheme"));
        assert!(
            OtlpClientConfig::new("https://x:4318", Protocol::Http)
                .validate()
                .is_empty()
        );
    }

    #[test]
    fn bad_headers_and_timeout_are_reported_without_the_value() {
        let mut cfg = OtlpClientConfig::new("http://x:4317", Protocol::Grpc);
        cfg.headers.insert("bad header".into(), "v".into());
        cfg.headers
            .insert("authorization".into(), "Bearer secret\n".into());
        cfg.timeout = Duration::ZERO;
        let issues = cfg.validate();
        let keys: Vec<_> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["headers.authorization", "headers.bad header", "timeout"]
        );
        assert!(!issues[0].message.contains("secret"));
    }

    #[test]
    fn toml_shape() {
        let cfg: OtlpClientConfig = toml::from_str(
            r#"endpoint = "http://x:4318"
               protocol = "http"
               compression = "gzip"
               timeout = "2s"
               headers = { authorization = "Bearer t" }
               retry_on_failure = { initial_interval = "1s" }"#,
        )
        .unwrap();
        assert_eq!(cfg.protocol, Protocol::Http);
        assert_eq!(cfg.compression, Compression::Gzip);
        assert_eq!(cfg.timeout, Duration::from_secs(2));
        assert_eq!(
            cfg.retry_on_failure.initial_interval,
            Duration::from_secs(1)
        );
        assert_eq!(cfg.retry_on_failure.max_interval, Duration::from_secs(30));
        assert!(toml::from_str::<OtlpClientConfig>("endpont = \"x\"").is_err());
    }
}
