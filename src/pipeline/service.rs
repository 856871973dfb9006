//! Builds the running service from a validated config and stops it in
//! order: receivers first, then the pipelines drain (open turns are closed
//! and judged), then the exporters flush what they hold.

use super::budget::MemoryBudget;
use super::consumer::{Consumer, Signal};
use super::detection::DetectionRouter;
use super::fleet::{Fleet, RecentEvents};
use super::persist;
use super::shard::{FleetBoard, Shard};
use super::signal_pipeline::SignalPipeline;
use crate::api::{self, server::ApiState};
use crate::config::document::{
    ComponentId, Config, ExporterConfig, PipelineConfig, ProcessorConfig, ReceiverConfig,
};
use crate::executors::EnforcementTarget;
use crate::executors::Executors;
use crate::exporters::{events, otlp_forward};
use crate::immune::core::ImmuneCore;
use crate::immune::event::Event;
use crate::listener::fd_limit;
use crate::processors::genai::Recogniser;
use crate::processors::turns::TurnAssembler;
use crate::receivers::llm_proxy::{AgentRegistry, LlmProxy, PolicyEngine};
use crate::receivers::otlp::{Consumers, OtlpReceiver, ReceiverError};
use crate::state::api_key::env_api_key;
use crate::state::{API_KEY_ENV, OutboxDelivery, StateWriter};
use crate::telemetry::Telemetry;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where a receiver ended up listening (useful with port 0).
#[derive(Debug, Clone)]
pub struct BoundReceiver {
    pub id: String,
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

/// An LLM proxy receiver, as the management API shows it.
#[derive(Clone)]
pub struct Gateway {
    pub id: String,
    pub addr: SocketAddr,
    pub registry: Arc<AgentRegistry>,
    pub policies: Arc<PolicyEngine>,
}

/// A running agent-immune.
pub struct Service {
    pub receivers: Vec<BoundReceiver>,
    /// The LLM proxies this service runs.
    pub gateways: Vec<Gateway>,
    /// The fleet, when a pipeline runs detection.
    pub fleet: Option<Fleet>,
    /// Where the management API listens, when enabled.
    pub api_addr: Option<SocketAddr>,
    ready: Arc<AtomicBool>,
    api_cancel: CancellationToken,
    api_task: Option<JoinHandle<()>>,
    pub telemetry: Arc<Telemetry>,
    pub run_id: String,
    receivers_cancel: CancellationToken,
    exporters_cancel: CancellationToken,
    state_cancel: CancellationToken,
    state_tasks: Vec<JoinHandle<()>>,
    writer: Option<StateWriter>,
    receiver_tasks: Vec<JoinHandle<Result<(), ReceiverError>>>,
    shard_tasks: Vec<JoinHandle<()>>,
    exporter_tasks: Vec<JoinHandle<()>>,
}

impl Service {
    /// Starts every component the config names. Ports are bound before
    /// this returns, so a caller can send right away.
    pub async fn start(mut config: Config) -> anyhow::Result<Service> {
        fit_connection_caps(&mut config);
        let telemetry = Arc::new(Telemetry::default());
        let run_id = new_run_id();
        let exporters_cancel = CancellationToken::new();
        let receivers_cancel = CancellationToken::new();
        let mut exporter_tasks = Vec::new();
        let mut shard_tasks = Vec::new();

        // The store first: everything after it may need it (the outbox, the
        // API key, restored agents).
        let opened = match &config.state {
            Some(cfg) => Some(persist::open(cfg, config.data_dir_flag.clone()).await?),
            None => None,
        };
        let state_cancel = CancellationToken::new();
        let mut state_tasks = Vec::new();
        let mut outbox = false;
        if let (Some(opened), Some(cfg)) = (&opened, &config.state) {
            state_tasks.push(
                opened
                    .writer
                    .spawn_flusher(cfg.flush_interval, state_cancel.clone()),
            );
        }

        // Exporters first, so pipelines can hold their queues.
        let mut forward_queues: BTreeMap<ComponentId, otlp_forward::SendingQueue> = BTreeMap::new();
        let mut event_queues: BTreeMap<ComponentId, mpsc::Sender<Event>> = BTreeMap::new();
        for (id, exporter) in &config.exporters {
            match exporter {
                ExporterConfig::OtlpForward(cfg) => {
                    let (queue, task) = otlp_forward::start(
                        &id.to_string(),
                        cfg,
                        telemetry.clone(),
                        exporters_cancel.clone(),
                    )
                    .with_context(|| format!("starting exporter {id}"))?;
                    forward_queues.insert(id.clone(), queue);
                    exporter_tasks.push(task);
                }
                ExporterConfig::Events(cfg) => {
                    // With a store, OTLP delivery is from the durable outbox
                    // (nothing lost across outages and restarts); this
                    // exporter then only prints.
                    let mut cfg = cfg.clone();
                    if let Some(opened) = &opened
                        && let Some(otlp) = cfg.otlp.take()
                    {
                        if outbox {
                            bail!(
                                "exporter {id}: with [state], only one events exporter may send OTLP (the outbox has one delivery cursor)"
                            );
                        }
                        outbox = true;
                        let delivery = OutboxDelivery::new(opened.writer.store().clone(), &otlp)
                            .with_context(|| format!("starting exporter {id}"))?
                            .with_telemetry(telemetry.clone());
                        state_tasks.push(delivery.spawn(state_cancel.clone()));
                    }
                    let (sender, task) =
                        events::start(&cfg, telemetry.clone(), exporters_cancel.clone())
                            .with_context(|| format!("starting exporter {id}"))?;
                    event_queues.insert(id.clone(), sender);
                    exporter_tasks.push(task);
                }
            }
        }

        // LLM proxies bind first: their gateways are enforcement targets.
        let mut proxies = Vec::new();
        let mut gateways: BTreeMap<String, Arc<dyn EnforcementTarget>> = BTreeMap::new();
        for (id, receiver) in &config.receivers {
            if let ReceiverConfig::LlmProxy(cfg) = receiver {
                let proxy = LlmProxy::bind(cfg)
                    .await
                    .with_context(|| format!("starting receiver {id}"))?
                    .named(&id.to_string());
                gateways.insert(id.to_string(), Arc::new(proxy.enforcement().with_id(&id.0)));
                proxies.push((id.clone(), proxy));
            }
        }
        let executors = Arc::new(
            Executors::from_config_with(&config.executors, &gateways)
                .map_err(|e| anyhow::anyhow!("executors: {e}"))?,
        );
        let recent = Arc::new(RecentEvents::new(RECENT_EVENTS));
        let mut fleet = None;

        // Pipelines, keyed by (receiver, signal): each receiver feeds at most
        // one pipeline per signal.
        let mut consumers: BTreeMap<(ComponentId, Signal), Arc<dyn Consumer>> = BTreeMap::new();
        for pipeline in &config.pipelines {
            let forward: Vec<otlp_forward::SendingQueue> = pipeline
                .exporters
                .iter()
                .filter_map(|e| forward_queues.get(e).cloned())
                .collect();
            let events: Vec<mpsc::Sender<Event>> = pipeline
                .exporters
                .iter()
                .filter_map(|e| event_queues.get(e).cloned())
                .collect();
            let detection = if pipeline.processors.is_empty() {
                None
            } else {
                if fleet.is_some() {
                    bail!(
                        "pipeline {}: only one pipeline may run detection (agents must have one owner)",
                        pipeline.name
                    );
                }
                let started = start_detection(
                    &config,
                    pipeline,
                    Detection {
                        events,
                        run_id: &run_id,
                        telemetry: &telemetry,
                        executors: &executors,
                        recent: &recent,
                        writer: opened.as_ref().map(|o| o.writer.clone()),
                        outbox,
                    },
                )
                .await?;
                shard_tasks.extend(started.tasks);
                fleet = Some(started.fleet);
                Some(started.router)
            };
            let consumer: Arc<dyn Consumer> = Arc::new(SignalPipeline::new(
                pipeline.name.clone(),
                forward,
                detection,
                telemetry.clone(),
            ));
            for receiver in &pipeline.receivers {
                let key = (receiver.clone(), pipeline.signal);
                if consumers.insert(key, consumer.clone()).is_some() {
                    bail!(
                        "receiver {receiver} feeds more than one {} pipeline; give each pipeline its own receiver",
                        pipeline.signal.as_str()
                    );
                }
            }
        }
        drop(forward_queues);
        drop(event_queues);

        // Receivers last: bind, then serve.
        let mut bound = Vec::new();
        let mut receiver_tasks = Vec::new();
        let mut gateway_views = Vec::new();
        // One decoded-data budget for every receiver: it bounds the process.
        let (budget, resident_limit) = config.service.memory_budget();
        let budget = MemoryBudget::new(budget, resident_limit);
        for (id, receiver) in &config.receivers {
            let ReceiverConfig::Otlp(cfg) = receiver else {
                continue;
            };
            let consumer_for = |signal| consumers.get(&(id.clone(), signal)).cloned();
            let consumers = Consumers {
                traces: consumer_for(Signal::Traces),
                metrics: consumer_for(Signal::Metrics),
                logs: consumer_for(Signal::Logs),
            };
            if consumers.traces.is_none() && consumers.metrics.is_none() && consumers.logs.is_none()
            {
                tracing::warn!(receiver = %id, "receiver is not used by any pipeline; not started");
                continue;
            }
            let receiver = OtlpReceiver::bind(cfg)
                .await
                .with_context(|| format!("starting receiver {id}"))?
                .named(&id.to_string())
                .with_budget(budget.clone());
            bound.push(BoundReceiver {
                id: id.to_string(),
                grpc: receiver.grpc_addr(),
                http: receiver.http_addr(),
            });
            receiver_tasks.push(receiver.serve(
                consumers,
                telemetry.clone(),
                receivers_cancel.clone(),
            ));
        }
        for (id, proxy) in proxies {
            let Some(fleet) = fleet.clone() else {
                bail!("receiver {id} feeds detection, but no pipeline runs it");
            };
            let addr = proxy.addr();
            tracing::info!(receiver = %id, %addr, "LLM proxy listening");
            gateway_views.push(Gateway {
                id: id.to_string(),
                addr,
                registry: proxy.registry(),
                policies: proxy.policies(),
            });
            let task = proxy.serve(Arc::new(fleet), telemetry.clone(), receivers_cancel.clone());
            receiver_tasks.push(tokio::spawn(async move {
                match task.await {
                    Ok(Err(e)) => Err(ReceiverError::Http(std::io::Error::other(e.to_string()))),
                    _ => Ok(()),
                }
            }));
        }
        for r in &bound {
            tracing::info!(receiver = %r.id, grpc = ?r.grpc, http = ?r.http, "receiving OTLP");
        }
        let ready = Arc::new(AtomicBool::new(false));
        let api_cancel = CancellationToken::new();
        let (api_addr, api_task) = match config.api.addr().map_err(anyhow::Error::msg)? {
            Some(addr) => {
                // The key: from the store (env wins there), else from
                // AGENT_IMMUNE_API_KEY alone; without any, mutating calls
                // and ingest are refused (fail closed). The API shows the
                // first LLM proxy's agents and policies.
                let api_key = match &opened {
                    Some(opened) => Some(opened.api_key.clone()),
                    None => env_api_key(std::env::var(API_KEY_ENV).ok().as_deref())
                        .context("reading the API key")?,
                };
                let proxy = gateway_views.first().map(|g| api::server::ProxyHandles {
                    registry: g.registry.clone(),
                    policies: g.policies.clone(),
                });
                let state = ApiState::new(telemetry.clone(), ready.clone(), config.api.clone())
                    .with_fleet(fleet.clone())
                    .with_api_key(api_key)
                    .with_proxy(proxy);
                let (bound_addr, task) = api::server::serve(addr, state, api_cancel.clone())
                    .await
                    .with_context(|| format!("starting the management API on {addr}"))?;
                tracing::info!(api = %bound_addr, "management API listening");
                (Some(bound_addr), Some(task))
            }
            None => (None, None),
        };
        ready.store(true, Ordering::Relaxed);
        Ok(Service {
            receivers: bound,
            gateways: gateway_views,
            fleet,
            api_addr,
            ready,
            api_cancel,
            api_task,
            telemetry,
            run_id,
            receivers_cancel,
            exporters_cancel,
            state_cancel,
            state_tasks,
            writer: opened.map(|o| o.writer),
            receiver_tasks,
            shard_tasks,
            exporter_tasks,
        })
    }

