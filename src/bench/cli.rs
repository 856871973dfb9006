//! `agent-immune bench`: runs the parts asked for and prints the figures.

use super::latency::{self, Latency};
use super::load::{self, LoadShape, Template};
use super::memory::{self, Memory};
use super::sink::Sink;
use super::target::{Target, free_port, work_dir};
use super::throughput::{self, Throughput};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Throughput,
    Latency,
    Memory,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Parts to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,latency,memory"
    )]
    pub only: Vec<Part>,
    /// The rotel-agent binary (pip download rotel; see scripts/bench.sh).
    /// Without it the throughput part measures agent-immune alone.
    #[arg(long)]
    pub rotel: Option<PathBuf>,
    /// The agent-immune binary to measure; default: this one.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Measured load per throughput run (after a 3 s warmup).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Throughput runs per target (alternating targets).
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// gRPC connections the requests share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Spans per request (whole turns, so a little more).
    #[arg(long, default_value_t = 1000)]
    pub spans_per_request: usize,
    /// Distinct pre-encoded requests (sent round-robin, fresh trace ids each time).
    #[arg(long, default_value_t = 64)]
    pub templates: usize,
    /// Agents in the throughput load.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Offered spans per second in the throughput runs; default: as fast as
    /// the target answers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Probe agents in the latency run (one anomalous turn each).
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
    /// Background spans per second during the latency run.
    #[arg(long, default_value_t = 50_000.0)]
    pub latency_load: f64,
    /// Agents in the memory run.
    #[arg(long, default_value_t = 100_000)]
    pub memory_agents: usize,
    /// Turns per agent in the memory run.
    #[arg(long, default_value_t = 20)]
    pub memory_turns: usize,
    /// Detection shards of agent-immune (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Where configs, data and logs of the targets go.
    #[arg(long, default_value = "target/bench-work")]
    pub work_dir: PathBuf,
    /// Measure agent-immune without its durable store (`[state]`, which the
    /// embedded default enables and the bench includes unless told not to).
    #[arg(long)]
    pub without_state: bool,
}

impl BenchArgs {
    /// `config` with the `[state]` table unless `--without-state` (the data
    /// directory comes from AGENT_IMMUNE_DATA_DIR, set per target).
    fn with_state(&self, config: String) -> String {
        if self.without_state {
            config
        } else {
            config + "\n[state]\n"
        }
    }
}

pub fn main(args: BenchArgs) -> ExitCode {
    crate::simulator::cli::init_logging();
    crate::runtime::run_to_exit("agent-immune bench", run(args))
}

