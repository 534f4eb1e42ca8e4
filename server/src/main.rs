//! The `server` binary: flags, logging, signals, and the `users` commands.
//! Everything else is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::store::{PgStore, SqliteStore, Store};
use server::Config;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage users; works while a server runs on the same data directory
    /// (it notices within a second).
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
}

/// Which store `server users` changes: the data directory's SQLite store,
/// or the PostgreSQL database every node shares.
#[derive(Debug, clap::Args)]
struct Target {
    #[arg(long, env = "SEXTANT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The shared PostgreSQL database of a multi-node deployment.
    #[arg(long, env = "SEXTANT_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum UsersAction {
    /// Creates a user; prints its token as the last line of standard output.
    Add {
        name: String,
        /// The user may add and revoke users.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Lists users (name, id, admin, created, revoked).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revokes a user: its token stops working, its SSE streams end.
    Revoke {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: stdout carries the listening line and tokens.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        None => server::run(cli.config, shutdown_signal()).await,
        Some(Command::Users { action }) => users(action).await,
    }
}

async fn users(action: UsersAction) -> anyhow::Result<()> {
    let target = match &action {
        UsersAction::Add { target, .. }
        | UsersAction::List { target }
        | UsersAction::Revoke { target, .. } => target,
    };
    let data_dir = target.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    // Opening migrates; a fresh store gets its `owner` first, as a server would.
    let store: Store = match &target.database_url {
        None => {
            let config = Config::for_data_dir(&data_dir);
            let (store, _writer) = SqliteStore::open(&config.database_path())?;
            store.into()
        }
        Some(url) => PgStore::open(url).await?.0.into(),
    };
    server::accounts::ensure_owner(&store, &data_dir).await?;
    let detail = |e: server::error::AppError| anyhow::anyhow!("{}", e.detail);
    match action {
        UsersAction::Add { name, admin, .. } => {
            let (user, token) = server::accounts::add_user(&store, &name, admin)
                .await
                .map_err(detail)?;
            println!(
                "added user {} (id {}{})",
                user.name,
                user.id,
                if admin { ", admin" } else { "" }
            );
            println!("{token}");
        }
        UsersAction::List { .. } => {
            println!(
                "{:<24} {:<36} {:<5} {:<27} REVOKED",
                "NAME", "ID", "ADMIN", "CREATED"
            );
            for user in store.all_users().await.map_err(detail)? {
                println!(
                    "{:<24} {:<36} {:<5} {:<27} {}",
                    user.name,
                    user.user_id,
                    if user.admin { "yes" } else { "no" },
                    user.created_at,
                    user.revoked_at.as_deref().unwrap_or("-")
                );
            }
        }
        UsersAction::Revoke { name, .. } => {
            let id = server::accounts::revoke_user(&store, &name)
                .await
                .map_err(detail)?;
            println!("revoked user {name} (id {id})");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
