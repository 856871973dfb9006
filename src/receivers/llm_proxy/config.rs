//! `[receivers.llm_proxy]`: where the OpenAI-compatible proxy listens, which
//! upstreams it may forward to, and the policies it enforces.
//!
//! ```toml
//! [receivers.llm_proxy]
//! endpoint = "127.0.0.1:4000"
//! upstream = "https://api.openai.com"
//! providers = { local = "http://127.0.0.1:11434" }
//!
//! [[receivers.llm_proxy.routes]]
//! agents = "research-*"
//! provider = "local"
//!
//! [[receivers.llm_proxy.policies]]
//! name = "support-budget"
//! agents = "support-*"
//! requests_per_minute = 60
//! tokens_per_minute = 200000
//! block_models = ["o1*", "gpt-5"]
//! ```

use super::glob::Glob;
use super::price::{ModelPrice, default_prices, prices_over_defaults};
use crate::config::ConfigIssue;
use crate::listener::ListenerConfig;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Name of the default upstream in routes and in `X-LLM-Provider`.
pub const DEFAULT_PROVIDER: &str = "default";
/// Prefix of the rule names the proxy uses for itself (reduce_autonomy).
pub const RESERVED_RULE_PREFIX: &str = "agent-immune:";
/// Upper bounds, so a typo cannot make one request allocate gigabytes or
/// the registry grow without limit.
const MAX_BODY_MIB: u64 = 1024;
const MAX_AGENTS: usize = 1_000_000;
const MAX_NAME_CHARS: usize = 64;
const MAX_BOUND_KEYS: usize = 10_000_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmProxyConfig {
    /// Listen address (`host:port`; `localhost` means 127.0.0.1). Agents set
    /// `OPENAI_BASE_URL=http://<endpoint>/v1`. Default "127.0.0.1:4000".
    pub endpoint: String,
    /// Base URL of the default upstream provider; the request path (which
    /// starts with `/v1/`) is appended to it. Default "https://api.openai.com".
    pub upstream: String,
    /// Other allowlisted providers, name → base URL (e.g. `azure =
    /// "https://x.openai.azure.com/openai"`). Only these and the default can
    /// be routed to. Default: none.
    pub providers: BTreeMap<String, String>,
    /// Per-agent routes, first match wins: `{ agents = "<glob>", provider =
    /// "<name>" }`. An `X-LLM-Provider` header naming an allowlisted provider
    /// takes precedence; anything else goes to the default. Default: none.
    pub routes: Vec<RouteConfig>,
    /// Policy rules evaluated before forwarding (see the rule keys); more can
    /// be added at runtime through the management API. Default: none.
    pub policies: Vec<PolicyRule>,
    /// Largest request body accepted, in MiB; larger requests get 413.
    /// Default 32.
    pub max_request_body_mib: u64,
    /// Longest wait for the upstream's response headers, and then for each
    /// next chunk of its body (a stream may run longer in total, as long as
    /// it keeps moving). Default "10m" (the OpenAI SDKs' own timeout).
    #[serde(with = "crate::config::duration")]
    pub upstream_timeout: Duration,
    /// Longest wait to connect to an upstream. Default "10s".
    #[serde(with = "crate::config::duration")]
    pub connect_timeout: Duration,
    /// How long `drain` waits for an agent's in-flight requests to finish
    /// before reporting that some are still running. Default "30s".
    #[serde(with = "crate::config::duration")]
    pub drain_timeout: Duration,
    /// Most agents remembered by discovery and by the per-agent rate limits;
    /// beyond it the least recently seen agent is forgotten. Default 10000.
    pub max_agents: usize,
    /// Limits applied to an agent while the reduce_autonomy healing action
    /// is in force.
    pub reduce_autonomy: ReduceAutonomyConfig,
    /// What revoke_tools does to an agent's requests: "strip" removes
    /// `tools`, `tool_choice`, `parallel_tool_calls` (and the legacy
    /// `functions`, `function_call`) and forwards the rest; "refuse" answers
    /// requests that offer tools with 403. Default "strip".
    pub revoke_tools_mode: RevokeToolsMode,
    /// Price per model in USD per million tokens, for the cost vitals:
    /// `prices."gpt-4o-mini" = { input_per_mtok = 0.15, output_per_mtok =
    /// 0.6, cached_input_per_mtok = 0.075 }` (cached: default the input
    /// price). A model matches its exact entry, else the longest entry its
    /// name starts with. Entries given here extend or replace the built-in
    /// table, which is the genai processor's (common OpenAI and Anthropic
    /// models, same keys as `[processors.genai.prices]`).
    #[serde(deserialize_with = "prices_over_defaults")]
    pub prices: BTreeMap<String, ModelPrice>,
    /// Connection limits of the proxy's listener.
    pub listener: ListenerConfig,
    /// How callers are identified (see "Agent identity" in the README):
    /// "bound" binds each API key to the agent it first claims, so the key,
    /// not `X-Agent-ID`, decides who is calling; "strict" admits only the
    /// keys configured in `agents` (401 otherwise). Default "bound".
    pub identity: IdentityMode,
    /// Agents and their keys, by hash: `agents."billing" = { key_sha256 =
    /// "<64 hex>" }` (a list of hashes for a rotation). A request with such
    /// a key is that agent. Default: none.
    pub agents: BTreeMap<String, AgentKeyConfig>,
    /// The provider key the proxy sends upstream (`Authorization: Bearer`)
    /// in place of the client's, for requests authenticated by a configured
    /// agent key, so agents never hold it, e.g. `"${env:OPENAI_API_KEY}"`.
    /// Never logged. Default: none (clients' keys are forwarded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_api_key: Option<Secret>,
    /// Most API keys bound to agents in "bound" mode; beyond it new keys
    /// are served under their claimed id without a binding (counted in
    /// `llm_proxy_identity_unbound`). Default 100000.
    pub max_bound_keys: usize,
}

