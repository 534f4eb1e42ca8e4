//! The local engine (issue 6) end to end, in headless Chromium against the
//! real server serving the trunk-built client with duckdb-wasm:
//! 1. a CSV opened through the file input is queried locally with known
//!    results, recorded through the server; then with the server stopped,
//!    after a reload, the same local query runs again;
//! 2. a server dataset taken offline (Arrow IPC) gives the same rows and the
//!    same exact column types on the Local and the Server engine, and
//!    again after a reload with the server stopped;
//! 3. a long local query is cancelled and the engine stays usable; a local
//!    failure shows DuckDB's message and an error id;
//! 4. a URL dataset (CSV on another origin, with CORS) runs locally:
//!    duckdb-wasm fetches it itself, also in the cross-origin isolated page;
//! 5. a Parquet file opened in the browser (parquet-wasm, in its worker)
//!    keeps DuckDB's exact types; files sharing a stem, and a local file named like an
//!    offline copy, get distinct names; after an offline reload only the
//!    stored files a query names are loaded;
//! 6. a local result downloads as Parquet with every row (not only those
//!    kept in the tab), read back by native DuckDB.
//!
//! The threaded engine in cross-origin isolated pages, and its fallbacks,
//! are in `threads.rs`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::Value;
use sextant_tests::browser::{dist_dir, testid, Browser};
use sextant_tests::ServerProcess;

use crate::workbench::server_events;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

const SALES_CSV: &str = "id,region,amount,day\n\
    1,north,10.50,2024-01-02\n\
    2,south,7.25,2024-01-03\n\
    3,north,1.00,2024-02-01\n\
    4,east,99.99,2024-03-15\n";

pub(crate) fn start_server(data: &std::path::Path) -> ServerProcess {
    let dist = dist_dir();
    ServerProcess::start(data, &["--static-dir", dist.to_str().unwrap()]).expect("server starts")
}

pub(crate) async fn scenario<F>(name: &str, b: &Browser, logs: impl Fn() -> String, body: F)
where
    F: std::future::Future<Output = Result<()>>,
{
    if let Err(error) = body.await {
        let shot = std::env::temp_dir().join(format!("sextant-local-{name}.png"));
        let _ = b.screenshot(&shot).await;
        panic!(
            "{error:#}\n(screenshot: {})\nserver log:\n{}",
            shot.display(),
            logs()
        );
    }
}

pub(crate) async fn create_session(b: &Browser, title: &str) -> Result<Uuid> {
    b.wait_for(&testid("new-session")).await?;
    b.fill(&testid("session-title-input"), title).await?;
    b.click(&testid("create-session")).await?;
    b.wait_for_text(&testid("session-title"), title).await?;
    Ok(Uuid::parse_str(&b.text(&testid("session-id")).await?)?)
}

pub(crate) async fn run_query(b: &Browser, sql: &str) -> Result<()> {
    b.fill_editor(&testid("sql-input"), sql).await?;
    let editor = b.wait_for(&testid("sql-input")).await?;
    let chord: String = [Key::Control, Key::Enter, Key::Null]
        .into_iter()
        .map(char::from)
        .collect();
    editor.send_keys(&chord).await?;
    Ok(())
}

pub(crate) async fn choose_engine(b: &Browser, value: &str) -> Result<()> {
    b.wait_for(&format!(
        "{} option[value=\"{value}\"]",
        testid("engine-select")
    ))
    .await?
    .click()
    .await?;
    Ok(())
}

/// (state, engine, query id) of the newest history entry.
async fn newest(b: &Browser) -> Result<(String, String, String)> {
    let entry = b.wait_for(&testid("history-entry")).await?;
    let state = entry.attr("data-state").await?.unwrap_or_default();
    let id = entry.attr("data-query-id").await?.unwrap_or_default();
    let engine = entry
        .find(Locator::Css(&testid("query-engine")))
        .await?
        .text()
        .await?;
    Ok((state, engine, id))
}

