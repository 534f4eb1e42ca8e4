//! Synthetic data made by DuckDB itself on a separate, trusted in-memory
//! instance (the sandbox cannot write files): the `demo` dataset generated
//! on first start, and `cargo xtask gen-data` for large benchmark files.
//! The rows are a deterministic function of their index (hashes, not
//! `random()`), so a given row count always yields the same data.

use std::path::Path;
use std::time::Instant;

use super::duck::quote_literal;

/// The SQL of `rows` synthetic taxi trips: dates, categories and amounts.
fn trips_sql(rows: u64) -> String {
    format!(
        "SELECT
            i AS trip_id,
            TIMESTAMP '2024-01-01' + to_seconds((hash(i, 'ts') % 63072000)::BIGINT) AS pickup_at,
            (TIMESTAMP '2024-01-01' + to_seconds((hash(i, 'ts') % 63072000)::BIGINT))::DATE AS pickup_date,
            ['Manhattan', 'Manhattan', 'Manhattan', 'Brooklyn', 'Brooklyn', 'Queens',
             'Queens', 'Bronx', 'Staten Island', 'EWR'][1 + (hash(i, 'zone') % 10)::INTEGER] AS borough,
            ['card', 'card', 'card', 'cash', 'cash', 'app'][1 + (hash(i, 'pay') % 6)::INTEGER] AS payment_type,
            (1 + hash(i, 'pax') % 4)::INTEGER AS passengers,
            round(0.3 + (hash(i, 'km') % 25000) / 1000.0 * (1 + (hash(i, 'long') % 3)), 2) AS distance_km,
            (3.0 + round(0.3 + (hash(i, 'km') % 25000) / 1000.0 * (1 + (hash(i, 'long') % 3)), 2) * 1.75
                + (hash(i, 'wait') % 900) / 100.0)::DECIMAL(10, 2) AS fare,
            ((hash(i, 'tip') % 600) / 100.0)::DECIMAL(10, 2) AS tip
        FROM range({rows}) AS t(i)"
    )
}

/// Writes `rows` synthetic trips to `target` as Parquet, through a hidden
/// temporary file renamed at the end so the catalog never sees half a file.
/// Returns the number of bytes written. Blocking.
pub fn write_trips(target: &Path, rows: u64) -> anyhow::Result<u64> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("data.parquet");
    let temporary = dir.join(format!(".{file_name}.partial"));
    let started = Instant::now();
    // The trusted instance: default settings, file access, nothing from users.
    let connection = duckdb::Connection::open_in_memory()?;
    connection.execute_batch(
        "SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;",
    )?;
    connection.execute_batch(&format!(
        "COPY ({}) TO {} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)",
        trips_sql(rows),
        quote_literal(&temporary.to_string_lossy())
    ))?;
    std::fs::rename(&temporary, target)?;
    let bytes = std::fs::metadata(target)?.len();
    tracing::info!(
        path = %target.display(),
        rows,
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "generated synthetic trips with DuckDB"
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_are_deterministic_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.parquet");
        write_trips(&path, 5_000).unwrap();
        let connection = duckdb::Connection::open_in_memory().unwrap();
        let read = format!("read_parquet({})", quote_literal(&path.to_string_lossy()));
        let (rows, boroughs, min_fare): (i64, i64, f64) = connection
            .query_row(
                &format!("SELECT count(*), count(DISTINCT borough), min(fare)::DOUBLE FROM {read}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(rows, 5_000);
        assert_eq!(boroughs, 6);
        assert!(min_fare >= 3.0);
        let first: String = connection
            .query_row(
                &format!("SELECT borough || pickup_at::VARCHAR FROM {read} WHERE trip_id = 42"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        let again = dir.path().join("again.parquet");
        write_trips(&again, 100).unwrap();
        let read_again = format!("read_parquet({})", quote_literal(&again.to_string_lossy()));
        let second: String = connection
            .query_row(
                &format!(
                    "SELECT borough || pickup_at::VARCHAR FROM {read_again} WHERE trip_id = 42"
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(first, second, "rows depend only on their index");
        assert!(!dir.path().join(".demo.parquet.partial").exists());
    }
}
