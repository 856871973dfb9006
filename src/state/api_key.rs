//! The key that guards mutating API calls and ingest.
//!
//! `AGENT_IMMUNE_API_KEY` wins when set (nothing is generated or stored).
//! Otherwise the key stored in the data dir is used; on the very first
//! start one is generated from the OS random source, printed once to
//! stderr, and only its SHA-256 hash is kept. No part of a key is ever
//! logged or stored.

use super::error::StateError;
use super::random::random_bytes;
use super::record::{self, StateRecord};
use super::schema::meta_key;
use super::store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use subtle::ConstantTimeEq;

pub const API_KEY_ENV: &str = "AGENT_IMMUNE_API_KEY";
/// Generated keys: this prefix, then 32 random bytes in hex.
const GENERATED_PREFIX: &str = "aik_";
/// A key shorter than this from the environment is accepted with a warning.
const MIN_RECOMMENDED_LEN: usize = 24;
/// Longest key accepted from the environment or a request.
pub const MAX_API_KEY_LEN: usize = 1024;

/// Where the key in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeySource {
    Env,
    Stored,
    Generated,
}

/// Checks candidate keys; holds only the hash.
#[derive(Clone)]
pub struct ApiKey {
    hash: [u8; 32],
    source: ApiKeySource,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    fn from_secret(secret: &str, source: ApiKeySource) -> Self {
        Self {
            hash: Sha256::digest(secret.as_bytes()).into(),
            source,
        }
    }

    /// Whether `candidate` is the key. Compares SHA-256 digests in constant
    /// time, so neither the content nor the length of the key leaks through
    /// timing.
    pub fn verify(&self, candidate: &str) -> bool {
        if candidate.len() > MAX_API_KEY_LEN {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        digest.ct_eq(&self.hash).into()
    }

    pub fn source(&self) -> ApiKeySource {
        self.source
    }
}

/// The stored form: never the key itself. `prefix` is written empty (it
/// once held the key's first characters) and never read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredApiKey {
    sha256: [u8; 32],
    prefix: String,
    created_at: u64,
}

impl StateRecord for StoredApiKey {
    const VERSION: u16 = 1;
}

/// The key from `AGENT_IMMUNE_API_KEY`'s value (empty counts as unset):
/// all a service without a `[state]` store can have.
pub fn env_api_key(env_value: Option<&str>) -> Result<Option<ApiKey>, StateError> {
    let Some(secret) = env_value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if secret.len() > MAX_API_KEY_LEN {
        return Err(StateError::Encode {
            what: API_KEY_ENV.to_string(),
            message: format!("longer than {MAX_API_KEY_LEN} bytes"),
        });
    }
    let key = ApiKey::from_secret(secret, ApiKeySource::Env);
    if secret.len() < MIN_RECOMMENDED_LEN {
        tracing::warn!(
            "{API_KEY_ENV} is shorter than {MIN_RECOMMENDED_LEN} characters; a longer random key is safer"
        );
    }
    tracing::info!("API key from {API_KEY_ENV}");
    Ok(Some(key))
}

/// The key from `AGENT_IMMUNE_API_KEY`, else the stored one, else a new
/// one (printed to `announce` once). Empty env values count as unset.
pub fn resolve_api_key(
    store: &Store,
    env_value: Option<&str>,
    announce: &mut dyn Write,
) -> Result<ApiKey, StateError> {
    if let Some(key) = env_api_key(env_value)? {
        return Ok(key);
    }
    if let Some(bytes) = store.meta_get(meta_key::API_KEY)? {
        match record::decode::<StoredApiKey>(&bytes) {
            Ok(stored) => {
                tracing::info!("API key from the state store");
                return Ok(ApiKey {
                    hash: stored.sha256,
                    source: ApiKeySource::Stored,
                });
            }
            Err(e) => tracing::warn!("stored API key unreadable ({e}); generating a new one"),
        }
    }
    generate(store, announce)
}

/// [`resolve_api_key`] with `AGENT_IMMUNE_API_KEY` from the environment and
/// a generated key announced on stderr.
pub fn resolve_api_key_from_env(store: &Store) -> Result<ApiKey, StateError> {
    let env = std::env::var(API_KEY_ENV).ok();
    resolve_api_key(store, env.as_deref(), &mut std::io::stderr())
}

/// Replaces the stored key with a new one (printed to `announce` once).
/// Has no effect on a key from the environment.
pub fn rotate_api_key(store: &Store, announce: &mut dyn Write) -> Result<ApiKey, StateError> {
    store.meta_delete(meta_key::API_KEY)?;
    generate(store, announce)
}

fn generate(store: &Store, announce: &mut dyn Write) -> Result<ApiKey, StateError> {
    let secret = format!("{GENERATED_PREFIX}{}", hex::encode(random_bytes::<32>()?));
    let key = ApiKey::from_secret(&secret, ApiKeySource::Generated);
    let stored = StoredApiKey {
        sha256: key.hash,
        prefix: String::new(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    // Shown before it is stored: a crash in between costs a key nobody
    // uses, never a stored key nobody has seen.
    let shown = writeln!(
        announce,
        "\nagent-immune: generated an API key (shown only this once; only its hash is kept in {}):\n\n    {secret}\n\nSend it as `Authorization: Bearer <key>`. Set {API_KEY_ENV} to use a key of your own instead.\n",
        store.dir().display()
    );
    if let Err(e) = shown {
        tracing::warn!("could not print the generated API key: {e}");
    }
    store.meta_put(meta_key::API_KEY, &record::encode("API key hash", &stored)?)?;
    tracing::info!("API key generated");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_only_the_key() {
        let key = ApiKey::from_secret("aik_0123456789abcdef", ApiKeySource::Env);
        assert!(key.verify("aik_0123456789abcdef"));
        assert!(!key.verify("aik_0123456789abcdeF"));
        assert!(!key.verify("aik_0123456789abcde"));
        assert!(!key.verify(""));
        assert!(!key.verify(&"a".repeat(MAX_API_KEY_LEN + 1)));
    }

    #[test]
    fn debug_shows_nothing_of_the_key() {
        let key = ApiKey::from_secret("a-very-secret-value-123", ApiKeySource::Env);
        let debug = format!("{key:?}");
        assert!(
            !debug.contains("a-ve") && !debug.contains("hash"),
            "{debug}"
        );
    }
}
