//! `[exporters.events]`: where immune events go: the console, and any OTLP
//! logs endpoint.

use crate::config::ConfigIssue;
use crate::exporters::otlp_client::OtlpClientConfig;
use serde::{Deserialize, Serialize};

const MAX_QUEUE_SIZE: usize = 1_000_000;

/// Console line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Print each event on stdout. Default true.
    pub console: bool,
    /// `text` (default) or `json`, one event per line.
    pub console_format: ConsoleFormat,
    /// Send events as OTLP log records to this endpoint (keys `endpoint`,
    /// `protocol`, `compression`, `headers`, `timeout`, `retry_on_failure`,
    /// as for `otlp_forward`). Default: not sent.
    pub otlp: Option<OtlpClientConfig>,
    /// Events that may wait to be exported; beyond it new events are
    /// dropped and counted. Default 10000.
    pub queue_size: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            console: true,
            console_format: ConsoleFormat::Text,
            otlp: None,
            queue_size: 10_000,
        }
    }
}

impl EventsConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues: Vec<ConfigIssue> = self
            .otlp
            .iter()
            .flat_map(OtlpClientConfig::validate)
            .map(|i| ConfigIssue::new(format!("otlp.{}", i.key), i.message))
            .collect();
        if self.queue_size == 0 || self.queue_size > MAX_QUEUE_SIZE {
            issues.push(ConfigIssue::new(
                "queue_size",
                format!("must be between 1 and {MAX_QUEUE_SIZE}"),
            ));
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporters::otlp_client::Protocol;

    #[test]
    fn defaults_print_text_to_the_console_only() {
        let cfg = EventsConfig::default();
        assert!(cfg.console && cfg.otlp.is_none());
        assert_eq!(cfg.console_format, ConsoleFormat::Text);
        assert_eq!(cfg.queue_size, 10_000);
        assert!(cfg.validate().is_empty());
    }

    #[test]
    fn design_doc_shape_parses_and_otlp_keys_are_prefixed() {
        let cfg: EventsConfig = toml::from_str(
            r#"console = true
               console_format = "json"
               otlp = { endpoint = "http://localhost:14317", protocol = "grpc" }"#,
        )
        .unwrap();
        assert_eq!(cfg.console_format, ConsoleFormat::Json);
        assert_eq!(cfg.otlp.as_ref().unwrap().protocol, Protocol::Grpc);
        assert!(cfg.validate().is_empty());

        let cfg: EventsConfig =
            toml::from_str("otlp = { protocol = \"http\" }\nqueue_size = 0").unwrap();
        let keys: Vec<_> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["otlp.endpoint", "queue_size"]);
    }
}
