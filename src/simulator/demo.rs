//! `agent-immune demo`: the embedded default pipeline and a simulated fleet
//! in one process. agent-immune enforces through the fleet's control API,
//! so a newcomer sees, within a minute, baselines learned, infections
//! detected, diagnosed, quarantined and healed, probation passed, and a
//! severe one waiting for their approval on the dashboard.

use super::cli::init_logging;
use super::handle::Simulator;
use super::injection::Injection;
use super::options::SimulatorOptions;
use crate::config::document::{Config, ReceiverConfig};
use crate::executors::TargetConfig;
use crate::executors::http_control::HttpControlConfig;
use crate::exporters::otlp_client::Protocol;
use crate::pipeline::service::Service;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The default schedule: a prompt drift that is healed on its own, a
/// runaway loop severe enough to need an operator, and a slow drift that
/// must never alarm.
const DEFAULT_INJECTIONS: [&str; 3] = [
    "prompt_drift@0:20s",
    "infinite_loop@2:35s",
    "gradual_drift@1:10s+2m",
];

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Agents in the simulated fleet.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Turns per second across the fleet.
    #[arg(long, default_value_t = 16.0)]
    pub rate: f64,
    /// How long the fleet runs.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Infections to inject instead of the default schedule
    /// (prompt_drift@0:20s, infinite_loop@2:35s, gradual_drift@1:10s+2m).
    #[arg(long = "inject", value_name = "KIND@AGENT:AT[+FOR]")]
    pub inject: Vec<Injection>,
    /// State directory of the demo (a fresh one under the system's temp
    /// dir by default, so the demo starts from nothing and a generated API
    /// key is shown).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Address of the API and dashboard (`127.0.0.1:0` picks a free port;
    /// the URL is printed).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub api: String,
}

pub fn main(args: DemoArgs) -> ExitCode {
    init_logging();
    crate::runtime::run_to_exit("agent-immune demo", run(args))
}

/// The embedded default, with OTLP on free ports (the simulator is the only
/// sender) and enforcement through the simulator's control API.
pub fn demo_config(control: SocketAddr, data_dir: PathBuf, api: &str) -> anyhow::Result<Config> {
    let mut config = Config::embedded_default().map_err(|e| anyhow::anyhow!("{e}"))?;
    for receiver in config.receivers.values_mut() {
        if let ReceiverConfig::Otlp(otlp) = receiver {
            otlp.grpc = "127.0.0.1:0".to_string();
            otlp.http = "127.0.0.1:0".to_string();
        }
    }
    config.executors.targets.clear();
    config.executors.targets.insert(
        "http_control".to_string(),
        TargetConfig::HttpControl(HttpControlConfig {
            base_url: format!("http://{control}"),
            ..HttpControlConfig::default()
        }),
    );
    config.executors.routing = Default::default();
    config.data_dir_flag = Some(data_dir);
    config.api.endpoint = api.to_string();
    if let Err(e) = config.api.addr() {
        anyhow::bail!("--api {api}: {e}");
    }
    Ok(config)
}

fn fresh_data_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("agent-immune-demo-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    Ok(dir)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut injections = if args.inject.is_empty() {
        DEFAULT_INJECTIONS
            .iter()
            .map(|s| s.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<Injection>>>()?
    } else {
        args.inject.clone()
    };
    injections.sort_by_key(|i| i.at);
    // The control port goes into agent-immune's config before the
    // simulator binds it, right after.
    let control = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the control API")?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => fresh_data_dir()?,
    };
    let service = Service::start(demo_config(control, data_dir.clone(), &args.api)?)
        .await
        .with_context(|| format!("starting agent-immune (is {} free?)", args.api))?;
    let grpc = service
        .otlp_grpc_addr()
        .context("the demo pipeline has no OTLP/gRPC receiver")?;
    let options = SimulatorOptions {
        endpoint: format!("http://{grpc}"),
        protocol: Protocol::Grpc,
        agents: args.agents,
        rate: args.rate,
        duration: args.duration,
        injections: injections.clone(),
        control: Some(control),
        seed: args.seed,
    };
    let mut simulator = match Simulator::start(options).await {
        Ok(s) => s,
        Err(e) => {
            service.shutdown(Duration::from_secs(5)).await;
            return Err(e.context("starting the simulator"));
        }
    };
    let ids = simulator.agent_ids();
    let name = |i: &Injection| match &i.target {
        super::injection::Target::Index(n) => ids.get(*n).cloned().unwrap_or_default(),
        other => other.to_string(),
    };
    println!();
    println!("agent-immune demo");
    match service.api_addr {
        Some(api) => println!("  dashboard   http://{api}/"),
        None => println!("  dashboard   off ([api] endpoint is empty)"),
    }
    println!(
        "  fleet       {} simulated agents ({}), {} turns/s, OTLP to {grpc}",
        ids.len(),
        ids.join(", "),
        args.rate
    );
    println!("  enforcement http_control -> the fleet's control API on http://{control}");
    println!("  state       {}", data_dir.display());
    println!("  schedule:");
    for i in &injections {
        println!(
            "    {:>6}  {} on {}",
            humantime::format_duration(i.at).to_string(),
            i.kind,
            name(i)
        );
    }
    println!(
        "  Baselines are ready after 15 turns per agent (about {:.0} s). A severe infection waits \
         for approval: click Approve on the dashboard (with the API key printed above), or run \
         `AGENT_IMMUNE_API_KEY=<key> agent-immune approve <agent>`. Events follow; Ctrl-C stops.",
        15.0 * args.agents as f64 / args.rate.max(0.001)
    );
    println!();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = simulator.finished() => println!("demo: the fleet's run is over"),
        _ = tokio::signal::ctrl_c() => println!("demo: interrupted"),
        _ = term.recv() => println!("demo: terminated"),
    }
    let report = simulator.shutdown(Duration::from_secs(5)).await;
    service.shutdown(Duration::from_secs(10)).await;
    println!(
        "demo: sent {} turns ({} spans); {} turns skipped while agents were paused",
        report.turns, report.spans, report.skipped_turns
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executors::Executors;

    #[test]
    fn the_demo_config_enforces_through_the_fleet_and_binds_free_ports() {
        let control = SocketAddr::from(([127, 0, 0, 1], 9123));
        let config = demo_config(control, PathBuf::from("/tmp/demo-test"), "127.0.0.1:0").unwrap();
        assert_eq!(config.executors.default_target(), "http_control");
        match config.executors.targets.get("http_control") {
            Some(TargetConfig::HttpControl(c)) => {
                assert_eq!(c.base_url, "http://127.0.0.1:9123")
            }
            other => panic!("{other:?}"),
        }
        assert!(config.executors.validate().is_empty());
        assert!(Executors::from_config(&config.executors).is_ok());
        let otlp = config.receivers.values().find_map(|r| match r {
            ReceiverConfig::Otlp(o) => Some(o),
            _ => None,
        });
        assert_eq!(otlp.unwrap().grpc, "127.0.0.1:0");
        assert!(
            config.api.addr().unwrap().is_some(),
            "the dashboard is served"
        );
        let bad = demo_config(control, PathBuf::from("/tmp/demo-test"), "not an address");
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("--api not an address")
        );
        assert_eq!(config.data_dir_flag, Some(PathBuf::from("/tmp/demo-test")));
        for spec in DEFAULT_INJECTIONS {
            assert!(spec.parse::<Injection>().is_ok(), "{spec}");
        }
    }
}