/// How the proxy identifies callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// The key decides; unconfigured keys are bound on first sight.
    #[default]
    Bound,
    /// Only configured keys are admitted.
    Strict,
}

/// One configured agent's credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentKeyConfig {
    /// SHA-256 (64 hex digits) of the agent's key, or a list of them.
    pub key_sha256: KeyHashes,
}

/// One key hash or several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum KeyHashes {
    One(String),
    Many(Vec<String>),
}

impl KeyHashes {
    pub fn hashes(&self) -> &[String] {
        match self {
            KeyHashes::One(one) => std::slice::from_ref(one),
            KeyHashes::Many(many) => many,
        }
    }
}

/// A secret from the config: never shown by `Debug` or serialized.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl Default for LlmProxyConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:4000".to_string(),
            upstream: "https://api.openai.com".to_string(),
            providers: BTreeMap::new(),
            routes: Vec::new(),
            policies: Vec::new(),
            max_request_body_mib: 32,
            upstream_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            max_agents: 10_000,
            reduce_autonomy: ReduceAutonomyConfig::default(),
            revoke_tools_mode: RevokeToolsMode::Strip,
            prices: default_prices(),
            listener: ListenerConfig::default(),
            identity: IdentityMode::Bound,
            agents: BTreeMap::new(),
            upstream_api_key: None,
            max_bound_keys: 100_000,
        }
    }
}

/// One per-agent route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Glob (`*`, `?`) on agent ids. Required.
    pub agents: String,
    /// Provider name: "default" or a key of `providers`. Required.
    pub provider: String,
}