/// The config of a measured agent-immune: OTLP/gRPC in, genai → turns →
/// immune, events as OTLP logs to the sink; with `forward`, spans forwarded
/// to the sink too (the full trace pipeline); `api` for `/metrics`.
fn pipeline(
    grpc: SocketAddr,
    sink: SocketAddr,
    shards: usize,
    forward: bool,
    api: Option<SocketAddr>,
    immune: &str,
) -> String {
    let (forward_table, exporters) = if forward {
        (
            format!("[exporters.otlp_forward]\nendpoint = \"http://{sink}\"\n"),
            r#"["otlp_forward", "events"]"#,
        )
    } else {
        (String::new(), r#"["events"]"#)
    };
    let api = api.map_or(String::new(), |a| a.to_string());
    format!(
        r#"# agent-immune bench
[receivers.otlp]
grpc = "{grpc}"
http = ""
max_recv_msg_size_mib = 16

[processors.genai]
[processors.turns]
[processors.immune]
{immune}
{forward_table}
[exporters.events]
console = false
otlp = {{ endpoint = "http://{sink}", protocol = "grpc" }}

[service]
shards = {shards}
log_level = "warn"

[api]
endpoint = "{api}"

[pipelines.traces]
receivers = ["otlp"]
processors = ["genai", "turns", "immune"]
exporters = {exporters}
"#
    )
}

/// The full trace pipeline, measured for throughput and latency.
fn full_pipeline(grpc: SocketAddr, sink: SocketAddr, api: SocketAddr, shards: usize) -> String {
    pipeline(grpc, sink, shards, true, Some(api), "")
}

/// The pipeline measured for memory: detection only, events to the sink.
fn detection_pipeline(grpc: SocketAddr, sink: SocketAddr, shards: usize, agents: usize) -> String {
    let max_agents = agents.saturating_mul(2).max(1000);
    pipeline(
        grpc,
        sink,
        shards,
        false,
        None,
        &format!("max_agents = {max_agents}"),
    )
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this binary")?,
    };
    if cfg!(debug_assertions) && args.binary.is_none() {
        println!(
            "WARNING: this is a debug build; measure the release binary (cargo run --release -- bench)"
        );
    }
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    println!("{}", machine());
    println!("agent-immune binary: {}", binary.display());
    println!(
        "agent-immune durable store ([state]): {}",
        if args.without_state { "off" } else { "on" }
    );

    if args.only.contains(&Part::Throughput) {
        throughput_part(&args, &binary).await?;
    }
    if args.only.contains(&Part::Latency) {
        latency_part(&args, &binary).await?;
    }
    if args.only.contains(&Part::Memory) {
        memory_part(&args, &binary).await?;
    }
    Ok(())
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(String::new(), |kib| {
            format!(", {:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0)
        });
    format!("machine: {model}, {cores} cores{memory}")
}

fn build_templates(args: &BenchArgs) -> Arc<Vec<Template>> {
    let templates = load::templates(
        args.templates.max(1),
        args.spans_per_request,
        args.agents,
        11,
    );
    let spans: u64 = templates.iter().map(|t| t.spans).sum();
    let bytes: usize = templates.iter().map(Template::encoded_len).sum();
    let turns: u64 = templates.iter().map(|t| t.turns).sum();
    println!(
        "load: {} pre-encoded requests, {:.0} spans ({:.0} turns of {} agents) and {:.0} KiB each, {:.0} bytes per span",
        templates.len(),
        spans as f64 / templates.len() as f64,
        turns as f64 / templates.len() as f64,
        args.agents,
        bytes as f64 / templates.len() as f64 / 1024.0,
        bytes as f64 / spans.max(1) as f64
    );
    Arc::new(templates)
}

async fn throughput_part(args: &BenchArgs, binary: &Path) -> anyhow::Result<()> {
    let templates = build_templates(args);
    let shape = LoadShape {
        concurrency: args.concurrency,
        connections: args.connections,
        duration: args.duration,
        rate: args.rate,
    };
    println!(
        "throughput: {} in flight over {} connections, {} per run after a 3 s warmup, {}",
        shape.concurrency,
        shape.connections,
        humantime::format_duration(shape.duration),
        match shape.rate {
            Some(r) => format!("{r:.0} spans/s offered"),
            None => "as fast as the target answers".to_string(),
        }
    );
    if args.rotel.is_none() {
        println!("rotel: not given (--rotel PATH); measuring agent-immune alone");
    }
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..args.repeat.max(1) {
        let sink = Sink::start(None).await?;
        let port = free_port()?;
        let dir = work_dir(&args.work_dir, "throughput-agent-immune")?;
        let api = loopback(free_port()?);
        let config = args.with_state(full_pipeline(loopback(port), sink.addr, api, args.shards));
        let target = Target::agent_immune(binary, &config, loopback(port), Some(api), &dir).await?;
        let result = throughput::measure(&target, &sink, templates.clone(), &shape).await;
        target.stop().await;
        let result = result?;
        print_throughput(
            round,
            "agent-immune (receive, recognise, turns, detect, forward)",
            &result,
        );
        ours.push(result);

        if let Some(rotel) = &args.rotel {
            let sink = Sink::start(None).await?;
            let (grpc, http) = (free_port()?, free_port()?);
            let dir = work_dir(&args.work_dir, "throughput-rotel")?;
            let target =
                Target::rotel(rotel, loopback(grpc), loopback(http), sink.addr, &dir).await?;
            let result = throughput::measure(&target, &sink, templates.clone(), &shape).await;
            target.stop().await;
            let result = result?;
            print_throughput(
                round,
                "rotel 0.0.1-alpha10 (pass-through, OTLP gRPC in and out)",
                &result,
            );
            theirs.push(result);
        }
    }
    let mean = |runs: &[Throughput]| {
        runs.iter()
            .map(Throughput::spans_per_cpu_second)
            .sum::<f64>()
            / runs.len().max(1) as f64
    };
    let ours_mean = mean(&ours);
    println!("  agent-immune mean: {ours_mean:.0} spans per CPU-second");
    if !theirs.is_empty() {
        let theirs_mean = mean(&theirs);
        println!("  rotel mean:        {theirs_mean:.0} spans per CPU-second");
        println!(
            "  ratio agent-immune / rotel: {:.2}",
            ours_mean / theirs_mean.max(1e-9)
        );
    }
    Ok(())
}

fn print_throughput(round: usize, what: &str, t: &Throughput) {
    println!(
        "  run {}: {what}\n    {:.0} spans/s accepted, {:.2} s CPU = {:.2} cores, {:.0} spans per CPU-second; \
         {} requests ({} refused, {} failed); sink got {} of {} spans{}; RSS {:.0} MiB{}",
        round + 1,
        t.spans_per_second(),
        t.cpu.as_secs_f64(),
        t.cores(),
        t.spans_per_cpu_second(),
        t.load.requests,
        t.load.refused,
        t.load.failed,
        t.received,
        t.load.spans_accepted,
        t.turns
            .map(|n| format!("; {n} of {} turns assembled", t.load.turns_accepted))
            .unwrap_or_default(),
        t.rss_after as f64 / 1024.0 / 1024.0,
        t.load
            .last_error
            .as_ref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    );
}

async fn latency_part(args: &BenchArgs, binary: &Path) -> anyhow::Result<()> {
    let templates = build_templates(args);
    let (observer, events) = latency::sink_observer();
    let sink = Sink::start(Some(observer)).await?;
    let port = free_port()?;
    let dir = work_dir(&args.work_dir, "latency-agent-immune")?;
    let api = loopback(free_port()?);
    let config = args.with_state(full_pipeline(loopback(port), sink.addr, api, args.shards));
    let target = Target::agent_immune(binary, &config, loopback(port), Some(api), &dir).await?;
    let background = LoadShape {
        concurrency: 4,
        connections: 2,
        duration: Duration::from_secs(1),
        rate: Some(args.latency_load),
    };
    let result =
        latency::measure(&target, &sink, events, templates, &background, args.probes).await;
    target.stop().await;
    print_latency(&result?);
    Ok(())
}

fn print_latency(l: &Latency) {
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    let bg = &l.background;
    println!(
        "detection latency (export of the anomalous turn -> infection log at the sink): {} of {} probes detected; \
         p50 {}, p99 {}, max {}; background {:.0} spans/s ({} requests refused)",
        l.latencies.len(),
        l.probes,
        ms(l.percentile(50.0)),
        ms(l.percentile(99.0)),
        ms(l.latencies.last().copied()),
        bg.spans_accepted as f64 / bg.elapsed.as_secs_f64().max(1e-9),
        bg.refused
    );
}

async fn memory_part(args: &BenchArgs, binary: &Path) -> anyhow::Result<()> {
    let (observer, events) = memory::sink_observer();
    let sink = Sink::start(Some(observer)).await?;
    let port = free_port()?;
    let dir = work_dir(&args.work_dir, "memory-agent-immune")?;
    let config = args.with_state(detection_pipeline(
        loopback(port),
        sink.addr,
        args.shards,
        args.memory_agents,
    ));
    let target = Target::agent_immune(binary, &config, loopback(port), None, &dir).await?;
    let result = memory::measure(&target, events, args.memory_agents, args.memory_turns).await;
    target.stop().await;
    print_memory(&result?);
    Ok(())
}

fn print_memory(m: &Memory) {
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    println!(
        "memory: {} agents x {} turns ({} spans sent in {:.0} s, all judged in {:.0} s): {} baselines ready; RSS {:.1} MiB idle -> {:.1} MiB = {:.0} bytes per agent",
        m.agents,
        m.turns_per_agent,
        m.spans_sent,
        m.fed.as_secs_f64(),
        m.elapsed.as_secs_f64(),
        m.ready,
        mib(m.rss_idle),
        mib(m.rss_after),
        m.bytes_per_agent()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::document::Config;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(flags: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(flags.iter().copied())).bench
    }

    #[test]
    fn the_measured_pipelines_are_valid_and_keep_state_unless_told_not_to() {
        let (a, b, c) = (loopback(1), loopback(2), loopback(3));
        for (flags, stored) in [(&[][..], true), (&["--without-state"][..], false)] {
            let args = args(flags);
            for (text, full) in [
                (args.with_state(full_pipeline(a, b, c, 2)), true),
                (args.with_state(detection_pipeline(a, b, 2, 10)), false),
            ] {
                let config = Config::parse("bench.toml", &text, |_| None)
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(config.state.is_some(), stored, "{text}");
                // The full pipeline forwards and serves /metrics; the
                // memory one only detects.
                let forwards = config
                    .exporters
                    .keys()
                    .any(|id| id.to_string() == "otlp_forward");
                assert_eq!(forwards, full, "{text}");
                assert_eq!(config.api.addr().unwrap().is_some(), full, "{text}");
            }
        }
    }
}
