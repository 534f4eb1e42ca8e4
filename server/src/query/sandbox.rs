//! The sandbox for user SQL: which statements may run, and the DuckDB
//! instance they run on. Two walls: (1) exactly one read-only statement,
//! checked with DuckDB's own parser and statement type before anything runs;
//! (2) DuckDB's settings, locked: no file access outside the catalog, no
//! extension downloads or loading, bounded memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::duck::{
    quote_literal, Database, DuckError, PrepareError, RawConnection, StatementKind,
};

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
            "temp_directory",
            settings.temp_dir.to_string_lossy().into_owned(),
        ),
        ("autoinstall_known_extensions", "false".into()),
        ("autoload_known_extensions", "false".into()),
    ])?;
    let mut pool = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut connection = database.connect()?;
        connection.execute(
            "SET enable_progress_bar = true; SET enable_progress_bar_print = false;",
        )?;
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
