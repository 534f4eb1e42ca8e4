//! The browser app end to end (issue 5), in headless Chromium against the
//! real server serving the trunk-built client:
//! 1. a server query on the demo dataset shows rows and a chart;
//! 2. offline (the server stopped): rename and query, reload from the
//!    service worker with the changes still pending, restart: everything
//!    syncs once;
//! 3. two browsers on one session: one offline renames and queries while the
//!    other closes; on reconnect the domain rejects both changes, each
//!    reported with its error id, and both show the server's state;
//! 4. a change in one browser appears in the other within a second.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::Value;
use sextant_tests::browser::{dist_dir, testid, Browser};
use sextant_tests::proxy::Relay;
use sextant_tests::ServerProcess;
use uuid::Uuid;

fn static_args() -> Vec<String> {
    vec![
        "--static-dir".into(),
        dist_dir().to_str().unwrap().to_owned(),
    ]
}

fn start_server(data: &std::path::Path) -> ServerProcess {
    let args = static_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start(data, &args).expect("server starts")
}

/// Runs a scenario; on failure saves a screenshot of each browser and
/// panics with the server log.
pub(crate) async fn run_scenario<F>(
    name: &str,
    browsers: &[&Browser],
    logs: impl Fn() -> String,
    scenario: F,
) where
    F: std::future::Future<Output = Result<()>>,
{
    if let Err(error) = scenario.await {
        let mut shots = Vec::new();
        for (i, browser) in browsers.iter().enumerate() {
            let shot = std::env::temp_dir().join(format!("sextant-{name}-{i}.png"));
            if browser.screenshot(&shot).await.is_ok() {
                shots.push(shot.display().to_string());
            }
        }
        panic!(
            "{error:#}\n(screenshots: {shots:?})\nserver log:\n{}",
            logs()
        );
    }
}

/// With `SEXTANT_SCREENSHOTS=DIR`, saves the page as `DIR/NAME.png` (to look
/// at the UI); a relative `DIR` is in the repository.
async fn save_screenshot(b: &Browser, name: &str) -> Result<()> {
    if let Some(dir) = std::env::var_os("SEXTANT_SCREENSHOTS") {
        let dir = sextant_tests::repo_root().join(dir);
        std::fs::create_dir_all(&dir)?;
        b.screenshot(&dir.join(format!("{name}.png"))).await?;
    }
    Ok(())
}

/// With `SEXTANT_SCREENSHOTS=DIR`, saves the whole page (the window grown
/// to the document's height) as `DIR/NAME.png`. `SEXTANT_SCREENSHOTS=docs`
/// refreshes the README's `docs/workbench.png`.
async fn save_full_page(b: &Browser, name: &str) -> Result<()> {
    if std::env::var_os("SEXTANT_SCREENSHOTS").is_none() {
        return Ok(());
    }
    // Focus elsewhere, so that no completion list covers the editor.
    let height = b
        .eval(
            "document.activeElement && document.activeElement.blur(); \
             return document.documentElement.scrollHeight;",
            vec![],
        )
        .await?
        .as_u64()
        .unwrap_or(900)
        .clamp(900, 3000);
    b.client.set_window_size(1280, height as u32).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saved = save_screenshot(b, name).await;
    b.client.set_window_size(1280, 900).await?;
    saved
}

/// Creates a session from the sessions page; returns its id once the server confirmed it.
pub(crate) async fn create_session(b: &Browser, title: &str) -> Result<Uuid> {
    b.wait_for(&testid("new-session")).await?;
    b.fill(&testid("session-title-input"), title).await?;
    b.click(&testid("create-session")).await?;
    b.wait_for_text(&testid("session-title"), title).await?;
    let id = Uuid::parse_str(&b.text(&testid("session-id")).await?)?;
    wait_synced(b).await?;
    Ok(id)
}

/// Waits until the indicator says Online with nothing pending.
pub(crate) async fn wait_synced(b: &Browser) -> Result<()> {
    b.wait_for_attr(&testid("sync-status"), "data-pending", "0")
        .await?;
    b.wait_for_attr(&testid("sync-status"), "data-sync", "online")
        .await
}

/// Types `sql` into the editor and runs it on the server engine with Ctrl+Enter.
async fn run_query(b: &Browser, sql: &str) -> Result<()> {
    b.wait_for(&format!(
        "{} option[value=\"server\"]",
        testid("engine-select")
    ))
    .await?
    .click()
    .await?;
    b.fill_editor(&testid("sql-input"), sql).await?;
    let editor = b.wait_for(&testid("sql-input")).await?;
    let chord: String = [
        char::from(Key::Control),
        char::from(Key::Enter),
        char::from(Key::Null),
    ]
    .into_iter()
    .collect();
    editor.send_keys(&chord).await?;
    Ok(())
}

/// The states of the history entries, newest first.
pub(crate) async fn history_states(b: &Browser) -> Result<Vec<String>> {
    let mut states = Vec::new();
    for entry in b
        .client
        .find_all(Locator::Css(&testid("history-entry")))
        .await?
    {
        states.push(entry.attr("data-state").await?.unwrap_or_default());
    }
    Ok(states)
}

