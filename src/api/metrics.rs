//! The pipeline's own counters in the Prometheus text format, named like
//! the Collector's (`otelcol_receiver_accepted_spans` becomes
//! `agent_immune_receiver_accepted_spans`).

use crate::immune::lifecycle::LifecycleState;
use crate::listener::ListenerMetrics;
use crate::pipeline::consumer::Signal;
use crate::receivers::llm_proxy::metrics::ProxyMetrics;
use crate::telemetry::{Counter, ExporterMetrics, Telemetry};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

fn item_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "spans",
        Signal::Metrics => "metric_points",
        Signal::Logs => "log_records",
    }
}

struct Out(String);

impl Out {
    fn llm_proxy(&mut self, m: &ProxyMetrics) {
        let counters: [(&str, &str, u64); 19] = [
            (
                "requests",
                "Requests received by the LLM proxy.",
                m.requests.get(),
            ),
            (
                "forwarded",
                "Requests forwarded upstream.",
                m.forwarded.get(),
            ),
            (
                "upstream_errors",
                "Upstream answers with status >= 400 (passed through).",
                m.upstream_errors.get(),
            ),
            (
                "upstream_failures",
                "Upstream unreachable or too slow (answered 502/504).",
                m.upstream_failures.get(),
            ),
            (
                "refused_quarantined",
                "Requests refused: agent quarantined.",
                m.refused_quarantined.get(),
            ),
            (
                "refused_draining",
                "Requests refused: agent draining.",
                m.refused_draining.get(),
            ),
            (
                "refused_throttled",
                "Requests refused by a rate budget (429).",
                m.refused_throttled.get(),
            ),
            (
                "refused_model",
                "Requests refused by a model allow/block list (403).",
                m.refused_model.get(),
            ),
            (
                "refused_tools",
                "Requests refused because the agent's tools are revoked.",
                m.refused_tools.get(),
            ),
            (
                "refused_invalid",
                "Requests refused as invalid (path, size, body).",
                m.refused_invalid.get(),
            ),
            (
                "refused_identity",
                "Requests refused by gateway identity (401 no or unknown key in strict mode, 403 key and agent id not belonging together).",
                m.refused_identity.get(),
            ),
            (
                "identity_unbound",
                "Requests served under an unbound key because the key binding table was full (max_bound_keys).",
                m.identity_unbound.get(),
            ),
            (
                "policy_alerts",
                "Violations of alert-only policy rules.",
                m.policy_alerts.get(),
            ),
            (
                "tools_stripped",
                "Requests whose tools were stripped (revoke_tools).",
                m.tools_stripped.get(),
            ),
            (
                "unknown_provider_headers",
                "X-LLM-Provider values naming no allowlisted provider.",
                m.unknown_provider_headers.get(),
            ),
            (
                "cut_streams",
                "Streams cut because their agent was quarantined.",
                m.cut_streams.get(),
            ),
            (
                "response_oversized",
                "Response parts too large to read for vitals (stream event > 4 MiB, JSON body > 16 MiB), passed through unread.",
                m.response_oversized.get(),
            ),
            ("vitals", "Vitals handed to detection.", m.vitals.get()),
            (
                "vitals_dropped",
                "Vitals dropped because detection refused them.",
                m.vitals_dropped.get(),
            ),
        ];
        for (name, help, value) in counters {
            self.metric(
                &format!("llm_proxy_{name}"),
                "counter",
                help,
                &[("", i128::from(value))],
            );
        }
        let h = &m.added_latency;
        let name = "agent_immune_llm_proxy_added_latency_seconds";
        let _ = writeln!(
            self.0,
            "# HELP {name} Latency the LLM proxy adds to a request (upstream time excluded)."
        );
        let _ = writeln!(self.0, "# TYPE {name} histogram");
        for (bound, count) in h.cumulative() {
            let le = bound.map_or_else(|| "+Inf".to_string(), |us| format!("{}", us as f64 / 1e6));
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let _ = writeln!(self.0, "{name}_sum {}", h.sum().as_secs_f64());
        let _ = writeln!(self.0, "{name}_count {}", h.count());
    }

    fn listeners(&mut self, listeners: &[Arc<ListenerMetrics>]) {
        type Read = fn(&ListenerMetrics) -> i128;
        let families: [(&str, &str, &str, Read); 6] = [
            (
                "listener_max_connections",
                "gauge",
                "Connections a listener serves at once (its cap after fitting to the fd limit).",
                |m| m.max_connections.get().into(),
            ),
            (
                "listener_open_connections",
                "gauge",
                "Connections open now.",
                |m| m.open_connections.get().into(),
            ),
            (
                "listener_deferred_connections",
                "counter",
                "Connections left waiting in the backlog because the listener was at its cap.",
                |m| m.deferred_connections.get().into(),
            ),
            (
                "listener_header_timeouts",
                "counter",
                "Connections closed for not sending a request head within read_header_timeout.",
                |m| m.header_timeouts.get().into(),
            ),
            (
                "listener_idle_timeouts",
                "counter",
                "Connections closed after idle_timeout without a request.",
                |m| m.idle_timeouts.get().into(),
            ),
            (
                "listener_accept_errors",
                "counter",
                "Failed accepts (e.g. out of file descriptors), each followed by a back-off.",
                |m| m.accept_errors.get().into(),
            ),
        ];
        if listeners.is_empty() {
            return;
        }
        for (name, kind, help, read) in families {
            let labels: Vec<(String, i128)> = listeners
                .iter()
                .map(|m| (format!("{{listener=\"{}\"}}", m.name), read(m)))
                .collect();
            let samples: Vec<(&str, i128)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            self.metric(name, kind, help, &samples);
        }
    }

    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, i128)]) {
        let _ = writeln!(self.0, "# HELP agent_immune_{name} {help}");
        let _ = writeln!(self.0, "# TYPE agent_immune_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(self.0, "agent_immune_{name}{labels} {value}");
        }
    }

    fn exporter(&mut self, exporter: &str, items: &str, m: &ExporterMetrics) {
        let l = format!("{{exporter=\"{exporter}\"}}");
        self.metric(
            &format!("exporter_sent_{items}"),
            "counter",
            "Items successfully sent downstream.",
            &[(&l, m.sent.get().into())],
        );
        self.metric(
            &format!("exporter_send_failed_{items}"),
            "counter",
            "Items that failed to be sent (after retries).",
            &[(&l, m.send_failed.get().into())],
        );
        self.metric(
            &format!("exporter_enqueue_failed_{items}"),
            "counter",
            "Items refused because the sending queue was full.",
            &[(&l, m.enqueue_failed.get().into())],
        );
        self.metric(
            &format!("exporter_queue_size_{items}"),
            "gauge",
            "Requests waiting in the sending queue.",
            &[(&l, m.queue_size.get().into())],
        );
    }
}

