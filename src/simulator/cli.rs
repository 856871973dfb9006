//! `agent-immune simulate`: the command line around [`Simulator`].

use super::handle::Simulator;
use super::injection::Injection;
use super::options::SimulatorOptions;
use crate::exporters::otlp_client::Protocol;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// OTLP endpoint the traces go to (gRPC, or HTTP with --protocol http).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// Agents in the simulated fleet.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Turns per second across the fleet.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// How long to send, e.g. 90s, 10m.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// An infection to inject: KIND@AGENT:AT[+FOR]. KIND is prompt_injection,
    /// prompt_drift, infinite_loop, cost_overrun, tool_instability,
    /// provider_outage or gradual_drift; AGENT an index, an agent id, a share
    /// of the fleet (40%) or *; AT the time from the start (30s); FOR how long
    /// it lasts (for gradual_drift: its ramp). Repeatable.
    #[arg(long = "inject", value_name = "KIND@AGENT:AT[+FOR]")]
    pub inject: Vec<Injection>,
    /// OTLP transport: grpc or http (protobuf).
    #[arg(long, default_value = "grpc", value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// Port of the agents' control API (POST /control/<action>); 0 picks a
    /// free one. Point agent-immune's [executors.http_control] base_url at it.
    #[arg(long, default_value_t = 9000)]
    pub control_port: u16,
    /// Address the control API binds.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub control_host: IpAddr,
    /// Serve no control API (enforcement then has no effect on the fleet).
    #[arg(long)]
    pub no_control: bool,
    /// Seed of the fleet's personalities and noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "grpc" => Ok(Protocol::Grpc),
        "http" | "http/protobuf" => Ok(Protocol::Http),
        other => Err(format!("unknown protocol {other:?}: use grpc or http")),
    }
}

impl SimulateArgs {
    pub fn options(&self) -> SimulatorOptions {
        SimulatorOptions {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol,
            agents: self.agents,
            rate: self.rate,
            duration: self.duration,
            injections: self.inject.clone(),
            control: (!self.no_control)
                .then_some(SocketAddr::new(self.control_host, self.control_port)),
            seed: self.seed,
        }
    }
}

/// Runs the simulation in its own runtime; Ctrl-C ends it early.
pub fn main(args: SimulateArgs) -> ExitCode {
    init_logging();
    crate::runtime::run_to_exit("agent-immune simulate", run(args.options()))
}

/// Logs to stderr at info unless RUST_LOG says otherwise; a second call
/// (the demo runs the pipeline too) keeps the first subscriber.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts the simulator, says where everything is, and waits for the end
/// of the run or Ctrl-C.
pub async fn run(options: SimulatorOptions) -> anyhow::Result<()> {
    let mut simulator = Simulator::start(options.clone()).await?;
    let ids = simulator.agent_ids();
    println!(
        "simulating {} agents at {} turns/s for {} -> {} ({:?})",
        ids.len(),
        options.rate,
        humantime::format_duration(options.duration),
        options.endpoint,
        options.protocol
    );
    let shown: Vec<&str> = ids.iter().take(12).map(String::as_str).collect();
    let more = if ids.len() > shown.len() { ", ..." } else { "" };
    println!("agents: {}{more}", shown.join(", "));
    match simulator.control_addr {
        Some(addr) => println!(
            "control API: http://{addr}/control/<action> (agent-immune: [executors.http_control] base_url = \"http://{addr}\")"
        ),
        None => println!("control API: off (enforcement has no effect)"),
    }
    for injection in &options.injections {
        println!("scheduled: {injection}");
    }
    let report = tokio::select! {
        report = simulator.finished() => report,
        _ = tokio::signal::ctrl_c() => {
            println!("interrupted");
            simulator.stop();
            simulator.finished().await
        }
    };
    println!(
        "sent {} turns, {} spans in {} requests ({} failed, {} spans lost); {} turns skipped while paused",
        report.turns,
        report.spans,
        report.requests,
        report.failed_requests,
        report.failed_spans,
        report.skipped_turns
    );
    for call in simulator.control_log().iter().take(200) {
        println!(
            "  control {:>8} ms  {:<16} {:<14} {}",
            call.at_ms,
            call.agent_id,
            call.action.as_str(),
            call.result
        );
    }
    simulator.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