/// One policy rule. A rule applies to the agents its glob matches; each
/// limit it sets is checked on its own, and the first violated one refuses
/// the request (unless the rule is alert-only).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyRule {
    /// Unique name, shown in errors, logs and metrics, and used to remove
    /// the rule at runtime. Required.
    pub name: String,
    /// Glob (`*`, `?`) on agent ids. Default "*".
    pub agents: String,
    /// Requests per minute per agent (a token bucket refilling at this
    /// rate, burst up to it); beyond it 429 with `Retry-After`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Tokens (input + output, from each response's usage) per minute per
    /// agent; once spent, requests get 429 with `Retry-After` until the
    /// budget refills. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Model globs the agents may use (case-insensitive); any other model is
    /// refused with 403. Empty: any model. Default: empty.
    pub allow_models: Vec<String>,
    /// Model globs the agents may not use (case-insensitive), refused with
    /// 403. Default: empty.
    pub block_models: Vec<String>,
    /// Log and count violations without refusing. Default false.
    pub alert_only: bool,
}

impl Default for PolicyRule {
    fn default() -> Self {
        Self {
            name: String::new(),
            agents: "*".to_string(),
            requests_per_minute: None,
            tokens_per_minute: None,
            allow_models: Vec::new(),
            block_models: Vec::new(),
            alert_only: false,
        }
    }
}

impl PolicyRule {
    /// Problems with this rule alone; keys are relative to the rule.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.name.trim().is_empty() {
            issues.push(ConfigIssue::new("name", "a rule needs a name"));
        } else if self.name.chars().count() > MAX_NAME_CHARS
            || self.name.chars().any(|c| c.is_control())
        {
            issues.push(ConfigIssue::new(
                "name",
                format!("must be at most {MAX_NAME_CHARS} printable characters"),
            ));
        } else if self.name.starts_with(RESERVED_RULE_PREFIX) {
            issues.push(ConfigIssue::new(
                "name",
                format!("names starting with {RESERVED_RULE_PREFIX:?} are reserved"),
            ));
        }
        if let Err(e) = Glob::new(&self.agents) {
            issues.push(ConfigIssue::new("agents", e));
        }
        if self.requests_per_minute == Some(0) {
            issues.push(ConfigIssue::new(
                "requests_per_minute",
                "must be at least 1 (use block_models or quarantine to stop an agent)",
            ));
        }
        if self.tokens_per_minute == Some(0) {
            issues.push(ConfigIssue::new("tokens_per_minute", "must be at least 1"));
        }
        for (key, list) in [
            ("allow_models", &self.allow_models),
            ("block_models", &self.block_models),
        ] {
            for (i, pattern) in list.iter().enumerate() {
                if let Err(e) = Glob::new_case_insensitive(pattern) {
                    issues.push(ConfigIssue::new(format!("{key}[{i}]"), e));
                }
            }
        }
        if self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.allow_models.is_empty()
            && self.block_models.is_empty()
        {
            issues.push(ConfigIssue::new(
                "name",
                "the rule sets no limit: give requests_per_minute, tokens_per_minute, allow_models or block_models",
            ));
        }
        issues
    }
}

/// Limits while reduce_autonomy is in force. The action's parameters
/// (`requests_per_minute`, `tokens_per_minute`, `max_tokens`) override them
/// per agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReduceAutonomyConfig {
    /// Requests per minute. Default 6.
    pub requests_per_minute: u32,
    /// Tokens (input + output) per minute. Default 20000.
    pub tokens_per_minute: u64,
    /// Cap on the output tokens of each request: `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens` is lowered to it (or
    /// set when absent). Default 1024.
    pub max_tokens: u64,
}

impl Default for ReduceAutonomyConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 6,
            tokens_per_minute: 20_000,
            max_tokens: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeToolsMode {
    /// Remove the tool fields and forward the request.
    #[default]
    Strip,
    /// Refuse requests that offer tools (403).
    Refuse,
}

