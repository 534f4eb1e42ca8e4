//! Server-side queries with real DuckDB over real files in temp dirs: the
//! catalog, a query end to end over HTTP and SSE, failures with error ids,
//! cancel and timeout, the sandbox, restart recovery, and result pages that
//! survive eviction and truncation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::query::arrow::array::RecordBatch;
use server::query::arrow::ipc::reader::StreamReader;
use server::{Config, RunningServer};
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{create, envelope, Api};

const WAIT: Duration = Duration::from_secs(30);

/// A long query: a cross join over `range` that runs for minutes.
pub(crate) const LONG_SQL: &str =
    "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE (a.range + b.range) % 7 = 3";

/// The sales rows of the CSV fixture, in `ORDER BY id`.
const SALES_CSV: &str = "id,region,amount,day\n\
    1,north,10.50,2024-01-02\n\
    2,south,7.25,2024-01-03\n\
    3,north,1.00,2024-02-01\n\
    4,east,99.99,2024-03-15\n";

/// Writes the fixture files: CSV, NDJSON, Parquet, and names the catalog must skip.
fn write_datasets(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("sales.csv"), SALES_CSV).unwrap();
    std::fs::write(
        dir.join("events.json"),
        "{\"kind\": \"click\", \"n\": 3}\n{\"kind\": \"view\", \"n\": 5}\n",
    )
    .unwrap();
    server::query::demo::write_trips(&dir.join("trips.parquet"), 50_000).unwrap();
    std::fs::write(dir.join("bad-name.csv"), "a\n1\n").unwrap();
    std::fs::write(dir.join("dup.csv"), "a\n1\n").unwrap();
    std::fs::write(dir.join("dup.json"), "{\"a\": 1}\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not a dataset").unwrap();
}

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) running: RunningServer,
    pub(crate) api: Api,
    pub(crate) datasets: PathBuf,
}

pub(crate) async fn start(tweak: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path());
    config.no_demo = true;
    tweak(&mut config);
    let datasets = config.query_settings().datasets_dir;
    write_datasets(&datasets);
    let running = sextant_tests::start_in_process(config).await.unwrap();
    let api = Api::new(format!("http://{}", running.addr));
    Fixture {
        _dir: dir,
        running,
        api,
        datasets,
    }
}

/// A new session with a server dataset attached; returns it and its version.
pub(crate) async fn session_on(api: &Api, dataset: &str) -> (Uuid, u64) {
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("queries"))).await;
    api.accept(&envelope(
        session,
        1,
        json!({"type": "AttachDataset", "dataset": {"kind": "server", "name": dataset}}),
    ))
    .await;
    (session, 2)
}

pub(crate) async fn version_of(api: &Api, session: Uuid) -> u64 {
    let (status, body) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200, "{body}");
    body["version"].as_u64().unwrap()
}

/// Submits `sql` on the server engine; returns the query id.
pub(crate) async fn submit(api: &Api, session: Uuid, sql: &str) -> Uuid {
    let query_id = Uuid::new_v4();
    let version = version_of(api, session).await;
    api.accept(&envelope(
        session,
        version,
        json!({"type": "SubmitQuery", "query_id": query_id, "sql": sql, "engine": "server"}),
    ))
    .await;
    query_id
}

