//! The sandbox for user SQL: which statements may run, and the DuckDB
//! instance they run on. Three walls: (1) exactly one read-only statement,
//! checked with DuckDB's own parser and statement type before anything runs;
//! (2) no function that shows the server's settings or paths or runs SQL
//! the checks never saw ([`REFUSED_FUNCTIONS`]), looked for in the parsed
//! statement (`json_serialize_sql`) and in its bound plan (`EXPLAIN`, which
//! sees through views and table macros); (3) DuckDB's settings, locked: no
//! file access outside the catalog, no extension downloads or loading,
//! bounded memory and spill.
//!
//! The spill directory: DuckDB always lets SQL read its `temp_directory`
//! (it joins `allowed_directories` when external access is turned off), so
//! spilling goes to a directory with a fresh random name per start
//! (`<work>/spill-<128 random bits>`), which no allowed function reveals and
//! nobody can guess; `--query-spill-bytes 0` turns spilling off altogether
//! (no temp directory, so nothing extra is readable).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duckdb::arrow::array::{Array, StringArray};
use serde_json::Value;

use super::duck::{
    quote_literal, Database, DuckError, PrepareError, Prepared, RawConnection, StatementKind,
};
use super::result_store::Collect;

/// What the sandbox instance is allowed, and its resources.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The only directory user SQL may read (the dataset catalog).
    pub catalog_dir: PathBuf,
    /// Where DuckDB spills intermediate results (readable by user SQL, so
    /// its name must be unguessable; unused when `spill_limit_bytes` is 0).
    pub temp_dir: PathBuf,
    /// DuckDB worker threads, shared by every running query.
    pub threads: usize,
    /// Memory for all query slots together, in bytes.
    pub memory_limit_bytes: u64,
    /// The most bytes DuckDB may spill to `temp_dir` (so a query cannot
    /// fill the disk that holds the event store); 0 turns spilling off.
    pub spill_limit_bytes: u64,
}

/// Functions user SQL may not call: they show the server's settings, paths
/// (the spill directory among them), environment or secrets, list files
/// outside what a query names, or run SQL text the checks never saw.
pub const REFUSED_FUNCTIONS: &[&str] = &[
    "current_setting",
    "duckdb_settings",
    "duckdb_temporary_files",
    "duckdb_databases",
    "pragma_database_list",
    "duckdb_extensions",
    "duckdb_secrets",
    "which_secret",
    "duckdb_variables",
    "getvariable",
    "getenv",
    "duckdb_logs",
    "duckdb_log_contexts",
    "duckdb_external_file_cache",
    "glob",
    "query",
    "query_table",
    "json_execute_serialized_sql",
];

/// The message of a statement that calls a refused function.
fn refused_function(name: &str) -> String {
    format!(
        "{name}() is not allowed on the server: it would show the server's settings or files, or run SQL the sandbox did not check"
    )
}

/// The first refused function named in a statement's parse tree (the JSON
/// of `json_serialize_sql`): every `function_name`, at any depth
/// (subqueries, CTEs, lambdas, window and table functions).
pub fn refused_in_parse_tree(tree: &Value) -> Option<String> {
    match tree {
        Value::Object(map) => map.iter().find_map(|(key, value)| match value {
            Value::String(name) if key == "function_name" => refuses(name),
            other => refused_in_parse_tree(other),
        }),
        Value::Array(items) => items.iter().find_map(refused_in_parse_tree),
        _ => None,
    }
}

/// The first refused function in a bound plan (the JSON of
/// `EXPLAIN (FORMAT json)`): operator names and their `Function` entries,
/// which name the table functions behind views (`information_schema`,
/// `pg_catalog`) and table macros.
pub fn refused_in_plan(plan: &Value) -> Option<String> {
    match plan {
        Value::Object(map) => map.iter().find_map(|(key, value)| match value {
            Value::String(name) if key == "Function" || key == "name" => refuses(name),
            other => refused_in_plan(other),
        }),
        Value::Array(items) => items.iter().find_map(refused_in_plan),
        _ => None,
    }
}

fn refuses(name: &str) -> Option<String> {
    let name = name.trim().to_ascii_lowercase();
    REFUSED_FUNCTIONS.contains(&name.as_str()).then_some(name)
}