    /// The state store, when `[state]` is configured.
    pub fn store(&self) -> Option<&crate::state::Store> {
        self.writer.as_ref().map(StateWriter::store)
    }

    /// The first receiver's addresses (the common single-receiver case).
    pub fn otlp_grpc_addr(&self) -> Option<SocketAddr> {
        self.receivers.iter().find_map(|r| r.grpc)
    }

    pub fn otlp_http_addr(&self) -> Option<SocketAddr> {
        self.receivers.iter().find_map(|r| r.http)
    }

    /// Stops in order, each stage under a deadline: receivers and the API
    /// (nothing new comes in), then the shards drain (open turns are closed
    /// and judged), then the exporters flush what they hold.
    pub async fn shutdown(self, deadline: Duration) {
        self.ready.store(false, Ordering::Relaxed);
        self.receivers_cancel.cancel();
        self.api_cancel.cancel();
        for task in self.receiver_tasks {
            match tokio::time::timeout(deadline, task).await {
                Ok(Ok(Err(e))) => tracing::warn!("receiver stopped with an error: {e}"),
                Err(_) => tracing::warn!("a receiver did not stop within {deadline:?}"),
                _ => {}
            }
        }
        if let Some(task) = self.api_task {
            let _ = tokio::time::timeout(deadline, task).await;
        }
        // With the receivers, the API and this handle gone, nothing can send
        // to the shards any more: they drain and stop.
        drop(self.fleet);
        for task in self.shard_tasks {
            if tokio::time::timeout(deadline, task).await.is_err() {
                tracing::warn!("a detection shard did not stop within {deadline:?}");
            }
        }
        // Shards are done: the last baselines are written, and the outbox
        // keeps delivering for its drain time.
        if let Some(writer) = &self.writer
            && let Err(e) = writer.flush().await
        {
            tracing::error!("final state flush failed: {e}");
        }
        self.state_cancel.cancel();
        for task in self.state_tasks {
            let _ = tokio::time::timeout(deadline, task).await;
        }
        // Shards dropped their event queues: exporters flush what they hold.
        let exporters = futures_join_all(self.exporter_tasks);
        if tokio::time::timeout(deadline, exporters).await.is_err() {
            tracing::warn!("exporters did not flush within {deadline:?}; stopping them");
            self.exporters_cancel.cancel();
        }
    }
}

/// Awaits every task (no extra crate for one join).
async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// What detection needs from the service around it.
struct Detection<'a> {
    events: Vec<mpsc::Sender<Event>>,
    run_id: &'a str,
    telemetry: &'a Arc<Telemetry>,
    executors: &'a Arc<Executors>,
    recent: &'a Arc<RecentEvents>,
    writer: Option<StateWriter>,
    outbox: bool,
}

