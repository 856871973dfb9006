//! What a client sends never forges output or leaks a key, against the real
//! binary: a `service.name` carrying a newline, a fake timestamped event
//! line and an escape code is shown normalised in the API and escaped on
//! the console; a flood of wrong API keys is logged at a bounded rate with
//! nothing of any key in the log, and every refusal is counted on /metrics.

mod common;

use agent_immune::testdata::AgentTrace;
use common::binary::Binary;
use common::pipeline::TestPipeline;
use common::{free_port, poll_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "hostile-test-key-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(60);
const FORGED: &str =
    "evil\n2099-01-01T00:00:00.000Z WARN  agent_immune.quarantine agent=billing FORGED\x1b[31m";

/// The pipeline config (OTLP gRPC on `otlp`, console events when
/// `console`, the API on `api`) written into `dir`.
fn config(dir: &Path, otlp: u16, api: u16, console: bool) -> std::path::PathBuf {
    let pipeline = TestPipeline::default()
        .otlp(format!("127.0.0.1:{otlp}"), "")
        .immune("min_samples = 5")
        .state_in(dir)
        .api(format!("127.0.0.1:{api}"));
    let pipeline = if console {
        pipeline.console()
    } else {
        pipeline
    };
    pipeline.write_to(dir)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_service_name_is_normalised_and_escaped() {
    let data = tempfile::tempdir().unwrap();
    let (otlp, port) = (free_port(), free_port());
    let bin = Binary::start(
        &config(data.path(), otlp, port, true),
        &[("AGENT_IMMUNE_API_KEY", KEY)],
    )
    .await;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{otlp}"))
        .await
        .unwrap();
    for i in 0..10 {
        let trace = AgentTrace::new("unused")
            .without_agent_span()
            .service(FORGED)
            .model("gpt-4o\r\nFORGED-MODEL\x1b[2J")
            .seed(7_000 + i)
            .start(1_800_000_000_000_000_000 + i * 1_000_000_000)
            .tokens(500, 100)
            .latency_ms(200.0, 20.0);
        client.export(trace.request()).await.unwrap();
    }

    // The API shows the one normalised id: control characters replaced.
    let normalised = FORGED.replace(['\n', '\x1b'], "\u{FFFD}");
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/agents/{}",
        percent_encode(&normalised)
    );
    let agent: Value = poll_until("the forged agent HEALTHY", LIMIT, async || {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let agent: Value = serde_json::from_str(&text).ok()?;
        (agent["state"] == "HEALTHY").then_some(agent)
    })
    .await;
    assert_eq!(agent["agent_id"], normalised.as_str());
    let listed = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/agents"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["agents"][0]["agent_id"], normalised.as_str());
    assert_eq!(listed["total"], 1);

    // The console printed the agent's lifecycle, one line per event, with
    // no raw escape and no line of its own for the forged text.
    let lines = poll_until("the lifecycle event on the console", LIMIT, async || {
        let lines = bin.stdout_lines();
        lines
            .iter()
            .any(|l| l.contains("agent_immune.lifecycle") && l.contains("agent=evil"))
            .then_some(lines)
    })
    .await;
    for line in &lines {
        assert!(!line.contains('\x1b'), "raw ESC on the console: {line:?}");
        assert!(
            !line.starts_with("2099-"),
            "forged line on the console: {line:?}"
        );
        assert!(
            !line.starts_with("FORGED"),
            "forged line on the console: {line:?}"
        );
    }
    for line in bin.stderr_lines() {
        assert!(
            !line.starts_with("2099-") && !line.starts_with("FORGED"),
            "forged log line: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_counted_and_logged_at_a_bounded_rate_without_keys() {
    let data = tempfile::tempdir().unwrap();
    let (otlp, port) = (free_port(), free_port());
    let env = [("AGENT_IMMUNE_API_KEY", KEY), ("NO_COLOR", "1")];
    let bin = Binary::start(&config(data.path(), otlp, port, false), &env).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    const ATTEMPTS: usize = 500;
    let started = Instant::now();
    for i in 0..ATTEMPTS {
        let request = http.post(format!("{base}/api/v1/agents/someone/approve"));
        // Wrong keys of every shape, the real key's first part among them,
        // and no key at all.
        let request = match i % 4 {
            0 => request.header("X-API-Key", format!("presented-secret-{i:04}")),
            1 => request.header("Authorization", format!("Bearer {}", &KEY[..20])),
            2 => request.header("X-API-Key", format!("{KEY}x")),
            _ => request,
        };
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let elapsed = started.elapsed();

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agent_immune_api_unauthorized_requests "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(counted, Some(ATTEMPTS as u64), "{metrics}");

    // One line per 10 s at most (plus the first), each with its count.
    let log = bin.stderr_lines();
    let refusals: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("missing or wrong API key"))
        .collect();
    let allowed = 1 + (elapsed.as_secs() / 10) as usize;
    assert!(
        !refusals.is_empty() && refusals.len() <= allowed,
        "{} refusal lines for {ATTEMPTS} refusals in {elapsed:?}:\n{}",
        refusals.len(),
        bin.stderr()
    );
    assert!(refusals[0].contains("refused=1"), "{}", refusals[0]);

    // Nothing of the key, expected or presented, anywhere in the log.
    let text = bin.stderr();
    for window in KEY.as_bytes().windows(8) {
        let part = std::str::from_utf8(window).unwrap();
        assert!(
            !text.contains(part),
            "{part:?} of the key is in the log:\n{text}"
        );
    }
    assert!(!text.contains("presented-secret"), "{text}");
    assert!(!text.contains("prefix"), "{text}");
}
