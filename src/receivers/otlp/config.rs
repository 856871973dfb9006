//! `[receivers.otlp]`: where the OTLP receiver listens and how much it accepts.
//! Defaults are the Collector's: localhost only, 4 MiB gRPC messages,
//! 20 MiB HTTP bodies, `/v1/{traces,metrics,logs}`.

use super::shape::RequestLimits;
use crate::config::ConfigIssue;
use crate::listener::ListenerConfig;
use crate::pipeline::consumer::Signal;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};

/// Upper bound on the size settings, so a typo cannot make one request
/// allocate gigabytes.
const MAX_SIZE_MIB: u64 = 1024;
/// Upper bound on the per-request item limits.
const MAX_ITEMS: u64 = 100_000_000;
/// prost refuses messages nested 100 deep, serde_json containers 128 deep;
/// the deepest OTLP attribute value sits 9 messages and 16 JSON containers
/// down, and each level of value nesting adds 3 messages and 4 containers.
const MAX_ATTRIBUTE_DEPTH: u32 = 24;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    /// OTLP/gRPC listen address (`host:port`; `localhost` means 127.0.0.1).
    /// `""` disables gRPC. Default "127.0.0.1:4317".
    pub grpc: String,
    /// OTLP/HTTP listen address (`host:port`; `localhost` means 127.0.0.1).
    /// `""` disables HTTP. Default "127.0.0.1:4318".
    pub http: String,
    /// Largest gRPC message accepted, in MiB, after decompression. Default 4.
    pub max_recv_msg_size_mib: u64,
    /// Largest HTTP request body accepted, in MiB; applies to the compressed
    /// body and again to the inflated one. Default 20.
    pub max_request_body_size_mib: u64,
    /// HTTP path for traces. Default "/v1/traces".
    pub traces_url_path: String,
    /// HTTP path for metrics. Default "/v1/metrics".
    pub metrics_url_path: String,
    /// HTTP path for logs. Default "/v1/logs".
    pub logs_url_path: String,
    /// Connection limits of the gRPC and the HTTP listener (each).
    pub listener: ListenerConfig,
    /// Most spans, log records or data points in one request, and most
    /// resources, scopes, events, links, metrics or exemplars; counted from
    /// the bytes before decoding, a request beyond is refused (400 /
    /// INVALID_ARGUMENT). Default 100000 (SDK batches are 512, the
    /// Collector's 8192).
    pub max_items_per_request: u64,
    /// Most attributes (key-values at any depth, and array values) in one
    /// request. Default 1000000.
    pub max_attributes_per_request: u64,
    /// Attribute values nested deeper than this (a list in a list in ...)
    /// are truncated to empty values, the rest of the request kept.
    /// Default 16, at most 24.
    pub max_attribute_depth: u32,
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        Self {
            grpc: "127.0.0.1:4317".to_string(),
            http: "127.0.0.1:4318".to_string(),
            max_recv_msg_size_mib: 4,
            max_request_body_size_mib: 20,
            traces_url_path: Signal::Traces.http_path().to_string(),
            metrics_url_path: Signal::Metrics.http_path().to_string(),
            logs_url_path: Signal::Logs.http_path().to_string(),
            listener: ListenerConfig::default(),
            max_items_per_request: 100_000,
            max_attributes_per_request: 1_000_000,
            max_attribute_depth: 16,
        }
    }
}