/// The management API's own counters.
#[derive(Debug, Default)]
pub struct ApiCounters {
    /// Vitals records accepted by `POST /api/v1/ingest`.
    pub ingested_vitals: Counter,
    /// Ingest requests refused (bad input, too large, not ready).
    pub ingest_refused: Counter,
    /// Requests refused for a missing or wrong API key.
    pub unauthorized: Counter,
}

/// Renders the API's own counters.
pub fn render_api(c: &ApiCounters) -> String {
    let mut out = Out(String::new());
    out.metric(
        "api_ingested_vitals",
        "counter",
        "Vitals records accepted by the JSON ingest.",
        &[("", c.ingested_vitals.get().into())],
    );
    out.metric(
        "api_ingest_refused_requests",
        "counter",
        "JSON ingest requests refused (bad input, too large, not ready).",
        &[("", c.ingest_refused.get().into())],
    );
    out.metric(
        "api_unauthorized_requests",
        "counter",
        "Requests refused for a missing or wrong API key.",
        &[("", c.unauthorized.get().into())],
    );
    out.0
}

/// Renders every counter, and the agents per lifecycle state when the
/// fleet answered (`None` when no pipeline runs detection).
pub fn render(t: &Telemetry, agents_by_state: Option<&BTreeMap<String, usize>>) -> String {
    let mut out = Out(String::new());
    for signal in Signal::ALL {
        let items = item_name(signal);
        out.metric(
            &format!("receiver_accepted_{items}"),
            "counter",
            "Items accepted by the OTLP receiver.",
            &[("", t.receiver.accepted.get(signal).get().into())],
        );
        out.metric(
            &format!("receiver_refused_{items}"),
            "counter",
            "Items refused by the OTLP receiver (retryable).",
            &[("", t.receiver.refused.get(signal).get().into())],
        );
    }
    out.metric(
        "receiver_malformed_requests",
        "counter",
        "Requests rejected as undecodable or invalid.",
        &[("", t.receiver.malformed_requests.get().into())],
    );
    out.metric(
        "receiver_over_limit_requests",
        "counter",
        "Requests refused for exceeding a per-request limit (items, attributes, decoded size).",
        &[("", t.receiver.over_limit_requests.get().into())],
    );
    out.metric(
        "receiver_memory_refused_requests",
        "counter",
        "Requests refused because the decoded-data budget or the memory limit was reached (retryable).",
        &[("", t.receiver.memory_refused_requests.get().into())],
    );
    out.metric(
        "receiver_truncated_values",
        "counter",
        "Attribute values nested deeper than max_attribute_depth, truncated to empty values.",
        &[("", t.receiver.truncated_values.get().into())],
    );
    out.exporter("otlp_forward", "items", &t.forward);
    out.metric(
        "exporter_queue_bytes",
        "gauge",
        "Bytes the forwarding queue's waiting and in-flight requests hold.",
        &[(
            "{exporter=\"otlp_forward\"}",
            t.forward.queue_bytes.get().into(),
        )],
    );
    out.exporter("events", "log_records", &t.events);
    let d = &t.detection;
    out.metric(
        "detection_dropped_spans",
        "counter",
        "Spans that skipped detection because its queue was full (when_detection_full = drop).",
        &[("", d.dropped_spans.get().into())],
    );
    out.metric(
        "turns",
        "counter",
        "Agent turns assembled into vitals.",
        &[("", d.turns.get().into())],
    );
    out.metric(
        "open_traces",
        "gauge",
        "Traces waiting for their turn to close.",
        &[("", d.open_traces.get().into())],
    );
    out.metric(
        "evicted_traces",
        "counter",
        "Open traces closed early because the cap on open traces was reached.",
        &[("", d.evicted_traces.get().into())],
    );
    out.metric(
        "late_spans",
        "counter",
        "Spans that arrived after their turn had closed.",
        &[("", d.late_spans.get().into())],
    );
    out.metric(
        "infections",
        "counter",
        "Infections confirmed.",
        &[("", d.infections.get().into())],
    );
    out.metric(
        "shadowed_turns",
        "counter",
        "LLM-proxy turns not judged because the agent's own spans report its turns.",
        &[("", d.shadowed_turns.get().into())],
    );
    out.metric(
        "skipped_turns",
        "counter",
        "Turns not judged: unusable agent id, or the agent table full of agents that must be kept.",
        &[("", d.skipped_turns.get().into())],
    );
    out.metric(
        "evicted_agents",
        "counter",
        "Agents evicted (least recently seen, holding nothing an operator needs) to make room for new ones.",
        &[("", d.evicted_agents.get().into())],
    );
    out.metric(
        "refused_agent_turns",
        "counter",
        "Turns of new agents refused because every place holds an agent that must be kept.",
        &[("", d.refused_turns.get().into())],
    );
    out.metric(
        "bad_timestamp_turns",
        "counter",
        "Turns whose timestamps could not be believed (unset, reversed, far in the future, too long); judged with latency unknown.",
        &[("", d.bad_timestamps.get().into())],
    );
    out.metric(
        "state_failed_commits",
        "counter",
        "Commits of decisions the state store refused (nothing acted on until a retry succeeds).",
        &[("", t.state.failed_commits.get().into())],
    );
    out.metric(
        "detection_refused_vitals",
        "counter",
        "Vitals records (JSON ingest, LLM proxy) refused because the detection queue was full.",
        &[("", d.refused_vitals.get().into())],
    );
    out.metric(
        "detection_dropped_turns",
        "counter",
        "Turns assembled from spans and not judged because the owning shard's turn queue was full.",
        &[("", d.dropped_turns.get().into())],
    );
    out.metric(
        "monitored_agents",
        "gauge",
        "Agents with a baseline.",
        &[("", d.monitored_agents.get().into())],
    );
    if let Some(by_state) = agents_by_state {
        let labels: Vec<(String, i128)> = LifecycleState::ALL
            .iter()
            .map(|s| {
                let n = by_state.get(s.as_str()).copied().unwrap_or(0);
                (
                    format!("{{state=\"{}\"}}", s.as_str()),
                    i128::try_from(n).unwrap_or(i128::MAX),
                )
            })
            .collect();
        let samples: Vec<(&str, i128)> = labels.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        out.metric(
            "agents",
            "gauge",
            "Monitored agents per lifecycle state.",
            &samples,
        );
    }
    out.listeners(&t.listeners.all());
    out.llm_proxy(&t.llm_proxy);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn agent_states_and_proxy_metrics_are_rendered() {
        let t = Telemetry::default();
        t.llm_proxy.requests.add(7);
        t.listeners.register("otlp/http").header_timeouts.add(2);
        t.llm_proxy.added_latency.record(Duration::from_micros(80));
        let mut by_state = BTreeMap::new();
        by_state.insert("HEALTHY".to_string(), 3);
        let text = render(&t, Some(&by_state));
        assert!(
            text.contains("agent_immune_agents{state=\"HEALTHY\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("agent_immune_agents{state=\"QUARANTINED\"} 0\n"));
        assert!(text.contains("agent_immune_llm_proxy_requests 7\n"));
        assert!(text.contains("agent_immune_listener_header_timeouts{listener=\"otlp/http\"} 2\n"));
        assert!(
            text.contains("agent_immune_llm_proxy_added_latency_seconds_bucket{le=\"0.0001\"} 1\n")
        );
        assert!(
            text.contains("agent_immune_llm_proxy_added_latency_seconds_bucket{le=\"+Inf\"} 1\n")
        );
        assert!(text.contains("agent_immune_llm_proxy_added_latency_seconds_count 1\n"));
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {name} "))
                    || text.contains(&format!("# TYPE {family} histogram")),
                "{line}"
            );
        }
        assert!(!render(&t, None).contains("agent_immune_agents{"));
    }
}
