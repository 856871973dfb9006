//! `[exporters.otlp_forward]`: the pass-through exporter. The client keys
//! are the same as every OTLP exporter's, flat in this table, as in the
//! Collector's `otlp` exporter.

use crate::config::ConfigIssue;
use crate::exporters::otlp_client::{Compression, OtlpClientConfig, Protocol, RetryConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

const MAX_QUEUE_SIZE: usize = 1_000_000;
const MAX_CONSUMERS: usize = 1024;
/// 16 GiB: beyond that a typo, not a plan.
const MAX_QUEUE_SIZE_MIB: usize = 16 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpForwardConfig {
    /// Next hop, with scheme, e.g. "http://127.0.0.1:14317" (gRPC) or
    /// "http://127.0.0.1:14318" (HTTP). Required.
    pub endpoint: String,
    /// `grpc` (default) or `http` (OTLP/HTTP protobuf).
    pub protocol: Protocol,
    /// `none` (default) or `gzip`.
    pub compression: Compression,
    /// Extra request headers (gRPC metadata), e.g. authorization. Default none.
    pub headers: BTreeMap<String, String>,
    /// Timeout of one send attempt. Default "5s".
    #[serde(with = "crate::config::duration")]
    pub timeout: Duration,
    /// Retry policy for retryable failures (defaults 5s/30s/300s x1.5).
    pub retry_on_failure: RetryConfig,
    /// Queue in front of the senders.
    pub sending_queue: SendingQueueConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendingQueueConfig {
    /// Requests that may wait to be sent; when full the pipeline refuses new
    /// data with a retryable error. Default 1000.
    pub queue_size: usize,
    /// Bytes (in MiB) the queued and in-flight requests may hold together,
    /// as the Collector's `sizer: bytes`; when full the pipeline refuses new
    /// data with a retryable error. Default 128.
    pub queue_size_mib: usize,
    /// Requests sent concurrently. Default 10.
    pub num_consumers: usize,
}

impl Default for SendingQueueConfig {
    fn default() -> Self {
        Self {
            queue_size: 1000,
            queue_size_mib: 128,
            num_consumers: 10,
        }
    }
}

impl SendingQueueConfig {
    /// The byte bound.
    pub fn queue_bytes(&self) -> usize {
        self.queue_size_mib
            .clamp(1, MAX_QUEUE_SIZE_MIB)
            .saturating_mul(1024 * 1024)
    }
}

impl Default for OtlpForwardConfig {
    fn default() -> Self {
        let client = OtlpClientConfig::default();
        Self {
            endpoint: client.endpoint,
            protocol: client.protocol,
            compression: client.compression,
            headers: client.headers,
            timeout: client.timeout,
            retry_on_failure: client.retry_on_failure,
            sending_queue: SendingQueueConfig::default(),
        }
    }
}

impl OtlpForwardConfig {
    /// The client settings (same keys, so validation keys line up).
    pub fn client(&self) -> OtlpClientConfig {
        OtlpClientConfig {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            compression: self.compression,
            headers: self.headers.clone(),
            timeout: self.timeout,
            retry_on_failure: self.retry_on_failure.clone(),
        }
    }

    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = self.client().validate();
        let queue = &self.sending_queue;
        if queue.queue_size == 0 || queue.queue_size > MAX_QUEUE_SIZE {
            issues.push(ConfigIssue::new(
                "sending_queue.queue_size",
                format!("must be between 1 and {MAX_QUEUE_SIZE}"),
            ));
        }
        if queue.queue_size_mib == 0 || queue.queue_size_mib > MAX_QUEUE_SIZE_MIB {
            issues.push(ConfigIssue::new(
                "sending_queue.queue_size_mib",
                format!("must be between 1 and {MAX_QUEUE_SIZE_MIB}"),
            ));
        }
        if queue.num_consumers == 0 || queue.num_consumers > MAX_CONSUMERS {
            issues.push(ConfigIssue::new(
                "sending_queue.num_consumers",
                format!("must be between 1 and {MAX_CONSUMERS}"),
            ));
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_collectors() {
        let cfg = OtlpForwardConfig::default();
        assert_eq!(cfg.sending_queue.queue_size, 1000);
        assert_eq!(cfg.sending_queue.num_consumers, 10);
        assert_eq!(cfg.sending_queue.queue_bytes(), 128 * 1024 * 1024);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert_eq!(cfg.protocol, Protocol::Grpc);
        assert_eq!(cfg.compression, Compression::None);
        // Only the endpoint is required.
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["endpoint"]);
    }

    #[test]
    fn toml_keys_are_flat_and_checked() {
        let cfg: OtlpForwardConfig = toml::from_str(
            r#"endpoint = "http://127.0.0.1:14317"
               compression = "gzip"
               sending_queue = { queue_size = 0, queue_size_mib = 0 }
               retry_on_failure = { multiplier = 0.0 }"#,
        )
        .unwrap();
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "retry_on_failure.multiplier",
                "sending_queue.queue_size",
                "sending_queue.queue_size_mib"
            ]
        );
        assert!(toml::from_str::<OtlpForwardConfig>("queue_size = 5").is_err());
    }
}
