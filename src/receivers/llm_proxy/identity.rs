//! Gateway identity: who a request speaks for is decided by the credential
//! it carries, not by the `X-Agent-ID` it claims (the virtual-key model of
//! LLM gateways such as LiteLLM).
//!
//! - A key configured for an agent (`[receivers.llm_proxy.agents."billing"]
//!   key_sha256 = "…"`) is that agent; an `X-Agent-ID` naming another is
//!   refused (403).
//! - `identity = "bound"` (default): any other key is bound, on first sight,
//!   to the agent it claims (its `X-Agent-ID`, else `key-<hash>`), both
//!   ways: the key then always speaks for that agent (dropping or renaming
//!   the header changes nothing, so a quarantine holds), a different agent
//!   id with it is refused, and no other key may claim that agent. Without
//!   a key, an `X-Agent-ID` bound to a key is refused; an unbound one is
//!   believed (nothing to check it against), and a request with neither is
//!   `anon-<hash of IP and User-Agent>`.
//! - `identity = "strict"`: only configured keys get through (401 without
//!   one, 401 for an unknown one).
//!
//! Keys are hashed (SHA-256) as they arrive; only hashes are kept, compared
//! in constant time against the configured ones, and never logged.

use super::config::{IdentityMode, LlmProxyConfig};
use super::error::ProxyError;
use super::fingerprint::{Fingerprint, IdentifiedBy, api_key, fingerprint, short_hash};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use subtle::ConstantTimeEq;

type KeyHash = [u8; 32];

/// Who a request speaks for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agent: Fingerprint,
    /// Authenticated by a configured key: the proxy's own upstream
    /// credential (when configured) replaces the client's.
    pub configured: bool,
}

/// Why an identity was refused; counted and answered 401/403.
#[derive(Debug)]
pub struct IdentityRefusal(pub ProxyError);

#[derive(Debug, Default)]
struct Bindings {
    by_key: HashMap<KeyHash, (String, IdentifiedBy)>,
    by_agent: HashMap<String, KeyHash>,
}

/// The identity state of one proxy: configured keys and learned bindings.
pub struct Gateway {
    mode: IdentityMode,
    /// (agent id, key hash), every configured key.
    configured: Vec<(String, KeyHash)>,
    bindings: Mutex<Bindings>,
    max_bound_keys: usize,
    full_warned: AtomicBool,
    /// `Authorization: Bearer <upstream_api_key>`, marked sensitive.
    upstream_authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("mode", &self.mode)
            .field("configured_agents", &self.configured.len())
            .finish_non_exhaustive()
    }
}

/// What happened when a key could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Bound now or before.
    Bound,
    /// The table is full: served under its claim, unbound.
    TableFull,
}

