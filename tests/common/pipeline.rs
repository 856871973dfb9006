//! The detection pipeline the integration tests run, as config text built
//! from the few parts they vary, so each test states only what it changes.

use agent_immune::config::document::Config;
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// By default: an OTLP gRPC receiver on a free port (no HTTP), genai →
/// turns (turns end after 1 s idle) → immune, an events exporter with the
/// console off and no OTLP, no management API.
#[derive(Debug, Clone)]
pub struct TestPipeline {
    /// Receiver id and the body of its table, in order.
    receivers: Vec<(&'static str, String)>,
    turns: String,
    immune: String,
    forward_to: Option<String>,
    console: bool,
    /// The events exporter's `otlp` value, an inline table.
    events_otlp: Option<String>,
    /// Further tables, verbatim (executors, service, state).
    tables: Vec<String>,
    api: String,
}

impl Default for TestPipeline {
    fn default() -> Self {
        Self {
            receivers: vec![("otlp", otlp_body("127.0.0.1:0", ""))],
            turns: "idle_timeout = \"1s\"".into(),
            immune: String::new(),
            forward_to: None,
            console: false,
            events_otlp: None,
            tables: Vec::new(),
            api: String::new(),
        }
    }
}

fn otlp_body(grpc: &str, http: &str) -> String {
    format!("grpc = \"{grpc}\"\nhttp = \"{http}\"")
}

impl TestPipeline {
    /// The default pipeline with events also sent over OTLP gRPC to
    /// `downstream` (`host:port`).
    pub fn events_to(downstream: impl Display) -> Self {
        Self::default().events_otlp(format!(
            "{{ endpoint = \"http://{downstream}\", protocol = \"grpc\" }}"
        ))
    }

    /// The events exporter's `otlp` value, an inline TOML table.
    pub fn events_otlp(mut self, inline_table: impl Into<String>) -> Self {
        self.events_otlp = Some(inline_table.into());
        self
    }

    /// Events printed on the console as well.
    pub fn console(mut self) -> Self {
        self.console = true;
        self
    }

    /// The OTLP receiver's endpoints (`""` disables one).
    pub fn otlp(mut self, grpc: impl Display, http: impl Display) -> Self {
        let body = otlp_body(&grpc.to_string(), &http.to_string());
        match self.receivers.iter_mut().find(|(id, _)| *id == "otlp") {
            Some(otlp) => otlp.1 = body,
            None => self.receivers.insert(0, ("otlp", body)),
        }
        self
    }

    /// An llm_proxy receiver on a free port in front of `upstream`, in the
    /// pipeline next to the OTLP one.
    pub fn llm_proxy(self, upstream: impl Display) -> Self {
        self.llm_proxy_at("127.0.0.1:0", upstream)
    }

    /// An llm_proxy receiver listening on `endpoint` in front of
    /// `upstream`, in the pipeline next to the OTLP one.
    pub fn llm_proxy_at(mut self, endpoint: impl Display, upstream: impl Display) -> Self {
        self.receivers.push((
            "llm_proxy",
            format!("endpoint = \"{endpoint}\"\nupstream = \"{upstream}\""),
        ));
        self
    }

    /// No OTLP receiver (spans come only through an llm_proxy).
    pub fn without_otlp(mut self) -> Self {
        self.receivers.retain(|(id, _)| *id != "otlp");
        self
    }

    /// The body of `[processors.turns]` (`""` for its defaults).
    pub fn turns(mut self, keys: impl Into<String>) -> Self {
        self.turns = keys.into();
        self
    }

    /// Approval thresholds out of reach: every infection takes the
    /// automatic path (quarantine, heal, probation) without an operator.
    pub fn without_approval(self) -> Self {
        self.immune("approval_sigma = 40.0\nsevere_sigma = 50.0")
    }

    /// The body of `[processors.immune]`.
    pub fn immune(mut self, keys: impl Into<String>) -> Self {
        self.immune = keys.into();
        self
    }

    /// Spans forwarded untouched (`otlp_forward`) to `downstream`.
    pub fn forward_to(mut self, downstream: impl Display) -> Self {
        self.forward_to = Some(format!("http://{downstream}"));
        self
    }

    /// Further tables, verbatim: executors, `[service]`, `[state]`.
    pub fn table(mut self, toml: impl Into<String>) -> Self {
        self.tables.push(toml.into());
        self
    }

    /// A `[state]` table keeping its data under `dir`.
    pub fn state_in(self, dir: &Path) -> Self {
        self.table(format!("[state]\ndata_dir = \"{}/state\"", dir.display()))
    }

    /// Writes the config to `dir/pipeline.toml` (for the real binary) and
    /// returns that path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pipeline.toml");
        std::fs::write(&path, self.text()).expect("write the pipeline config");
        path
    }

    /// The management API's endpoint (`""`, the default, turns it off).
    pub fn api(mut self, endpoint: impl Display) -> Self {
        self.api = endpoint.to_string();
        self
    }

    /// The config text, tables in the order a reader expects.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for (id, body) in &self.receivers {
            text.push_str(&format!("[receivers.{id}]\n{body}\n"));
        }
        text.push_str("[processors.genai]\n");
        text.push_str(&format!("[processors.turns]\n{}\n", self.turns));
        text.push_str(&format!("[processors.immune]\n{}\n", self.immune));
        let mut exporters = Vec::new();
        if let Some(endpoint) = &self.forward_to {
            text.push_str(&format!(
                "[exporters.otlp_forward]\nendpoint = \"{endpoint}\"\n"
            ));
            exporters.push("otlp_forward");
        }
        text.push_str(&format!("[exporters.events]\nconsole = {}\n", self.console));
        if let Some(otlp) = &self.events_otlp {
            text.push_str(&format!("otlp = {otlp}\n"));
        }
        exporters.push("events");
        for table in &self.tables {
            text.push_str(&format!("{}\n", table.trim()));
        }
        let receivers: Vec<&str> = self.receivers.iter().map(|(id, _)| *id).collect();
        text.push_str(&format!(
            "[api]\nendpoint = \"{}\"\n\
             [pipelines.traces]\n\
             receivers = {receivers:?}\n\
             processors = [\"genai\", \"turns\", \"immune\"]\n\
             exporters = {exporters:?}\n",
            self.api
        ));
        text
    }

    /// The parsed config; `origin` names the test in any error.
    pub fn config(&self, origin: &str) -> Config {
        let text = self.text();
        Config::parse(origin, &text, |_| None)
            .unwrap_or_else(|e| panic!("invalid test pipeline:\n{e}\n{text}"))
    }
}
