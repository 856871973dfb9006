//! A LogQL query checked against the entries Loki would hold.

use super::grafana::Query;
use super::loki_mapping;
use super::queries;
use std::collections::BTreeSet;

/// What is wrong with one LogQL query against the entries Loki would hold;
/// empty when every name and literal it uses is there.
pub fn logql_problems(query: &Query, entries: &[loki_mapping::Entry]) -> Vec<String> {
    let names = match queries::names(&query.expr) {
        Ok(n) => n,
        Err(e) => return vec![format!("{}: {e}", query.place)],
    };
    let mut problems = Vec::new();
    let place = &query.place;
    assert!(
        !names.selector.is_empty(),
        "{place}: no stream selector in {:?}",
        query.expr
    );
    for m in &names.selector {
        if !entries.iter().any(|e| e.stream.contains_key(&m.name)) {
            let hint = if entries.iter().any(|e| e.metadata.contains_key(&m.name)) {
                " (it is structured metadata: a stream selector on it matches nothing)"
            } else {
                ""
            };
            problems.push(format!("{place}: no index label {}{hint}", m.name));
        } else if let (Some(v), "=") = (&m.literal, m.op)
            && !entries.iter().any(|e| e.stream.get(&m.name) == Some(v))
        {
            problems.push(format!("{place}: no stream has {}={v:?}", m.name));
        }
    }
    // The events the query is about: those its event_name literals name.
    let event_names: BTreeSet<&str> = names
        .filters
        .iter()
        .filter(|m| m.name == "event_name" && m.op == "=")
        .filter_map(|m| m.literal.as_deref())
        .collect();
    let about: Vec<&loki_mapping::Entry> = entries
        .iter()
        .filter(|e| {
            event_names.is_empty()
                || e.label("event_name")
                    .is_some_and(|n| event_names.contains(n))
        })
        .collect();
    let all: Vec<&loki_mapping::Entry> = entries.iter().collect();
    for m in &names.filters {
        // The event names themselves are looked up among all events.
        let pool = if m.name == "event_name" { &all } else { &about };
        if !pool.iter().any(|e| e.label(&m.name).is_some()) {
            problems.push(format!("{place}: no event carries {}", m.name));
        } else if let (Some(v), "=") = (&m.literal, m.op)
            && !pool.iter().any(|e| e.label(&m.name) == Some(v.as_str()))
        {
            problems.push(format!("{place}: no event has {}={v:?}", m.name));
        }
    }
    for label in &names.labels {
        if !about.iter().any(|e| e.label(label).is_some()) {
            problems.push(format!(
                "{place}: no event carries {label} (grouped or unwrapped)"
            ));
        }
    }
    for label in &names.unwrapped {
        for e in &about {
            if let Some(v) = e.label(label)
                && v.parse::<f64>().is_err()
            {
                problems.push(format!("{place}: unwrap {label}: {v:?} is not a number"));
            }
        }
    }
    problems
}
