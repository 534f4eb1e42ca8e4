//! The `server` binary: flags, logging, signals, and the `users` commands.
//! Everything else is in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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

#[derive(Debug, Subcommand)]
enum UsersAction {
    /// Creates a user; prints its token as the last line of standard output.
    Add {
        name: String,
        /// The user may add and revoke users.
        #[arg(long)]
        admin: bool,
        #[arg(long, env = "SEXTANT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Lists users (name, id, admin, created, revoked).
    List {
        #[arg(long, env = "SEXTANT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Revokes a user: its token stops working, its SSE streams end.
    Revoke {
        name: String,
        #[arg(long, env = "SEXTANT_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
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
        Some(Command::Users { action }) => users(action),
    }
}

fn users(action: UsersAction) -> anyhow::Result<()> {
    let data_dir = match &action {
        UsersAction::Add { data_dir, .. }
        | UsersAction::List { data_dir }
        | UsersAction::Revoke { data_dir, .. } => data_dir.clone(),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let config = Config::for_data_dir(&data_dir);
    // Opening migrates; a fresh store gets its `owner` first, as a server would.
    let (_, writer) = server::store::EventStore::open(&config.database_path())?;
    let conn = writer.0;
    server::accounts::ensure_owner(&conn, &data_dir)?;
    match action {
        UsersAction::Add { name, admin, .. } => {
            let (user, token) = server::accounts::add_user(&conn, &name, admin)
                .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
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
            for user in server::store::accounts::all_users(&conn)? {
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
            let id = server::accounts::revoke_user(&conn, &name)
                .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
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
