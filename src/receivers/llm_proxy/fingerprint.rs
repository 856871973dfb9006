//! Who a request claims to be: the agent id and type of a proxied request,
//! for agents that never declared themselves. `identity.rs` decides whether
//! the claim holds (the credential, not the header, has the last word).
//!
//! The claim, first that applies: the `X-Agent-ID` header; else `key-` + 12
//! hex of SHA-256 of the API key (`Authorization: Bearer`, `api-key`,
//! `x-api-key`); else `anon-` + 12 hex of SHA-256 of client IP, `|`, and
//! User-Agent. The API key is hashed in place and never kept, logged or
//! returned.

use crate::immune::agent_id;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

pub const AGENT_ID_HEADER: &str = "x-agent-id";
pub const AGENT_TYPE_HEADER: &str = "x-agent-type";
const MAX_AGENT_TYPE_CHARS: usize = 64;
/// Hex characters of the hash kept in derived ids (48 bits).
const HASH_HEX_CHARS: usize = 12;

/// How the agent's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifiedBy {
    /// The agent named itself with `X-Agent-ID`.
    Header,
    /// Derived from the API key it calls with.
    ApiKey,
    /// Derived from its client IP and User-Agent.
    Client,
    /// Authenticated by a key configured for the agent.
    ConfiguredKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub agent_id: String,
    /// `X-Agent-Type`, else recognised from the User-Agent, else "unknown".
    pub agent_type: String,
    pub identified_by: IdentifiedBy,
}

pub fn fingerprint(headers: &HeaderMap, client_ip: IpAddr) -> Fingerprint {
    let user_agent = header_str(headers, "user-agent").unwrap_or("");
    let agent_type = header_str(headers, AGENT_TYPE_HEADER)
        .map(str::trim)
        .filter(|t| printable(t, MAX_AGENT_TYPE_CHARS))
        .map(str::to_string)
        .unwrap_or_else(|| agent_type_from_user_agent(user_agent).to_string());
    // An `X-Agent-ID` that is no agent id (empty, too long, control
    // characters) is ignored: identity falls back, never to a truncated
    // name that could collide with another agent.
    if let Some(id) = header_str(headers, AGENT_ID_HEADER).and_then(|id| agent_id::parse(id).ok()) {
        return Fingerprint {
            agent_id: id.to_string(),
            agent_type,
            identified_by: IdentifiedBy::Header,
        };
    }
    if let Some(key) = api_key(headers) {
        return Fingerprint {
            agent_id: format!("key-{}", short_hash(key.as_bytes())),
            agent_type,
            identified_by: IdentifiedBy::ApiKey,
        };
    }
    let client = format!("{client_ip}|{user_agent}");
    Fingerprint {
        agent_id: format!("anon-{}", short_hash(client.as_bytes())),
        agent_type,
        identified_by: IdentifiedBy::Client,
    }
}

/// The API key the client authenticates with, borrowed from the headers.
pub(super) fn api_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = header_str(headers, "authorization").and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer
        .into_iter()
        .chain(header_str(headers, "api-key").map(str::trim))
        .chain(header_str(headers, "x-api-key").map(str::trim))
        .find(|k| !k.is_empty())
}

pub(super) fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = hex::encode(digest);
    hex.truncate(HASH_HEX_CHARS);
    hex
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// 1..=max characters, none of them control characters.
fn printable(text: &str, max: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control)
}

