//! Shared application state handed to every handler: the event store, the
//! command pipeline (its single writer), the bus and the projections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use crate::accounts::Accounts;
use crate::bus::Bus;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::projections::Projections;
use crate::query::QueryService;
use crate::store::{PgStore, SqliteStore, Store};

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    ready: AtomicBool,
    store: Store,
    store_id: uuid::Uuid,
    bus: Bus,
    pipeline: Pipeline,
    projections: Projections,
    query: Arc<QueryService>,
    accounts: Accounts,
    owner_token: Option<String>,
    limits: crate::limits::Limits,
    metrics: Metrics,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// Opens everything the server needs before it can answer.
    /// Migrations are applied and the projections rebuilt before it returns.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let bus = Bus::default();
        let fanout_wake = Arc::new(tokio::sync::Notify::new());
        let (store, pipeline): (Store, Pipeline) = match &config.database_url {
            None => {
                let path = config.database_path();
                let options = config.store_options();
                let (store, writer) =
                    tokio::task::spawn_blocking(move || SqliteStore::open_with(&path, &options))
                        .await
                        .context("opening the event store")??;
                (store.into(), Pipeline::start(writer, bus.clone()))
            }
            Some(url) => {
                let (store, writer) = PgStore::open(url)
                    .await
                    .context("opening the PostgreSQL event store")?;
                let pipeline = Pipeline::start(writer, bus.clone());
                pipeline.publish_through(fanout_wake.clone());
                (store.into(), pipeline)
            }
        };
        tracing::info!(backend = store.backend(), "event store open");
        let (accounts, owner_token) = Accounts::open(store.clone(), &config.data_dir).await?;
        let store_id = store
            .store_id()
            .await
            .map_err(|e| anyhow::anyhow!("reading the store id: {}", e.detail))?;
        pipeline.set_accounts(accounts.clone());
        // Other nodes append too (PostgreSQL): the fan-out follower publishes
        // every event after the head read here, once the projections have
        // subscribed (they drop what their rebuild already covered).
        let fanout_from = match &store {
            Store::Postgres(_) => Some(store.max_global_sequence().await?),
            Store::Sqlite(_) => None,
        };
        let projections = Projections::start(store.clone(), &bus).await?;
        if let Some(cursor) = fanout_from {
            crate::fanout::start(store.clone(), bus.clone(), cursor, fanout_wake);
        }
        // DuckDB, the catalog (and the demo dataset), restart recovery.
        let query = QueryService::start(
            config.query_settings(),
            store.clone(),
            pipeline.clone(),
            projections.clone(),
            bus.clone(),
        )
        .await?;
        let metrics = Metrics::new(&pipeline);
        Ok(Self {
            inner: Arc::new(Inner {
                ready: AtomicBool::new(false),
                store,
                store_id,
                bus,
                pipeline,
                projections,
                query,
                accounts,
                owner_token,
                limits: crate::limits::Limits::from_config(config),
                metrics,
                shutdown: tokio::sync::watch::channel(false).0,
            }),
        })
    }

    /// The event store (read side).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The store's random id (migration 0003): clients notice a replaced store by it.
    pub fn store_id(&self) -> uuid::Uuid {
        self.inner.store_id
    }

    /// The in-process bus: committed events and ephemeral frames.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The command pipeline: every write goes through it.
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// Rate limits and stream caps.
    pub fn limits(&self) -> &crate::limits::Limits {
        &self.inner.limits
    }

    /// The users and their tokens.
    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }

    /// The token of the admin `owner` (also in `DATA_DIR/owner.token`), unless
    /// the owner was revoked.
    pub fn owner_token(&self) -> Option<&str> {
        self.inner.owner_token.as_deref()
    }

    /// Tells long-lived responses (SSE streams) to end: the server is stopping.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves-on-`true` receiver for long-lived responses.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Server-side queries with DuckDB: catalog, executor, results.
    pub fn query(&self) -> &Arc<QueryService> {
        &self.inner.query
    }

    /// The Prometheus registry behind `GET /api/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The in-memory read models.
    pub fn projections(&self) -> &Projections {
        &self.inner.projections
    }

    /// Whether start-up work (migrations, projections, demo data) is done.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    pub(crate) fn mark_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }
}
