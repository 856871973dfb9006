//! The edge between the pure core and the durable store: which core values
//! are records, how the store is opened at start, and how the shards'
//! cores are restored from it.

use super::detection::agent_shard;
use crate::immune::core::ImmuneCore;
use crate::immune::fleet::FleetSummary;
use crate::immune::snapshot::AgentSnapshot;
use crate::state::{
    ApiKey, DataDirInputs, StateConfig, StateRecord, StateWriter, Store, Table,
    resolve_api_key_from_env, resolve_data_dir,
};
use anyhow::Context;
use std::path::PathBuf;

/// Bump when `AgentSnapshot`'s fields change: a record of another version
/// is skipped (that agent relearns), never misread.
impl StateRecord for AgentSnapshot {
    const VERSION: u16 = 1;
}

impl StateRecord for FleetSummary {
    const VERSION: u16 = 1;
}

/// Key of one shard's part of the fleet's experience.
pub fn fleet_key(shard: usize) -> String {
    format!("fleet-{shard}")
}

/// An opened store, with what the service needs from it.
pub struct Opened {
    pub writer: StateWriter,
    pub api_key: ApiKey,
}

/// Resolves the data dir (flag, env, config, default), opens the store
/// (moving a corrupt or incompatible file aside), and resolves the API key
/// (env wins; else stored; else generated once and printed once).
pub async fn open(config: &StateConfig, flag: Option<PathBuf>) -> anyhow::Result<Opened> {
    let inputs = DataDirInputs::from_env(flag, config.data_dir.clone());
    let (dir, source) = resolve_data_dir(&inputs).context("resolving the data dir")?;
    let cfg = config.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &cfg))
        .await
        .context("opening the state store")??;
    for warning in store.warnings() {
        tracing::warn!("state: {warning}");
    }
    tracing::info!(
        dir = %store.dir().display(), source = ?source, fresh = store.is_fresh(), run_id = store.run_id(),
        "state store open"
    );
    let api_key = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || resolve_api_key_from_env(&store))
            .await
            .context("resolving the API key")??
    };
    tracing::info!(source = ?api_key.source(), "API key ready");
    Ok(Opened {
        writer: StateWriter::new(store),
        api_key,
    })
}

/// Restores every stored agent into the core of the shard that owns it,
/// and the fleet's experience (healing statistics) into shard 0.
pub async fn restore(store: &Store, cores: &mut [ImmuneCore]) -> anyhow::Result<()> {
    let shards = cores.len().max(1);
    let loader = store.clone();
    let (agents, fleet) = tokio::task::spawn_blocking(move || {
        let agents = loader.load_agents::<AgentSnapshot>()?;
        let fleet = loader.load_all::<FleetSummary>(Table::ImmuneMemory)?;
        Ok::<_, crate::state::StateError>((agents, fleet))
    })
    .await
    .context("loading state")??;
    for (key, error) in agents.skipped.iter().chain(fleet.skipped.iter()) {
        tracing::warn!(key = %key, "state record skipped (it will be relearned): {error}");
    }
    let mut restored = 0;
    for (id, snapshot) in agents.records {
        let Some(core) = cores.get_mut(agent_shard(&id, shards)) else {
            continue;
        };
        match core.restore(snapshot) {
            Ok(()) => restored += 1,
            Err(e) => tracing::warn!(agent = %id, "cannot restore agent: {e}"),
        }
    }
    let mut experience = FleetSummary::default();
    for (_, part) in &fleet.records {
        experience.merge(part);
    }
    if let Some(first) = cores.first_mut() {
        first.restore_experience(&experience);
    }
    tracing::info!(agents = restored, "state restored");
    Ok(())
}
