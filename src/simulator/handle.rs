//! A running simulation: started with [`Simulator::start`], looked at while
//! it runs, stopped with [`Simulator::shutdown`].

use super::control;
use super::driver::{Driver, Report, SimStats};
use super::fleet::{AgentStatus, ControlCall, SimFleet};
use super::options::SimulatorOptions;
use crate::exporters::otlp_client::{OtlpClient, OtlpClientConfig};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct Simulator {
    /// Where the agents' control API listens, when it does.
    pub control_addr: Option<SocketAddr>,
    fleet: Arc<Mutex<SimFleet>>,
    stats: Arc<SimStats>,
    stop: CancellationToken,
    driver: Option<JoinHandle<()>>,
    control_cancel: CancellationToken,
    control_task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Checks the options, binds the control API and starts sending. Must
    /// be called inside a tokio runtime.
    pub async fn start(options: SimulatorOptions) -> anyhow::Result<Simulator> {
        let problems = options.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        let fleet = SimFleet::new(options.agents, options.seed);
        let mut schedule = Vec::with_capacity(options.injections.len());
        for injection in &options.injections {
            let hit = fleet.resolve(injection).map_err(anyhow::Error::msg)?;
            schedule.push((injection.clone(), hit));
        }
        let client = OtlpClient::new(&OtlpClientConfig::new(
            options.endpoint.clone(),
            options.protocol,
        ))
        .context("the simulator's OTLP client")?;
        let fleet = Arc::new(Mutex::new(fleet));
        let started = Instant::now();
        let control_cancel = CancellationToken::new();
        let (control_addr, control_task) = match options.control {
            Some(addr) => {
                let (bound, task) =
                    control::serve(addr, fleet.clone(), started, control_cancel.clone())
                        .await
                        .with_context(|| format!("binding the control API on {addr}"))?;
                (Some(bound), Some(task))
            }
            None => (None, None),
        };
        let stats = Arc::new(SimStats::default());
        let stop = CancellationToken::new();
        let driver = Driver {
            fleet: fleet.clone(),
            client: Arc::new(client),
            stats: stats.clone(),
            schedule,
            rate: options.rate,
            duration: options.duration,
            seed: options.seed,
            started,
            stop: stop.clone(),
        };
        Ok(Simulator {
            control_addr,
            fleet,
            stats,
            stop,
            driver: Some(tokio::spawn(driver.run())),
            control_cancel,
            control_task,
        })
    }

    fn fleet(&self) -> std::sync::MutexGuard<'_, SimFleet> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Agent ids, by index.
    pub fn agent_ids(&self) -> Vec<String> {
        self.fleet().ids()
    }

    pub fn status(&self, agent_id: &str) -> Option<AgentStatus> {
        self.fleet().status(agent_id)
    }

    pub fn statuses(&self) -> Vec<AgentStatus> {
        self.fleet().statuses()
    }

    /// The control calls received so far.
    pub fn control_log(&self) -> Vec<ControlCall> {
        self.fleet().control_log().to_vec()
    }

    pub fn report(&self) -> Report {
        self.stats.report()
    }

    /// Ends the run before its duration.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the run is over (its duration elapsed, or `stop`) and
    /// its last requests were sent. The control API still answers.
    pub async fn finished(&mut self) -> Report {
        if let Some(driver) = self.driver.take()
            && let Err(e) = driver.await
        {
            tracing::warn!("simulator run ended abnormally: {e}");
        }
        self.report()
    }

    /// Stops sending and the control API.
    pub async fn shutdown(mut self, deadline: Duration) -> Report {
        self.stop.cancel();
        let report = match tokio::time::timeout(deadline, self.finished()).await {
            Ok(report) => report,
            Err(_) => self.report(),
        };
        self.control_cancel.cancel();
        if let Some(task) = self.control_task.take() {
            let _ = tokio::time::timeout(deadline, task).await;
        }
        report
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.cancel();
        self.control_cancel.cancel();
    }
}