/// Waits until the newest query of `count` is in a final state and returns it.
pub(crate) async fn wait_newest_done(
    b: &Browser,
    count: usize,
) -> Result<(String, String, String)> {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        let entries = b
            .client
            .find_all(Locator::Css(&testid("history-entry")))
            .await?;
        if entries.len() == count {
            let newest = newest(b).await?;
            if ["completed", "failed", "cancelled"].contains(&newest.0.as_str()) {
                return Ok(newest);
            }
            last = Some(newest);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("query {count} did not finish: {last:?}")
}

/// The result table's rows as cell values (`data-value`: the exact value
/// as the JSON page has it, while the cell shows it formatted).
async fn table_rows(b: &Browser) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for row in b
        .client
        .find_all(Locator::Css(&testid("result-row")))
        .await?
    {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await? {
            cells.push(cell.attr("data-value").await?.unwrap_or_default());
        }
        rows.push(cells);
    }
    Ok(rows)
}

pub(crate) async fn wait_table(b: &Browser, rows: usize) -> Result<Vec<Vec<String>>> {
    b.wait_for_count(&testid("result-row"), rows).await?;
    table_rows(b).await
}

/// The server's `QueryCompleted` payload of `query_id`, once it arrived.
async fn completed_on_server(base: &str, session: Uuid, query_id: &str) -> Result<Value> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let events = server_events(base, session).await?;
        if let Some(event) = events
            .iter()
            .find(|e| e["event_type"] == "QueryCompleted" && e["payload"]["query_id"] == query_id)
        {
            return Ok(event["payload"].clone());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server never recorded the completion of {query_id}")
}

const SALES_SQL: &str =
    "SELECT region, sum(amount) AS total, count(*) AS n FROM sales GROUP BY region ORDER BY region";

fn expected_sales() -> Vec<Vec<String>> {
    [
        ("east", "99.99", "1"),
        ("north", "11.5", "2"),
        ("south", "7.25", "1"),
    ]
    .iter()
    .map(|(a, b, c)| vec![a.to_string(), b.to_string(), c.to_string()])
    .collect()
}

