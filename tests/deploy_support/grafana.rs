//! What Grafana is provisioned with (data sources) and the queries the
//! dashboard and data sources run.

use super::files::{dashboard, read_yaml};
use serde_json::Value;

/// Grafana expands `$VAR` in provisioning files; `$$` is a literal `$`.
pub fn grafana_unescape(s: &str) -> String {
    s.replace("$$", "$")
}

#[derive(Debug, Clone)]
pub struct DataSource {
    pub name: String,
    pub kind: String,
    pub uid: String,
    pub url: String,
    pub json_data: Value,
}

pub fn datasources() -> Vec<DataSource> {
    let doc = read_yaml("grafana/provisioning/datasources/datasources.yaml");
    doc["datasources"]
        .as_array()
        .expect("datasources: a list")
        .iter()
        .map(|d| DataSource {
            name: d["name"].as_str().expect("name").to_string(),
            kind: d["type"].as_str().expect("type").to_string(),
            uid: d["uid"].as_str().expect("a fixed uid").to_string(),
            url: d["url"].as_str().unwrap_or_default().to_string(),
            json_data: d["jsonData"].clone(),
        })
        .collect()
}

pub fn datasource_of_kind(kind: &str) -> DataSource {
    let all: Vec<DataSource> = datasources()
        .into_iter()
        .filter(|d| d.kind == kind)
        .collect();
    assert_eq!(all.len(), 1, "one {kind} data source: {all:?}");
    all[0].clone()
}

/// A query the dashboard or a data source runs: (data source type, where, expression).
#[derive(Debug, Clone)]
pub struct Query {
    pub kind: String,
    pub place: String,
    pub expr: String,
}

pub fn dashboard_queries(dash: &Value) -> Vec<Query> {
    fn kind_of(ds: &Value) -> Option<String> {
        ds["type"].as_str().map(str::to_string)
    }
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let kind = kind_of(&target["datasource"]).or_else(|| kind_of(&panel["datasource"]));
            if let (Some(kind), Some(expr)) = (kind, target["expr"].as_str()) {
                out.push(Query {
                    kind,
                    place: format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                    expr: expr.to_string(),
                });
            }
        }
    }
    for annotation in dash["annotations"]["list"].as_array().into_iter().flatten() {
        let Some(kind) = kind_of(&annotation["datasource"]) else {
            continue;
        };
        for expr in [&annotation["expr"], &annotation["target"]["expr"]] {
            if let Some(expr) = expr.as_str() {
                out.push(Query {
                    kind: kind.clone(),
                    place: format!(
                        "annotation {:?}",
                        annotation["name"].as_str().unwrap_or("?")
                    ),
                    expr: expr.to_string(),
                });
            }
        }
    }
    out
}

/// The LogQL queries Grafana will run against agent-immune's events: the
/// dashboard's and the Tempo data source's trace-to-logs query.
pub fn loki_queries() -> Vec<Query> {
    let mut queries: Vec<Query> = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|q| q.kind == "loki")
        .collect();
    let tempo = datasource_of_kind("tempo");
    if let Some(q) = tempo.json_data["tracesToLogsV2"]["query"].as_str() {
        queries.push(Query {
            kind: "loki".into(),
            place: "Tempo data source tracesToLogsV2".into(),
            expr: grafana_unescape(q),
        });
    }
    queries
}

/// Every `datasource` object anywhere in the dashboard, with where it is.
pub fn datasource_refs(value: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "datasource" && v.is_object() {
                    out.push((path.clone(), v.clone()));
                }
                datasource_refs(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                datasource_refs(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