impl LlmProxyConfig {
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(message) = self.endpoint_addr() {
            issues.push(ConfigIssue::new("endpoint", message));
        }
        if let Err(message) = parse_base_url(&self.upstream) {
            issues.push(ConfigIssue::new("upstream", message));
        }
        for (name, url) in &self.providers {
            let key = format!("providers.{name}");
            if !valid_provider_name(name) {
                issues.push(ConfigIssue::new(
                    &key,
                    format!(
                        "provider names are 1-{MAX_NAME_CHARS} characters of a-z, 0-9, '-', '_' and not {DEFAULT_PROVIDER:?}"
                    ),
                ));
            }
            if let Err(message) = parse_base_url(url) {
                issues.push(ConfigIssue::new(key, message));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Err(e) = Glob::new(&route.agents) {
                issues.push(ConfigIssue::new(format!("routes[{i}].agents"), e));
            }
            if route.provider != DEFAULT_PROVIDER && !self.providers.contains_key(&route.provider) {
                issues.push(ConfigIssue::new(
                    format!("routes[{i}].provider"),
                    format!(
                        "unknown provider {:?}; use {DEFAULT_PROVIDER:?} or a key of providers",
                        route.provider
                    ),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, rule) in self.policies.iter().enumerate() {
            for issue in rule.validate() {
                issues.push(ConfigIssue::new(
                    format!("policies[{i}].{}", issue.key),
                    issue.message,
                ));
            }
            if !rule.name.is_empty() && !names.insert(rule.name.as_str()) {
                issues.push(ConfigIssue::new(
                    format!("policies[{i}].name"),
                    format!("another rule is already named {:?}", rule.name),
                ));
            }
        }
        if self.max_request_body_mib == 0 || self.max_request_body_mib > MAX_BODY_MIB {
            issues.push(ConfigIssue::new(
                "max_request_body_mib",
                format!(
                    "must be between 1 and {MAX_BODY_MIB}, got {}",
                    self.max_request_body_mib
                ),
            ));
        }
        for (key, value) in [
            ("upstream_timeout", self.upstream_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                issues.push(ConfigIssue::new(key, "must be more than 0"));
            }
        }
        if self.max_agents == 0 || self.max_agents > MAX_AGENTS {
            issues.push(ConfigIssue::new(
                "max_agents",
                format!(
                    "must be between 1 and {MAX_AGENTS}, got {}",
                    self.max_agents
                ),
            ));
        }
        let reduced = &self.reduce_autonomy;
        for (key, value) in [
            (
                "requests_per_minute",
                u64::from(reduced.requests_per_minute),
            ),
            ("tokens_per_minute", reduced.tokens_per_minute),
            ("max_tokens", reduced.max_tokens),
        ] {
            if value == 0 {
                issues.push(ConfigIssue::new(
                    format!("reduce_autonomy.{key}"),
                    "must be at least 1",
                ));
            }
        }
        for (model, price) in &self.prices {
            for (field, value) in [
                ("input_per_mtok", Some(price.input_per_mtok)),
                ("output_per_mtok", Some(price.output_per_mtok)),
                ("cached_input_per_mtok", price.cached_input_per_mtok),
            ] {
                let Some(value) = value else { continue };
                if !value.is_finite() || value < 0.0 {
                    issues.push(ConfigIssue::new(
                        format!("prices.{model}.{field}"),
                        format!("must be a non-negative number, got {value}"),
                    ));
                }
            }
        }
        issues.extend(self.listener.validate());
        issues.extend(self.identity_issues());
        issues
    }

    fn identity_issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut seen = BTreeSet::new();
        for (agent, keys) in &self.agents {
            let key = format!("agents.{agent}");
            // The one agent-id rule, and exactly: a configured id is matched
            // against requests' ids as written.
            match crate::immune::agent_id::parse(agent) {
                Err(e) => issues.push(ConfigIssue::new(&key, format!("not an agent id: {e}"))),
                Ok(id) if id != agent => issues.push(ConfigIssue::new(
                    &key,
                    "an agent id has no surrounding spaces",
                )),
                Ok(_) => {}
            }
            if keys.key_sha256.hashes().is_empty() {
                issues.push(ConfigIssue::new(
                    format!("{key}.key_sha256"),
                    "give at least one hash",
                ));
            }
            for (i, hash) in keys.key_sha256.hashes().iter().enumerate() {
                match super::identity::parse_key_hash(hash) {
                    Err(message) => {
                        issues.push(ConfigIssue::new(format!("{key}.key_sha256[{i}]"), message))
                    }
                    Ok(bytes) if !seen.insert(bytes) => issues.push(ConfigIssue::new(
                        format!("{key}.key_sha256[{i}]"),
                        "this key is already configured (one key speaks for one agent)",
                    )),
                    Ok(_) => {}
                }
            }
        }
        if self.identity == IdentityMode::Strict && self.agents.is_empty() {
            issues.push(ConfigIssue::new(
                "identity",
                "\"strict\" admits only configured keys: add [receivers.llm_proxy.agents.\"<id>\"] key_sha256 = \"…\"",
            ));
        }
        if let Some(secret) = &self.upstream_api_key {
            if self.agents.is_empty() {
                issues.push(ConfigIssue::new(
                    "upstream_api_key",
                    "is sent only for configured agents: add [receivers.llm_proxy.agents.\"<id>\"]",
                ));
            }
            if secret.expose().trim().is_empty()
                || http::HeaderValue::try_from(format!("Bearer {}", secret.expose())).is_err()
            {
                issues.push(ConfigIssue::new(
                    "upstream_api_key",
                    "must be a non-empty key of header-safe characters (is the environment variable set?)",
                ));
            }
        }
        if self.max_bound_keys == 0 || self.max_bound_keys > MAX_BOUND_KEYS {
            issues.push(ConfigIssue::new(
                "max_bound_keys",
                format!(
                    "must be between 1 and {MAX_BOUND_KEYS}, got {}",
                    self.max_bound_keys
                ),
            ));
        }
        issues
    }

    /// The listen address.
    pub fn endpoint_addr(&self) -> Result<SocketAddr, String> {
        if let Some(port) = self.endpoint.strip_prefix("localhost:") {
            return port
                .parse::<u16>()
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .map_err(|_| format!("{:?} has an invalid port", self.endpoint));
        }
        self.endpoint.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{:?} is not a listen address such as \"127.0.0.1:4000\" or \"0.0.0.0:4000\"",
                self.endpoint
            )
        })
    }

    pub(crate) fn max_request_body_bytes(&self) -> usize {
        usize::try_from(self.max_request_body_mib.min(MAX_BODY_MIB) * 1024 * 1024)
            .unwrap_or(usize::MAX)
    }
}

