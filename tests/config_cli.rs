//! The real binary: `validate` reports every config error with file, line
//! and key; `run` with no flags starts on the embedded default and stops
//! cleanly on SIGTERM.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent-immune"))
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn validate_accepts_the_embedded_default_and_shipped_pipelines() {
    let out = binary().arg("validate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("<embedded default>: ok"));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = binary()
                .arg("validate")
                .arg("--config")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn validate_reports_every_error_with_line_and_key() {
    let file = write_config(
        r#"[receivers.otlp]
grpc = "127.0.0.1:4317"
bogus_key = 1

[processors.genai]
[processors.turns]
idle_timeout = "soon"
[processors.immune]
threshold_sigma = -1.0

[exporters.events]
console = true

[pipelines.traces]
receivers = ["otlp", "missing"]
processors = ["genai", "turns", "immune"]
exporters = ["events"]
"#,
    );
    let out = binary()
        .arg("validate")
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = file.path().display().to_string();
    let expect = [
        (3, "receivers.otlp", "bogus_key"),
        (7, "processors.turns", "soon"),
        (9, "processors.immune.threshold_sigma", ""),
        (15, "pipelines.traces.receivers", "missing"),
    ];
    for (line, key, mention) in expect {
        let found = stderr
            .lines()
            .any(|l| l.starts_with(&format!("{path}:{line}: {key}")) && l.contains(mention));
        assert!(
            found,
            "no error for line {line} key {key} mentioning {mention:?} in:\n{stderr}"
        );
    }
}

#[test]
fn validate_names_unknown_components_and_env_vars() {
    let file = write_config(
        "[receivers.kafka]\n\n[exporters.events]\nconsole = \"${env:AGENT_IMMUNE_TEST_UNSET_VAR}\"\n",
    );
    let out = binary()
        .arg("validate")
        .arg("--config")
        .arg(file.path())
        .env_remove("AGENT_IMMUNE_TEST_UNSET_VAR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":4:") && stderr.contains("AGENT_IMMUNE_TEST_UNSET_VAR"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = binary()
        .args(["validate", "--config", "/nonexistent/agent-immune.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[tokio::test]
async fn run_with_no_flags_serves_the_default_and_stops_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-immune"))
        .arg("run")
        .env("RUST_LOG", "info")
        .env("AGENT_IMMUNE_DATA_DIR", data.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ready once its log says the receiver and the API are listening.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut otlp, mut api) = (false, false);
    while !(otlp && api) {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("agent-immune did not start in time")
            .unwrap()
            .expect("agent-immune exited before it was ready");
        otlp |= line.contains("receiving OTLP") && line.contains("4317") && line.contains("4318");
        api |= line.contains("management API listening") && line.contains("8090");
    }
    let client = reqwest::Client::new();
    let resp = client
        .post("http://127.0.0.1:4318/v1/traces")
        .header("content-type", "application/json")
        .body(r#"{"resourceSpans":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ready = client
        .get("http://127.0.0.1:8090/readyz")
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // SIGTERM, the way service managers stop it, with the real kill(1).
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("agent-immune did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