async fn wait_history_states(b: &Browser, expected: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = history_states(b).await.unwrap_or_default();
        if last == expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("history states {last:?}, expected {expected:?}")
}

/// The server's events of one session.
pub(crate) async fn server_events(base: &str, session: Uuid) -> Result<Vec<Value>> {
    let body: Value = sextant_tests::get(&format!(
        "{base}/api/aggregates/QuerySession/{session}/events?after_version=0"
    ))
    .await?
    .error_for_status()?
    .json()
    .await?;
    Ok(body["events"].as_array().cloned().unwrap_or_default())
}

/// The server holds the session's creation, the offline rename and the
/// offline query (which then ran), and each of those commands was accepted
/// exactly once across the server's logs (before and after the restart).
async fn ensure_rename_and_query_applied_once(
    base: &str,
    session: Uuid,
    all_logs: &str,
) -> Result<()> {
    let events = server_events(base, session).await?;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or(""))
        .collect();
    ensure!(
        types
            == [
                "SessionCreated",
                "SessionRenamed",
                "QuerySubmitted",
                "QueryStarted",
                "QueryCompleted"
            ],
        "server events {types:?}"
    );
    for event in &events[..3] {
        let command_id = event["metadata"]["command_id"].as_str().unwrap_or("?");
        let accepted = all_logs
            .lines()
            .filter(|l| l.contains("command accepted") && l.contains(command_id))
            .count();
        ensure!(
            accepted == 1,
            "command {command_id} accepted {accepted} times in the server logs"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_server_query_on_the_demo_dataset_shows_rows_and_a_chart() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let b = Browser::launch().await.expect("headless Chromium starts");
    run_scenario("query", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        create_session(&b, "Taxi trips").await?;

        // The catalog lists the demo dataset; attaching shows its schema.
        b.wait_for(&format!(
            "{} option[value=\"demo\"]",
            testid("dataset-select")
        ))
        .await?
        .click()
        .await?;
        b.click(&testid("attach-dataset")).await?;
        b.wait_for_text(&testid("attached-dataset"), "demo").await?;
        let columns = b.texts(&testid("schema-column")).await?;
        ensure!(
            columns.iter().any(|c| c.contains("borough")),
            "schema lists the demo's columns: {columns:?}"
        );

        // Ctrl+Enter runs on the server; the query completes with six boroughs.
        run_query(
            &b,
            "SELECT borough, count(*) AS trips FROM demo GROUP BY borough ORDER BY borough",
        )
        .await?;
        wait_history_states(&b, &["completed"]).await?;
        let rows = b.wait_for_count(&testid("result-row"), 6).await?;
        let first = rows[0].text().await?;
        ensure!(first.starts_with("Bronx"), "first row {first:?}");
        b.wait_for_count(&testid("chart-bar"), 6).await?;
        let range = b.text(&testid("result-range")).await?;
        ensure!(range.contains("of 6"), "range {range:?}");
        // The README's picture: editor, schema, grid and chart at once.
        save_full_page(&b, "workbench").await?;

        // The downloads point at the server's result files.
        let csv = b
            .wait_for(&testid("download-csv"))
            .await?
            .attr("href")
            .await?
            .unwrap_or_default();
        let query_id = b
            .wait_for(&testid("history-entry"))
            .await?
            .attr("data-query-id")
            .await?
            .unwrap_or_default();
        ensure!(
            csv == format!("/api/queries/{query_id}/result.csv"),
            "{csv}"
        );
        let download = sextant_tests::get(&format!("{}{csv}", server.url())).await?;
        ensure!(
            download.status() == 200,
            "csv download {}",
            download.status()
        );
        ensure!(download.text().await?.contains("Manhattan"));

        // A line chart of the same result.
        b.wait_for(&format!("{} option[value=\"line\"]", testid("chart-kind")))
            .await?
            .click()
            .await?;
        b.wait_for(&testid("chart-line")).await?;

        save_screenshot(&b, "query-result").await?;

        // A failing query shows the server's message and error id.
        run_query(&b, "SELECT no_such_column FROM demo").await?;
        wait_history_states(&b, &["failed", "completed"]).await?;
        let message = b
            .text(&format!(
                "{} {}",
                testid("query-error"),
                testid("error-message")
            ))
            .await?;
        ensure!(
            message.contains("no_such_column"),
            "failure message {message:?}"
        );
        let error_id = b
            .text(&format!("{} {}", testid("query-error"), testid("error-id")))
            .await?;
        Uuid::parse_str(&error_id).with_context(|| format!("error id {error_id:?}"))?;

        // A long query shows its progress bar and can be cancelled.
        run_query(&b, "SELECT sum(hash(i)) FROM range(1000000000000) t(i)").await?;
        b.wait_for_text(&testid("active-state"), "running").await?;
        b.wait_for(&testid("query-progress")).await?;
        // It never looks frozen: the line under the bar moves (time, rows).
        let first = b.text(&testid("query-progress-text")).await?;
        let mut moved = first.clone();
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            moved = b.text(&testid("query-progress-text")).await?;
            if moved != first {
                break;
            }
        }
        ensure!(moved != first, "the progress line stayed at {first:?}");
        b.click(&testid("cancel-query")).await?;
        wait_history_states(&b, &["cancelled", "failed", "completed"]).await?;

        // Clicking a past query loads it back; "Run again" runs it anew.
        let entries = b.wait_for_count(&testid("history-entry"), 3).await?;
        entries[2].click().await?;
        let sql = b.editor_text(&testid("sql-input")).await?;
        ensure!(
            sql.contains("GROUP BY borough"),
            "the first query is back in the editor: {sql:?}"
        );
        b.wait_for_count(&testid("result-row"), 6).await?;
        let rerun = entries[2]
            .find(Locator::Css(&testid("rerun-query")))
            .await?;
        rerun.click().await?;
        wait_history_states(&b, &["completed", "cancelled", "failed", "completed"]).await?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn offline_changes_survive_a_reload_and_sync_once_when_the_server_returns() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let addr = server.addr.to_string();
    let b = Browser::launch().await.expect("headless Chromium starts");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let first_log = logs.clone();
    let mut server = Some(server);
    let mut restarted: Option<ServerProcess> = None;
    let log_view = logs.clone();
    run_scenario(
        "offline",
        &[&b],
        move || log_view.lock().unwrap().clone(),
        async {
            b.goto(&base).await?;
            // The service worker has installed and controls the page.
            b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
                .await?;
            let session = create_session(&b, "Offline plan").await?;

            // Offline: the server is stopped.
            let running = server.take().expect("running");
            let before_stop = running.log();
            running.stop()?;
            first_log.lock().unwrap().push_str(&before_stop);
            b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
                .await?;

            b.fill(&testid("rename-input"), "Planned offline").await?;
            b.click(&testid("rename-session")).await?;
            b.wait_for_text(&testid("session-title"), "Planned offline")
                .await?;
            run_query(&b, "SELECT 6 * 7 AS answer").await?;
            wait_history_states(&b, &["submitted"]).await?;
            b.wait_for_attr(&testid("sync-status"), "data-pending", "2")
                .await?;
            b.wait_for_text(&testid("sync-status"), "Offline · 2 pending")
                .await?;

            // Reload with the server down: the service worker serves the app,
            // IndexedDB still holds the pending changes.
            tokio::time::sleep(Duration::from_millis(300)).await;
            b.reload().await?;
            b.wait_for(&testid("app-ready")).await?;
            b.wait_for_text(&testid("session-title"), "Planned offline")
                .await?;
            wait_history_states(&b, &["submitted"]).await?;
            b.wait_for_attr(&testid("sync-status"), "data-pending", "2")
                .await?;

            // The server returns on the same port: everything syncs and the query runs.
            let args = static_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let back = ServerProcess::start_on(data.path(), &addr, &args)?;
            let came_back = Instant::now();
            restarted = Some(back);
            wait_synced(&b).await?;
            let synced_after = came_back.elapsed();
            wait_history_states(&b, &["completed"]).await?;
            b.wait_for_count(&testid("result-row"), 1).await?;
            b.wait_for_text(&testid("session-title"), "Planned offline")
                .await?;
            ensure!(
                synced_after < Duration::from_secs(10),
                "resynced {synced_after:?} after the server came back"
            );

            // The server has the rename and the query, each exactly once.
            let back_log = restarted.as_ref().unwrap().log();
            logs.lock().unwrap().push_str(&back_log);
            let all_logs = format!("{before_stop}{back_log}");
            ensure_rename_and_query_applied_once(&base, session, &all_logs).await?;
            Ok(())
        },
    )
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn offline_changes_to_a_session_closed_meanwhile_are_rejected_with_error_ids() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    // The first browser reaches the server through a relay it can lose.
    let relay = Relay::start(server.addr).await.expect("relay starts");
    let first = Browser::launch().await.expect("first Chromium starts");
    let second = Browser::launch().await.expect("second Chromium starts");
    run_scenario("conflict", &[&first, &second], || server.log(), async {
        first.goto(&relay.url()).await?;
        let session = create_session(&first, "Shared review").await?;
        second
            .goto(&format!("{}/sessions/{session}", server.url()))
            .await?;
        second
            .wait_for_text(&testid("session-title"), "Shared review")
            .await?;

        // The first goes offline, renames and submits a query.
        relay.go_offline();
        first
            .wait_for_attr(&testid("sync-status"), "data-sync", "offline")
            .await?;
        first
            .fill(&testid("rename-input"), "Renamed offline")
            .await?;
        first.click(&testid("rename-session")).await?;
        run_query(&first, "SELECT 1").await?;
        first
            .wait_for_attr(&testid("sync-status"), "data-pending", "2")
            .await?;
        first
            .wait_for_text(&testid("session-title"), "Renamed offline")
            .await?;

        // Meanwhile the second closes the session.
        second.click(&testid("close-session")).await?;
        wait_synced(&second).await?;
        second
            .wait_for_text(&testid("session-lifecycle"), "closed")
            .await?;

        // The first comes back: the domain rejects both changes.
        relay.go_online().await?;
        wait_synced(&first).await?;
        for b in [&first, &second] {
            b.wait_for_text(&testid("session-lifecycle"), "closed")
                .await?;
            b.wait_for_text(&testid("session-title"), "Shared review")
                .await?;
            b.wait_for_text(&testid("session-version"), "2").await?;
            b.wait_for_count(&testid("history-entry"), 0).await?;
        }
        let problems = first.wait_for_count(&testid("problem"), 2).await?;
        save_screenshot(&first, "rejections").await?;
        let mut reported = Vec::new();
        for problem in &problems {
            let message = problem
                .find(Locator::Css(&testid("error-message")))
                .await?
                .text()
                .await?;
            let error_id = problem
                .find(Locator::Css(&testid("error-id")))
                .await?
                .text()
                .await?;
            Uuid::parse_str(&error_id)
                .with_context(|| format!("error id {error_id:?} of {message:?}"))?;
            ensure!(
                message.contains("rejected") && message.contains("closed"),
                "rejection message {message:?}"
            );
            reported.push(message);
        }
        ensure!(
            reported[0].starts_with("RenameSession") && reported[1].starts_with("SubmitQuery"),
            "each rejected change is reported: {reported:?}"
        );
        second.wait_for_absent(&testid("problem")).await?;

        // The server kept its state: created, then closed.
        let events = server_events(&server.url(), session).await?;
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["event_type"].as_str().unwrap_or(""))
            .collect();
        ensure!(
            types == ["SessionCreated", "SessionClosed"],
            "server events {types:?}"
        );
        Ok(())
    })
    .await;
    first.close().await.unwrap();
    second.close().await.unwrap();
}

