//! agent-immune in a real collector chain: the Python agent (official
//! GenAI instrumentation) exports to Rotel, Rotel forwards to agent-immune,
//! and agent-immune forwards the spans and sends its infection events to a
//! second Rotel acting as the sink. Rotel comes from the `rotel` PyPI
//! package in the test virtualenv (its collector binary).

mod common;

use agent_immune::pipeline::service::Service;
use common::free_port;
use common::pipeline::TestPipeline;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

fn rotel(args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(common::rotel_agent())
        .arg("start")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start rotel-agent")
}

/// Forwards every stdout line of a process to a channel.
fn lines_of(child: &mut tokio::process::Child) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until one of the lines contains `needle`.
async fn wait_line(lines: &mut mpsc::UnboundedReceiver<String>, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.recv().await {
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "rotel never printed {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infection_events_reach_a_rotel_sink_through_a_rotel_front() {
    // The sink: prints what it receives, drops it.
    let (sink, sink_http) = (free_port(), free_port());
    let mut sink_proc = rotel(&[
        "--otlp-grpc-endpoint".into(),
        format!("127.0.0.1:{sink}"),
        "--otlp-http-endpoint".into(),
        format!("127.0.0.1:{sink_http}"),
        "--exporter".into(),
        "blackhole".into(),
        "--debug-log".into(),
        "logs".into(),
        "--debug-log".into(),
        "traces".into(),
        "--debug-log-verbosity".into(),
        "detailed".into(),
    ]);
    let mut sink_lines = lines_of(&mut sink_proc);

    let sink_addr = format!("127.0.0.1:{sink}");
    let config = TestPipeline::events_to(&sink_addr)
        .forward_to(&sink_addr)
        .config("rotel_inline");
    let service = Service::start(config).await.expect("start agent-immune");
    let immune = service.otlp_grpc_addr().unwrap();

    // The front collector the agents point at.
    let (front, front_http) = (free_port(), free_port());
    let mut front_proc = rotel(&[
        "--otlp-grpc-endpoint".into(),
        format!("127.0.0.1:{front}"),
        "--otlp-http-endpoint".into(),
        format!("127.0.0.1:{front_http}"),
        "--exporter".into(),
        "otlp".into(),
        "--otlp-exporter-endpoint".into(),
        format!("http://{immune}"),
        "--otlp-exporter-protocol".into(),
        "grpc".into(),
        "--otlp-exporter-compression".into(),
        "none".into(),
    ]);
    let _front_lines = lines_of(&mut front_proc);

    let provider = common::fake_openai().await;
    // Rotel binds before it answers; the agent's exporter retries until it does.
    let turns = common::run_python_agent(
        &provider,
        &format!("http://127.0.0.1:{front}"),
        "grpc",
        &[
            "--agent",
            "rotel-fronted",
            "--normal",
            "30",
            "--anomalous",
            "3",
            "--anomaly",
            "tokens",
        ],
    )
    .await;
    assert_eq!(turns.len(), 33);

    // The sink printed the forwarded spans and the infection event.
    wait_line(&mut sink_lines, "agent_immune.infection").await;
    wait_line(&mut sink_lines, "rotel-fronted").await;
    service.shutdown(Duration::from_secs(5)).await;
}
