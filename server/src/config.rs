//! Command-line flags and environment variables (clap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::store::{Durability, StoreOptions};

/// Sextant's sync server.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version, about)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port (the real one is printed).
    #[arg(long, env = "SEXTANT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Serve plain HTTP on a non-loopback address: only behind a TLS proxy.
    /// Without it, a non-loopback address needs `--tls-cert` and `--tls-key`
    /// (browsers disable service workers, Web Locks and OPFS on plain HTTP
    /// off loopback, and tokens would cross the network in clear).
    #[arg(long, env = "SEXTANT_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// A host name this server answers for besides the bound address,
    /// `localhost`, `127.0.0.1` and `[::1]` (repeatable). Requests for any
    /// other `Host` are refused (421), and state-changing requests from
    /// another `Origin` host (403): that stops DNS rebinding and CSRF.
    #[arg(
        long = "public-host",
        env = "SEXTANT_PUBLIC_HOST",
        value_delimiter = ','
    )]
    pub public_hosts: Vec<String>,

    /// PEM certificate chain: serve HTTPS (rustls) instead of HTTP.
    #[arg(long, env = "SEXTANT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "SEXTANT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Directory for the event store and other server state.
    #[arg(long, env = "SEXTANT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Directory of the built client (trunk's output), served at `/`.
    #[arg(long, env = "SEXTANT_STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,

    /// Serve the app without the cross-origin isolation headers (COOP/COEP):
    /// the browser's local engine then runs single-threaded.
    #[arg(long, env = "SEXTANT_NO_CROSS_ORIGIN_ISOLATION")]
    pub no_cross_origin_isolation: bool,

    /// Requests per second each user may make, sustained (twice as many in a
    /// burst); more are answered 429 with `Retry-After`.
    #[arg(long, env = "SEXTANT_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,

    /// Query submissions per second each user may make, sustained.
    #[arg(long, env = "SEXTANT_QUERY_RATE_LIMIT", default_value_t = 50)]
    pub query_rate_limit: u32,

    /// Query submissions each user may make at once (a browser resyncing
    /// its pending work sends them together).
    #[arg(long, env = "SEXTANT_QUERY_BURST", default_value_t = 1000)]
    pub query_burst: u32,

    /// Open event streams (`/api/events`) per user.
    #[arg(long, env = "SEXTANT_SSE_PER_USER", default_value_t = 64)]
    pub sse_per_user: usize,

    /// Open event streams in total.
    #[arg(long, env = "SEXTANT_SSE_TOTAL", default_value_t = 4096)]
    pub sse_total: usize,
    /// What a 200 from `POST /api/commands` guarantees: `full` (the default)
    /// fsyncs every group commit before answering, so an acknowledged command
    /// survives a power cut; `normal` only writes it to the WAL file, which
    /// survives a crash of the server (kill -9) but not a power cut.
    #[arg(long, env = "SEXTANT_DURABILITY", value_enum, default_value_t = Durability::Full)]
    pub durability: Durability,

    /// The PostgreSQL database of a deployment of several nodes
    /// (`postgres://user@host:port/db`). Without it the event store is the
    /// SQLite file in the data directory, and nothing else is needed.
    #[arg(long, env = "SEXTANT_DATABASE_URL")]
    pub database_url: Option<String>,

    /// The SQLite VFS of the event store's connections. Not a flag: only
    /// tests set it, to a power-cut or fault-injecting VFS they registered.
    #[arg(skip)]
    pub sqlite_vfs: Option<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SEXTANT_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Directory of the datasets (Parquet, CSV, JSON) server queries read,
    /// each a view named after its file stem. Default: `<data dir>/datasets`.
    #[arg(long, env = "SEXTANT_DATASETS_DIR")]
    pub datasets_dir: Option<PathBuf>,

    /// Do not generate the `demo` dataset when the catalog is empty.
    #[arg(long, env = "SEXTANT_NO_DEMO")]
    pub no_demo: bool,

    /// Rows of the generated `demo` dataset.
    #[arg(long, env = "SEXTANT_DEMO_ROWS", default_value_t = crate::query::DEFAULT_DEMO_ROWS)]
    pub demo_rows: u64,

    /// Server queries that run at once; the rest wait in order. Default: cores.
    #[arg(long, env = "SEXTANT_QUERY_SLOTS")]
    pub query_slots: Option<usize>,

    /// A server query running longer than this is stopped and failed (60s, 500ms, 2m).
    #[arg(long, env = "SEXTANT_QUERY_TIMEOUT", default_value = "60s", value_parser = crate::query::parse_duration)]
    pub query_timeout: Duration,

    /// How long a node's claim on a server query holds without a renewal (the
    /// node renews it every third of this while the query waits and runs).
    /// When a node dies, its queries are failed this long after its last
    /// renewal, by another node (PostgreSQL) or at the next start (SQLite).
    #[arg(long, env = "SEXTANT_QUERY_LEASE", default_value = "30s", value_parser = crate::query::parse_duration)]
    pub query_lease: Duration,

    /// A dataset download whose client reads nothing for this long is dropped and frees its query slot.
    #[arg(long, env = "SEXTANT_QUERY_STALL_TIMEOUT", default_value = "30s", value_parser = crate::query::parse_duration)]
    pub query_stall_timeout: Duration,

    /// DuckDB's memory limit for all query slots together, in bytes. Default: half the RAM.
    #[arg(long, env = "SEXTANT_QUERY_MEMORY")]
    pub query_memory: Option<u64>,

    /// The most bytes DuckDB may spill to disk for all queries together (a query needing more fails).
    #[arg(long, env = "SEXTANT_QUERY_SPILL_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub query_spill_bytes: u64,

    /// Capacity of the query result cache, in bytes.
    #[arg(long, env = "SEXTANT_RESULT_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub result_cache_bytes: u64,

    /// How long an unread result stays cached (it is recomputed after).
    #[arg(long, env = "SEXTANT_RESULT_CACHE_TTL", default_value = "10m", value_parser = crate::query::parse_duration)]
    pub result_cache_ttl: Duration,

    /// Rows kept of a larger result for paging (downloads hold everything).
    #[arg(long, env = "SEXTANT_RESULT_MAX_ROWS", default_value_t = 100_000)]
    pub result_max_rows: u64,

    /// Disk budget of the persisted results (Parquet per query, least recently used evicted first).
    #[arg(long, env = "SEXTANT_RESULT_STORE_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub result_store_bytes: u64,

    /// Bytes kept of a larger result for paging (downloads hold everything).
    #[arg(long, env = "SEXTANT_RESULT_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub result_max_bytes: u64,

    /// The largest file a result download (`result.csv`, `result.parquet`)
    /// may take on disk; a larger export stops at the cap and answers 413.
    #[arg(long, env = "SEXTANT_EXPORT_MAX_BYTES", default_value_t = crate::query::DEFAULT_EXPORT_MAX_BYTES)]
    pub export_max_bytes: u64,

    /// Tests only: serve `POST /api/faults`, which kills the event store
    /// writer or the query executor (to test health supervision).
    #[arg(long, env = "SEXTANT_FAULT_INJECTION", hide = true)]
    pub fault_injection: bool,
}