/// The query's record in the session read model.
pub(crate) async fn record(api: &Api, session: Uuid, query_id: Uuid) -> Value {
    let (_, body) = api.get(&format!("/api/sessions/{session}")).await;
    body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["query_id"] == json!(query_id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls until the query is in one of `states`.
pub(crate) async fn wait_for_state(
    api: &Api,
    session: Uuid,
    query_id: Uuid,
    states: &[&str],
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let record = record(api, session, query_id).await;
        if states.iter().any(|s| record["state"] == *s) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "query never reached {states:?}: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn run_to_end(api: &Api, session: Uuid, sql: &str) -> (Uuid, Value) {
    let query_id = submit(api, session, sql).await;
    let record = wait_for_state(
        api,
        session,
        query_id,
        &["completed", "failed", "cancelled"],
    )
    .await;
    (query_id, record)
}

pub(crate) async fn page(api: &Api, query_id: Uuid, query: &str) -> (u16, Value) {
    api.get(&format!("/api/queries/{query_id}/result{query}"))
        .await
}

/// Decodes an Arrow IPC stream into its batches.
pub(crate) fn read_ipc(bytes: &[u8]) -> Vec<RecordBatch> {
    StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn the_catalog_lists_files_as_views_and_sees_new_ones_without_restart() {
    let fx = start(|_| {}).await;
    let (status, body) = fx.api.get("/api/datasets").await;
    assert_eq!(status, 200, "{body}");
    let datasets = body["datasets"].as_array().unwrap();
    let names: Vec<&str> = datasets
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    // bad-name.csv is not an identifier, dup.* clash, notes.txt is no format.
    assert_eq!(names, vec!["events", "sales", "trips"]);
    let sales = &datasets[1];
    assert_eq!(sales["format"], "csv");
    assert_eq!(sales["bytes"], SALES_CSV.len() as u64);
    assert_eq!(sales["rows"], Value::Null, "CSV rows are not cheap");
    assert_eq!(
        sales["columns"],
        json!([
            {"name": "id", "type": "BIGINT"},
            {"name": "region", "type": "VARCHAR"},
            {"name": "amount", "type": "DOUBLE"},
            {"name": "day", "type": "DATE"},
        ])
    );
    assert_eq!(datasets[2]["format"], "parquet");
    assert_eq!(datasets[2]["rows"], 50_000);
    assert_eq!(datasets[0]["format"], "json");

    std::fs::write(fx.datasets.join("late.csv"), "x\n1\n2\n").unwrap();
    let (_, body) = fx.api.get("/api/datasets").await;
    let names: Vec<&str> = body["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["events", "late", "sales", "trips"]);

    // An unknown server dataset is refused before anything is stored.
    let session = Uuid::new_v4();
    fx.api.accept(&envelope(session, 0, create("s"))).await;
    let (status, problem) = fx
        .api
        .command(&envelope(
            session,
            1,
            json!({"type": "AttachDataset", "dataset": {"kind": "server", "name": "nope"}}),
        ))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["error_id"].is_string());
    assert_eq!(version_of(&fx.api, session).await, 1);
    // A file dropped just now can be attached at once.
    std::fs::write(fx.datasets.join("fresh.csv"), "y\n1\n").unwrap();
    fx.api
        .accept(&envelope(
            session,
            1,
            json!({"type": "AttachDataset", "dataset": {"kind": "server", "name": "fresh"}}),
        ))
        .await;
    fx.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_query_runs_end_to_end_over_http_and_sse() {
    let fx = start(|_| {}).await;
    let (session, _) = session_on(&fx.api, "sales").await;
    let mut stream = fx.api.sse(None, &format!("?session={session}")).await;
    let sql =
        "SELECT region, count(*) AS n, sum(amount)::DECIMAL(10,2) AS total, min(day) AS first_day \
               FROM sales GROUP BY region ORDER BY region";
    let query_id = submit(&fx.api, session, sql).await;

    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !seen.contains(&"QueryCompleted".to_owned()) {
        assert!(Instant::now() < deadline, "saw only {seen:?}");
        let Some(frame) = stream.next(WAIT).await else {
            panic!("stream ended after {seen:?}")
        };
        if frame.event.as_deref() == Some("progress") {
            assert_eq!(frame.json()["query_id"], json!(query_id));
            continue;
        }
        let event = frame.json();
        seen.push(event["event_type"].as_str().unwrap().to_owned());
        if event["event_type"] == "QueryCompleted" {
            assert_eq!(event["payload"]["row_count"], 3);
            assert_eq!(
                event["payload"]["columns"],
                json!([
                    {"name": "region", "type": "VARCHAR"},
                    {"name": "n", "type": "BIGINT"},
                    {"name": "total", "type": "DECIMAL(10,2)"},
                    {"name": "first_day", "type": "DATE"},
                ])
            );
            assert_eq!(
                event["metadata"]["client_id"], "server:query-executor",
                "outcomes are issued by the executor"
            );
        }
    }
    let started = seen.iter().position(|e| e == "QueryStarted").unwrap();
    let completed = seen.iter().position(|e| e == "QueryCompleted").unwrap();
    assert!(started < completed, "{seen:?}");

    let (status, body) = page(&fx.api, query_id, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        json!([
            ["east", 1, "99.99", "2024-03-15"],
            ["north", 2, "11.50", "2024-01-02"],
            ["south", 1, "7.25", "2024-01-03"],
        ])
    );
    assert_eq!(body["total_rows"], 3);
    assert_eq!(body["offset"], 0);
    assert_eq!(body["truncated"], false);
    let (_, second) = page(&fx.api, query_id, "?offset=1&limit=1").await;
    assert_eq!(second["rows"], json!([["north", 2, "11.50", "2024-01-02"]]));
    assert_eq!(second["offset"], 1);

    let (status, content_type, bytes) = fx
        .api
        .get_raw(
            &format!("/api/queries/{query_id}/result?offset=1&limit=2"),
            Some("application/vnd.apache.arrow.stream"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/vnd.apache.arrow.stream");
    let batches = read_ipc(&bytes);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, vec!["region", "n", "total", "first_day"]);

    // Downloads: CSV as text; Parquet read back through the catalog.
    let (status, content_type, csv) = fx
        .api
        .get_raw(&format!("/api/queries/{query_id}/result.csv"), None)
        .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"));
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "region,n,total,first_day\neast,1,99.99,2024-03-15\nnorth,2,11.50,2024-01-02\nsouth,1,7.25,2024-01-03\n"
    );
    let (status, _, parquet) = fx
        .api
        .get_raw(&format!("/api/queries/{query_id}/result.parquet"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(&parquet[..4], b"PAR1");
    std::fs::write(fx.datasets.join("exported.parquet"), &parquet).unwrap();
    let (again, record) =
        run_to_end(&fx.api, session, "SELECT * FROM exported ORDER BY region").await;
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(page(&fx.api, again, "").await.1["rows"], body["rows"]);

    // Unknown ids are 404, malformed ones 400.
    assert_eq!(page(&fx.api, Uuid::new_v4(), "").await.0, 404);
    assert_eq!(fx.api.get("/api/queries/nope/result").await.0, 400);
    fx.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_query_is_failed_with_duckdbs_message_and_an_error_id() {
    let fx = start(|_| {}).await;
    let (session, _) = session_on(&fx.api, "sales").await;
    let (query_id, record) = run_to_end(&fx.api, session, "SELECT no_such_column FROM sales").await;
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        record["message"]
            .as_str()
            .unwrap()
            .contains("no_such_column"),
        "{record}"
    );
    let error_id = record["error_id"].as_str().unwrap();
    assert!(Uuid::parse_str(error_id).is_ok());
    let (status, problem) = page(&fx.api, query_id, "").await;
    assert_eq!(status, 409);
    assert_eq!(problem["state"], "failed");
    fx.running.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_and_timeout_stop_a_long_query_within_a_second() {
    // One slot: the next query can only run once the long one has really stopped.
    let fx = start(|c| {
        c.query_slots = Some(1);
        c.query_timeout = Duration::from_secs(2);
    })
    .await;
    let (session, _) = session_on(&fx.api, "sales").await;
    let mut stream = fx.api.sse(None, &format!("?session={session}")).await;
    let long = submit(&fx.api, session, LONG_SQL).await;
    wait_for_state(&fx.api, session, long, &["running"]).await;
    let (status, problem) = page(&fx.api, long, "").await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["state"], "running");

    // Progress frames arrive while it runs (no id, elapsed time growing).
    let mut elapsed = Vec::new();
    while elapsed.len() < 2 {
        let frame = stream.next(WAIT).await.expect("progress frames");
        if frame.event.as_deref() == Some("progress") {
            assert_eq!(frame.id, None);
            assert_eq!(frame.json()["query_id"], json!(long));
            elapsed.push(frame.json()["elapsed_ms"].as_u64().unwrap());
        }
    }
    assert!(elapsed[1] > elapsed[0], "{elapsed:?}");

    let version = version_of(&fx.api, session).await;
    fx.api
        .accept(&envelope(
            session,
            version,
            json!({"type": "CancelQuery", "query_id": long}),
        ))
        .await;
    let cancelled_at = Instant::now();
    let (quick, record) = run_to_end(&fx.api, session, "SELECT 42 AS answer").await;
    assert_eq!(record["state"], "completed", "{record}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "the slot was freed {:?} after the cancel",
        cancelled_at.elapsed()
    );
    assert_eq!(page(&fx.api, quick, "").await.1["rows"], json!([[42]]));
    assert_eq!(record_state(&fx.api, session, long).await, "cancelled");

    // The timeout fails the query with a clear message, on time.
    let submitted_at = Instant::now();
    let (_, record) = run_to_end(&fx.api, session, LONG_SQL).await;
    let took = submitted_at.elapsed();
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        record["message"].as_str().unwrap().contains("limit of 2 s"),
        "{record}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
    fx.running.stop().await.unwrap();
}

async fn record_state(api: &Api, session: Uuid, query_id: Uuid) -> String {
    record(api, session, query_id).await["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_sandbox_refuses_everything_but_one_read_only_select() {
    let fx = start(|_| {}).await;
    let (session, _) = session_on(&fx.api, "sales").await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.csv");
    std::fs::write(&secret, "password\nhunter2\n").unwrap();
    let written = fx.datasets.join("written.csv");
    let cases: Vec<(String, &str)> = vec![
        ("SELECT 1; SELECT 2".into(), "2 statements"),
        ("SELECT 1; DROP VIEW sales".into(), "2 statements"),
        (format!("COPY sales TO '{}'", written.display()), "COPY"),
        (
            format!("COPY (SELECT 1) TO '{}/x.csv'", outside.path().display()),
            "disabled by configuration",
        ),
        (
            format!("EXPORT DATABASE '{}'", outside.path().display()),
            "disabled by configuration",
        ),
        ("ATTACH ':memory:' AS other".into(), "ATTACH"),
        ("INSTALL httpfs".into(), "LOAD/INSTALL"),
        ("LOAD httpfs".into(), "LOAD/INSTALL"),
        ("SET enable_external_access = true".into(), "SET"),
        ("SET lock_configuration = false".into(), "SET"),
        ("PRAGMA threads = 1".into(), "SET"),
        ("CREATE TABLE t AS SELECT 1".into(), "CREATE"),
        ("DROP VIEW sales".into(), "DROP"),
        // Binding fails first: a view is no table to insert into.
        (
            "INSERT INTO sales VALUES (5, 'x', 1, DATE '2024-01-01')".into(),
            "is not an table",
        ),
        ("CALL pragma_version()".into(), "CALL"),
        (
            format!("SELECT * FROM read_csv('{}')", secret.display()),
            "disabled by configuration",
        ),
        (
            "SELECT * FROM read_text('/etc/hostname')".into(),
            "disabled by configuration",
        ),
        (
            "SELECT * FROM read_blob('/etc/passwd')".into(),
            "disabled by configuration",
        ),
        (
            "SELECT * FROM glob('/etc/*')".into(),
            "glob() is not allowed on the server",
        ),
        (
            "SELECT * FROM read_csv('/etc/*')".into(),
            "disabled by configuration",
        ),
        (
            format!(
                "SELECT * FROM read_csv('{}/../{}')",
                fx.datasets.display(),
                "sextant.sqlite3"
            ),
            "disabled by configuration",
        ),
        ("".into(), "no statement"),
    ];
    for (sql, expected) in &cases {
        if sql.is_empty() {
            continue; // blank SQL is refused by the domain before the server sees it
        }
        let (query_id, record) = run_to_end(&fx.api, session, sql).await;
        assert_eq!(record["state"], "failed", "{sql}: {record}");
        let message = record["message"].as_str().unwrap();
        assert!(message.contains(expected), "{sql}: {message}");
        assert!(!message.contains("hunter2"), "{sql} leaked: {message}");
        assert_eq!(page(&fx.api, query_id, "").await.0, 409, "{sql}");
    }
    assert!(!written.exists(), "COPY wrote a file");
    // Nothing changed: the catalog is as it was, files outside stay closed
    // (the settings themselves are not readable: see the next test).
    let (query_id, record) =
        run_to_end(&fx.api, session, "SELECT (SELECT count(*) FROM sales) AS n").await;
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(page(&fx.api, query_id, "").await.1["rows"], json!([[4]]));
    let (_, record) = run_to_end(
        &fx.api,
        session,
        &format!("SELECT * FROM read_csv('{}')", secret.display()),
    )
    .await;
    assert_eq!(record["state"], "failed", "{record}");
    // WITH … SELECT is a read-only statement too.
    let (_, record) = run_to_end(
        &fx.api,
        session,
        "WITH t AS (SELECT amount FROM sales) SELECT max(amount) FROM t;",
    )
    .await;
    assert_eq!(record["state"], "completed", "{record}");
    fx.running.stop().await.unwrap();
}

#[tokio::test]
async fn user_sql_learns_no_server_path_and_cannot_read_the_spill_directory() {
    let fx = start(|config| {
        config.query_slots = Some(1);
        config.query_memory = Some(64 << 20);
    })
    .await;
    let (session, _) = session_on(&fx.api, "sales").await;
    // The spill directory has a fresh random name under the work directory.
    let work = fx.datasets.parent().unwrap().join("query-work");
    let spill: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("spill-")
        })
        .collect();
    assert_eq!(spill.len(), 1, "{spill:?}");
    let spill = &spill[0];
    assert_eq!(spill.file_name().unwrap().len(), "spill-".len() + 32);
    std::fs::write(spill.join("spilled.csv"), "secret\nhunter2\n").unwrap();
    let data_dir = fx.datasets.parent().unwrap().display().to_string();
    let cases = [
        "SELECT current_setting('temp_directory')".to_owned(),
        "SELECT current_setting('allowed_directories')".into(),
        "SELECT name, value FROM duckdb_settings()".into(),
        "SELECT * FROM duckdb_temporary_files()".into(),
        "SELECT * FROM pg_catalog.pg_settings".into(),
        format!("SELECT * FROM glob('{}/*')", spill.display()),
        format!("SELECT * FROM glob('{data_dir}/**')"),
        "SELECT * FROM query('SELECT value FROM duckdb_settings()')".into(),
        format!("SELECT * FROM read_csv('{}/spill-*/*.csv')", work.display()),
    ];
    for sql in &cases {
        let (query_id, record) = run_to_end(&fx.api, session, sql).await;
        assert_eq!(record["state"], "failed", "{sql}: {record}");
        let message = record["message"].as_str().unwrap();
        assert!(
            message.contains("is not allowed on the server")
                || message.contains("disabled by configuration"),
            "{sql}: {message}"
        );
        assert!(!message.contains("hunter2"), "{sql} leaked: {message}");
        assert!(
            !message.contains(&*spill.to_string_lossy()),
            "{sql} leaked the spill directory: {message}"
        );
        assert_eq!(page(&fx.api, query_id, "").await.0, 409, "{sql}");
    }
    // A query that needs more memory than it has still spills and completes.
    let (_, record) = run_to_end(
        &fx.api,
        session,
        "SELECT count(*), max(h) FROM (SELECT md5(range::varchar) AS h FROM range(3000000) ORDER BY h)",
    )
    .await;
    assert_eq!(record["state"], "completed", "{record}");
    fx.running.stop().await.unwrap();
}

#[tokio::test]
async fn progress_frames_move_when_duckdb_has_no_estimate() {
    let fx = start(|_| {}).await;
    let (session, _) = session_on(&fx.api, "sales").await;
    let mut stream = fx.api.sse(None, &format!("?session={session}")).await;
    // Generated rows: DuckDB has no estimate for `range`, so the percentage
    // stays where it is, but the rows streamed so far and the time move.
    let query_id = submit(
        &fx.api,
        session,
        "SELECT range AS n, md5(range::VARCHAR) AS h FROM range(400000000)",
    )
    .await;
    let mut frames: Vec<Value> = Vec::new();
    while frames.len() < 4 {
        let frame = stream.next(WAIT).await.expect("progress frames");
        if frame.event.as_deref() == Some("progress") {
            let json = frame.json();
            assert_eq!(json["query_id"], json!(query_id));
            assert!(json["elapsed_ms"].is_u64(), "{json}");
            assert!(json["rows_returned"].is_u64(), "{json}");
            assert!(
                json["percent"].is_null() || json["percent"].as_f64().unwrap() < 1.0,
                "DuckDB estimated after all: {json}"
            );
            frames.push(json);
        }
    }
    let first = &frames[0];
    let last = frames.last().unwrap();
    assert!(
        last["elapsed_ms"].as_u64() > first["elapsed_ms"].as_u64(),
        "{frames:?}"
    );
    assert!(
        last["rows_returned"].as_u64().unwrap() > first["rows_returned"].as_u64().unwrap(),
        "the rows returned did not move: {frames:?}"
    );
    let version = version_of(&fx.api, session).await;
    fx.api
        .accept(&envelope(
            session,
            version,
            json!({"type": "CancelQuery", "query_id": query_id}),
        ))
        .await;
    fx.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_query_interrupted_by_a_crash_is_failed_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_datasets(&dir.path().join("datasets"));
    let server = ServerProcess::start(dir.path(), &["--no-demo"]).unwrap();
    let api = Api::new(server.url());
    let (session, _) = session_on(&api, "sales").await;
    let query_id = submit(&api, session, LONG_SQL).await;
    wait_for_state(&api, session, query_id, &["running"]).await;
    let addr = server.addr.to_string();
    let data_dir = server.kill9();
    let server = ServerProcess::start_on(&data_dir, &addr, &["--no-demo"]).unwrap();
    let api = Api::new(server.url());
    let record = record(&api, session, query_id).await;
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["message"], "interrupted by server restart");
    let error_id = record["error_id"].as_str().unwrap();
    assert!(server.log().contains(error_id), "the error id is logged");
    // The session is usable again.
    let (_, record) = run_to_end(&api, session, "SELECT count(*) FROM trips").await;
    assert_eq!(record["state"], "completed", "{record}");
}

#[tokio::test]
async fn evicted_and_truncated_results_page_identically() {
    let fx = start(|c| c.result_max_rows = 700).await;
    let (session, _) = session_on(&fx.api, "trips").await;
    let sql =
        "SELECT trip_id, borough, fare, pickup_at FROM trips WHERE trip_id < 1000 ORDER BY trip_id";
    let (query_id, record) = run_to_end(&fx.api, session, sql).await;
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(record["row_count"], 1000);

    async fn snapshot(api: &Api, query_id: Uuid) -> (Vec<Value>, Vec<u8>) {
        let mut pages = Vec::new();
        for query in [
            "",
            "?offset=500&limit=100",
            "?offset=650&limit=100",
            "?limit=20000",
        ] {
            let (status, body) = page(api, query_id, query).await;
            assert_eq!(status, 200, "{body}");
            pages.push(body);
        }
        let (_, _, arrow) = api
            .get_raw(
                &format!("/api/queries/{query_id}/result?offset=10&limit=50"),
                Some("application/vnd.apache.arrow.stream"),
            )
            .await;
        (pages, arrow)
    }
    let before = snapshot(&fx.api, query_id).await;
    let first = &before.0[0];
    assert_eq!(first["total_rows"], 1000);
    assert_eq!(first["available_rows"], 700);
    assert_eq!(first["truncated"], true);
    assert_eq!(
        first["rows"].as_array().unwrap().len(),
        700,
        "limit 1000 over 700 kept rows"
    );
    assert_eq!(before.0[2]["rows"].as_array().unwrap().len(), 50);
    assert_eq!(
        before.0[3]["rows"].as_array().unwrap().len(),
        700,
        "limit is capped"
    );
    assert_eq!(first["rows"][0][0], 0);
    assert_eq!(first["rows"][699][0], 699);

    fx.running.state.query().evict_results().await;
    let after = snapshot(&fx.api, query_id).await;
    assert_eq!(before.0, after.0);
    assert_eq!(read_ipc(&before.1), read_ipc(&after.1));

    // The download still holds every row.
    let (_, _, csv) = fx
        .api
        .get_raw(&format!("/api/queries/{query_id}/result.csv"), None)
        .await;
    assert_eq!(String::from_utf8(csv).unwrap().lines().count(), 1001);
    fx.running.stop().await.unwrap();
}
