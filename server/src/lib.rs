//! Sextant's sync server: the authority every browser syncs with.
//!
//! `main.rs` only parses flags and calls [`run`]; everything else lives in
//! modules with one concern each:
//! - [`config`]: flags and environment;
//! - [`error`]: the one error type, rendered as problem JSON with an error id;
//! - [`http`]: the axum router, handlers and static file serving;
//! - [`store`]: the SQLite event store and its migrations;
//! - [`pipeline`]: load -> decide -> persist -> publish -> react (the one writer);
//! - [`bus`]: in-process broadcast of committed events and progress frames;
//! - [`projections`]: in-memory read models;
//! - [`sse`]: the `/api/events` Server-Sent Events feed;
//! - [`metrics`]: `/api/metrics` in the Prometheus text format.

pub mod bus;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod projections;
pub mod query;
pub mod sse;
pub mod state;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::Config;
pub use state::AppState;

/// A started server: its real address and the task that serves it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting connections, finishes in-flight requests and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("server task panicked")?
    }
}

/// Opens the store, binds the listener and serves in the background.
pub async fn start(mut config: Config) -> anyhow::Result<RunningServer> {
    if !config.bind.ip().is_loopback() {
        anyhow::ensure!(
            config.allow_remote,
            "refusing to bind {}: it is not a loopback address and there are no accounts yet; pass --allow-remote to expose every session to anyone who reaches the port",
            config.bind
        );
        tracing::warn!(
            bind = %config.bind,
            "listening on a non-loopback address: anyone who reaches this port can read and write every session"
        );
    }
    // One canonical path per directory from here on: store, catalog views,
    // the DuckDB sandbox and exports all derive from it.
    config.resolve_directories()?;

    let state = AppState::open(&config).await?;
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    // No Nagle: an SSE frame or a command answer must leave at once, not wait
    // for the ACK of the previous small write (up to the peer's delayed-ACK 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    let router = http::router(state.clone(), &config);
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let serving_state = state.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
                // Open SSE streams would otherwise keep the server alive.
                serving_state.begin_shutdown();
            })
            .await
            .context("serving HTTP")
    });
    state.mark_ready();
    Ok(RunningServer {
        addr,
        state,
        shutdown,
        task,
    })
}

/// Runs until `shutdown` resolves (Ctrl-C / SIGTERM in the binary).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let server = start(config).await?;
    println!("Sextant listening on http://{}", server.addr);
    tracing::info!(addr = %server.addr, "Sextant listening");
    shutdown.await;
    tracing::info!("shutting down");
    server.stop().await
}
