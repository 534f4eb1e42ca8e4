//! The sandbox for user SQL: which statements may run, and the DuckDB
//! instance they run on. Two walls: (1) exactly one read-only statement,
//! checked with DuckDB's own parser and statement type before anything runs;
//! (2) DuckDB's settings, locked: no file access outside the catalog, no
//! extension downloads or loading, bounded memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::duck::{quote_literal, Database, DuckError, PrepareError, RawConnection, StatementKind};

/// What the sandbox instance is allowed, and its resources.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The only directory user SQL may read (the dataset catalog).
    pub catalog_dir: PathBuf,
    /// Where DuckDB spills intermediate results.
    pub temp_dir: PathBuf,
    /// DuckDB worker threads, shared by every running query.
    pub threads: usize,
    /// Memory for all query slots together, in bytes.
    pub memory_limit_bytes: u64,
    /// The most bytes DuckDB may spill to `temp_dir` (so a query cannot
    /// fill the disk that holds the event store).
    pub spill_limit_bytes: u64,
}

/// Whether user SQL of this kind may run: plain SELECT (with WITH, VALUES,
/// set operations, table functions) only.
pub fn allows(kind: StatementKind) -> bool {
    kind == StatementKind::Select
}

/// The message a user sees for a refused statement.
pub fn refusal_message(error: &PrepareError) -> String {
    match error {
        PrepareError::Duck(DuckError(message)) => message.clone(),
        PrepareError::StatementCount(0) => "the SQL contains no statement".into(),
        PrepareError::StatementCount(n) => format!(
            "the SQL contains {n} statements; send exactly one read-only SELECT statement"
        ),
        PrepareError::Kind(StatementKind::Other(kind)) => format!(
            "{kind} statements are not allowed on the server: only a single read-only SELECT (or WITH … SELECT) statement may run"
        ),
        PrepareError::Kind(StatementKind::Select) => unreachable!("SELECT is allowed"),
    }
}

/// A directory as DuckDB's `allowed_directories` wants it (absolute, with a
/// trailing slash so that `/data/cat` does not also allow `/data/catalog2`).
fn directory_prefix(dir: &Path) -> String {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut text = dir.to_string_lossy().into_owned();
    if !text.ends_with('/') {
        text.push('/');
    }
    text
}

/// Opens the sandboxed in-memory instance with `connections` connections
/// (one per query slot). The settings are applied at start-up and then
/// locked, so no statement can loosen them; progress tracking is a
/// per-connection setting, which is why the connections are made before the
/// lock and reused.
pub fn open(
    settings: &SandboxSettings,
    connections: usize,
) -> Result<(Arc<Database>, Vec<RawConnection>), DuckError> {
    std::fs::create_dir_all(&settings.temp_dir)
        .map_err(|e| DuckError(format!("creating {}: {e}", settings.temp_dir.display())))?;
    let database = Database::open_in_memory(&[
        ("threads", settings.threads.max(1).to_string()),
        ("memory_limit", format!("{}B", settings.memory_limit_bytes)),
        (
            "max_temp_directory_size",
            format!("{}B", settings.spill_limit_bytes),
        ),
        (
            "temp_directory",
            settings.temp_dir.to_string_lossy().into_owned(),
        ),
        ("autoinstall_known_extensions", "false".into()),
        ("autoload_known_extensions", "false".into()),
    ])?;
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut connection = database.connect()?;
        connection
            .execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false;")?;
        pool.push(connection);
    }
    let mut setup = database.connect()?;
    setup.execute(&format!(
        "SET allowed_directories = [{allowed}];
         SET enable_external_access = false;
         SET lock_configuration = true;",
        allowed = quote_literal(&directory_prefix(&settings.catalog_dir)),
    ))?;
    Ok((database, pool))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::duck::{RunControl, RunError};
    use duckdb::arrow::array::RecordBatch;

    struct Count(usize);
    impl RunControl for Count {
        fn check(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn progress(&mut self, _percent: Option<f64>) {}
        fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
            self.0 += batch.num_rows();
            Ok(())
        }
    }

    fn open_in(dir: &Path) -> (Arc<Database>, Vec<RawConnection>) {
        let settings = SandboxSettings {
            catalog_dir: dir.join("catalog"),
            temp_dir: dir.join("tmp"),
            threads: 2,
            memory_limit_bytes: 1 << 30,
            spill_limit_bytes: 1 << 30,
        };
        std::fs::create_dir_all(&settings.catalog_dir).unwrap();
        std::fs::write(settings.catalog_dir.join("t.csv"), "a\n1\n2\n").unwrap();
        open(&settings, 1).unwrap()
    }

    #[test]
    fn only_one_select_runs_and_files_outside_the_catalog_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut pool) = open_in(dir.path());
        let connection = &mut pool[0];
        let inside = dir.path().join("catalog/t.csv");
        let mut count = Count(0);
        connection
            .prepare_single(
                &format!("SELECT * FROM read_csv('{}')", inside.display()),
                allows,
            )
            .unwrap()
            .run(&mut count)
            .unwrap();
        assert_eq!(count.0, 2);
        let mut refused = |sql: &str| match connection.prepare_single(sql, allows) {
            Ok(_) => panic!("{sql} was accepted"),
            Err(error) => refusal_message(&error),
        };
        assert!(refused("SELECT 1; SELECT 2").contains("2 statements"));
        assert!(refused("SET threads = 1").contains("SET statements are not allowed"));
        assert!(refused("INSTALL httpfs").contains("LOAD/INSTALL"));
        assert!(refused("SELECT * FROM read_csv('/etc/passwd')").contains("disabled"));
        assert!(refused("   ").contains("no statement"));
    }

    #[test]
    fn an_interrupt_from_another_thread_stops_a_running_query() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut pool) = open_in(dir.path());
        let connection = &mut pool[0];
        let interrupter = connection.interrupter();
        let prepared = connection
            .prepare_single(
                "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE (a.range + b.range) % 7 = 3",
                allows,
            )
            .unwrap();
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            interrupter.interrupt();
        });
        let outcome = prepared.run(&mut Count(0));
        assert!(matches!(outcome, Err(RunError::Duck(ref e)) if e.0.contains("Interrupted")));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
