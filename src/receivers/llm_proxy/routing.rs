//! Where a request goes: only to the default upstream or a named,
//! allowlisted provider. The client can pick among them with
//! `X-LLM-Provider`; per-agent routes apply otherwise; anything unknown falls
//! to the default. The upstream URL is the provider's base URL plus the
//! request's own `/v1/...` path and query, never anything else from the
//! request, so no request can reach a host the config did not name (SSRF).

use super::config::{DEFAULT_PROVIDER, LlmProxyConfig, parse_base_url};
use super::glob::Glob;
use reqwest::Url;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Routing {
    default: Url,
    providers: BTreeMap<String, Url>,
    routes: Vec<(Glob, String)>,
}

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// "default" or a provider name.
    pub provider: &'a str,
    pub base: &'a Url,
    /// The client asked for a provider that is not allowlisted.
    pub refused_header: bool,
}

impl Routing {
    pub fn from_config(cfg: &LlmProxyConfig) -> Result<Self, String> {
        let default = parse_base_url(&cfg.upstream).map_err(|e| format!("upstream: {e}"))?;
        let mut providers = BTreeMap::new();
        for (name, url) in &cfg.providers {
            let url = parse_base_url(url).map_err(|e| format!("providers.{name}: {e}"))?;
            providers.insert(name.clone(), url);
        }
        let mut routes = Vec::with_capacity(cfg.routes.len());
        for (i, route) in cfg.routes.iter().enumerate() {
            let glob = Glob::new(&route.agents).map_err(|e| format!("routes[{i}].agents: {e}"))?;
            if route.provider != DEFAULT_PROVIDER && !providers.contains_key(&route.provider) {
                return Err(format!(
                    "routes[{i}].provider: unknown provider {:?}",
                    route.provider
                ));
            }
            routes.push((glob, route.provider.clone()));
        }
        Ok(Self {
            default,
            providers,
            routes,
        })
    }

    /// The provider for a request from `agent_id` carrying `X-LLM-Provider:
    /// header` (if any).
    pub fn pick<'a>(&'a self, agent_id: &str, header: Option<&str>) -> Route<'a> {
        let mut refused_header = false;
        if let Some(wanted) = header.map(str::trim).filter(|h| !h.is_empty()) {
            if let Some(route) = self.named(wanted) {
                return route;
            }
            refused_header = true;
        }
        let routed = self
            .routes
            .iter()
            .find(|(glob, _)| glob.matches(agent_id))
            .and_then(|(_, provider)| self.named(provider));
        let mut route = routed.unwrap_or(Route {
            provider: DEFAULT_PROVIDER,
            base: &self.default,
            refused_header: false,
        });
        route.refused_header = refused_header;
        route
    }

    fn named(&self, name: &str) -> Option<Route<'_>> {
        if name == DEFAULT_PROVIDER {
            return Some(Route {
                provider: DEFAULT_PROVIDER,
                base: &self.default,
                refused_header: false,
            });
        }
        self.providers
            .get_key_value(name)
            .map(|(name, base)| Route {
                provider: name,
                base,
                refused_header: false,
            })
    }
}

/// Checks the path of a proxied request: under `/v1/`, with no dot segments
/// (plain or percent-encoded) or backslashes that could climb out of the
/// provider's base path.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with("/v1/") {
        return Err("the proxy serves the OpenAI API under /v1/".to_string());
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Err("the request path contains a backslash or control character".to_string());
    }
    for segment in path.split('/') {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err("the request path contains a dot segment".to_string());
        }
    }
    Ok(())
}

/// The upstream URL for `path_and_query` (already checked) under `base`,
/// verified to stay on the base's scheme, host, port and path.
pub fn upstream_url(base: &Url, path_and_query: &str) -> Result<Url, String> {
    let base_path = base.path().trim_end_matches('/');
    let mut text = String::with_capacity(base.as_str().len() + path_and_query.len());
    text.push_str(base.scheme());
    text.push_str("://");
    text.push_str(base.host_str().unwrap_or_default());
    if let Some(port) = base.port() {
        text.push(':');
        text.push_str(&port.to_string());
    }
    text.push_str(base_path);
    text.push_str(path_and_query);
    let url = Url::parse(&text).map_err(|e| format!("cannot build the upstream URL: {e}"))?;
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin || !url.path().starts_with(base_path) {
        return Err("the request path would leave the provider's base URL".to_string());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::llm_proxy::config::RouteConfig;

    fn routing() -> Routing {
        let cfg = LlmProxyConfig {
            upstream: "https://api.openai.com".into(),
            providers: [
                ("local".to_string(), "http://127.0.0.1:11434/".to_string()),
                (
                    "azure".to_string(),
                    "https://x.openai.azure.com/openai".to_string(),
                ),
            ]
            .into(),
            routes: vec![RouteConfig {
                agents: "research-*".into(),
                provider: "local".into(),
            }],
            ..Default::default()
        };
        Routing::from_config(&cfg).unwrap()
    }

    #[test]
    fn header_then_route_then_default() {
        let r = routing();
        assert_eq!(r.pick("any", None).provider, "default");
        assert_eq!(r.pick("research-1", None).provider, "local");
        assert_eq!(r.pick("any", Some("azure")).provider, "azure");
        assert_eq!(r.pick("research-1", Some("default")).provider, "default");
        let unknown = r.pick("any", Some("http://evil.example"));
        assert_eq!(unknown.provider, "default");
        assert!(unknown.refused_header);
        let unknown = r.pick("research-2", Some("nope"));
        assert_eq!((unknown.provider, unknown.refused_header), ("local", true));
    }

    #[test]
    fn urls_stay_under_the_base() {
        let r = routing();
        let azure = r.pick("a", Some("azure")).base;
        assert_eq!(
            upstream_url(azure, "/v1/chat/completions?api-version=1")
                .unwrap()
                .as_str(),
            "https://x.openai.azure.com/openai/v1/chat/completions?api-version=1"
        );
        let local = r.pick("research-1", None).base;
        assert_eq!(
            upstream_url(local, "/v1/models").unwrap().as_str(),
            "http://127.0.0.1:11434/v1/models"
        );
        // The authority never comes from the request.
        let url = upstream_url(azure, "/v1/@evil.example/x").unwrap();
        assert_eq!(url.host_str(), Some("x.openai.azure.com"));
    }

    #[test]
    fn paths_that_could_escape_are_refused() {
        assert!(check_path("/v1/chat/completions").is_ok());
        for bad in [
            "/v2/x",
            "/admin",
            "/v1/../admin",
            "/v1/%2e%2e/admin",
            "/v1/.%2E/admin",
            "/v1/./x",
            "/v1\\..\\admin",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
