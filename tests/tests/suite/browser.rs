//! End to end in headless Chromium: the real server serves the trunk-built
//! client, and the page shows state computed by the `QuerySession`
//! aggregate compiled to WebAssembly (trimmed titles, versions, lifecycle
//! and the domain's own refusal messages). The offline and sync scenarios
//! are in `workbench.rs`.

use sextant_tests::browser::{dist_dir, testid, Browser};
use sextant_tests::ServerProcess;

/// Starts the server on the built client and a fresh browser on `path`.
async fn open_client(data_dir: &std::path::Path, path: &str) -> (ServerProcess, Browser) {
    let dist = dist_dir();
    let server = ServerProcess::start(data_dir, &["--static-dir", dist.to_str().unwrap()])
        .expect("server starts");
    let browser = Browser::launch().await.expect("headless Chromium starts");
    browser
        .goto(&format!("{}{path}", server.url()))
        .await
        .unwrap();
    (server, browser)
}

#[tokio::test]
async fn the_page_runs_the_shared_aggregate_in_wasm() {
    let data = tempfile::tempdir().unwrap();
    let (server, browser) = open_client(data.path(), "/").await;
    let result = walk_through_a_session(&browser).await;
    if let Err(error) = &result {
        let shot = browser.profile_dir().join("failure.png");
        let _ = browser.screenshot(&shot).await;
        let _ = std::fs::copy(
            &shot,
            std::env::temp_dir().join("sextant-browser-failure.png"),
        );
        panic!(
            "{error:#}\n(screenshot: {}; server log:\n{})",
            std::env::temp_dir()
                .join("sextant-browser-failure.png")
                .display(),
            server.log()
        );
    }
    browser.close().await.unwrap();
}

async fn walk_through_a_session(b: &Browser) -> anyhow::Result<()> {
    // The wasm app mounted.
    b.wait_for(&testid("app-ready")).await?;

    // A blank title is refused by the SessionTitle smart constructor, with an error id.
    b.fill(&testid("session-title-input"), "   ").await?;
    b.click(&testid("create-session")).await?;
    b.wait_for_text(&testid("error-message"), "session title must not be empty")
        .await?;
    let error_id = b.text(&testid("error-id")).await?;
    anyhow::ensure!(
        uuid::Uuid::parse_str(&error_id).is_ok(),
        "error id {error_id:?} is a UUID"
    );

    // Creating: the title is trimmed by the domain, the aggregate is at version 1.
    b.fill(&testid("session-title-input"), "  Revenue review  ")
        .await?;
    b.click(&testid("create-session")).await?;
    b.wait_for_text(&testid("session-title"), "Revenue review")
        .await?;
    b.wait_for_text(&testid("session-version"), "1").await?;
    b.wait_for_text(&testid("session-lifecycle"), "open")
        .await?;

    // Submitting SELECT 42: one history entry, and the version the aggregate
    // computes for its state (1 + QuerySubmitted [+ QueryStarted [+ QueryCompleted]]).
    b.fill_editor(&testid("sql-input"), "SELECT 42").await?;
    b.click(&testid("submit-query")).await?;
    b.wait_for_count(&testid("history-entry"), 1).await?;
    b.wait_for_text(&testid("query-sql"), "SELECT 42").await?;
    let state = wait_for_consistent_query_state(b).await?;

    // Closing: the aggregate cancels a still-active query first, so the
    // version counts a QueryCancelled as well as the SessionClosed.
    b.click(&testid("close-session")).await?;
    b.wait_for_text(&testid("session-lifecycle"), "closed")
        .await?;
    let final_state = b.text(&testid("query-state")).await?;
    let version: u64 = b.text(&testid("session-version")).await?.parse()?;
    let allowed: &[u64] = match final_state.as_str() {
        // created, submitted, started, finished, closed
        "completed" | "failed" => &[5],
        // created, submitted, [started,] cancelled, closed
        "cancelled" => &[4, 5],
        other => anyhow::bail!("a closed session has no active query, got {other:?}"),
    };
    anyhow::ensure!(
        allowed.contains(&version),
        "after closing with a {final_state} query the version is {version}, expected one of {allowed:?} (it was {state} before)"
    );
    Ok(())
}

/// Waits until the shown query state and session version agree, as the
/// aggregate computes them, and returns the state.
async fn wait_for_consistent_query_state(b: &Browser) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + sextant_tests::browser::PAGE_TIMEOUT;
    let mut last = (String::new(), String::new());
    while std::time::Instant::now() < deadline {
        if let (Ok(state), Ok(version)) = (
            b.text(&testid("query-state")).await,
            b.text(&testid("session-version")).await,
        ) {
            let expected = match state.as_str() {
                "submitted" => Some("2"),
                "running" => Some("3"),
                "completed" | "failed" => Some("4"),
                _ => None,
            };
            if expected == Some(version.as_str()) {
                return Ok(state);
            }
            last = (state, version);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "query state {:?} never matched session version {:?}",
        last.0,
        last.1
    )
}

#[tokio::test]
async fn client_routes_fall_back_to_the_app() {
    // A deep link opened first (bookmark, reload): the server answers with
    // index.html and the wasm app renders the route.
    let data = tempfile::tempdir().unwrap();
    let (_server, browser) = open_client(data.path(), "/sessions/not-a-file").await;
    browser
        .wait_for(&testid("app-ready"))
        .await
        .expect("the wasm app renders on a client route");
    browser.close().await.unwrap();
}