impl Gateway {
    pub fn new(cfg: &LlmProxyConfig) -> Result<Self, String> {
        let mut configured = Vec::new();
        for (agent, keys) in &cfg.agents {
            for hash in keys.key_sha256.hashes() {
                configured.push((agent.clone(), parse_key_hash(hash)?));
            }
        }
        let upstream_authorization = match &cfg.upstream_api_key {
            None => None,
            Some(secret) => {
                let mut value = HeaderValue::try_from(format!("Bearer {}", secret.expose()))
                    .map_err(|_| "upstream_api_key holds characters not allowed in a header")?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self {
            mode: cfg.identity,
            configured,
            bindings: Mutex::new(Bindings::default()),
            max_bound_keys: cfg.max_bound_keys,
            full_warned: AtomicBool::new(false),
            upstream_authorization,
        })
    }

    /// The caller of a request with these headers from `client_ip`, or why
    /// it may not speak for anyone. The second value says whether a new
    /// key could not be bound (table full).
    pub fn identify(
        &self,
        headers: &HeaderMap,
        client_ip: IpAddr,
    ) -> Result<(Caller, Binding), IdentityRefusal> {
        let claim = fingerprint(headers, client_ip);
        let claimed_id = (claim.identified_by == IdentifiedBy::Header).then_some(&claim.agent_id);
        let key = api_key(headers);
        let key_hash: Option<KeyHash> = key.map(|k| Sha256::digest(k.as_bytes()).into());
        if let Some(agent) = key_hash.and_then(|h| self.configured_agent(&h)) {
            if let Some(claimed) = claimed_id.filter(|c| *c != agent) {
                return Err(mismatch(format!(
                    "this API key belongs to agent {agent:?}, not {claimed:?} (X-Agent-ID)"
                )));
            }
            let agent = Fingerprint {
                agent_id: agent.to_string(),
                agent_type: claim.agent_type,
                identified_by: IdentifiedBy::ConfiguredKey,
            };
            return Ok((
                Caller {
                    agent,
                    configured: true,
                },
                Binding::Bound,
            ));
        }
        if self.mode == IdentityMode::Strict {
            return Err(unauthorized(if key.is_some() {
                "this API key is not configured for any agent at this proxy (identity = \"strict\")"
            } else {
                "an API key is required at this proxy (identity = \"strict\"): send Authorization: Bearer <your agent key>"
            }));
        }
        let serve = |agent: Fingerprint| {
            Ok((
                Caller {
                    agent,
                    configured: false,
                },
                Binding::Bound,
            ))
        };
        let Some((key, hash)) = key.zip(key_hash) else {
            // No key: an id that belongs to a key may not be used without it.
            if let Some(claimed) = claimed_id
                && (self.is_configured(claimed) || self.lock().by_agent.contains_key(claimed))
            {
                return Err(mismatch(format!(
                    "agent {claimed:?} is bound to an API key at this proxy; send its key"
                )));
            }
            return serve(claim);
        };
        let wanted = match claimed_id {
            Some(id) => (id.clone(), IdentifiedBy::Header),
            None => (
                format!("key-{}", short_hash(key.as_bytes())),
                IdentifiedBy::ApiKey,
            ),
        };
        let mut bindings = self.lock();
        if let Some((bound, by)) = bindings.by_key.get(&hash) {
            if let Some(claimed) = claimed_id.filter(|c| *c != bound) {
                return Err(mismatch(format!(
                    "this API key is bound to agent {bound:?}, not {claimed:?} (X-Agent-ID); one key speaks for one agent"
                )));
            }
            let agent = Fingerprint {
                agent_id: bound.clone(),
                agent_type: claim.agent_type,
                identified_by: *by,
            };
            return serve(agent);
        }
        if self.is_configured(&wanted.0) || bindings.by_agent.contains_key(&wanted.0) {
            return Err(mismatch(format!(
                "agent {:?} is bound to another API key at this proxy",
                wanted.0
            )));
        }
        let agent = Fingerprint {
            agent_id: wanted.0,
            agent_type: claim.agent_type,
            identified_by: wanted.1,
        };
        if bindings.by_key.len() >= self.max_bound_keys {
            drop(bindings);
            if !self.full_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_bound_keys = self.max_bound_keys,
                    "llm_proxy: the key binding table is full; new keys are served unbound (counted in llm_proxy_identity_unbound)"
                );
            }
            let (caller, _) = serve(agent)?;
            return Ok((caller, Binding::TableFull));
        }
        bindings.by_agent.insert(agent.agent_id.clone(), hash);
        bindings
            .by_key
            .insert(hash, (agent.agent_id.clone(), agent.identified_by));
        drop(bindings);
        serve(agent)
    }

    /// The headers to send upstream for `caller`: the proxy's credential in
    /// place of the client's, for configured agents when one is set.
    pub fn upstream_credential(&self, caller: &Caller, headers: &mut HeaderMap) {
        let Some(authorization) = self.upstream_authorization.as_ref() else {
            return;
        };
        if !caller.configured {
            return;
        }
        for name in ["api-key", "x-api-key"] {
            headers.remove(name);
        }
        headers.insert(http::header::AUTHORIZATION, authorization.clone());
    }

    /// Keys bound so far (not counting configured ones).
    pub fn bound_keys(&self) -> usize {
        self.lock().by_key.len()
    }

    /// The configured agent of `hash`; every configured hash is compared,
    /// each in constant time.
    fn configured_agent(&self, hash: &KeyHash) -> Option<&str> {
        let mut found = None;
        for (agent, configured) in &self.configured {
            if bool::from(configured.ct_eq(hash)) {
                found = Some(agent.as_str());
            }
        }
        found
    }

    fn is_configured(&self, agent_id: &str) -> bool {
        self.configured.iter().any(|(agent, _)| agent == agent_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bindings> {
        self.bindings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A configured `key_sha256`: 64 hex digits.
pub fn parse_key_hash(text: &str) -> Result<KeyHash, String> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut hash)
        .map_err(|_| "must be the SHA-256 of the key as 64 hex digits (e.g. `printf %s \"$KEY\" | sha256sum`)".to_string())?;
    Ok(hash)
}

fn mismatch(message: String) -> IdentityRefusal {
    IdentityRefusal(
        ProxyError::new(
            StatusCode::FORBIDDEN,
            "identity_mismatch",
            "identity_mismatch",
            message,
        )
        .no_retry(),
    )
}

fn unauthorized(message: &str) -> IdentityRefusal {
    IdentityRefusal(
        ProxyError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message,
        )
        .no_retry(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::llm_proxy::config::{AgentKeyConfig, KeyHashes, Secret};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn gateway(adjust: impl FnOnce(&mut LlmProxyConfig)) -> Gateway {
        let mut cfg = LlmProxyConfig::default();
        adjust(&mut cfg);
        Gateway::new(&cfg).unwrap()
    }

    fn who(g: &Gateway, pairs: &[(&'static str, &str)]) -> Result<String, StatusCode> {
        g.identify(&headers(pairs), IP)
            .map(|(c, _)| c.agent.agent_id)
            .map_err(|r| r.0.status)
    }

    #[test]
    fn a_key_binds_to_its_first_claim_both_ways() {
        let g = gateway(|_| {});
        let a = [("authorization", "Bearer sk-a"), ("x-agent-id", "billing")];
        assert_eq!(who(&g, &a).unwrap(), "billing");
        // Header dropped or renamed: still billing, or refused.
        assert_eq!(
            who(&g, &[("authorization", "Bearer sk-a")]).unwrap(),
            "billing"
        );
        let renamed = [("authorization", "Bearer sk-a"), ("x-agent-id", "other")];
        assert_eq!(who(&g, &renamed), Err(StatusCode::FORBIDDEN));
        // Another key, or no key, cannot claim billing.
        let thief = [("authorization", "Bearer sk-b"), ("x-agent-id", "billing")];
        assert_eq!(who(&g, &thief), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            who(&g, &[("x-agent-id", "billing")]),
            Err(StatusCode::FORBIDDEN)
        );
        // A key first seen without a header is its derived agent for good.
        let plain = who(&g, &[("api-key", "sk-c")]).unwrap();
        assert!(plain.starts_with("key-"), "{plain}");
        let later = [("api-key", "sk-c"), ("x-agent-id", "fresh")];
        assert_eq!(who(&g, &later), Err(StatusCode::FORBIDDEN));
        // Keyless and unbound: believed; neither: anonymous.
        assert_eq!(who(&g, &[("x-agent-id", "free")]).unwrap(), "free");
        assert!(who(&g, &[]).unwrap().starts_with("anon-"));
        assert_eq!(g.bound_keys(), 2);
    }

    #[test]
    fn the_binding_table_is_bounded() {
        let g = gateway(|c| c.max_bound_keys = 1);
        let first = [("authorization", "Bearer k1"), ("x-agent-id", "one")];
        let (_, binding) = g.identify(&headers(&first), IP).unwrap();
        assert_eq!(binding, Binding::Bound);
        let second = [("authorization", "Bearer k2"), ("x-agent-id", "two")];
        let (caller, binding) = g.identify(&headers(&second), IP).unwrap();
        assert_eq!(
            (caller.agent.agent_id.as_str(), binding),
            ("two", Binding::TableFull)
        );
        assert_eq!(g.bound_keys(), 1);
        // What was bound stays enforced.
        let renamed = [("authorization", "Bearer k1"), ("x-agent-id", "two")];
        assert_eq!(who(&g, &renamed), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn configured_keys_and_strict_mode() {
        let hash = hex::encode(Sha256::digest(b"sk-billing"));
        let g = gateway(|c| {
            c.identity = IdentityMode::Strict;
            c.agents.insert(
                "billing".into(),
                AgentKeyConfig {
                    key_sha256: KeyHashes::One(hash.clone()),
                },
            );
            c.upstream_api_key = Some(Secret::new("sk-provider"));
        });
        let (caller, _) = g
            .identify(&headers(&[("authorization", "Bearer sk-billing")]), IP)
            .unwrap();
        assert_eq!(caller.agent.agent_id, "billing");
        assert_eq!(caller.agent.identified_by, IdentifiedBy::ConfiguredKey);
        let mut out = headers(&[("authorization", "Bearer sk-billing"), ("api-key", "x")]);
        g.upstream_credential(&caller, &mut out);
        assert_eq!(out["authorization"], "Bearer sk-provider");
        assert!(out["authorization"].is_sensitive() && out.get("api-key").is_none());
        let wrong = [
            ("authorization", "Bearer sk-billing"),
            ("x-agent-id", "ops"),
        ];
        assert_eq!(who(&g, &wrong), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            who(&g, &[("authorization", "Bearer sk-other")]),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            who(&g, &[("x-agent-id", "billing")]),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(who(&g, &[]), Err(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn a_configured_agent_cannot_be_claimed_without_its_key() {
        let hash = hex::encode(Sha256::digest(b"sk-billing"));
        let g = gateway(|c| {
            c.agents.insert(
                "billing".into(),
                AgentKeyConfig {
                    key_sha256: KeyHashes::One(hash),
                },
            );
        });
        let thief = [("authorization", "Bearer sk-x"), ("x-agent-id", "billing")];
        assert_eq!(who(&g, &thief), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            who(&g, &[("x-agent-id", "billing")]),
            Err(StatusCode::FORBIDDEN)
        );
        // Unconfigured keys still bind in the default mode.
        let other = [("authorization", "Bearer sk-x"), ("x-agent-id", "ops")];
        assert_eq!(who(&g, &other).unwrap(), "ops");
    }
}
