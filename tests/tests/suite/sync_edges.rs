//! The three edges of issue 9 (sync protocol v2), end to end in headless
//! Chromium against the real server serving the trunk-built client:
//! 1. an offline local query (submit, start, complete) while another browser
//!    renames the session completes on the server, and the session takes
//!    new queries;
//! 2. offline changes larger than the server's body limit all arrive (the
//!    batch is split, nothing is rejected);
//! 3. after the server's store is replaced by an older backup and grows
//!    again, a browser with a newer cursor shows the server's state, says so
//!    in one line, and receives new sessions;
//!
//! and the orphan rule: a local query whose tab closed mid-run is ended by
//! the next page of that browser, once, and the session takes new queries.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use fantoccini::key::Key;
use fantoccini::Locator;
use serde_json::{json, Value};
use sextant_tests::browser::{dist_dir, testid, Browser};
use sextant_tests::proxy::Relay;
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::workbench::{
    create_session, history_states, run_scenario as scenario, server_events, wait_synced,
};

fn args(extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--static-dir".to_owned(),
        dist_dir().to_str().unwrap().to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start_server(data: &Path, extra: &[&str]) -> ServerProcess {
    start_server_on(data, "127.0.0.1:0", extra)
}

fn start_server_on(data: &Path, addr: &str, extra: &[&str]) -> ServerProcess {
    let args = args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start_on(data, addr, &args).expect("server starts")
}

async fn rename(b: &Browser, title: &str) -> Result<()> {
    b.fill(&testid("rename-input"), title).await?;
    b.click(&testid("rename-session")).await
}

async fn run_local_query(b: &Browser, sql: &str) -> Result<()> {
    b.wait_for(&format!(
        "{} option[value=\"local\"]",
        testid("engine-select")
    ))
    .await?
    .click()
    .await?;
    b.fill(&testid("sql-input"), sql).await?;
    let editor = b.wait_for(&testid("sql-input")).await?;
    let chord: String = [Key::Control, Key::Enter, Key::Null]
        .into_iter()
        .map(char::from)
        .collect();
    editor.send_keys(&chord).await?;
    Ok(())
}

async fn wait_history_states(b: &Browser, expected: &[&str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = history_states(b).await.unwrap_or_default();
        if last == expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("history states {last:?}, expected {expected:?}")
}

async fn server_event_types(base: &str, session: Uuid) -> Result<Vec<String>> {
    let body: Value = sextant_tests::get(&format!(
        "{base}/api/aggregates/QuerySession/{session}/events?after_version=0"
    ))
    .await?
    .error_for_status()?
    .json()
    .await?;
    Ok(body["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or("").to_owned())
        .collect())
}

async fn post_command(base: &str, envelope: Value) -> Result<Value> {
    let response = sextant_tests::http_client(base)
        .post(format!("{base}/api/commands"))
        .json(&envelope)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status == 200, "{status}: {body}");
    Ok(body)
}

fn command(session: Uuid, version: u64, command: Value) -> Value {
    json!({
        "command_id": Uuid::new_v4(),
        "aggregate_type": "QuerySession",
        "aggregate_id": session,
        "expected_version": version,
        "command": command,
    })
}

/// Edge 1: before bases, the start was refused with a stale 422 and the
/// query stayed `submitted` on the server for good.
#[tokio::test]
async fn an_offline_local_query_completes_on_the_server_while_another_browser_renames() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path(), &[]);
    let relay = Relay::start(server.addr).await.expect("relay starts");
    let first = Browser::launch().await.expect("first Chromium starts");
    let second = Browser::launch().await.expect("second Chromium starts");
    scenario("local-query", &[&first, &second], || server.log(), async {
        first.goto(&relay.url()).await?;
        let session = create_session(&first, "Local work").await?;
        // The local engine is warm before the network goes.
        run_local_query(&first, "SELECT 1 AS warm").await?;
        wait_history_states(&first, &["completed"]).await?;
        wait_synced(&first).await?;
        second
            .goto(&format!("{}/sessions/{session}", server.url()))
            .await?;
        second
            .wait_for_text(&testid("session-title"), "Local work")
            .await?;

        relay.go_offline();
        first
            .wait_for_attr(&testid("sync-status"), "data-sync", "offline")
            .await?;
        run_local_query(&first, "SELECT 6 * 7 AS answer").await?;
        wait_history_states(&first, &["completed", "completed"]).await?;
        first
            .wait_for_attr(&testid("sync-status"), "data-pending", "3")
            .await?;

        // Meanwhile the other browser renames: the server moves on.
        rename(&second, "Renamed by the other").await?;
        wait_synced(&second).await?;

        relay.go_online().await?;
        wait_synced(&first).await?;
        first
            .wait_for_text(&testid("session-title"), "Renamed by the other")
            .await?;
        wait_history_states(&first, &["completed", "completed"]).await?;
        let types = server_event_types(&server.url(), session).await?;
        ensure!(
            types.iter().filter(|t| *t == "QueryCompleted").count() == 2,
            "server events {types:?}"
        );
        first.wait_for_absent(&testid("problem")).await?;

        // The session takes new queries, and the other browser sees them.
        run_local_query(&first, "SELECT 2 AS again").await?;
        wait_history_states(&first, &["completed", "completed", "completed"]).await?;
        wait_synced(&first).await?;
        wait_history_states(&second, &["completed", "completed", "completed"]).await?;
        Ok(())
    })
    .await;
    first.close().await.unwrap();
    second.close().await.unwrap();
}