impl Config {
    /// A configuration for tests and embedders: loopback, ephemeral port.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            bind: "127.0.0.1:0".parse().expect("valid address"),
            allow_remote: false,
            public_hosts: Vec::new(),
            tls_cert: None,
            tls_key: None,
            data_dir: data_dir.into(),
            static_dir: PathBuf::from("dist"),
            no_cross_origin_isolation: false,
            body_limit: 1024 * 1024,
            rate_limit: 1000,
            query_rate_limit: 50,
            query_burst: 1000,
            sse_per_user: 64,
            sse_total: 4096,
            durability: Durability::Full,
            database_url: None,
            sqlite_vfs: None,
            datasets_dir: None,
            no_demo: false,
            // Small, so in-process test servers start fast.
            demo_rows: 10_000,
            query_slots: None,
            query_timeout: Duration::from_secs(60),
            query_stall_timeout: Duration::from_secs(30),
            query_lease: Duration::from_secs(30),
            query_memory: None,
            query_spill_bytes: 4 * 1024 * 1024 * 1024,
            result_cache_bytes: 256 * 1024 * 1024,
            result_cache_ttl: Duration::from_secs(600),
            result_store_bytes: 1024 * 1024 * 1024,
            result_max_rows: 100_000,
            result_max_bytes: 64 * 1024 * 1024,
            export_max_bytes: crate::query::DEFAULT_EXPORT_MAX_BYTES,
            fault_injection: false,
        }
    }

    /// The query service's settings from these flags.
    pub fn query_settings(&self) -> crate::query::QuerySettings {
        let mut settings = crate::query::QuerySettings::for_data_dir(&self.data_dir);
        if let Some(dir) = &self.datasets_dir {
            settings.datasets_dir = dir.clone();
        }
        settings.demo_rows = (!self.no_demo).then_some(self.demo_rows);
        if let Some(slots) = self.query_slots {
            settings.slots = slots.max(1);
        }
        settings.timeout = self.query_timeout;
        settings.stall_timeout = self.query_stall_timeout;
        settings.lease = self.query_lease;
        if let Some(bytes) = self.query_memory {
            settings.memory_limit_bytes = bytes;
        }
        settings.spill_limit_bytes = self.query_spill_bytes;
        settings.cache_bytes = self.result_cache_bytes;
        settings.cache_ttl = self.result_cache_ttl;
        settings.result_store_bytes = self.result_store_bytes;
        settings.max_result_rows = self.result_max_rows;
        settings.max_result_bytes = self.result_max_bytes;
        settings.export_max_bytes = self.export_max_bytes;
        settings
    }

    /// Whether the server speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// How the event store opens its connections.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            durability: self.durability,
            vfs: self.sqlite_vfs.clone(),
        }
    }

    /// Creates the data directory (and a configured datasets directory) and
    /// replaces both paths by their canonical absolute form. Run once at
    /// start-up, before anything uses them: DuckDB compares the catalog's view
    /// paths with `allowed_directories` as strings, so a relative `./data` in
    /// one and its absolute form in the other refused every dataset.
    pub fn resolve_directories(&mut self) -> anyhow::Result<()> {
        self.data_dir = create_canonical(&self.data_dir)?;
        if let Some(dir) = &self.datasets_dir {
            self.datasets_dir = Some(create_canonical(dir)?);
        }
        Ok(())
    }

    /// The path of the SQLite event store.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("sextant.sqlite3")
    }
}

/// `dir`, created if missing, as a canonical absolute path (symlinks and
/// `..` resolved).
fn create_canonical(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating directory {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolving directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_directories_resolve_to_one_canonical_absolute_path() {
        let root = tempfile::tempdir().unwrap();
        let mut config = Config::for_data_dir(root.path().join("a/../data"));
        config.datasets_dir = Some(root.path().join("data/./sets"));
        config.resolve_directories().unwrap();
        let root = root.path().canonicalize().unwrap();
        assert_eq!(config.data_dir, root.join("data"));
        assert_eq!(config.datasets_dir, Some(root.join("data/sets")));
        let settings = config.query_settings();
        assert!(settings.datasets_dir.is_absolute() && settings.work_dir.is_absolute());
    }
}
