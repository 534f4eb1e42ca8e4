//! Server-side queries with native DuckDB: the only module that speaks DuckDB.
//!
//! - [`duck`]: the unsafe edge (DuckDB's C API) behind a small safe wrapper;
//! - [`sandbox`]: which statements may run and the locked-down instance they run on;
//! - [`catalog`]: the datasets directory as views;
//! - [`demo`]: synthetic data written by a separate, trusted instance;
//! - [`results`]: kept results and their JSON / Arrow pages;
//! - [`result_store`]: completed results as Parquet on disk, LRU within a byte budget;
//! - [`slots`]: the one slot runner all DuckDB work goes through (queries,
//!   recomputes, exports, downloads): permits live with the blocking work,
//!   a dropped request interrupts it, queue time counts toward the timeout;
//! - [`executor`]: spawn-after-persist execution on the slots, with
//!   cancellation, timeouts, progress and recovery by claim expiry
//!   ([`claims`]: which node runs a query, its lease), every outcome
//!   issued through the command pipeline and retried while the store fails
//!   ([`retry`]; [`faults`] injects store failures in tests);
//! - [`structured`]: filtered/sorted pages, aggregations and profiles over
//!   a result, built from validated parameters, never from client SQL;
//! - [`export`]: whole results as Parquet or CSV downloads;
//! - [`download`]: whole datasets as Arrow IPC streams (taken offline by the browser).

pub mod catalog;
pub mod claims;
pub mod demo;
pub mod download;
pub mod duck;
pub mod executor;
pub mod export;
pub mod faults;
pub mod result_store;
pub mod results;
pub mod retry;
pub mod sandbox;
pub mod slots;
pub mod structured;

use std::path::PathBuf;
use std::time::Duration;

pub use executor::QueryService;

/// The Arrow crate DuckDB's results come in (with its IPC reader and
/// writer), for clients of this module that read Arrow pages.
pub use duckdb::arrow;

/// Everything the query service needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct QuerySettings {
    /// The catalog's directory.
    pub datasets_dir: PathBuf,
    /// Scratch space: DuckDB's spill files and downloads being written.
    pub work_dir: PathBuf,
    /// Completed results as Parquet (never inside the catalog or work dir).
    pub results_dir: PathBuf,
    /// Disk budget of `results_dir`.
    pub result_store_bytes: u64,
    /// Rows of the demo dataset written when the catalog is empty (None: no demo).
    pub demo_rows: Option<u64>,
    /// Queries that run at once; the rest wait in order.
    pub slots: usize,
    /// A query running longer than this is stopped and failed (the wait
    /// for a slot counts).
    pub timeout: Duration,
    /// A download whose reader takes nothing for this long loses its slot.
    pub stall_timeout: Duration,
    /// How long a claim on a server query holds without a renewal
    /// (see [`claims`]).
    pub lease: Duration,
    /// DuckDB's threads, shared by the running queries.
    pub threads: usize,
    /// DuckDB's memory limit for all slots together, in bytes.
    pub memory_limit_bytes: u64,
    /// The most bytes DuckDB may spill to disk (all queries together).
    pub spill_limit_bytes: u64,
    /// The result cache's capacity in bytes.
    pub cache_bytes: u64,
    /// How long an unread result stays cached.
    pub cache_ttl: Duration,
    /// A result with more rows than this keeps only its first rows.
    pub max_result_rows: u64,
    /// A result larger than this keeps only its first rows.
    pub max_result_bytes: u64,
    /// The largest export file (CSV or Parquet) written for a download.
    pub export_max_bytes: u64,
}

impl QuerySettings {
    /// Defaults for a data directory: datasets in `<data>/datasets`, a demo of
    /// two million rows, as many slots and threads as cores, half the memory.
    pub fn for_data_dir(data_dir: &std::path::Path) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            datasets_dir: data_dir.join("datasets"),
            work_dir: data_dir.join("query-work"),
            results_dir: data_dir.join("results"),
            result_store_bytes: 1024 * 1024 * 1024,
            demo_rows: Some(DEFAULT_DEMO_ROWS),
            slots: cores,
            timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            lease: claims::DEFAULT_LEASE,
            threads: cores,
            memory_limit_bytes: default_memory_limit(),
            spill_limit_bytes: 4 * 1024 * 1024 * 1024,
            cache_bytes: 256 * 1024 * 1024,
            cache_ttl: Duration::from_secs(600),
            max_result_rows: 100_000,
            max_result_bytes: 64 * 1024 * 1024,
            export_max_bytes: DEFAULT_EXPORT_MAX_BYTES,
        }
    }
}

/// The export size cap unless configured otherwise (4 GiB).
pub const DEFAULT_EXPORT_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Rows of the demo dataset unless configured otherwise.
pub const DEFAULT_DEMO_ROWS: u64 = 2_000_000;

/// Half the machine's memory (4 GiB when it cannot be read).
pub fn default_memory_limit() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        });
    total_kib.map(|kib| kib * 1024 / 2).unwrap_or(4 << 30)
}

/// Parses a duration such as `60`, `60s`, `500ms` or `2m` (bare numbers are seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 60s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown duration unit {other:?}; use ms, s or m")),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