/// The agent framework or SDK a User-Agent names. Frameworks are checked
/// before SDKs: LangChain or CrewAI on top of the OpenAI SDK say both.
pub fn agent_type_from_user_agent(user_agent: &str) -> &'static str {
    let ua = user_agent.to_ascii_lowercase();
    const KNOWN: &[(&str, &str)] = &[
        ("langgraph", "langgraph"),
        ("langchain", "langchain"),
        ("crewai", "crewai"),
        ("llama-index", "llamaindex"),
        ("llama_index", "llamaindex"),
        ("llamaindex", "llamaindex"),
        ("autogen", "autogen"),
        ("semantic-kernel", "semantic-kernel"),
        ("semantickernel", "semantic-kernel"),
        ("haystack", "haystack"),
        ("dspy", "dspy"),
        ("pydantic-ai", "pydantic-ai"),
        ("litellm", "litellm"),
        // The OpenAI Agents SDK sends `Agents/Python <version>`.
        ("agents/python", "openai-agents"),
        ("openai/python", "openai-python"),
        ("openai/js", "openai-node"),
        ("openai/node", "openai-node"),
        ("openai-java", "openai-java"),
        ("openai/java", "openai-java"),
        ("openai-go", "openai-go"),
        ("openai/go", "openai-go"),
        ("curl/", "curl"),
        ("python-httpx", "python-httpx"),
        ("python-requests", "python-requests"),
    ];
    KNOWN
        .iter()
        .find(|(needle, _)| ua.contains(needle))
        .map_or("unknown", |(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    #[test]
    fn header_then_key_then_client() {
        let fp = fingerprint(
            &headers(&[
                ("x-agent-id", " billing-bot "),
                ("authorization", "Bearer sk-1"),
            ]),
            IP,
        );
        assert_eq!(fp.agent_id, "billing-bot");
        assert_eq!(fp.identified_by, IdentifiedBy::Header);

        let fp = fingerprint(&headers(&[("authorization", "Bearer sk-secret")]), IP);
        let expected = &hex::encode(Sha256::digest(b"sk-secret"))[..12];
        assert_eq!(fp.agent_id, format!("key-{expected}"));
        assert_eq!(fp.identified_by, IdentifiedBy::ApiKey);

        let fp = fingerprint(&headers(&[("api-key", "azure-key")]), IP);
        assert_eq!(
            fp.agent_id,
            format!("key-{}", &hex::encode(Sha256::digest(b"azure-key"))[..12])
        );

        let fp = fingerprint(&headers(&[("user-agent", "curl/8.0")]), IP);
        let expected = &hex::encode(Sha256::digest(b"10.0.0.7|curl/8.0"))[..12];
        assert_eq!(fp.agent_id, format!("anon-{expected}"));
        assert_eq!(fp.identified_by, IdentifiedBy::Client);
        assert_eq!(fp.agent_type, "curl");
    }

    #[test]
    fn unusable_agent_id_falls_back() {
        let long = "x".repeat(agent_id::MAX_AGENT_ID_CHARS + 1);
        let fp = fingerprint(&headers(&[("x-agent-id", &long), ("x-api-key", "k")]), IP);
        assert_eq!(fp.identified_by, IdentifiedBy::ApiKey);
        let fp = fingerprint(&headers(&[("x-agent-id", "  ")]), IP);
        assert_eq!(fp.identified_by, IdentifiedBy::Client);
        // A Basic credential is not an API key.
        let fp = fingerprint(&headers(&[("authorization", "Basic abc")]), IP);
        assert_eq!(fp.identified_by, IdentifiedBy::Client);
    }

    #[test]
    fn agent_types() {
        assert_eq!(
            agent_type_from_user_agent("OpenAI/Python 2.54.0"),
            "openai-python"
        );
        assert_eq!(
            agent_type_from_user_agent("OpenAI/JS 4.90.0"),
            "openai-node"
        );
        assert_eq!(
            agent_type_from_user_agent("langchain-openai/0.3 OpenAI/Python 1.60"),
            "langchain"
        );
        assert_eq!(agent_type_from_user_agent("CrewAI/0.100"), "crewai");
        assert_eq!(
            agent_type_from_user_agent("llama-index-llms-openai"),
            "llamaindex"
        );
        assert_eq!(agent_type_from_user_agent("autogen-ext/0.4"), "autogen");
        assert_eq!(
            agent_type_from_user_agent("Agents/Python 0.3.0"),
            "openai-agents"
        );
        assert_eq!(agent_type_from_user_agent("something"), "unknown");
        let fp = fingerprint(
            &headers(&[
                ("x-agent-type", "planner"),
                ("user-agent", "OpenAI/Python 2"),
            ]),
            IP,
        );
        assert_eq!(fp.agent_type, "planner");
    }
}
