//! Command-line flags and environment variables (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Sextant's sync server.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version, about)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port (the real one is printed).
    #[arg(long, env = "SEXTANT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Allow binding a non-loopback address. There are no accounts yet: anyone
    /// who reaches the port can read and write every session.
    #[arg(long, env = "SEXTANT_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// Directory for the event store and other server state.
    #[arg(long, env = "SEXTANT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Directory of the built client (trunk's output), served at `/`.
    #[arg(long, env = "SEXTANT_STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SEXTANT_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
}

impl Config {
    /// A configuration for tests and embedders: loopback, ephemeral port.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            bind: "127.0.0.1:0".parse().expect("valid address"),
            allow_remote: false,
            data_dir: data_dir.into(),
            static_dir: PathBuf::from("dist"),
            body_limit: 1024 * 1024,
        }
    }

    /// The path of the SQLite event store.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("sextant.sqlite3")
    }
}