struct StartedDetection {
    router: DetectionRouter,
    fleet: Fleet,
    tasks: Vec<JoinHandle<()>>,
}

async fn start_detection(
    config: &Config,
    pipeline: &PipelineConfig,
    with: Detection<'_>,
) -> anyhow::Result<StartedDetection> {
    let mut genai = None;
    let mut turns = None;
    let mut immune = None;
    for id in &pipeline.processors {
        match config.processors.get(id) {
            Some(ProcessorConfig::Genai(c)) => genai = Some(c.clone()),
            Some(ProcessorConfig::Turns(c)) => turns = Some(c.clone()),
            Some(ProcessorConfig::Immune(c)) => immune = Some((**c).clone()),
            None => bail!("processor {id} is not defined"),
        }
    }
    let (Some(genai), Some(turns), Some(immune)) = (genai, turns, immune) else {
        bail!(
            "pipeline {} needs genai, turns and immune processors for detection",
            pipeline.name
        );
    };
    let shards = config.service.shard_count();
    let tick = (turns.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let recogniser =
        Arc::new(Recogniser::new(&genai).keeping_resource(config.executors.resource_keys()));
    let board = Arc::new(FleetBoard::new(shards));
    let mut span_senders = Vec::with_capacity(shards);
    let mut span_receivers = Vec::with_capacity(shards);
    let mut turn_senders = Vec::with_capacity(shards);
    let mut turn_receivers = Vec::with_capacity(shards);
    let mut vitals_senders = Vec::with_capacity(shards);
    let mut vitals_receivers = Vec::with_capacity(shards);
    let mut command_senders = Vec::with_capacity(shards);
    let mut command_receivers = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = mpsc::channel(config.service.detection_queue);
        span_senders.push(tx);
        span_receivers.push(rx);
        let (tx, rx) = mpsc::channel(super::shard::TURN_QUEUE);
        turn_senders.push(tx);
        turn_receivers.push(rx);
        let (tx, rx) = mpsc::channel(config.service.vitals_queue);
        vitals_senders.push(tx);
        vitals_receivers.push(rx);
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        command_senders.push(tx);
        command_receivers.push(rx);
    }
    let mut cores: Vec<ImmuneCore> = (0..shards)
        .map(|_| ImmuneCore::for_shard(immune.clone(), shards))
        .collect();
    if let Some(writer) = &with.writer {
        persist::restore(writer.store(), &mut cores).await?;
    }
    let mut tasks = Vec::with_capacity(shards);
    let receivers = span_receivers
        .into_iter()
        .zip(turn_receivers)
        .zip(vitals_receivers)
        .zip(command_receivers);
    for (index, ((((spans, turns_rx), vitals), commands), core)) in receivers.zip(cores).enumerate()
    {
        let shard = Shard {
            index,
            run_id: with.run_id.to_string(),
            assembler: TurnAssembler::new(&turns),
            core,
            spans,
            turns: turns_rx,
            vitals,
            turn_routes: turn_senders.clone(),
            commands,
            events: with.events.clone(),
            recent: with.recent.clone(),
            executors: with.executors.clone(),
            fleet: board.clone(),
            writer: with.writer.clone(),
            outbox: with.outbox,
            tick,
            telemetry: with.telemetry.clone(),
        };
        tasks.push(tokio::spawn(shard.run()));
    }
    let router = DetectionRouter::new(
        recogniser,
        span_senders,
        config.service.when_detection_full,
        with.telemetry.clone(),
    );
    drop(turn_senders);
    let fleet = Fleet::new(
        command_senders,
        vitals_senders,
        with.recent.clone(),
        with.telemetry.clone(),
    );
    Ok(StartedDetection {
        router,
        fleet,
        tasks,
    })
}

