//! Sextant's sync server: the authority every browser syncs with.
//!
//! `main.rs` only parses flags and calls [`run`]; everything else lives in
//! modules with one concern each:
//! - [`config`]: flags and environment;
//! - [`accounts`]: users, tokens and the first start's `owner`;
//! - [`tls`]: HTTPS with rustls;
//! - [`error`]: the one error type, rendered as problem JSON with an error id;
//! - [`http`]: the axum router, handlers and static file serving;
//! - [`store`]: the event store interface and its SQLite and PostgreSQL backends;
//! - [`pipeline`]: load -> decide -> persist -> publish -> react (the one writer);
//! - [`bus`]: in-process broadcast of committed events and progress frames;
//! - [`fanout`]: on PostgreSQL, every node's one reader of the events all nodes append;
//! - [`projections`]: in-memory read models;
//! - [`sse`]: the `/api/events` Server-Sent Events feed;
//! - [`metrics`]: `/api/metrics` in the Prometheus text format.

pub mod accounts;
pub mod bus;
pub mod config;
pub mod error;
pub mod fanout;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod projections;
pub mod query;
pub mod sse;
pub mod state;
pub mod store;
pub mod tls;

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
    /// The admin `owner`'s token (also in `DATA_DIR/owner.token`).
    pub owner_token: Option<String>,
    /// `http` or `https`.
    pub scheme: &'static str,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// The URL to open: it signs the browser in as the owner.
    pub fn sign_in_url(&self) -> String {
        match &self.owner_token {
            Some(token) => format!("{}://{}/?token={token}", self.scheme, self.addr),
            None => format!("{}://{}/", self.scheme, self.addr),
        }
    }

    /// Stops accepting connections, finishes in-flight requests and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("server task panicked")?
    }
}

/// Opens the store, binds the listener and serves in the background.
pub async fn start(mut config: Config) -> anyhow::Result<RunningServer> {
    if !config.bind.ip().is_loopback() && !config.tls() {
        anyhow::ensure!(
            config.allow_remote,
            "refusing to serve plain HTTP on {}, a non-loopback address: tokens would cross the network in clear, \
             and browsers disable service workers, Web Locks and OPFS on plain HTTP off loopback (the app would not work offline). \
             Pass --tls-cert and --tls-key, or put a TLS proxy in front and pass --allow-remote",
            config.bind
        );
        tracing::warn!(
            bind = %config.bind,
            "serving plain HTTP on a non-loopback address (--allow-remote): put a TLS proxy in front"
        );
    }
    // One canonical path per directory from here on: store, catalog views,
    // the DuckDB sandbox and exports all derive from it.
    config.resolve_directories()?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };

    let state = AppState::open(&config).await?;
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    let hosts = http::auth::HostPolicy::new(&config, addr);
    // A make-service that hands each connection a clone of the one router
    // (an `Arc`). Given the `Router` itself, `axum::serve` rebuilds its route
    // table for every connection (about 30 KiB held while the connection
    // lives: an idle SSE stream would cost three times more).
    let router = http::router(state.clone(), &config, hosts);
    let make_service = router.clone().into_make_service();
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let serving_state = state.clone();
    let graceful = async move {
        let _ = shutdown_rx.await;
        // Open SSE streams would otherwise keep the server alive.
        serving_state.begin_shutdown();
    };
    let task = match tls {
        None => {
            // Event streams are served off hyper (see `http::stream_listener`).
            let listener = http::stream_listener::StreamListener::new(listener, router)?;
            tokio::spawn(async move {
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(graceful)
                    .await
                    .context("serving HTTP")
            })
        }
        Some(acceptor) => {
            let listener = tls::TlsListener::new(listener, acceptor);
            tokio::spawn(async move {
                axum::serve(listener, make_service)
                    .with_graceful_shutdown(graceful)
                    .await
                    .context("serving HTTPS")
            })
        }
    };
    state.mark_ready();
    Ok(RunningServer {
        addr,
        owner_token: state.owner_token().map(str::to_owned),
        scheme: if config.tls() { "https" } else { "http" },
        state,
        shutdown,
        task,
    })
}

/// Runs until `shutdown` resolves (Ctrl-C / SIGTERM in the binary).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let server = start(config).await?;
    // Tests and `cargo xtask dev` read this line: keep its shape.
    println!("Sextant listening on {}", server.sign_in_url());
    tracing::info!(addr = %server.addr, "Sextant listening");
    shutdown.await;
    tracing::info!("shutting down");
    server.stop().await
}
