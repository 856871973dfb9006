//! The pipeline's own counters in the Prometheus text format, named like
//! the Collector's (`otelcol_receiver_accepted_spans` becomes
//! `agent_immune_receiver_accepted_spans`).

use crate::pipeline::consumer::Signal;
use crate::telemetry::{ExporterMetrics, Telemetry};
use std::fmt::Write;

fn item_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "spans",
        Signal::Metrics => "metric_points",
        Signal::Logs => "log_records",
    }
}

struct Out(String);

impl Out {
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

/// Renders every counter.
pub fn render(t: &Telemetry) -> String {
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
    out.exporter("otlp_forward", "items", &t.forward);
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
        "monitored_agents",
        "gauge",
        "Agents with a baseline.",
        &[("", d.monitored_agents.get().into())],
    );
    out.0
}
