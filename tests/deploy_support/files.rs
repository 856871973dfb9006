//! The deployment example's files: paths, and YAML / JSON read into
//! generic values.

use serde_json::Value;
use serde_saphyr::{DuplicateKeyPolicy, options};
use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// How the deploy files are read: a duplicate key is an error (YAML forbids
/// it; compose refuses it too), and only `true` / `false` are booleans
/// (YAML 1.2, as Go's yaml.v3, compose's reader, reads untyped values: `y`,
/// `on`, `yes` stay strings).
pub fn yaml_options() -> serde_saphyr::Options {
    options! {
        duplicate_keys: DuplicateKeyPolicy::Error,
        strict_booleans: true,
    }
}

/// One YAML document as a generic value.
pub fn parse_yaml(src: &str) -> Result<Value, String> {
    parse_yaml_with(src, yaml_options())
}

/// One YAML document as a generic value, read with `options`.
pub fn parse_yaml_with(src: &str, options: serde_saphyr::Options) -> Result<Value, String> {
    serde_saphyr::from_str_with_options(src, options).map_err(|e| e.to_string())
}

pub fn read_yaml(rel: &str) -> Value {
    parse_yaml(&read(&deploy(rel))).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

pub fn dashboard() -> Value {
    let path = deploy("grafana/dashboards/agent-immune.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A port number as a YAML file writes it (`3100`).
pub fn port(value: &Value) -> u16 {
    value
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("{value} is not a port"))
}
