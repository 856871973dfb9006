//! The API key: the environment wins, else the stored key, else one is
//! generated, shown once and stored only as a hash.

use agent_immune::state::{ApiKeySource, StateConfig, Store, resolve_api_key};
use std::path::{Path, PathBuf};

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    (tmp, dir)
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StateConfig::default()).unwrap()
}

/// The key printed in the announcement.
fn printed_key(announcement: &[u8]) -> String {
    let text = String::from_utf8(announcement.to_vec()).unwrap();
    let keys: Vec<_> = text
        .split_whitespace()
        .filter(|w| w.starts_with("aik_") && w.len() == 68)
        .collect();
    assert_eq!(keys.len(), 1, "{text}");
    keys[0].to_string()
}

/// Every byte of every file in `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    bytes
}

#[test]
fn first_start_generates_a_key_shown_once_and_stored_only_as_a_hash() {
    let (_tmp, dir) = data_dir();
    let key_text = {
        let store = open(&dir);
        let mut announced = Vec::new();
        let key = resolve_api_key(&store, None, &mut announced).unwrap();
        assert_eq!(key.source(), ApiKeySource::Generated);
        let key_text = printed_key(&announced);
        assert!(key_text[4..].chars().all(|c| c.is_ascii_hexdigit()));
        let announcement = String::from_utf8(announced).unwrap();
        assert!(announcement.contains("only this once"), "{announcement}");
        assert!(announcement.contains("AGENT_IMMUNE_API_KEY"));
        assert!(key.verify(&key_text));
        assert!(!key.verify(&key_text[..key_text.len() - 1]));
        assert!(!format!("{key:?}").contains(&key_text[4..8]));
        key_text
    };
    let needle = key_text.as_bytes();
    let haystack = all_bytes(&dir);
    assert!(
        !haystack.windows(needle.len()).any(|w| w == needle),
        "the key itself is on disk"
    );
    // Not even its first characters: no 8 of its hex digits in a row.
    let parts: std::collections::HashSet<&[u8]> = needle[4..].windows(8).collect();
    assert!(
        !haystack.windows(8).any(|w| parts.contains(w)),
        "part of the key is on disk"
    );

    // Restart: the stored key is used, nothing is generated or printed.
    let store = open(&dir);
    let mut announced = Vec::new();
    let key = resolve_api_key(&store, None, &mut announced).unwrap();
    assert_eq!(key.source(), ApiKeySource::Stored);
    assert!(announced.is_empty());
    assert!(key.verify(&key_text));
    assert!(!key.verify("aik_wrong"));
}

#[test]
fn the_environment_wins_and_nothing_is_generated() {
    let (_tmp, dir) = data_dir();
    let store = open(&dir);
    let mut announced = Vec::new();
    let env_key = "operator-chosen-key-0123456789";
    let key = resolve_api_key(&store, Some(env_key), &mut announced).unwrap();
    assert_eq!(key.source(), ApiKeySource::Env);
    assert!(announced.is_empty(), "nothing printed");
    assert!(key.verify(env_key));
    assert!(!key.verify("operator-chosen-key-012345678"));

    // Nothing was stored: without the env var, a key is generated now.
    let key = resolve_api_key(&store, None, &mut announced).unwrap();
    assert_eq!(key.source(), ApiKeySource::Generated);
    let generated = printed_key(&announced);

    // With a stored key, the env var still wins, and the stored one stays.
    let mut quiet = Vec::new();
    let key = resolve_api_key(&store, Some(env_key), &mut quiet).unwrap();
    assert_eq!(key.source(), ApiKeySource::Env);
    assert!(!key.verify(&generated));
    let key = resolve_api_key(&store, Some(""), &mut quiet).unwrap();
    assert_eq!(
        key.source(),
        ApiKeySource::Stored,
        "empty env counts as unset"
    );
    assert!(key.verify(&generated));
    assert!(quiet.is_empty());
}

#[test]
fn rotation_replaces_the_stored_key() {
    let (_tmp, dir) = data_dir();
    let store = open(&dir);
    let mut first = Vec::new();
    resolve_api_key(&store, None, &mut first).unwrap();
    let first = printed_key(&first);
    let mut second = Vec::new();
    let key = agent_immune::state::api_key::rotate_api_key(&store, &mut second).unwrap();
    let second = printed_key(&second);
    assert_ne!(first, second);
    assert!(key.verify(&second) && !key.verify(&first));
    let key = resolve_api_key(&store, None, &mut Vec::new()).unwrap();
    assert!(key.verify(&second) && !key.verify(&first));
}