/// Checks `sql` with every wall and prepares it: the one way user SQL is
/// prepared on the sandbox. `Err` is the message a user sees.
pub fn prepare<'c>(connection: &'c mut RawConnection, sql: &str) -> Result<Prepared<'c>, String> {
    inspect(connection, sql)?;
    connection
        .prepare_single(sql, allows)
        .map_err(|error| refusal_message(&error))
}

/// Walls (1) and (2): the statement's kind and the functions it calls.
fn inspect(connection: &mut RawConnection, sql: &str) -> Result<(), String> {
    let serialized = texts(
        connection,
        &format!("SELECT json_serialize_sql({})", quote_literal(sql)),
        0,
    )
    .map_err(|e| e.0)?;
    let tree: Value = serialized
        .first()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    let statements = tree["statements"].as_array().map_or(0, Vec::len);
    if tree["error"] != Value::Bool(false) || statements != 1 {
        // Not one SELECT: let the statement check say why. One that passes
        // it anyway cannot be inspected, so it does not run.
        drop(
            connection
                .prepare_single(sql, allows)
                .map_err(|error| refusal_message(&error))?,
        );
        return Err(format!(
            "the server cannot check this statement ({}); write it as a plain SELECT",
            tree["error_message"]
                .as_str()
                .unwrap_or("unsupported syntax")
        ));
    }
    if let Some(name) = refused_in_parse_tree(&tree) {
        return Err(refused_function(&name));
    }
    // Exactly one SELECT, so EXPLAIN binds and plans it without running it.
    let plan = texts(connection, &format!("EXPLAIN (FORMAT json) {sql}"), 1).map_err(|e| e.0)?;
    for text in plan {
        let plan: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(name) = refused_in_plan(&plan) {
            return Err(refused_function(&name));
        }
    }
    Ok(())
}

