//! `deploy/docker-compose.yaml`, read and interpolated as docker compose
//! reads it.

use super::files::{deploy, parse_yaml_with, read, yaml_options};
use serde_json::{Map, Value};
use serde_saphyr::PropertySyntax;
use std::collections::{BTreeMap, HashMap};

pub struct Compose(pub Value);

impl Compose {
    /// As compose reads it with no variable set in the host environment.
    pub fn load() -> Self {
        Self::load_with_host_env(&[])
    }

    /// As compose reads it with `host_env` set in the host environment.
    pub fn load_with_host_env(host_env: &[(&str, &str)]) -> Self {
        let path = deploy("docker-compose.yaml");
        Self::parse(&read(&path), host_env)
    }

    /// `${VAR}`, `${VAR:-default}`, `$$` ... interpolated from `host_env`
    /// by compose's rules (the YAML library implements compose-go's).
    pub fn parse(src: &str, host_env: &[(&str, &str)]) -> Self {
        let vars: HashMap<String, String> = host_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut options = yaml_options().with_properties(vars);
        options.property_syntax = PropertySyntax::DockerCompose;
        Compose(parse_yaml_with(src, options).unwrap_or_else(|e| panic!("compose file: {e}")))
    }

    pub fn services(&self) -> &Map<String, Value> {
        self.0["services"].as_object().expect("services: a map")
    }

    pub fn service(&self, name: &str) -> &Value {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("the compose file has no service {name:?}"))
    }

    /// A list-valued key (`command`, `entrypoint`, `depends_on`, ...).
    pub fn list(&self, service: &str, key: &str) -> Vec<String> {
        match &self.service(service)[key] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().expect("list of strings").to_string())
                .collect(),
            other => panic!("{service}.{key}: a list, not {other}"),
        }
    }

    /// The environment map; numbers and booleans become their text, as
    /// compose passes them.
    pub fn environment(&self, service: &str) -> BTreeMap<String, String> {
        match &self.service(service)["environment"] {
            Value::Null => BTreeMap::new(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        other => panic!("{service}.environment.{k}: a scalar, not {other}"),
                    };
                    (k.clone(), text)
                })
                .collect(),
            other => panic!("{service}.environment: a map, not {other}"),
        }
    }

    /// `(source, container path)` of each volume; a source starting with
    /// `.` is a bind mount relative to deploy/, else a named volume.
    pub fn mounts(&self, service: &str) -> Vec<(String, String)> {
        self.list(service, "volumes")
            .iter()
            .map(|v| {
                let mut parts = v.split(':');
                let source = parts.next().unwrap_or_default().to_string();
                let target = parts
                    .next()
                    .expect("volume with a container path")
                    .to_string();
                (source, target)
            })
            .collect()
    }
}