#[tokio::test]
async fn a_change_in_one_browser_appears_in_the_other_within_a_second() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let first = Browser::launch().await.expect("first Chromium starts");
    let second = Browser::launch().await.expect("second Chromium starts");
    run_scenario("live", &[&first, &second], || server.log(), async {
        first.goto(&server.url()).await?;
        second.goto(&server.url()).await?;
        second.wait_for(&testid("new-session")).await?;
        wait_synced(&second).await?;

        // A new session appears in the other browser's list.
        let started = Instant::now();
        let session = create_session(&first, "Live one").await?;
        second
            .wait_for_attr(
                &testid("session-row"),
                "data-session-id",
                &session.to_string(),
            )
            .await?;
        let created_seen = started.elapsed();

        // A rename appears in the other browser's session view.
        second
            .goto(&format!("{}/sessions/{session}", server.url()))
            .await?;
        second
            .wait_for_text(&testid("session-title"), "Live one")
            .await?;
        wait_synced(&second).await?;
        first.fill(&testid("rename-input"), "Live two").await?;
        let renamed = Instant::now();
        first.click(&testid("rename-session")).await?;
        wait_text_within(
            &second,
            &testid("session-title"),
            "Live two",
            Duration::from_secs(1),
        )
        .await?;
        let rename_seen = renamed.elapsed();
        ensure!(
            created_seen < Duration::from_secs(3),
            "creation seen after {created_seen:?}"
        );
        eprintln!("live updates: creation {created_seen:?}, rename {rename_seen:?}");
        Ok(())
    })
    .await;
    first.close().await.unwrap();
    second.close().await.unwrap();
}

