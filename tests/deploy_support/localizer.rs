//! The compose network moved onto loopback.

use super::compose::Compose;
use super::files::deploy;
use crate::common;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Every `(service, port)` gets one local port, so wiring that disagrees
/// between services disagrees here too. Container paths become host paths
/// (bind mounts) or temporary directories (named volumes).
pub struct Localizer {
    services: BTreeSet<String>,
    ports: Mutex<BTreeMap<(String, u16), u16>>,
    volumes_root: PathBuf,
}

impl Localizer {
    pub fn new(compose: &Compose, volumes_root: &Path) -> Self {
        Localizer {
            services: compose.services().keys().cloned().collect(),
            ports: Mutex::new(BTreeMap::new()),
            volumes_root: volumes_root.to_path_buf(),
        }
    }

    pub fn port(&self, service: &str, port: u16) -> u16 {
        *self
            .ports
            .lock()
            .unwrap()
            .entry((service.to_string(), port))
            .or_insert_with(common::free_port)
    }

    pub fn addr(&self, service: &str, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(service, port)))
    }

    /// `[scheme://]host:port[/path]` with a compose service (or the owner's
    /// own wildcard / loopback address) as host, moved to loopback.
    pub fn address(&self, owner: &str, value: &str) -> String {
        let (scheme, rest) = match value.find("://") {
            Some(i) => value.split_at(i + 3),
            None => ("", value),
        };
        let Some((host, after)) = rest.split_once(':') else {
            return value.to_string();
        };
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        let Ok(port) = after[..digits].parse::<u16>() else {
            return value.to_string();
        };
        let service = match host {
            "0.0.0.0" | "127.0.0.1" | "localhost" => owner,
            h if self.services.contains(h) => h,
            _ => return value.to_string(),
        };
        format!(
            "{scheme}127.0.0.1:{}{}",
            self.port(service, port),
            &after[digits..]
        )
    }

    pub fn path(&self, compose: &Compose, owner: &str, value: &str) -> String {
        for (source, target) in compose.mounts(owner) {
            if let Some(below) = value.strip_prefix(&target) {
                if !(below.is_empty() || below.starts_with('/')) {
                    continue;
                }
                let host = if source.starts_with('.') {
                    deploy(&source)
                } else {
                    let dir = self.volumes_root.join(&source);
                    std::fs::create_dir_all(&dir).unwrap();
                    dir
                };
                return format!("{}{below}", host.display());
            }
        }
        value.to_string()
    }

    pub fn value(&self, compose: &Compose, owner: &str, value: &str) -> String {
        if value.starts_with('/') {
            self.path(compose, owner, value)
        } else {
            self.address(owner, value)
        }
    }

    /// A command line: addresses and paths moved; `--control-host` (a bind
    /// address) and `--control-port` (a bare port) too.
    pub fn args(&self, compose: &Compose, owner: &str, args: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(args.len());
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            out.push(self.value(compose, owner, arg));
            match arg.as_str() {
                "--control-host" => {
                    iter.next();
                    out.push("127.0.0.1".to_string());
                }
                "--control-port" => {
                    let port: u16 = iter.next().and_then(|p| p.parse().ok()).expect("a port");
                    out.push(self.port(owner, port).to_string());
                }
                _ => {}
            }
        }
        out
    }
}

/// The port of `host:port` / `scheme://host:port/...`.
pub fn port_of(value: &str) -> u16 {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let after = rest.rsplit_once(':').map(|(_, p)| p).expect("host:port");
    let digits = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    after[..digits].parse().expect("a port")
}