#[tokio::test]
async fn a_csv_opened_in_the_browser_is_queried_locally_also_after_an_offline_reload() {
    let data = tempfile::tempdir().unwrap();
    let csv = data.path().join("sales.csv");
    std::fs::write(&csv, SALES_CSV).unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let b = Browser::launch().await.expect("headless Chromium starts");
    let log = std::sync::Arc::new(std::sync::Mutex::new(server.log()));
    let log_view = log.clone();
    let mut server = Some(server);
    scenario("csv", &b, move || log_view.lock().unwrap().clone(), async {
        b.goto(&base).await?;
        b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
            .await?;
        let session = create_session(&b, "Local sales").await?;

        // Open the CSV through the file input: attached as a local dataset.
        b.wait_for(&testid("local-file-input"))
            .await?
            .send_keys(csv.to_str().unwrap())
            .await?;
        b.wait_for_text(&testid("attached-dataset"), "sales.csv")
            .await?;
        b.wait_for_text(&testid("local-dataset-name"), "sales").await?;

        // Auto runs it locally, with known results.
        run_query(&b, SALES_SQL).await?;
        let (state, engine, query_id) = wait_newest_done(&b, 1).await?;
        ensure!(state == "completed", "state {state}");
        ensure!(engine == "local", "engine {engine}");
        ensure!(wait_table(&b, 3).await? == expected_sales());

        // The history (not the data) reached the server, with DuckDB's types.
        let completed = completed_on_server(&base, session, &query_id).await?;
        ensure!(completed["row_count"] == 3, "{completed}");
        ensure!(
            completed["columns"]
                == serde_json::json!([
                    {"name": "region", "type": "VARCHAR"},
                    {"name": "total", "type": "DOUBLE"},
                    {"name": "n", "type": "BIGINT"}
                ]),
            "{completed}"
        );
        let events = server_events(&base, session).await?;
        let submitted = events
            .iter()
            .find(|e| e["event_type"] == "QuerySubmitted")
            .expect("submitted");
        ensure!(submitted["payload"]["engine"] == "local", "{submitted}");
        ensure!(
            events
                .iter()
                .find(|e| e["event_type"] == "DatasetAttached")
                .is_some_and(|e| e["payload"]["dataset"]
                    == serde_json::json!({"kind": "local", "name": "sales.csv", "size_bytes": SALES_CSV.len()})),
            "{events:?}"
        );

        // The server goes away; the app reloads from the service worker and
        // the CSV is still in the browser.
        let running = server.take().expect("running");
        log.lock().unwrap().push_str(&running.log());
        running.stop()?;
        b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
            .await?;
        b.reload().await?;
        b.wait_for(&testid("app-ready")).await?;
        b.wait_for_text(&testid("session-title"), "Local sales")
            .await?;
        b.wait_for_text(&testid("local-dataset-name"), "sales").await?;
        run_query(&b, SALES_SQL).await?;
        let (state, engine, _) = wait_newest_done(&b, 2).await?;
        ensure!(state == "completed" && engine == "local", "{state} on {engine}");
        ensure!(wait_table(&b, 3).await? == expected_sales());
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_dataset_taken_offline_gives_the_same_rows_and_types_locally_and_on_the_server() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let b = Browser::launch().await.expect("headless Chromium starts");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log_view = log.clone();
    let server_log = server.log();
    let mut server = Some(server);
    let logs = move || format!("{server_log}{}", log_view.lock().unwrap());
    scenario("offline-copy", &b, logs, async {
        b.goto(&base).await?;
        b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
            .await?;
        let session = create_session(&b, "Offline demo").await?;
        b.wait_for(&format!(
            "{} option[value=\"demo\"]",
            testid("dataset-select")
        ))
        .await?
        .click()
        .await?;
        b.click(&testid("attach-dataset")).await?;
        b.wait_for_text(&testid("attached-dataset"), "demo").await?;
        b.click(&testid("take-offline")).await?;
        b.wait_for_text(&testid("offline-state"), "demo is available offline")
            .await?;

        // Exact types only: decimals, integers, dates, timestamps, text.
        let sql = "SELECT borough, payment_type, count(*) AS trips, sum(fare) AS fares, \
                   sum(tip) AS tips, min(pickup_date) AS first_day, max(pickup_at) AS last_pickup, \
                   sum(passengers) AS passengers \
                   FROM demo GROUP BY borough, payment_type ORDER BY borough, payment_type";
        choose_engine(&b, "server").await?;
        run_query(&b, sql).await?;
        let (state, engine, server_query) = wait_newest_done(&b, 1).await?;
        ensure!(
            state == "completed" && engine == "server",
            "{state} on {engine}"
        );
        let groups = completed_on_server(&base, session, &server_query).await?["row_count"]
            .as_u64()
            .unwrap_or(0) as usize;
        ensure!(groups > 10, "{groups} groups");
        let server_rows = wait_table(&b, groups).await?;

        // Auto now runs on the offline copy, in the browser. A one-row query
        // first, so the table cannot still show the server's rows.
        choose_engine(&b, "auto").await?;
        run_query(&b, "SELECT 'marker' AS m").await?;
        let (state, engine, _) = wait_newest_done(&b, 2).await?;
        ensure!(
            state == "completed" && engine == "local",
            "{state} on {engine}"
        );
        wait_table(&b, 1).await?;
        run_query(&b, sql).await?;
        let (state, engine, local_query) = wait_newest_done(&b, 3).await?;
        ensure!(
            state == "completed" && engine == "local",
            "{state} on {engine}"
        );
        let local_rows = wait_table(&b, groups).await?;
        ensure!(
            local_rows == server_rows,
            "local {local_rows:?}\nserver {server_rows:?}"
        );

        // The JSON page of the server run equals what the table showed.
        let page: Value = sextant_tests::get(&format!(
            "{base}/api/queries/{server_query}/result?limit=100"
        ))
        .await?
        .json()
        .await?;
        let page_rows: Vec<Vec<String>> = page["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Null => "NULL".into(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        ensure!(page_rows == local_rows, "page {page_rows:?}");

        // Both completions carry the same DuckDB types.
        let on_server = completed_on_server(&base, session, &server_query).await?;
        let locally = completed_on_server(&base, session, &local_query).await?;
        ensure!(
            on_server["columns"] == locally["columns"],
            "server {}\nlocal {}",
            on_server["columns"],
            locally["columns"]
        );
        ensure!(on_server["row_count"] == groups && locally["row_count"] == groups);
        let types: Vec<&str> = on_server["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        ensure!(
            types
                == [
                    "VARCHAR",
                    "VARCHAR",
                    "BIGINT",
                    "DECIMAL(38,2)",
                    "DECIMAL(38,2)",
                    "DATE",
                    "TIMESTAMP",
                    "HUGEINT"
                ],
            "types {types:?}"
        );

        // The copy survives a reload without the server, and still answers.
        let running = server.take().expect("running");
        log.lock().unwrap().push_str(&running.log());
        running.stop()?;
        b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
            .await?;
        b.reload().await?;
        b.wait_for(&testid("app-ready")).await?;
        b.wait_for_text(&testid("offline-state"), "demo is available offline")
            .await?;
        run_query(&b, "SELECT 'marker' AS m").await?;
        wait_newest_done(&b, 4).await?;
        wait_table(&b, 1).await?;
        run_query(&b, sql).await?;
        let (state, engine, _) = wait_newest_done(&b, 5).await?;
        ensure!(
            state == "completed" && engine == "local",
            "{state} on {engine}"
        );
        let after_reload = wait_table(&b, groups).await?;
        ensure!(after_reload == server_rows, "after reload {after_reload:?}");
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

/// The guarantee: a cancelled local query ends as cancelled, and the next
/// local query runs and answers, also on data loaded before the cancel.
/// This page is cross-origin isolated, so the threaded build runs, and the
/// long query scans a table of several row groups, so its tasks run on the
/// thread workers too. There duckdb-wasm's own cancel leaves the next
/// statement finishing the cancelled query's tasks (that is, never ending),
/// so the bridge replaces the worker on cancel.
#[tokio::test]
async fn a_long_local_query_is_cancelled_and_the_engine_stays_usable() {
    let data = tempfile::tempdir().unwrap();
    let parquet = data.path().join("numbers.parquet");
    duckdb::Connection::open_in_memory()
        .unwrap()
        .execute_batch(&format!(
            "COPY (SELECT range AS n FROM range(1000000)) TO '{}' (FORMAT parquet)",
            parquet.display()
        ))
        .unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let b = Browser::launch().await.expect("headless Chromium starts");
    scenario("cancel", &b, || server.log(), async {
        b.goto(&base).await?;
        create_session(&b, "Long local").await?;
        choose_engine(&b, "local").await?;
        // A table loaded before the cancel (and a warm engine, so the
        // cancel below interrupts a query inside duckdb-wasm, not one
        // still waiting for the engine to start).
        open_local_file(&b, &parquet).await?;
        let numbers = "SELECT count(*) AS n, sum(n) AS total FROM numbers";
        let expected = vec![vec!["1000000".to_owned(), "499999500000".to_owned()]];
        ensure!(local_rows(&b, numbers, 1, 1).await? == expected);
        let status = testid("local-engine-status");
        b.wait_for_attr(&status, "data-bundle", "coi").await?;
        run_query(
            &b,
            "SELECT count(*) FROM numbers a, range(1000000) b WHERE (a.n + b.range) % 7 = 3",
        )
        .await?;
        b.wait_for_text(&testid("active-state"), "running").await?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        b.click(&testid("cancel-query")).await?;
        let (state, engine, _) = wait_newest_done(&b, 2).await?;
        ensure!(
            state == "cancelled" && engine == "local",
            "{state} on {engine}"
        );
        // The next local query runs and answers, on the threaded build,
        // and the table loaded before the cancel is there again.
        ensure!(
            local_rows(&b, "SELECT 6 * 7 AS answer", 3, 1).await? == vec![vec!["42".to_owned()]]
        );
        b.wait_for_attr(&status, "data-bundle", "coi").await?;
        ensure!(local_rows(&b, numbers, 4, 1).await? == expected);
        // A local failure shows DuckDB's message and an error id.
        run_query(&b, "SELECT no_such_column").await?;
        let (state, _, _) = wait_newest_done(&b, 5).await?;
        ensure!(state == "failed", "{state}");
        let message = b.text(&testid("error-message")).await?;
        ensure!(message.contains("Binder Error"), "{message}");
        let error_id = b.text(&testid("error-id")).await?;
        Uuid::parse_str(&error_id)?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

/// A minimal HTTP server on another origin serving one CSV with CORS
/// headers (HEAD, GET, and preflight OPTIONS); ignores ranges and answers
/// the whole file, which duckdb-wasm accepts (`allowFullHTTPReads`).
pub(crate) async fn serve_csv(body: &'static str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let method = String::from_utf8_lossy(&head)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let cors = "Access-Control-Allow-Origin: *\r\n\
                            Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n\
                            Access-Control-Allow-Headers: *\r\n\
                            Access-Control-Expose-Headers: *\r\n";
                let response = match method.as_str() {
                    "OPTIONS" => format!("HTTP/1.1 204 No Content\r\n{cors}Content-Length: 0\r\nConnection: close\r\n\r\n"),
                    "HEAD" => format!(
                        "HTTP/1.1 200 OK\r\n{cors}Content-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                    _ => format!(
                        "HTTP/1.1 200 OK\r\n{cors}Content-Type: text/csv\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                };
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(format!("http://{addr}"))
}

#[tokio::test]
async fn a_url_dataset_is_fetched_and_queried_by_duckdb_wasm() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let csv_origin = serve_csv(SALES_CSV).await.expect("CSV server starts");
    let b = Browser::launch().await.expect("headless Chromium starts");
    scenario("url", &b, || server.log(), async {
        b.goto(&base).await?;
        // The page is cross-origin isolated (COEP require-corp): the CSV
        // on another origin still loads, as duckdb-wasm fetches it in CORS
        // mode, which needs no Cross-Origin-Resource-Policy.
        b.wait_for(&testid("app-ready")).await?;
        let isolated = b.eval("return self.crossOriginIsolated;", vec![]).await?;
        ensure!(
            isolated == Value::Bool(true),
            "crossOriginIsolated: {isolated}"
        );
        let session = create_session(&b, "Remote sales").await?;
        let url = format!("{csv_origin}/data/sales.csv");
        b.fill(&testid("url-input"), &url).await?;
        b.click(&testid("attach-url")).await?;
        b.wait_for_text(&testid("attached-dataset"), &url).await?;
        // Auto runs URL data locally; the SQL names it after its file.
        run_query(&b, SALES_SQL).await?;
        let (state, engine, query_id) = wait_newest_done(&b, 1).await?;
        if state != "completed" {
            let message = b.text(&testid("error-message")).await.unwrap_or_default();
            bail!("{state}: {message}");
        }
        ensure!(engine == "local", "engine {engine}");
        ensure!(wait_table(&b, 3).await? == expected_sales());
        let completed = completed_on_server(&base, session, &query_id).await?;
        ensure!(completed["row_count"] == 3, "{completed}");
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

/// Writes `sales.parquet` (with DuckDB's DECIMAL and DATE), `sales.csv`,
/// `sales.json` and `demo.csv` into `dir`, native DuckDB writing the Parquet.
fn write_sales_files(dir: &std::path::Path) -> Result<()> {
    std::fs::write(dir.join("sales.csv"), SALES_CSV)?;
    std::fs::write(
        dir.join("sales.json"),
        r#"[{"id": 1, "region": "north"}, {"id": 2, "region": "south"}]"#,
    )?;
    std::fs::write(dir.join("demo.csv"), "x\n1\n2\n3\n")?;
    let parquet = dir.join("sales.parquet");
    let db = duckdb::Connection::open_in_memory()?;
    db.execute_batch(&format!(
        "COPY (SELECT * FROM (VALUES \
            (1, 'north', 10.50::DECIMAL(10,2), DATE '2024-01-02'), \
            (2, 'south', 7.25::DECIMAL(10,2), DATE '2024-01-03'), \
            (3, 'north', 1.00::DECIMAL(10,2), DATE '2024-02-01'), \
            (4, 'east', 99.99::DECIMAL(10,2), DATE '2024-03-15')) t(id, region, amount, day)) \
         TO '{}' (FORMAT parquet)",
        parquet.display()
    ))?;
    Ok(())
}

async fn open_local_file(b: &Browser, path: &std::path::Path) -> Result<()> {
    let name = path.file_name().unwrap().to_str().unwrap();
    b.wait_for(&testid("local-file-input"))
        .await?
        .send_keys(path.to_str().unwrap())
        .await?;
    b.wait_for_text(&testid("attached-dataset"), name).await?;
    Ok(())
}

/// Waits until the local data list shows exactly `expected` names.
async fn wait_local_names(b: &Browser, expected: &[&str]) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    let mut names = Vec::new();
    while Instant::now() < deadline {
        names = b.texts(&testid("local-dataset-name")).await?;
        names.sort();
        if names == expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("local data shows {names:?}, expected {expected:?}")
}

/// Runs `sql` as query number `count` and returns its rows (it must complete).
async fn local_rows(b: &Browser, sql: &str, count: usize, rows: usize) -> Result<Vec<Vec<String>>> {
    run_query(b, sql).await?;
    let (state, engine, _) = wait_newest_done(b, count).await?;
    if state != "completed" {
        let message = b.text(&testid("error-message")).await.unwrap_or_default();
        bail!("`{sql}` {state} on {engine}: {message}");
    }
    ensure!(engine == "local", "`{sql}` ran on {engine}");
    wait_table(b, rows).await
}

const PARQUET_SALES_SQL: &str =
    "SELECT region, sum(amount) AS total, count(*) AS n, max(day) AS last_day \
     FROM sales_parquet GROUP BY region ORDER BY region";

fn expected_parquet_sales() -> Vec<Vec<String>> {
    [
        ("east", "99.99", "1", "2024-03-15"),
        ("north", "11.50", "2", "2024-02-01"),
        ("south", "7.25", "1", "2024-01-03"),
    ]
    .iter()
    .map(|(a, b, c, d)| vec![a.to_string(), b.to_string(), c.to_string(), d.to_string()])
    .collect()
}

#[tokio::test]
async fn a_parquet_file_opens_and_queries_offline_and_colliding_names_stay_distinct() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    write_sales_files(files.path()).expect("test files written");
    let server = start_server(data.path());
    let base = server.url();
    let b = Browser::launch().await.expect("headless Chromium starts");
    let log = std::sync::Arc::new(std::sync::Mutex::new(server.log()));
    let log_view = log.clone();
    let mut server = Some(server);
    scenario("parquet", &b, move || log_view.lock().unwrap().clone(), async {
        b.goto(&base).await?;
        b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
            .await?;
        let session = create_session(&b, "Local parquet").await?;

        // A Parquet file alone is `sales`, with DuckDB's own types.
        open_local_file(&b, &files.path().join("sales.parquet")).await?;
        wait_local_names(&b, &["sales"]).await?;
        run_query(&b, &PARQUET_SALES_SQL.replace("sales_parquet", "sales")).await?;
        let (state, engine, query_id) = wait_newest_done(&b, 1).await?;
        ensure!(state == "completed" && engine == "local", "{state} on {engine}");
        ensure!(wait_table(&b, 3).await? == expected_parquet_sales());
        // parquet-wasm read it in its worker: the page itself started the
        // worker and never fetched parquet-wasm's module.
        let fetched = b
            .eval(
                "return performance.getEntriesByType('resource').map((r) => new URL(r.name).pathname);",
                vec![],
            )
            .await?;
        let fetched: Vec<String> = serde_json::from_value(fetched)?;
        ensure!(
            fetched.iter().any(|p| p == "/duckdb-wasm/parquet-worker.js")
                && !fetched.iter().any(|p| p.ends_with("parquet_wasm_bg.wasm")),
            "the page's own fetches: {fetched:?}"
        );
        let completed = completed_on_server(&base, session, &query_id).await?;
        ensure!(
            completed["columns"]
                == serde_json::json!([
                    {"name": "region", "type": "VARCHAR"},
                    {"name": "total", "type": "DECIMAL(38,2)"},
                    {"name": "n", "type": "BIGINT"},
                    {"name": "last_day", "type": "DATE"}
                ]),
            "{completed}"
        );

        // sales.csv and sales.json beside it: three distinct names, and the
        // old name `sales` is gone rather than silently meaning one of them.
        open_local_file(&b, &files.path().join("sales.csv")).await?;
        open_local_file(&b, &files.path().join("sales.json")).await?;
        wait_local_names(&b, &["sales_csv", "sales_json", "sales_parquet"]).await?;
        let counts = local_rows(
            &b,
            "SELECT (SELECT count(*) FROM sales_csv) AS csv, \
             (SELECT count(*) FROM sales_json) AS json, \
             (SELECT sum(amount) FROM sales_parquet) AS parquet",
            2,
            1,
        )
        .await?;
        ensure!(counts == [["4", "2", "118.74"]], "{counts:?}");
        run_query(&b, "SELECT * FROM sales").await?;
        let (state, _, _) = wait_newest_done(&b, 3).await?;
        ensure!(state == "failed", "`sales` still answers: {state}");
        let message = b.text(&testid("error-message")).await?;
        ensure!(message.contains("sales"), "{message}");

        // A local demo.csv and the server's demo taken offline: the offline
        // copy keeps the server's name, the file yields.
        open_local_file(&b, &files.path().join("demo.csv")).await?;
        wait_local_names(&b, &["demo", "sales_csv", "sales_json", "sales_parquet"]).await?;
        b.wait_for(&format!("{} option[value=\"demo\"]", testid("dataset-select")))
            .await?
            .click()
            .await?;
        b.click(&testid("attach-dataset")).await?;
        b.wait_for_text(&testid("attached-dataset"), "demo").await?;
        b.click(&testid("take-offline")).await?;
        b.wait_for_text(&testid("offline-state"), "demo is available offline")
            .await?;
        wait_local_names(
            &b,
            &["demo", "demo_csv", "sales_csv", "sales_json", "sales_parquet"],
        )
        .await?;
        choose_engine(&b, "local").await?;
        let both = local_rows(
            &b,
            "SELECT (SELECT sum(x) FROM demo_csv) AS from_file, (SELECT count(*) > 3 FROM demo) AS from_copy",
            4,
            1,
        )
        .await?;
        ensure!(both == [["6", "true"]], "{both:?}");

        // Offline, after a reload: a stored file is loaded when a query names
        // it, and only then. (The shown query 4 names demo and demo_csv: its
        // chart aggregates it again, so those may be loaded already.)
        let running = server.take().expect("running");
        log.lock().unwrap().push_str(&running.log());
        running.stop()?;
        b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
            .await?;
        b.reload().await?;
        b.wait_for(&testid("app-ready")).await?;
        b.wait_for_text(&testid("session-title"), "Local parquet")
            .await?;
        wait_local_names(
            &b,
            &["demo", "demo_csv", "sales_csv", "sales_json", "sales_parquet"],
        )
        .await?;
        choose_engine(&b, "local").await?;
        let tables = "SELECT string_agg(table_name, ',' ORDER BY table_name) AS names \
                      FROM information_schema.tables WHERE table_name NOT IN ('demo', 'demo_csv')";
        let before = local_rows(&b, tables, 5, 1).await?;
        ensure!(before == [["NULL"]], "loaded before any query named them: {before:?}");
        ensure!(local_rows(&b, PARQUET_SALES_SQL, 6, 3).await? == expected_parquet_sales());
        let after = local_rows(&b, tables, 7, 1).await?;
        ensure!(after == [["sales_parquet"]], "{after:?}");
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_local_result_downloads_as_parquet_with_every_row_and_exact_types() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let b = Browser::launch().await.expect("headless Chromium starts");
    scenario("parquet-export", &b, || server.log(), async {
        b.goto(&base).await?;
        create_session(&b, "Parquet export").await?;
        choose_engine(&b, "local").await?;
        // 25,000 rows, of which the tab keeps 10,000: the file has them all.
        let sql = "SELECT i AS id, (i * 0.25)::DECIMAL(10,2) AS amount, \
                   DATE '2024-01-01' + i::INTEGER AS day, 'row ' || i AS label, \
                   CASE WHEN i % 7 = 0 THEN NULL ELSE i END AS sparse, \
                   INTERVAL (i) MINUTE AS gap FROM range(25000) t(i)";
        run_query(&b, sql).await?;
        let (state, engine, _) = wait_newest_done(&b, 1).await?;
        ensure!(state == "completed" && engine == "local", "{state} on {engine}");
        // Keep the Blob the export hands to the download link.
        b.eval(
            "window.__sextantBlobs = []; const original = URL.createObjectURL; \
             URL.createObjectURL = (blob) => { window.__sextantBlobs.push(blob); return original.call(URL, blob); };",
            vec![],
        )
        .await?;
        b.click(&testid("download-local-parquet")).await?;
        let bytes = {
            let deadline = Instant::now() + WAIT;
            loop {
                let encoded = b
                    .eval_async(
                        "const done = arguments[arguments.length - 1]; \
                         const blob = window.__sextantBlobs[0]; \
                         if (!blob) { done(null); } else { \
                           const reader = new FileReader(); \
                           reader.onload = () => done([blob.type, reader.result.split(',')[1]]); \
                           reader.readAsDataURL(blob); }",
                        vec![],
                    )
                    .await?;
                if let Some([mime, data]) = encoded.as_array().map(Vec::as_slice) {
                    ensure!(mime == "application/vnd.apache.parquet", "{mime}");
                    break base64_decode(data.as_str().unwrap_or_default())?;
                }
                ensure!(Instant::now() < deadline, "no Parquet download");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        ensure!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("export.parquet");
        std::fs::write(&path, &bytes)?;

        // Native DuckDB reads every row back, with the same types and values.
        let db = duckdb::Connection::open_in_memory()?;
        let source = format!("read_parquet('{}')", path.display());
        let types: Vec<(String, String)> = db
            .prepare(&format!("DESCRIBE SELECT * FROM {source}"))?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let types: Vec<(&str, &str)> = types.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        ensure!(
            types
                == [
                    ("id", "BIGINT"),
                    ("amount", "DECIMAL(10,2)"),
                    ("day", "DATE"),
                    ("label", "VARCHAR"),
                    ("sparse", "BIGINT"),
                    ("gap", "VARCHAR")
                ],
            "{types:?}"
        );
        let summary: (i64, String, String, i64, String, String) = db.query_row(
            &format!(
                "SELECT count(*), sum(amount)::VARCHAR, max(day)::VARCHAR, count(sparse), \
                 max_by(label, id), max_by(gap, id) FROM {source}"
            ),
            [],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            },
        )?;
        ensure!(
            summary
                == (
                    25_000,
                    "78121875.00".to_owned(),
                    "2092-06-11".to_owned(),
                    25_000 - 3_572,
                    "row 24999".to_owned(),
                    "416:39:00".to_owned()
                ),
            "{summary:?}"
        );
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

/// Standard base64 (the data URL of the download) to bytes.
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let value = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("not base64: {c}"),
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}