/// Fails unless `css` shows `expected` within `limit` (polling every 20 ms).
async fn wait_text_within(b: &Browser, css: &str, expected: &str, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < limit {
        if let Ok(element) = b.client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last == expected {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("`{css}` did not show {expected:?} within {limit:?}; last {last:?}")
}

#[tokio::test]
async fn two_tabs_share_one_outbox_and_send_each_command_once() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let addr = server.addr.to_string();
    let b = Browser::launch().await.expect("headless Chromium starts");
    let log_so_far = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log_view = log_so_far.clone();
    let mut server = Some(server);
    run_scenario(
        "tabs",
        &[&b],
        move || log_view.lock().unwrap().clone(),
        async {
            b.goto(&base).await?;
            let session = create_session(&b, "Two tabs").await?;
            let first = b.client.window().await?;
            let second = b.client.new_window(true).await?.handle;
            b.client.switch_to_window(second.clone()).await?;
            b.goto(&format!("{base}/sessions/{session}")).await?;
            b.wait_for_text(&testid("session-title"), "Two tabs")
                .await?;

            let running = server.take().expect("running");
            let before_stop = running.log();
            running.stop()?;
            log_so_far.lock().unwrap().push_str(&before_stop);

            // The second tab renames offline; the first sees it pending.
            b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
                .await?;
            b.fill(&testid("rename-input"), "Renamed in tab two")
                .await?;
            b.click(&testid("rename-session")).await?;
            b.client.switch_to_window(first.clone()).await?;
            b.wait_for_text(&testid("session-title"), "Renamed in tab two")
                .await?;
            b.wait_for_attr(&testid("sync-status"), "data-pending", "1")
                .await?;
            // The first submits a query offline.
            run_query(&b, "SELECT 1 AS one").await?;
            b.wait_for_attr(&testid("sync-status"), "data-pending", "2")
                .await?;
            b.client.switch_to_window(second.clone()).await?;
            b.wait_for_attr(&testid("sync-status"), "data-pending", "2")
                .await?;

            // Back online: one tab sends, both end synced, each command once.
            let args = static_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let back = ServerProcess::start_on(data.path(), &addr, &args)?;
            for window in [&second, &first] {
                b.client.switch_to_window(window.clone()).await?;
                wait_synced(&b).await?;
                wait_history_states(&b, &["completed"]).await?;
                b.wait_for_text(&testid("session-title"), "Renamed in tab two")
                    .await?;
            }
            let back_log = back.log();
            log_so_far.lock().unwrap().push_str(&back_log);
            let all_logs = format!("{before_stop}{back_log}");
            ensure_rename_and_query_applied_once(&base, session, &all_logs).await?;
            drop(back);
            Ok(())
        },
    )
    .await;
    b.close().await.unwrap();
}

/// Copies the built client (without the on-demand duckdb-wasm files) to `to`.
fn copy_site(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "duckdb-wasm" {
                copy_site(&entry.path(), &target)?;
            }
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_new_deployment_is_announced_and_loads_on_request() {
    let data = tempfile::tempdir().unwrap();
    let site = tempfile::tempdir().unwrap();
    copy_site(&dist_dir(), site.path()).unwrap();
    let server = ServerProcess::start(
        data.path(),
        &["--static-dir", site.path().to_str().unwrap()],
    )
    .expect("server starts");
    let b = Browser::launch().await.expect("headless Chromium starts");
    let marker = "document.querySelector('meta[name=\"sextant-build\"]') !== null";
    run_scenario("update", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
            .await?;

        // Deploy a new version: a changed index.html and its service worker.
        let index = site.path().join("index.html");
        let html = std::fs::read_to_string(&index)?;
        std::fs::write(
            &index,
            html.replacen(
                "<head>",
                "<head><meta name=\"sextant-build\" content=\"2\" />",
                1,
            ),
        )?;
        let generated = std::process::Command::new("node")
            .arg(sextant_tests::repo_root().join("client/build-service-worker.mjs"))
            .arg(site.path())
            .status()?;
        ensure!(generated.success(), "build-service-worker.mjs failed");

        // The running app keeps its version, learns of the new one and says so.
        b.reload().await?;
        b.wait_for(&testid("update-available")).await?;
        ensure!(
            b.eval(&format!("return {marker};"), vec![]).await? == Value::Bool(false),
            "the page still runs the old version until asked"
        );
        b.click(&testid("apply-update")).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let loaded = b.eval(&format!("return {marker};"), vec![]).await;
            if matches!(loaded, Ok(Value::Bool(true))) {
                break;
            }
            ensure!(Instant::now() < deadline, "the new version never loaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b.wait_for(&testid("app-ready")).await?;
        b.wait_for_absent(&testid("update-available")).await?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn clearing_local_data_drops_unsent_changes_and_resyncs_from_the_server() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let base = server.url();
    let addr = server.addr.to_string();
    let b = Browser::launch().await.expect("headless Chromium starts");
    let mut server = Some(server);
    let log_so_far = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log_view = log_so_far.clone();
    run_scenario(
        "clear",
        &[&b],
        move || log_view.lock().unwrap().clone(),
        async {
            b.goto(&base).await?;
            b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
                .await?;
            let session = create_session(&b, "Kept on the server").await?;
            let running = server.take().expect("running");
            log_so_far.lock().unwrap().push_str(&running.log());
            running.stop()?;
            b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
                .await?;
            b.fill(&testid("rename-input"), "Never sent").await?;
            b.click(&testid("rename-session")).await?;
            b.wait_for_attr(&testid("sync-status"), "data-pending", "1")
                .await?;

            // Two clicks (the first warns about the unsent change), then a reload.
            b.click(&testid("clear-local-data")).await?;
            b.wait_for_text(
                &testid("clear-local-data"),
                "Really clear? 1 unsent change will be lost",
            )
            .await?;
            b.click(&testid("clear-local-data")).await?;
            b.wait_for(&testid("session-missing")).await?;
            b.wait_for_attr(&testid("sync-status"), "data-pending", "0")
                .await?;

            // The server still has the session: it comes back, unrenamed.
            let args = static_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let back = ServerProcess::start_on(data.path(), &addr, &args)?;
            b.wait_for_text(&testid("session-title"), "Kept on the server")
                .await?;
            wait_synced(&b).await?;
            let events = server_events(&base, session).await?;
            ensure!(
                events.len() == 1,
                "the rename never reached the server: {events:?}"
            );
            drop(back);
            Ok(())
        },
    )
    .await;
    b.close().await.unwrap();
}

// ---- Issue 13: the analyst's workbench ----

/// Types `keys` (text and WebDriver key chars) into the element matching `css`.
async fn press(b: &Browser, css: &str, keys: &[Key]) -> Result<()> {
    let text: String = keys.iter().map(|k| char::from(*k)).collect();
    b.wait_for(css).await?.send_keys(&text).await?;
    Ok(())
}

/// Chooses `engine` (auto, server, local) in the editor's selector.
async fn choose_engine(b: &Browser, engine: &str) -> Result<()> {
    b.wait_for(&format!(
        "{} option[value=\"{engine}\"]",
        testid("engine-select")
    ))
    .await?
    .click()
    .await?;
    Ok(())
}

/// Types `sql` into the editor and runs it with Ctrl+Enter on the chosen engine.
async fn run_on(b: &Browser, engine: &str, sql: &str) -> Result<()> {
    choose_engine(b, engine).await?;
    b.fill_editor(&testid("sql-input"), sql).await?;
    press(
        b,
        &testid("sql-input"),
        &[Key::Control, Key::Enter, Key::Null],
    )
    .await
}

/// The `data-value` of each cell of the first result row.
async fn first_row_values(b: &Browser) -> Result<Vec<String>> {
    let row = b.wait_for(&testid("result-row")).await?;
    let mut values = Vec::new();
    for cell in row.find_all(Locator::Css("td")).await? {
        values.push(cell.attr("data-value").await?.unwrap_or_default());
    }
    Ok(values)
}

/// Waits until the first result row's values are `expected`.
async fn wait_first_row(b: &Browser, expected: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        if let Ok(values) = first_row_values(b).await {
            if values == expected {
                return Ok(());
            }
            last = values;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("first row {last:?}, expected {expected:?}")
}

/// Clicks the sort button of column `name`.
async fn sort_by(b: &Browser, name: &str) -> Result<()> {
    b.click(&format!(
        "{}[data-column=\"{name}\"] {}",
        testid("column-header"),
        testid("sort-column")
    ))
    .await
}

#[tokio::test]
async fn the_editor_completes_columns_runs_the_statement_at_the_cursor_and_keeps_the_draft() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let b = Browser::launch().await.expect("headless Chromium starts");
    run_scenario("editor", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        create_session(&b, "Editor").await?;
        b.wait_for(&format!(
            "{} option[value=\"demo\"]",
            testid("dataset-select")
        ))
        .await?
        .click()
        .await?;
        b.click(&testid("attach-dataset")).await?;
        b.wait_for_text(&testid("attached-dataset"), "demo").await?;

        // CodeMirror (not the plain text area) offers a column of the attached dataset.
        b.wait_for(&format!(
            "{}[data-editor=\"codemirror\"]",
            testid("sql-input")
        ))
        .await?;
        b.fill_editor(&testid("sql-input"), "SELECT boro").await?;
        b.wait_for_text(
            ".cm-tooltip-autocomplete li[aria-selected] .cm-completionLabel",
            "borough",
        )
        .await?;
        press(&b, &testid("sql-input"), &[Key::Escape]).await?;

        // Two statements: Ctrl+Enter runs the one under the cursor (the last).
        b.fill_editor(&testid("sql-input"), "SELECT 1 AS a;")
            .await?;
        press(&b, &testid("sql-input"), &[Key::Escape, Key::Enter]).await?;
        b.wait_for(&testid("sql-input"))
            .await?
            .send_keys("SELECT 2 AS b")
            .await?;
        press(&b, &testid("sql-input"), &[Key::Escape]).await?;
        choose_engine(&b, "server").await?;
        press(
            &b,
            &testid("sql-input"),
            &[Key::Control, Key::Enter, Key::Null],
        )
        .await?;
        wait_history_states(&b, &["completed"]).await?;
        b.wait_for_text(&testid("query-sql"), "SELECT 2 AS b")
            .await?;
        save_screenshot(&b, "editor").await?;

        // The draft survives a reload.
        let draft = "SELECT 1 AS a;\nSELECT 2 AS b";
        ensure!(
            b.editor_text(&testid("sql-input")).await? == draft,
            "editor text before reload"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.reload().await?;
        b.wait_for(&format!(
            "{}[data-editor=\"codemirror\"]",
            testid("sql-input")
        ))
        .await?;
        let after = b.editor_text(&testid("sql-input")).await?;
        ensure!(after == draft, "draft after reload: {after:?}");
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn the_grid_sorts_filters_and_profiles_a_whole_local_result_and_scrolls_10000_rows() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let b = Browser::launch().await.expect("headless Chromium starts");
    run_scenario("grid", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        create_session(&b, "Grid").await?;

        // 25,000 rows on the local engine: the tab keeps 10,000, the sort
        // runs over all of them in duckdb-wasm, so the true maximum is first.
        run_on(
            &b,
            "local",
            "SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE i * 1000 END AS big FROM range(25000) t(i)",
        )
        .await?;
        wait_history_states(&b, &["completed"]).await?;
        wait_first_row(&b, &["0", "NULL"]).await?;
        let types = b.texts(&testid("column-type")).await?;
        ensure!(types == ["BIGINT", "BIGINT"], "types in the header: {types:?}");
        // NULL is distinct from text, numbers are right-aligned and grouped.
        let null_cell = b.wait_for(&format!("{} td[data-null]", testid("result-row"))).await?;
        ensure!(null_cell.text().await? == "NULL");
        let number = b
            .wait_for(&format!("{} td.numeric[data-value=\"1000\"]", testid("result-row")))
            .await?;
        ensure!(number.text().await? == "1,000", "grouped digits");
        ensure!(
            number.css_value("text-align").await? == "right",
            "numbers are right-aligned"
        );

        sort_by(&b, "i").await?;
        sort_by(&b, "i").await?;
        wait_first_row(&b, &["24999", "24999000"]).await?;
        b.wait_for_attr(
            &format!("{}[data-column=\"i\"]", testid("column-header")),
            "aria-sort",
            "descending",
        )
        .await?;

        // A filter over the whole result, then the column's profile.
        b.wait_for(&format!("{} option[value=\"ge\"]", testid("filter-op")))
            .await?
            .click()
            .await?;
        b.fill(&testid("filter-value"), "24990").await?;
        b.click(&testid("filter-add")).await?;
        b.wait_for_count(&testid("filter-chip"), 1).await?;
        b.wait_for_count(&testid("result-row"), 10).await?;
        let range = b.text(&testid("result-range")).await?;
        ensure!(range.contains("of 10 (filtered from 25000)"), "{range}");
        b.click(&testid("filter-remove")).await?;
        b.wait_for_count(&testid("filter-chip"), 0).await?;
        b.click(&format!(
            "{}[data-column=\"big\"] {}",
            testid("column-header"),
            testid("profile-column")
        ))
        .await?;
        b.wait_for_text(&testid("profile-rows"), "25000").await?;
        b.wait_for_text(&testid("profile-max"), "24999000").await?;
        b.wait_for_text(&testid("profile-nulls"), "3572").await?;
        save_screenshot(&b, "grid").await?;

        // Virtual scrolling: 10,000 rows, few in the DOM; the last one is reachable.
        run_on(&b, "local", "SELECT i FROM range(10000) t(i)").await?;
        wait_history_states(&b, &["completed", "completed"]).await?;
        wait_first_row(&b, &["0"]).await?;
        let in_dom = b.texts(&testid("result-row")).await?.len();
        ensure!(in_dom < 100, "{in_dom} rows in the DOM");
        b.click(&testid("result-grid")).await?;
        press(&b, &testid("result-grid"), &[Key::Control, Key::End, Key::Null]).await?;
        b.wait_for(&format!("{} td.active[data-value=\"9999\"]", testid("result-row")))
            .await?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn sessions_list_newest_first_with_search_and_time_travel_shows_earlier_titles() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let b = Browser::launch().await.expect("headless Chromium starts");
    run_scenario("sessions", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        let alpha = create_session(&b, "Alpha").await?;
        run_query(&b, "SELECT 'needle' AS n").await?;
        wait_history_states(&b, &["completed"]).await?;
        b.click(&testid("new-session-button")).await?;
        let beta = create_session(&b, "Beta").await?;

        // Time travel: renamed twice, version 2 still shows its title.
        b.fill(&testid("rename-input"), "Beta two").await?;
        b.click(&testid("rename-session")).await?;
        wait_synced(&b).await?;
        b.fill(&testid("rename-input"), "Beta three").await?;
        b.click(&testid("rename-session")).await?;
        wait_synced(&b).await?;
        b.click(&testid("time-travel-toggle")).await?;
        b.wait_for_text(&testid("time-travel-version"), "3").await?;
        b.wait_for_text(&testid("time-travel-title"), "Beta three")
            .await?;
        b.click(&testid("time-travel-slider")).await?;
        b.wait_for(&testid("time-travel-slider"))
            .await?
            .send_keys(
                &[Key::Home, Key::Right]
                    .into_iter()
                    .map(char::from)
                    .collect::<String>(),
            )
            .await?;
        b.wait_for_text(&testid("time-travel-version"), "2").await?;
        b.wait_for_text(&testid("time-travel-title"), "Beta two")
            .await?;
        let changes = b.texts(&testid("time-travel-change")).await?;
        ensure!(
            changes == ["Title: Beta two → Beta three"],
            "diff of versions 2 and 3: {changes:?}"
        );
        save_screenshot(&b, "time-travel").await?;

        // The list: most recently changed first, each with its last activity.
        b.click(&testid("new-session-button")).await?;
        b.wait_for_count(&testid("session-row"), 2).await?;
        // The last activity is read from IndexedDB after the list renders;
        // the order settles once it is known.
        b.wait_for_attr(&testid("session-row"), "data-session-id", &beta.to_string())
            .await
            .map_err(|e| anyhow::anyhow!("newest first (beta {beta}): {e:#}"))?;
        let activity = b.texts(&testid("last-activity")).await?;
        ensure!(
            activity.iter().all(|a| a == "just now"),
            "last activity {activity:?}"
        );
        // Searching by SQL finds the session whose query mentions it.
        b.fill(&testid("session-search"), "needle").await?;
        let rows = b.wait_for_count(&testid("session-row"), 1).await?;
        let found = rows[0].attr("data-session-id").await?.unwrap_or_default();
        ensure!(found == alpha.to_string(), "search by SQL found {found}");
        b.fill(&testid("session-search"), "beta THREE").await?;
        b.wait_for_attr(&testid("session-row"), "data-session-id", &beta.to_string())
            .await?;
        b.fill(&testid("session-search"), "nothing like it").await?;
        b.wait_for(&testid("no-search-match")).await?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

/// axe-core (npm, from our node_modules, injected by the test) on the
/// current page: the serious and critical violations, as "rule: target" lines.
async fn axe_violations(b: &Browser) -> Result<Vec<String>> {
    let source = std::fs::read_to_string(
        sextant_tests::repo_root().join("node_modules/axe-core/axe.min.js"),
    )
    .context("node_modules/axe-core/axe.min.js (npm ci)")?;
    b.eval(&format!("{source}\nreturn true;"), vec![]).await?;
    let result = b
        .eval_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, { resultTypes: ['violations'] })\
               .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')\
                 .flatMap(v => v.nodes.map(n => v.id + ': ' + n.target.join(' ')))))\
               .catch(e => done(['axe failed: ' + e]));",
            vec![],
        )
        .await?;
    Ok(result
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn a_chart_over_a_million_local_rows_aggregates_all_of_them_and_axe_finds_no_serious_violations(
) {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let b = Browser::launch().await.expect("headless Chromium starts");
    run_scenario("chart", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        b.wait_for(&testid("new-session")).await?;
        let on_list = axe_violations(&b).await?;
        ensure!(on_list.is_empty(), "sessions page: {on_list:?}");
        create_session(&b, "Million").await?;

        // 1,000,000 rows in duckdb-wasm (the tab keeps 10,000): the bars
        // count every row of each of the five groups.
        run_on(
            &b,
            "local",
            "SELECT CAST(i % 5 AS VARCHAR) AS k, i FROM range(1000000) t(i)",
        )
        .await?;
        wait_history_states(&b, &["completed"]).await?;
        b.wait_for_count(&testid("chart-bar"), 5).await?;
        // The data table is the chart's text alternative (in a <details>).
        b.click(".chart-data summary").await?;
        let values = b
            .texts(&format!(
                "{} {}",
                testid("chart-data"),
                testid("chart-value")
            ))
            .await?;
        ensure!(
            values
                == [
                    "99999500000",
                    "99999700000",
                    "99999900000",
                    "100000100000",
                    "100000300000"
                ],
            "sum of i per group over all rows: {values:?}"
        );
        let label = b
            .wait_for(&testid("chart-box"))
            .await?
            .attr("aria-label")
            .await?
            .unwrap_or_default();
        ensure!(
            label.contains("over all rows"),
            "text alternative {label:?}"
        );

        // Saved with the query as a ChartConfigured event.
        b.wait_for(&format!(
            "{} option[value=\"count\"]",
            testid("chart-aggregate")
        ))
        .await?
        .click()
        .await?;
        b.wait_for_text(
            &format!("{} {}", testid("chart-data"), testid("chart-value")),
            "200000",
        )
        .await?;
        b.click(&testid("chart-save")).await?;
        b.wait_for_text(&testid("chart-save"), "Saved").await?;
        wait_synced(&b).await?;
        let session = Uuid::parse_str(&b.text(&testid("session-id")).await?)?;
        let events = server_events(&server.url(), session).await?;
        let chart = events
            .iter()
            .find(|e| e["event_type"] == "ChartConfigured")
            .context("a ChartConfigured event")?;
        ensure!(chart["event_version"] == 1, "{chart}");
        ensure!(chart["payload"]["chart"]["aggregate"] == "count", "{chart}");
        save_screenshot(&b, "chart-million").await?;

        let on_session = axe_violations(&b).await?;
        ensure!(on_session.is_empty(), "session page: {on_session:?}");
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_25000_row_server_result_sorts_by_its_true_maximum_and_charts_all_rows() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path());
    let b = Browser::launch().await.expect("headless Chromium starts");
    run_scenario("server-grid", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        create_session(&b, "Server grid").await?;
        // hash() scatters the maximum somewhere in the middle of the result.
        run_on(
            &b,
            "server",
            "SELECT i, hash(i) % 1000000 AS h FROM range(25000) t(i)",
        )
        .await?;
        wait_history_states(&b, &["completed"]).await?;
        let expected = sextant_tests::get(&format!(
            "{}/api/queries/{}/result?limit=1&sort=h:desc",
            server.url(),
            b.wait_for(&testid("history-entry"))
                .await?
                .attr("data-query-id")
                .await?
                .unwrap_or_default()
        ))
        .await?
        .json::<Value>()
        .await?;
        // The maximum of h (several rows may share it: only h is compared).
        let max_h = expected["rows"][0][1].to_string();
        sort_by(&b, "h").await?;
        sort_by(&b, "h").await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let first = first_row_values(&b).await.unwrap_or_default();
            if first.get(1) == Some(&max_h) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "first row {first:?}, expected h = {max_h}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A histogram of i over all 25,000 rows, aggregated by the server.
        b.wait_for(&format!(
            "{} option[value=\"histogram\"]",
            testid("chart-kind")
        ))
        .await?
        .click()
        .await?;
        b.wait_for(&format!("{} option[value=\"i\"]", testid("chart-x")))
            .await?
            .click()
            .await?;
        b.wait_for(&format!(
            "{} option[value=\"count\"]",
            testid("chart-aggregate")
        ))
        .await?
        .click()
        .await?;
        b.wait_for_count(&testid("chart-bin"), 30).await?;
        b.click(".chart-data summary").await?;
        let counts = b
            .texts(&format!(
                "{} {}",
                testid("chart-data"),
                testid("chart-value")
            ))
            .await?;
        let total: u64 = counts.iter().filter_map(|c| c.parse::<u64>().ok()).sum();
        ensure!(total == 25_000, "the bins count every row: {counts:?}");
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}
