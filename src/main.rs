//! The `agent-immune` command line.

use agent_immune::config::document::{Config, ConfigErrors};
use agent_immune::config::service::LogFormat;
use agent_immune::pipeline::service::Service;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "agent-immune",
    version,
    about = "An immune system for AI agents, as an OpenTelemetry pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline (the embedded default unless --config is given).
    Run {
        /// Pipeline config file (TOML).
        #[arg(long, short, env = "AGENT_IMMUNE_CONFIG")]
        config: Option<PathBuf>,
        /// State directory (wins over AGENT_IMMUNE_DATA_DIR and [state] data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check a config file and report every error with its line and key.
    Validate {
        /// Pipeline config file (TOML); the embedded default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the embedded default pipeline config.
    DefaultConfig,
    /// Send a simulated agent fleet's OTLP traces, with injected infections,
    /// and serve its control API.
    Simulate(agent_immune::simulator::cli::SimulateArgs),
    /// Run the embedded default pipeline with a simulated fleet and scheduled
    /// infections; watch them on the dashboard.
    Demo(agent_immune::simulator::demo::DemoArgs),
    /// Measure throughput (against Rotel), detection latency and memory per
    /// agent of the release binary.
    Bench(agent_immune::bench::cli::BenchArgs),
    #[command(flatten)]
    Operator(agent_immune::api::cli::OperatorCommand),
}

fn load(config: Option<&PathBuf>) -> Result<Config, ConfigErrors> {
    match config {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.service.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the console events. Control
    // characters in logged client text are escaped, so no line is forged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| agent_immune::escape::EscapedStderr);
    match config.service.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Operator(command) => operator(command),
        Command::Simulate(args) => agent_immune::simulator::cli::main(args),
        Command::Demo(args) => agent_immune::simulator::demo::main(args),
        Command::Bench(args) => agent_immune::bench::cli::main(args),
        Command::DefaultConfig => {
            print!("{}", agent_immune::config::document::DEFAULT_PIPELINE);
            ExitCode::SUCCESS
        }
        Command::Validate { config } => match load(config.as_ref()) {
            Ok(c) => {
                println!(
                    "{}: ok ({} receivers, {} processors, {} exporters, {} pipelines)",
                    c.origin,
                    c.receivers.len(),
                    c.processors.len(),
                    c.exporters.len(),
                    c.pipelines.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, data_dir } => {
            let config = match load(config.as_ref()) {
                Ok(mut c) => {
                    c.data_dir_flag = data_dir;
                    c
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config);
            let work = async { run(config).await.inspect_err(|e| tracing::error!("{e:#}")) };
            agent_immune::runtime::run_to_exit("agent-immune", work)
        }
    }
}

/// An operator command against the management API (key from the env).
fn operator(command: agent_immune::api::cli::OperatorCommand) -> ExitCode {
    use std::io::Write;
    let key = std::env::var(agent_immune::api::client::API_KEY_ENV).ok();
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(agent_immune::api::cli::run(command, key)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    ExitCode::from(outcome.code)
}

async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(config = %config.origin, "starting agent-immune {}", env!("CARGO_PKG_VERSION"));
    let service = Service::start(config).await?;
    wait_for_stop_signal().await?;
    tracing::info!("stopping: receivers, then pipelines, then exporters");
    service.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        // Ctrl-C in a terminal.
        r = tokio::signal::ctrl_c() => r?,
        // Service managers and container runtimes stop with SIGTERM.
        _ = term.recv() => {}
    }
    Ok(())
}