/// The text values of `column` of a trusted statement's rows.
fn texts(
    connection: &mut RawConnection,
    sql: &str,
    column: usize,
) -> Result<Vec<String>, DuckError> {
    let prepared = connection
        .prepare_single(sql, |_| true)
        .map_err(|error| DuckError(refusal_message(&error)))?;
    let mut collect = Collect::default();
    prepared.run(&mut collect).map_err(|error| match error {
        super::duck::RunError::Duck(error) => error,
        super::duck::RunError::Stopped(reason) => DuckError(reason),
    })?;
    let mut values = Vec::new();
    for batch in &collect.batches {
        if let Some(strings) = batch
            .columns()
            .get(column)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        {
            values.extend(
                (0..strings.len())
                    .filter(|&i| strings.is_valid(i))
                    .map(|i| strings.value(i).to_owned()),
            );
        }
    }
    Ok(values)
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
    let spill = settings.spill_limit_bytes > 0;
    if spill {
        std::fs::create_dir_all(&settings.temp_dir)
            .map_err(|e| DuckError(format!("creating {}: {e}", settings.temp_dir.display())))?;
    }
    let database = Database::open_in_memory(&[
        ("threads", settings.threads.max(1).to_string()),
        ("memory_limit", format!("{}B", settings.memory_limit_bytes)),
        (
            "max_temp_directory_size",
            format!("{}B", settings.spill_limit_bytes),
        ),
        (
            // Empty: no spilling, and no temp directory for SQL to read.
            "temp_directory",
            if spill {
                settings.temp_dir.to_string_lossy().into_owned()
            } else {
                String::new()
            },
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
        fn progress(&mut self, _progress: crate::query::duck::Progress) {}
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
    fn settings_paths_and_the_spill_directory_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, mut pool) = open_in(dir.path());
        let connection = &mut pool[0];
        let tmp = dir.path().join("tmp");
        std::fs::write(tmp.join("spilled.csv"), "secret\nhunter2\n").unwrap();
        let tmp = tmp.display().to_string();
        let refused_calls = [
            "SELECT current_setting('temp_directory')".to_owned(),
            "SELECT value FROM duckdb_settings() WHERE name = 'temp_directory'".into(),
            "SELECT * FROM duckdb_temporary_files()".into(),
            format!("SELECT * FROM glob('{tmp}/*')"),
            "SELECT * FROM query('SELECT current_setting(''temp_directory'')')".into(),
            "SELECT * FROM query_table('duckdb_settings')".into(),
            "SELECT (SELECT max(current_setting('allowed_directories')[1]))".into(),
            "WITH s AS (SELECT * FROM duckdb_settings()) SELECT * FROM s".into(),
            "SELECT list_transform([1], x -> current_setting('temp_directory'))".into(),
            "SELECT ('temp_directory').current_setting()".into(),
            "SELECT * FROM pg_catalog.pg_settings".into(),
            "SELECT getenv('HOME')".into(),
            "SELECT * FROM duckdb_databases()".into(),
            "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))".into(),
        ];
        for sql in &refused_calls {
            let message = match prepare(connection, sql) {
                Ok(_) => panic!("{sql} was accepted"),
                Err(message) => message,
            };
            assert!(
                message.contains("is not allowed on the server"),
                "{sql}: {message}"
            );
            assert!(!message.contains(&tmp), "{sql} leaked the path: {message}");
        }
        // Guessing the spill directory's name with a wildcard is refused too.
        let parent = dir.path().display();
        let message = prepare(
            connection,
            &format!("SELECT * FROM read_csv('{parent}/t*/*.csv')"),
        )
        .err()
        .expect("a wildcard read outside the catalog was accepted");
        assert!(message.contains("disabled by configuration"), "{message}");
        // Ordinary SQL, including functions near the refused ones, still runs.
        let mut count = Count(0);
        prepare(
            connection,
            "SELECT current_date, version(), list_transform([1, 2], x -> x + 1), (SELECT count(*) FROM duckdb_functions())",
        )
        .unwrap()
        .run(&mut count)
        .unwrap();
        assert_eq!(count.0, 1);
        // Non-SELECT statements keep their own message.
        let message = prepare(connection, "SET threads = 1").err().unwrap();
        assert!(
            message.contains("SET statements are not allowed"),
            "{message}"
        );
        let message = prepare(connection, "SELECT 1; SELECT 2").err().unwrap();
        assert!(message.contains("2 statements"), "{message}");
    }

    #[test]
    fn without_a_spill_budget_there_is_no_temp_directory_to_read() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SandboxSettings {
            catalog_dir: dir.path().join("catalog"),
            temp_dir: dir.path().join("tmp"),
            threads: 2,
            memory_limit_bytes: 1 << 30,
            spill_limit_bytes: 0,
        };
        std::fs::create_dir_all(&settings.catalog_dir).unwrap();
        let (_db, mut pool) = open(&settings, 1).unwrap();
        assert!(!settings.temp_dir.exists());
        // DuckDB's default temp directory (`.tmp`) is not readable either.
        let message = prepare(&mut pool[0], "SELECT * FROM read_csv('.tmp/x.csv')")
            .err()
            .unwrap();
        assert!(message.contains("disabled by configuration"), "{message}");
    }

    #[test]
    fn refused_functions_are_found_at_any_depth_of_a_parse_tree_or_plan() {
        let tree: Value = serde_json::json!({"statements": [{"node": {"select_list": [
            {"class": "FUNCTION", "function_name": "lower", "children": [
                {"class": "FUNCTION", "function_name": "Current_Setting", "children": []}
            ]}
        ]}}]});
        assert_eq!(
            refused_in_parse_tree(&tree).as_deref(),
            Some("current_setting")
        );
        let harmless = serde_json::json!({"function_name": "lower", "alias": "current_setting"});
        assert_eq!(refused_in_parse_tree(&harmless), None);
        let plan = serde_json::json!([{"name": "PROJECTION", "children": [
            {"name": "DUCKDB_SETTINGS ", "children": [], "extra_info": {"Function": "DUCKDB_SETTINGS"}}
        ]}]);
        assert_eq!(refused_in_plan(&plan).as_deref(), Some("duckdb_settings"));
        let scan =
            serde_json::json!([{"name": "TABLE_SCAN", "extra_info": {"Function": "READ_PARQUET"}}]);
        assert_eq!(refused_in_plan(&scan), None);
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