/// Edge 2: before, the batch's 413 was copied onto every command and 150
/// renames were reported rejected and deleted.
#[tokio::test]
async fn offline_changes_larger_than_the_body_limit_all_arrive() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path(), &["--body-limit", "4096"]);
    let relay = Relay::start(server.addr).await.expect("relay starts");
    let b = Browser::launch().await.expect("Chromium starts");
    scenario("body-limit", &[&b], || server.log(), async {
        b.goto(&relay.url()).await?;
        let session = create_session(&b, "Many renames").await?;
        relay.go_offline();
        b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
            .await?;
        const RENAMES: usize = 150;
        for n in 1..=RENAMES {
            rename(&b, &format!("Rename number {n} of many, offline")).await?;
        }
        b.wait_for_attr(&testid("sync-status"), "data-pending", &RENAMES.to_string())
            .await?;

        relay.go_online().await?;
        wait_synced(&b).await?;
        let types = server_event_types(&server.url(), session).await?;
        ensure!(
            types.len() == 1 + RENAMES,
            "{} events on the server",
            types.len()
        );
        b.wait_for_text(
            &testid("session-title"),
            &format!("Rename number {RENAMES} of many, offline"),
        )
        .await?;
        b.wait_for_absent(&testid("problem")).await?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

fn copy_store(from: &Path, to: &Path) {
    for name in [
        "sextant.sqlite3",
        "sextant.sqlite3-wal",
        "sextant.sqlite3-shm",
    ] {
        let _ = std::fs::remove_file(to.join(name));
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

/// Edge 3: before, the browser resumed with `?after=<cursor>` into a store
/// that reused those sequence numbers, and never saw the new events.
#[tokio::test]
async fn a_browser_ahead_of_a_restored_store_shows_the_servers_state_and_new_sessions() {
    let data = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let server = start_server(data.path(), &[]);
    let base = server.url();
    let addr = server.addr.to_string();
    let b = Browser::launch().await.expect("Chromium starts");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log_view = logs.clone();
    let mut running = Some(server);
    scenario(
        "restore",
        &[&b],
        move || log_view.lock().unwrap().clone(),
        async {
            b.goto(&base).await?;
            let session = create_session(&b, "Before the backup").await?;

            // The backup is taken.
            let server = running.take().unwrap();
            logs.lock().unwrap().push_str(&server.log());
            server.stop()?;
            copy_store(data.path(), backup.path());
            let server = start_server_on(data.path(), &addr, &[]);

            // The browser moves on past the backup.
            rename(&b, "After the backup").await?;
            wait_synced(&b).await?;

            // The store is replaced by the backup and grows differently.
            logs.lock().unwrap().push_str(&server.log());
            server.stop()?;
            copy_store(backup.path(), data.path());
            let server = start_server_on(data.path(), &addr, &[]);
            post_command(
                &base,
                command(
                    session,
                    1,
                    json!({"type": "RenameSession", "title": "Renamed after the restore"}),
                ),
            )
            .await?;
            let second = Uuid::new_v4();
            post_command(
                &base,
                command(
                    second,
                    0,
                    json!({"type": "CreateSession", "title": "Created after the restore"}),
                ),
            )
            .await?;

            // The browser shows the server's state and says why, in one line.
            b.wait_for_text(&testid("session-title"), "Renamed after the restore")
                .await?;
            b.wait_for_count(&testid("problem"), 1).await?;
            let problems = b.texts(&testid("error-message")).await?;
            ensure!(
                problems.len() == 1 && problems[0].contains("Showing the server's data again"),
                "problems {problems:?}"
            );
            wait_synced(&b).await?;

            // The session list has the session created after the restore, and
            // new sessions arrive live.
            b.goto(&base).await?;
            let third = Uuid::new_v4();
            post_command(
                &base,
                command(third, 0, json!({"type": "CreateSession", "title": "Third"})),
            )
            .await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut ids = Vec::new();
                for row in b
                    .client
                    .find_all(Locator::Css(&testid("session-row")))
                    .await?
                {
                    ids.push(row.attr("data-session-id").await?.unwrap_or_default());
                }
                if [session, second, third]
                    .iter()
                    .all(|id| ids.contains(&id.to_string()))
                {
                    break;
                }
                ensure!(Instant::now() < deadline, "sessions listed: {ids:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            logs.lock().unwrap().push_str(&server.log());
            drop(server);
            Ok(())
        },
    )
    .await;
    b.close().await.unwrap();
}

fn copy_site_without_engine(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "duckdb-wasm" {
                copy_site_without_engine(&entry.path(), &target)?;
            }
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn write_service_worker(site: &Path) -> Result<()> {
    let status = std::process::Command::new("node")
        .arg(sextant_tests::repo_root().join("client/build-service-worker.mjs"))
        .arg(site)
        .status()?;
    ensure!(status.success(), "build-service-worker.mjs failed");
    Ok(())
}

/// The engine's files survive an app update that does not change them (they
/// used to be deleted with the old shell cache, so local queries failed
/// offline after every deploy until fetched again online).
#[tokio::test]
async fn the_engine_cache_survives_an_app_update() {
    let data = tempfile::tempdir().unwrap();
    let site = tempfile::tempdir().unwrap();
    copy_site_without_engine(&dist_dir(), site.path()).unwrap();
    // A stand-in for the 33 MiB of duckdb-wasm.
    std::fs::create_dir_all(site.path().join("duckdb-wasm")).unwrap();
    std::fs::write(site.path().join("duckdb-wasm/engine.txt"), "engine v1").unwrap();
    write_service_worker(site.path()).unwrap();
    let server = ServerProcess::start(
        data.path(),
        &["--static-dir", site.path().to_str().unwrap()],
    )
    .expect("server starts");
    let b = Browser::launch().await.expect("headless Chromium starts");
    let cached = "const done = arguments[arguments.length - 1];
        caches.match('/duckdb-wasm/engine.txt').then((hit) => done(!!hit), () => done(false));";
    scenario("engine-cache", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
            .await?;
        let fetched = b
            .eval_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/duckdb-wasm/engine.txt').then((r) => r.text()).then(done, (e) => done(String(e)));",
                vec![],
            )
            .await?;
        ensure!(fetched == json!("engine v1"), "{fetched}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.eval_async(cached, vec![]).await? != json!(true) {
            ensure!(Instant::now() < deadline, "the engine was never cached");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A new app version with the same engine.
        let index = site.path().join("index.html");
        let html = std::fs::read_to_string(&index)?;
        std::fs::write(
            &index,
            html.replacen("<head>", "<head><meta name=\"sextant-build\" content=\"2\" />", 1),
        )?;
        write_service_worker(site.path())?;
        b.reload().await?;
        b.wait_for(&testid("update-available")).await?;
        b.click(&testid("apply-update")).await?;
        let marker = "return document.querySelector('meta[name=\"sextant-build\"]') !== null;";
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.eval(marker, vec![]).await.ok() != Some(json!(true)) {
            ensure!(Instant::now() < deadline, "the new version never loaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b.wait_for(&testid("app-ready")).await?;
        // The old shell cache is gone; the engine's is still there.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let keys = b
                .eval_async(
                    "const done = arguments[arguments.length - 1]; caches.keys().then(done);",
                    vec![],
                )
                .await?;
            let keys: Vec<String> = serde_json::from_value(keys)?;
            let shells = keys.iter().filter(|k| k.starts_with("sextant-shell-")).count();
            let engines = keys.iter().filter(|k| k.starts_with("sextant-engine-")).count();
            if shells == 1 && engines == 1 {
                break;
            }
            ensure!(Instant::now() < deadline, "caches after the update: {keys:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(
            b.eval_async(cached, vec![]).await? == json!(true),
            "the engine's files were dropped by the update"
        );
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}

/// Orphans (`shared_domain::sync::orphans`): before, a local query whose
/// tab closed mid-run stayed `running` on the server for good, and the
/// session refused every new query on every device.
#[tokio::test]
async fn a_local_query_whose_tab_closed_is_ended_by_the_next_page() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path(), &[]);
    let b = Browser::launch().await.expect("Chromium starts");
    scenario("orphan", &[&b], || server.log(), async {
        b.goto(&server.url()).await?;
        let session = create_session(&b, "Orphan").await?;
        run_local_query(&b, "SELECT 1 AS warm").await?;
        wait_history_states(&b, &["completed"]).await?;
        run_local_query(
            &b,
            "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE (a.range + b.range) % 7 = 3",
        )
        .await?;
        b.wait_for_text(&testid("active-state"), "running").await?;
        // The server has it running too.
        wait_synced(&b).await?;
        let types: Vec<String> = server_events(&server.url(), session)
            .await?
            .iter()
            .map(|e| e["event_type"].as_str().unwrap_or("").to_owned())
            .collect();
        ensure!(
            types.ends_with(&["QuerySubmitted".to_owned(), "QueryStarted".to_owned()]),
            "server events {types:?}"
        );

        // The tab closes mid-query; another one opens the session.
        let other = b.client.new_window(true).await?.handle;
        b.client.close_window().await?;
        b.client.switch_to_window(other).await?;
        b.goto(&format!("{}/sessions/{session}", server.url()))
            .await?;
        wait_history_states(&b, &["failed", "completed"]).await?;
        let message = b.text(&testid("error-message")).await?;
        ensure!(message.contains("was closed before it finished"), "{message}");
        wait_synced(&b).await?;

        // Ended once on the server.
        let events = server_events(&server.url(), session).await?;
        let ended: Vec<&Value> = events
            .iter()
            .filter(|e| {
                ["QueryFailed", "QueryCompleted", "QueryCancelled"]
                    .contains(&e["event_type"].as_str().unwrap_or(""))
            })
            .collect();
        ensure!(ended.len() == 2, "ending events {ended:?}");
        ensure!(ended[1]["event_type"] == "QueryFailed", "{:?}", ended[1]);
        let command_id = ended[1]["metadata"]["command_id"].as_str().unwrap_or("?");
        let accepted = server
            .log()
            .lines()
            .filter(|l| l.contains("command accepted") && l.contains(command_id))
            .count();
        ensure!(accepted == 1, "the failure was accepted {accepted} times");

        // The session takes new queries.
        run_local_query(&b, "SELECT 2 AS again").await?;
        wait_history_states(&b, &["completed", "failed", "completed"]).await?;
        wait_synced(&b).await?;
        Ok(())
    })
    .await;
    b.close().await.unwrap();
}
