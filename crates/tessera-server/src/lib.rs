//! The `tessera` binary's library half: configuration, wiring of store and engines, tenant
//! bootstrap and the admin commands. `main.rs` only parses arguments and calls in here, so
//! tests build exactly what production runs.

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod import;
pub mod telemetry;

use anyhow::Context;
use std::sync::Arc;
use tessera_core::{Clock, SystemClock};
use tessera_oauth::OAuthEngine;
use tessera_oauth::keys::{KeyRing, MasterKey};
use tessera_selfservice::{PasswordHasherPool, SelfService};
use tessera_store::Store;
use tessera_web::{AppState, WebConfig};

/// Everything a running node (or an admin command) holds.
#[derive(Clone)]
pub struct Runtime {
    pub config: Arc<config::Config>,
    pub store: Arc<dyn Store>,
    pub oauth: OAuthEngine,
    pub selfservice: SelfService,
}

impl Runtime {
    /// Connects to the database, applies migrations and assembles the engines.
    pub async fn start(config: config::Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let store = tessera_store::connect(&config.database_url).await.context("connecting to the database")?;
        store.migrate().await.context("applying migrations")?;
        let master = resolve_master_key(&config)?;
        let hasher = PasswordHasherPool::new(&config.hashing).map_err(anyhow::Error::msg)?;
        let oauth = OAuthEngine {
            store: store.clone(),
            clock: clock.clone(),
            config: Arc::new(config.tokens.clone()),
            keys: Arc::new(KeyRing::new(master)),
            clients: Arc::default(),
        };
        let selfservice =
            SelfService { store: store.clone(), clock, hasher: Arc::new(hasher), config: Arc::new(config.selfservice.clone()) };
        Ok(Self { config: Arc::new(config), store, oauth, selfservice })
    }

    /// Starts with the wall clock.
    pub async fn start_default(config: config::Config) -> anyhow::Result<Self> {
        Self::start(config, Arc::new(SystemClock)).await
    }

    pub fn app_state(&self, metrics: Option<metrics_exporter_prometheus::PrometheusHandle>) -> AppState {
        let web = WebConfig { public_url: self.config.public_url.clone(), trusted_proxies: self.config.trusted_proxies.clone() };
        AppState::new(self.oauth.clone(), self.selfservice.clone(), web, metrics)
    }
}

/// The master key from configuration; or, for the embedded single-machine default and dev
/// mode, one generated once under the data directory (with a warning). A PostgreSQL cluster
/// must be given the key explicitly so that every node shares it.
fn resolve_master_key(config: &config::Config) -> anyhow::Result<MasterKey> {
    if !config.master_key.0.is_empty() {
        return MasterKey::from_base64(&config.master_key.0).context("TESSERA_MASTER_KEY");
    }
    if !(config.is_sqlite() || config.dev_mode) {
        anyhow::bail!("TESSERA_MASTER_KEY is required with PostgreSQL (generate one with: head -c 32 /dev/urandom | base64)");
    }
    let path = config.data_dir.join("master.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return MasterKey::from_base64(&existing).with_context(|| format!("{} is not a valid master key", path.display()));
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let key = MasterKey::generate_base64()?;
    write_private_file(&path, &key)?;
    tracing::warn!(path = %path.display(), "no master key configured: generated one for this machine; set TESSERA_MASTER_KEY in production");
    MasterKey::from_base64(&key).map_err(Into::into)
}

fn write_private_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