impl OtlpReceiverConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (key, value) in [("grpc", &self.grpc), ("http", &self.http)] {
            if let Err(message) = parse_listen_addr(value) {
                issues.push(ConfigIssue::new(key, message));
            }
        }
        if self.grpc.is_empty() && self.http.is_empty() {
            issues.push(ConfigIssue::new(
                "grpc",
                "both grpc and http are disabled; enable at least one",
            ));
        }
        for (key, value) in [
            ("max_recv_msg_size_mib", self.max_recv_msg_size_mib),
            ("max_request_body_size_mib", self.max_request_body_size_mib),
        ] {
            if value == 0 || value > MAX_SIZE_MIB {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be between 1 and {MAX_SIZE_MIB}, got {value}"),
                ));
            }
        }
        for (key, value) in [
            ("max_items_per_request", self.max_items_per_request),
            (
                "max_attributes_per_request",
                self.max_attributes_per_request,
            ),
        ] {
            if value == 0 || value > MAX_ITEMS {
                issues.push(ConfigIssue::new(
                    key,
                    format!("must be between 1 and {MAX_ITEMS}, got {value}"),
                ));
            }
        }
        if self.max_attribute_depth == 0 || self.max_attribute_depth > MAX_ATTRIBUTE_DEPTH {
            issues.push(ConfigIssue::new(
                "max_attribute_depth",
                format!(
                    "must be between 1 and {MAX_ATTRIBUTE_DEPTH} (the decoders' own nesting limits sit just above), got {}",
                    self.max_attribute_depth
                ),
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for signal in Signal::ALL {
            let path = self.url_path(signal);
            let key = format!("{}_url_path", signal.as_str());
            if !path.starts_with('/') || path.contains(['?', '#', ' ', '{', '}', '*']) {
                issues.push(ConfigIssue::new(
                    key,
                    format!("{path:?} must be a plain absolute path such as \"/v1/traces\""),
                ));
            } else if seen.contains(&path) {
                issues.push(ConfigIssue::new(
                    key,
                    format!("{path:?} is already used by another signal"),
                ));
            }
            seen.push(path);
        }
        issues.extend(self.listener.validate());
        issues
    }

    /// The HTTP path configured for a signal.
    pub fn url_path(&self, signal: Signal) -> &str {
        match signal {
            Signal::Traces => &self.traces_url_path,
            Signal::Metrics => &self.metrics_url_path,
            Signal::Logs => &self.logs_url_path,
        }
    }

    /// gRPC listen address, `None` when disabled.
    pub fn grpc_addr(&self) -> Result<Option<SocketAddr>, String> {
        parse_listen_addr(&self.grpc)
    }

    /// HTTP listen address, `None` when disabled.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, String> {
        parse_listen_addr(&self.http)
    }

    pub(crate) fn max_recv_msg_bytes(&self) -> usize {
        mib_to_bytes(self.max_recv_msg_size_mib)
    }

    pub(crate) fn max_request_body_bytes(&self) -> usize {
        mib_to_bytes(self.max_request_body_size_mib)
    }

    pub(crate) fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_items: self.max_items_per_request,
            max_attributes: self.max_attributes_per_request,
            max_value_depth: self.max_attribute_depth,
        }
    }
}

fn mib_to_bytes(mib: u64) -> usize {
    usize::try_from(mib.min(MAX_SIZE_MIB).saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
}

/// `""` is disabled; `localhost:P` is 127.0.0.1:P (resolving `localhost`
/// could also give ::1, and the Collector's default means the IPv4 loopback).
fn parse_listen_addr(value: &str) -> Result<Option<SocketAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(port) = value.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|port| Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
            .map_err(|_| format!("{value:?} has an invalid port"));
    }
    value.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("{value:?} is not a listen address such as \"127.0.0.1:4317\" or \"0.0.0.0:4317\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_collectors_and_valid() {
        let cfg = OtlpReceiverConfig::default();
        assert!(cfg.validate().is_empty());
        assert_eq!(
            cfg.grpc_addr().unwrap(),
            Some("127.0.0.1:4317".parse().unwrap())
        );
        assert_eq!(
            cfg.http_addr().unwrap(),
            Some("127.0.0.1:4318".parse().unwrap())
        );
        assert_eq!(cfg.max_recv_msg_bytes(), 4 * 1024 * 1024);
        assert_eq!(cfg.max_request_body_bytes(), 20 * 1024 * 1024);
        assert_eq!(cfg.url_path(Signal::Logs), "/v1/logs");
    }

    #[test]
    fn empty_endpoint_disables_and_localhost_is_ipv4_loopback() {
        let cfg = OtlpReceiverConfig {
            grpc: String::new(),
            http: "localhost:9999".into(),
            ..Default::default()
        };
        assert!(cfg.validate().is_empty());
        assert_eq!(cfg.grpc_addr().unwrap(), None);
        assert_eq!(
            cfg.http_addr().unwrap(),
            Some("127.0.0.1:9999".parse().unwrap())
        );
    }

    #[test]
    fn invalid_values_are_reported_by_key() {
        let cfg = OtlpReceiverConfig {
            grpc: "nowhere".into(),
            http: "localhost:99999".into(),
            max_recv_msg_size_mib: 0,
            max_request_body_size_mib: 5000,
            metrics_url_path: "v1/metrics".into(),
            logs_url_path: "/v1/traces".into(),
            max_items_per_request: 0,
            max_attribute_depth: 25,
            ..Default::default()
        };
        let keys: Vec<String> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "grpc",
                "http",
                "max_recv_msg_size_mib",
                "max_request_body_size_mib",
                "max_items_per_request",
                "max_attribute_depth",
                "metrics_url_path",
                "logs_url_path"
            ]
        );
    }

    #[test]
    fn both_disabled_is_an_error() {
        let cfg = OtlpReceiverConfig {
            grpc: String::new(),
            http: String::new(),
            ..Default::default()
        };
        assert_eq!(cfg.validate().len(), 1);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<OtlpReceiverConfig>("grpcc = \"x\"").unwrap_err();
        assert!(err.to_string().contains("grpcc"));
    }
}