fn valid_provider_name(name: &str) -> bool {
    name != DEFAULT_PROVIDER
        && !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A provider base URL: http(s), a host, no credentials, query or fragment.
/// A trailing `/` is dropped so the request path appends cleanly.
pub fn parse_base_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("{text:?} is not a URL such as \"https://api.openai.com\": {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} carries credentials; agents send their own API keys"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not have a query or fragment"));
    }
    let mut url = url;
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let cfg = LlmProxyConfig::default();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        assert_eq!(
            cfg.endpoint_addr().unwrap(),
            "127.0.0.1:4000".parse().unwrap()
        );
        assert_eq!(cfg.max_request_body_bytes(), 32 * 1024 * 1024);
        assert_eq!(cfg.revoke_tools_mode, RevokeToolsMode::Strip);
        assert!(cfg.prices.contains_key("gpt-4o-mini"));
    }

    #[test]
    fn parses_a_full_table() {
        let cfg: LlmProxyConfig = toml::from_str(
            r#"
            endpoint = "localhost:4100"
            upstream = "http://127.0.0.1:9000/"
            providers = { local = "http://127.0.0.1:11434" }
            upstream_timeout = "30s"
            revoke_tools_mode = "refuse"
            reduce_autonomy = { requests_per_minute = 2 }
            prices = { "my-model" = { input_per_mtok = 1.0, output_per_mtok = 2.0 } }
            [[routes]]
            agents = "research-*"
            provider = "local"
            [[policies]]
            name = "budget"
            agents = "support-*"
            requests_per_minute = 60
            block_models = ["o1*"]
            "#,
        )
        .unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        assert_eq!(cfg.upstream_timeout, Duration::from_secs(30));
        assert_eq!(cfg.revoke_tools_mode, RevokeToolsMode::Refuse);
        assert_eq!(cfg.reduce_autonomy.requests_per_minute, 2);
        assert_eq!(cfg.reduce_autonomy.max_tokens, 1024);
        assert_eq!(cfg.policies[0].requests_per_minute, Some(60));
        assert_eq!(cfg.prices["my-model"].output_per_mtok, 2.0);
        assert!(cfg.prices.contains_key("gpt-4o-mini"), "defaults kept");
        assert_eq!(
            parse_base_url(&cfg.upstream).unwrap().as_str(),
            "http://127.0.0.1:9000/"
        );
    }

    #[test]
    fn invalid_values_are_reported_by_key() {
        let cfg = LlmProxyConfig {
            endpoint: "nowhere".into(),
            upstream: "ftp://example.com".into(),
            providers: [
                ("Bad Name".to_string(), "http://x".to_string()),
                ("ok".to_string(), "http://user:pw@x".to_string()),
            ]
            .into(),
            routes: vec![RouteConfig {
                agents: "a-*".into(),
                provider: "missing".into(),
            }],
            policies: vec![
                PolicyRule {
                    name: "r".into(),
                    requests_per_minute: Some(0),
                    ..Default::default()
                },
                PolicyRule {
                    name: "r".into(),
                    block_models: vec![String::new()],
                    ..Default::default()
                },
                PolicyRule {
                    name: "agent-immune:x".into(),
                    tokens_per_minute: Some(5),
                    ..Default::default()
                },
            ],
            max_request_body_mib: 0,
            max_agents: 0,
            ..Default::default()
        };
        let keys: Vec<String> = cfg.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "endpoint",
                "upstream",
                "providers.Bad Name",
                "providers.ok",
                "routes[0].provider",
                "policies[0].requests_per_minute",
                "policies[1].block_models[0]",
                "policies[1].name",
                "policies[2].name",
                "max_request_body_mib",
                "max_agents",
            ]
        );
    }

    #[test]
    fn identity_keys() {
        let hash = "ab".repeat(32);
        let cfg: LlmProxyConfig = toml::from_str(&format!(
            r#"
            identity = "strict"
            upstream_api_key = "sk-provider"
            [agents."billing"]
            key_sha256 = "{hash}"
            [agents."ops"]
            key_sha256 = ["{}", "{}"]
            "#,
            "cd".repeat(32),
            "ef".repeat(32)
        ))
        .unwrap();
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        assert_eq!(cfg.agents["ops"].key_sha256.hashes().len(), 2);
        assert!(!format!("{cfg:?}").contains("sk-provider"));
        assert!(!toml::to_string(&cfg).unwrap().contains("sk-provider"));

        let bad: LlmProxyConfig = toml::from_str(&format!(
            r#"
            identity = "strict"
            upstream_api_key = ""
            max_bound_keys = 0
            [agents."a"]
            key_sha256 = "{hash}"
            [agents."b"]
            key_sha256 = ["{hash}", "xyz"]
            "#
        ))
        .unwrap();
        let keys: Vec<String> = bad.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "agents.b.key_sha256[0]",
                "agents.b.key_sha256[1]",
                "upstream_api_key",
                "max_bound_keys"
            ]
        );
        let strict_alone = LlmProxyConfig {
            identity: IdentityMode::Strict,
            ..Default::default()
        };
        assert_eq!(strict_alone.validate()[0].key, "identity");
    }

    #[test]
    fn a_rule_without_limits_is_an_error() {
        let rule = PolicyRule {
            name: "empty".into(),
            ..Default::default()
        };
        assert_eq!(rule.validate().len(), 1);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<LlmProxyConfig>("upstream_url = \"x\"").unwrap_err();
        assert!(err.to_string().contains("upstream_url"));
        let err =
            toml::from_str::<LlmProxyConfig>("[[policies]]\nname = \"a\"\nrpm = 1").unwrap_err();
        assert!(err.to_string().contains("rpm"));
    }
}
