//! Threads in the browser, in headless Chromium against the real server:
//! 1. the server serves the app cross-origin isolated (COOP, COEP, CORP on
//!    the shell and the engine's files), so the page gets
//!    `SharedArrayBuffer`, duckdb-wasm starts its threaded COI build with
//!    as many threads as the browser reports cores, and a local query runs
//!    on them; reloaded from the service worker's cache, the page is still
//!    isolated and threaded;
//! 2. with `--no-cross-origin-isolation` the page is not isolated and the
//!    single-threaded build runs the same query;
//! 3. in an isolated page whose threaded build cannot start (its wasm is
//!    broken), the engine falls back to the single-threaded build, says
//!    why, and local queries run.
//!
//! URL datasets in the isolated page: `local_engine.rs` (scenario 4).

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use sextant_tests::browser::{dist_dir, testid, Browser};
use sextant_tests::ServerProcess;

use crate::local_engine::{
    choose_engine, create_session, run_query, scenario, start_server, wait_newest_done, wait_table,
};

const ISOLATION: [(&str, &str); 3] = [
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-embedder-policy", "require-corp"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// The app shell, a client route (index.html fallback) and the threaded
/// engine's workers: what an isolated page loads.
const SHELL_PATHS: [&str; 4] = [
    "/",
    "/sessions/00000000-0000-4000-8000-000000000000",
    "/duckdb-wasm/duckdb-browser-coi.worker.js",
    "/duckdb-wasm/duckdb-browser-coi.pthread.worker.js",
];

/// The isolation headers of `path`, absent ones as "".
async fn isolation_headers(base: &str, path: &str) -> Result<Vec<String>> {
    let response = reqwest::get(format!("{base}{path}")).await?;
    ensure!(response.status() == 200, "{path}: {}", response.status());
    Ok(ISOLATION
        .iter()
        .map(|(name, _)| {
            response
                .headers()
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        })
        .collect())
}

/// `[crossOriginIsolated, typeof SharedArrayBuffer, hardwareConcurrency, controlled]`.
async fn page_facts(b: &Browser) -> Result<Value> {
    b.wait_for(&testid("app-ready")).await?;
    b.eval(
        "return [self.crossOriginIsolated, typeof SharedArrayBuffer, \
         navigator.hardwareConcurrency, !!(navigator.serviceWorker && navigator.serviceWorker.controller)];",
        vec![],
    )
    .await
}

/// Runs `sql` as local query number `count` and returns its rows.
async fn local_rows(b: &Browser, sql: &str, count: usize, rows: usize) -> Result<Vec<Vec<String>>> {
    run_query(b, sql).await?;
    let (state, engine, _) = wait_newest_done(b, count).await?;
    if state != "completed" {
        let message = b.text(&testid("error-message")).await.unwrap_or_default();
        anyhow::bail!("query {count} {state}: {message}");
    }
    ensure!(engine == "local", "query {count} ran on {engine}");
    wait_table(b, rows).await
}

/// One result row of strings.
fn row(values: &[&str]) -> Vec<Vec<String>> {
    vec![values.iter().map(|v| v.to_string()).collect()]
}

/// The engine status line's build and threads, once it is ready.
async fn engine_build(b: &Browser, bundle: &str) -> Result<(String, String)> {
    let status = testid("local-engine-status");
    b.wait_for_attr(&status, "data-bundle", bundle).await?;
    let element = b.wait_for(&status).await?;
    Ok((
        element.attr("data-threads").await?.unwrap_or_default(),
        element.text().await?,
    ))
}

const THREADS_SQL: &str = "SELECT current_setting('threads') AS threads, count(*) AS n, \
     sum(i) AS total FROM range(10000000) t(i)";

#[tokio::test]
async fn an_isolated_page_runs_the_threaded_engine_on_several_threads() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let base = server.url();
    for path in SHELL_PATHS {
        let headers = isolation_headers(&base, path).await.unwrap();
        let expected: Vec<String> = ISOLATION.iter().map(|(_, v)| v.to_string()).collect();
        assert_eq!(headers, expected, "{path}");
    }
    let b = Browser::launch().await.expect("headless Chromium starts");
    scenario("threads", &b, || server.log(), async {
        b.goto(&base).await?;
        let facts = page_facts(&b).await?;
        ensure!(
            facts[0] == json!(true),
            "not cross-origin isolated: {facts}"
        );
        ensure!(
            facts[1] == json!("function"),
            "no SharedArrayBuffer: {facts}"
        );
        let cores = facts[2].as_u64().context("hardwareConcurrency")?;
        ensure!(
            cores >= 2,
            "this test needs a browser that reports 2 or more cores, not {cores}"
        );
        let threads = cores.min(16).to_string();

        create_session(&b, "Threads").await?;
        choose_engine(&b, "local").await?;
        let rows = local_rows(&b, THREADS_SQL, 1, 1).await?;
        ensure!(
            rows == row(&[&threads, "10000000", "49999995000000"]),
            "{rows:?} (expected {threads} threads)"
        );
        let (shown, text) = engine_build(&b, "coi").await?;
        ensure!(shown == threads, "status shows {shown} threads: {text}");
        ensure!(text.contains(&format!("coi, {threads} threads")), "{text}");

        // From the service worker's cache the page is isolated the same way
        // (the cached answers keep the server's headers).
        b.reload().await?;
        let facts = page_facts(&b).await?;
        ensure!(
            facts[3] == json!(true),
            "not served by the service worker: {facts}"
        );
        ensure!(
            facts[0] == json!(true),
            "not isolated from the cache: {facts}"
        );
        choose_engine(&b, "local").await?;
        let rows = local_rows(&b, "SELECT current_setting('threads') AS threads", 2, 1).await?;
        ensure!(rows == row(&[&threads]), "{rows:?}");
        engine_build(&b, "coi").await?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn without_isolation_the_single_threaded_engine_runs_the_query() {
    let data = tempfile::tempdir().unwrap();
    let dist = dist_dir();
    let server = ServerProcess::start(
        data.path(),
        &[
            "--static-dir",
            dist.to_str().unwrap(),
            "--no-cross-origin-isolation",
        ],
    )
    .expect("server starts");
    let base = server.url();
    for path in SHELL_PATHS {
        let headers = isolation_headers(&base, path).await.unwrap();
        assert!(headers.iter().all(String::is_empty), "{path}: {headers:?}");
    }
    let b = Browser::launch().await.expect("headless Chromium starts");
    scenario("no-isolation", &b, || server.log(), async {
        b.goto(&base).await?;
        let facts = page_facts(&b).await?;
        ensure!(facts[0] == json!(false), "isolated after all: {facts}");
        create_session(&b, "One thread").await?;
        choose_engine(&b, "local").await?;
        let rows = local_rows(&b, THREADS_SQL, 1, 1).await?;
        ensure!(
            rows == row(&["1", "10000000", "49999995000000"]),
            "{rows:?}"
        );
        let (threads, text) = engine_build(&b, "eh").await?;
        ensure!(
            threads == "1" && !text.contains("failed"),
            "{threads}: {text}"
        );
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

/// A copy of the built client (symbolic links) whose threaded build's wasm
/// is not WebAssembly.
fn dist_with_broken_threads(target: &Path) -> Result<()> {
    let dist = dist_dir();
    for entry in std::fs::read_dir(&dist)? {
        let entry = entry?;
        if entry.file_name() != "duckdb-wasm" {
            std::os::unix::fs::symlink(entry.path(), target.join(entry.file_name()))?;
            continue;
        }
        let engine = target.join("duckdb-wasm");
        std::fs::create_dir(&engine)?;
        for file in std::fs::read_dir(entry.path())? {
            let file = file?;
            if file.file_name() == "duckdb-coi.wasm" {
                std::fs::write(engine.join("duckdb-coi.wasm"), b"not WebAssembly")?;
            } else {
                std::os::unix::fs::symlink(file.path(), engine.join(file.file_name()))?;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_threaded_build_that_cannot_start_falls_back_to_the_single_threaded_one() {
    let data = tempfile::tempdir().unwrap();
    let site = tempfile::tempdir().unwrap();
    dist_with_broken_threads(site.path()).unwrap();
    let server = ServerProcess::start(
        data.path(),
        &["--static-dir", site.path().to_str().unwrap()],
    )
    .expect("server starts");
    let base = server.url();
    let b = Browser::launch().await.expect("headless Chromium starts");
    scenario("threads-fallback", &b, || server.log(), async {
        b.goto(&base).await?;
        let facts = page_facts(&b).await?;
        ensure!(
            facts[0] == json!(true),
            "not cross-origin isolated: {facts}"
        );
        create_session(&b, "Fallback").await?;
        choose_engine(&b, "local").await?;
        let rows = local_rows(&b, THREADS_SQL, 1, 1).await?;
        ensure!(
            rows == row(&["1", "10000000", "49999995000000"]),
            "{rows:?}"
        );
        let (threads, text) = engine_build(&b, "eh").await?;
        ensure!(threads == "1", "{threads}: {text}");
        ensure!(text.contains("the threaded build failed"), "{text}");
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}