/// Raises the file-descriptor limit to the hard limit and lowers the
/// listeners' connection caps to fit below it (the API keeping its share),
/// saying so when it had to.
fn fit_connection_caps(config: &mut Config) {
    let Some(limit) = fd_limit::raise_fd_limit() else {
        return;
    };
    let api = matches!(config.api.addr(), Ok(Some(_)))
        .then_some(&mut config.api.listener.max_connections);
    let mut others: Vec<(&mut usize, usize)> = config
        .receivers
        .values_mut()
        .map(|receiver| match receiver {
            ReceiverConfig::Otlp(cfg) => {
                let listeners = [cfg.grpc.is_empty(), cfg.http.is_empty()]
                    .iter()
                    .filter(|disabled| !**disabled)
                    .count();
                (&mut cfg.listener.max_connections, listeners)
            }
            ReceiverConfig::LlmProxy(cfg) => (&mut cfg.listener.max_connections, 1),
        })
        .collect();
    if fd_limit::fit_caps(limit, api, &mut others) {
        let mut fitted = vec![format!("api {}", config.api.listener.max_connections)];
        for (id, receiver) in &config.receivers {
            let cap = match receiver {
                ReceiverConfig::Otlp(cfg) => cfg.listener.max_connections,
                ReceiverConfig::LlmProxy(cfg) => cfg.listener.max_connections,
            };
            fitted.push(format!("{id} {cap}"));
        }
        tracing::warn!(
            "the file-descriptor limit is {limit}: listener.max_connections lowered to fit below it ({}); raise the hard limit (ulimit -Hn) for more",
            fitted.join(", ")
        );
    }
}

/// Operator requests waiting per shard.
const COMMAND_QUEUE: usize = 256;
/// Events kept in memory for the API's timeline.
const RECENT_EVENTS: usize = 10_000;

/// A run id unique to this process start (time and pid), used in event ids.
fn new_run_id() -> String {
    format!(
        "{:x}{:04x}",
        super::shard::now() / 1_000_000,
        std::process::id() & 0xffff
    )
}
