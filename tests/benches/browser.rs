//! The browser app's benchmark (issues 5 and 13), printed as a table: the
//! app's wasm and lazy bundles (raw and gzip), navigation to the first
//! interactive render, a user action to the optimistic update on screen,
//! the resync of 1,000 pending commands after the server comes back; and
//! the workbench: navigation to its first render and to the CodeMirror
//! editor being ready, and the grid's frame times while a 10,000-row local
//! result scrolls from top to bottom. Real parts: the release server
//! serving the trunk-built `dist/`, headless Chromium.
//!
//! Run with `cargo xtask bench` (or `cargo build --release -p server &&
//! cargo bench -p sextant-tests --bench browser` after `trunk build --release`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sextant_tests::browser::{dist_dir, testid, Browser};
use sextant_tests::ServerProcess;

const NAVIGATIONS: usize = 5;
const ACTIONS: usize = 30;
const PENDING: usize = 1_000;

struct Row {
    metric: String,
    value: String,
    target: &'static str,
}

#[tokio::main]
async fn main() -> Result<()> {
    let dist = dist_dir();
    let mut rows = Vec::new();
    wasm_size(&dist, &mut rows)?;

    let data = tempfile::tempdir()?;
    let args = ["--static-dir", dist.to_str().context("utf-8 path")?];
    let server = ServerProcess::start(data.path(), &args)?;
    let browser = Browser::launch().await?;
    let outcome = async {
        navigation(&browser, &server.url(), &mut rows).await?;
        workbench(&browser, &server.url(), &mut rows).await?;
        optimistic_update(&browser, &server.url(), &mut rows).await?;
        resync(&browser, server, data.path(), &args, &mut rows).await
    }
    .await;
    let _ = browser.close().await;
    outcome?;

    println!("\nbrowser app (issues 5, 13): headless Chromium, release server on localhost");
    println!("| metric | value | target |");
    println!("|---|---|---|");
    for row in &rows {
        println!("| {} | {} | {} |", row.metric, row.value, row.target);
    }
    Ok(())
}

fn wasm_size(dist: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let wasm = std::fs::read_dir(dist)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_bg.wasm"))
        .context("no *_bg.wasm in dist/")?;
    let raw = std::fs::metadata(&wasm)?.len();
    let gzip = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(&wasm)
        .output()
        .context("running gzip")?
        .stdout
        .len() as u64;
    rows.push(Row {
        metric: "app wasm, raw (excluding duckdb-wasm)".into(),
        value: format!("{:.0} KiB", raw as f64 / 1024.0),
        target: "",
    });
    rows.push(Row {
        metric: "app wasm, gzip -9".into(),
        value: format!("{:.0} KiB", gzip as f64 / 1024.0),
        target: "< 1024 KiB",
    });
    for (file, when) in [
        ("bundles/sql-editor.js", "when a session view opens"),
        ("bundles/chart.js", "when a result is charted"),
        ("duckdb-wasm/duckdb-bridge.js", "at the first local query"),
        (
            "duckdb-wasm/parquet-worker.js",
            "at the first Parquet read or write, in a worker",
        ),
        (
            "duckdb-wasm/parquet.js",
            "at the first Parquet read or write (before the worker)",
        ),
    ] {
        let path = dist.join(file);
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue; // parquet.js or parquet-worker.js, by build
        };
        let raw = metadata.len();
        rows.push(Row {
            metric: format!("lazy bundle {file} ({when}), raw / gzip -9"),
            value: format!(
                "{:.0} / {:.0} KiB",
                raw as f64 / 1024.0,
                gzip_len(&path)? as f64 / 1024.0
            ),
            target: "",
        });
    }
    Ok(())
}

fn gzip_len(path: &Path) -> Result<u64> {
    let output = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .context("running gzip")?;
    Ok(output.stdout.len() as u64)
}

/// The start time of performance mark `name`, waiting for it (ms since
/// navigation).
async fn mark_ms(b: &Browser, name: &str) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = b
            .eval(
                "const m = performance.getEntriesByName(arguments[0]);\
                 return m.length ? m[0].startTime : null;",
                vec![json!(name)],
            )
            .await?;
        if let Some(ms) = value.as_f64() {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            bail!("the app never marked {name}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A local result of 10,000 rows (all kept in the tab) of mixed types.
const GRID_SQL: &str = "SELECT i AS id, i * 1.25 AS amount, 'row ' || i AS label, \
     DATE '2024-01-01' + CAST(i % 365 AS INTEGER) AS day, \
     CASE WHEN i % 7 = 0 THEN NULL ELSE i % 100 END AS bucket FROM range(10000) t(i)";
const GRID_ROWS: u64 = 10_000;
const SCROLL_FRAMES: usize = 300;

/// Scrolls the result grid from top to bottom in `arguments[0]` steps, one
/// per animation frame. Per step it measures the main thread's work from
/// setting `scrollTop` until the next task runs: the scroll handler,
/// Leptos' updates, style and layout of the new rows, and the browser
/// rendering the frame (paint and commit, which run before the next task);
/// of it, the app's own part (handler and Leptos' updates, drained by
/// awaiting 30 microtask turns, then the forced style and layout); and the
/// interval between animation frames (what the user sees; 16.7 ms at 60 Hz).
const GRID_SCROLL: &str = r#"
const [frames, done] = [arguments[0], arguments[arguments.length - 1]];
const scroller = document.querySelector('[data-testid="result-grid"]');
const maxTop = scroller.scrollHeight - scroller.clientHeight;
const work = [], app = [], layout = [], intervals = [];
const channel = new MessageChannel();
let last = null, step = 0, t0 = 0;
const fail = (error) => done({ error: String(error && error.stack || error) });
channel.port1.onmessage = () => {
  try {
    work.push(performance.now() - t0);
    if (step < frames) requestAnimationFrame(frame);
    else {
      const rows = scroller.querySelectorAll('[data-testid="result-row"]');
      const lastIndex = Number(rows[rows.length - 1].getAttribute('aria-rowindex'));
      done({ work, app, layout, intervals, maxTop, inDom: rows.length, lastIndex });
    }
  } catch (error) { fail(error); }
};
async function frame(ts) {
  try {
    if (last !== null) intervals.push(ts - last);
    last = ts;
    step++;
    t0 = performance.now();
    scroller.scrollTop = Math.round((maxTop * step) / frames);
    scroller.dispatchEvent(new Event('scroll'));
    for (let i = 0; i < 30; i++) await Promise.resolve();
    const updated = performance.now();
    const row = scroller.querySelector('[data-testid="result-row"]');
    if (row) row.getBoundingClientRect(); // style and layout now, inside the step
    const laidOut = performance.now();
    app.push(laidOut - t0);
    layout.push(laidOut - updated);
    channel.port2.postMessage(null);
  } catch (error) { fail(error); }
}
requestAnimationFrame(frame);
"#;

/// The workbench: a session with a 10,000-row local result and its chart;
/// the grid scrolled through; then reloads of the session page for its
/// first render and the editor.
async fn workbench(b: &Browser, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    b.goto(url).await?;
    b.fill(&testid("session-title-input"), "Workbench bench")
        .await?;
    b.click(&testid("create-session")).await?;
    b.wait_for_text(&testid("session-title"), "Workbench bench")
        .await?;
    b.wait_for(&format!(
        "{} option[value=\"local\"]",
        testid("engine-select")
    ))
    .await?
    .click()
    .await?;
    b.fill_editor(&testid("sql-input"), GRID_SQL).await?;
    b.click(&testid("submit-query")).await?;
    b.wait_for_attr(&testid("history-entry"), "data-state", "completed")
        .await?;
    b.wait_for(&testid("result-row")).await?;
    b.wait_for(&testid("chart-box")).await?;
    let total = b
        .wait_for(&testid("result-grid"))
        .await?
        .attr("aria-rowcount")
        .await?
        .unwrap_or_default();
    ensure!(total == (GRID_ROWS + 1).to_string(), "grid rows {total}");

    b.client
        .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
            Some(Duration::from_secs(300)),
            None,
            None,
        ))
        .await
        .context("setting the script timeout")?;
    let scrolled = b
        .eval_async(GRID_SCROLL, vec![json!(SCROLL_FRAMES)])
        .await?;
    if let Some(error) = scrolled.get("error") {
        bail!("scrolling the grid: {error}");
    }
    let numbers = |key: &str| -> Vec<f64> {
        scrolled[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (mut work, mut intervals) = (numbers("work"), numbers("intervals"));
    let (mut app, mut layout) = (numbers("app"), numbers("layout"));
    ensure!(work.len() == SCROLL_FRAMES, "{scrolled}");
    let last_index = scrolled["lastIndex"].as_u64().unwrap_or(0);
    ensure!(
        last_index == GRID_ROWS + 1,
        "the grid did not reach its last row: {last_index}"
    );
    let over_budget = intervals.iter().filter(|ms| **ms > 16.7 * 1.5).count();
    rows.push(Row {
        metric: format!(
            "grid: {GRID_ROWS}-row local result scrolled top to bottom in {SCROLL_FRAMES} frames, \
             main-thread work per frame (median / p95 / max)"
        ),
        value: format!(
            "{:.1} / {:.1} / {:.1} ms",
            median(&mut work),
            percentile(&mut work, 0.95),
            percentile(&mut work, 1.0)
        ),
        target: "p95 < 16 ms",
    });
    rows.push(Row {
        metric: "  of it, the app: scroll handler, Leptos' updates, style and layout (median / p95 / max); \
                 of that, style and layout (median / p95)"
            .to_owned(),
        value: format!(
            "{:.1} / {:.1} / {:.1} ms; {:.1} / {:.1} ms",
            median(&mut app),
            percentile(&mut app, 0.95),
            percentile(&mut app, 1.0),
            median(&mut layout),
            percentile(&mut layout, 0.95)
        ),
        target: "",
    });
    rows.push(Row {
        metric: format!(
            "grid: frame interval while scrolling (median / p95; {} rows in the DOM; frames late by half a frame or more)",
            scrolled["inDom"]
        ),
        value: format!(
            "{:.1} / {:.1} ms; {over_budget} of {}",
            median(&mut intervals),
            percentile(&mut intervals, 0.95),
            intervals.len()
        ),
        target: "≈ 16.7 ms (60 Hz)",
    });

    // The session page itself, reloaded (the shell and bundles from the
    // service worker's cache).
    let (mut interactive, mut editor, mut editor_fetch) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..NAVIGATIONS {
        b.reload().await?;
        interactive.push(mark_ms(b, "sextant-interactive").await?);
        let ready = mark_ms(b, "sextant-editor-ready").await?;
        editor.push(ready);
        let fetched = b
            .eval(
                "const e = performance.getEntriesByType('resource')\
                   .find((r) => r.name.endsWith('/bundles/sql-editor.js'));\
                 return e ? e.duration : null;",
                vec![],
            )
            .await?;
        editor_fetch.push(fetched.as_f64().unwrap_or(f64::NAN));
    }
    let mut after = interactive
        .iter()
        .zip(&editor)
        .map(|(i, e)| e - i)
        .collect::<Vec<_>>();
    rows.push(Row {
        metric: format!(
            "workbench session page, reload: navigation → first interactive render (median of {NAVIGATIONS})"
        ),
        value: format!("{:.0} ms", median(&mut interactive)),
        target: "",
    });
    rows.push(Row {
        metric: format!(
            "workbench session page, reload: navigation → CodeMirror editor ready (median of {NAVIGATIONS})"
        ),
        value: format!("{:.0} ms", median(&mut editor)),
        target: "",
    });
    rows.push(Row {
        metric: format!(
            "editor load time: interactive → editor ready (median of {NAVIGATIONS}); of it, fetching sql-editor.js"
        ),
        value: format!(
            "{:.0} ms; {:.1} ms",
            median(&mut after),
            median(&mut editor_fetch)
        ),
        target: "",
    });
    Ok(())
}

/// Milliseconds from navigation start to the app's `sextant-interactive` mark.
async fn interactive_ms(b: &Browser) -> Result<f64> {
    b.wait_for(&testid("app-ready")).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = b
            .eval(
                "const m = performance.getEntriesByName('sextant-interactive');\
                 return m.length ? m[0].startTime : null;",
                vec![],
            )
            .await?;
        if let Some(ms) = value.as_f64() {
            return Ok(ms);
        }
        if Instant::now() > deadline {
            bail!("the app never marked sextant-interactive");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

async fn navigation(b: &Browser, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    // First visit: nothing cached, no service worker yet.
    b.goto(url).await?;
    let cold = interactive_ms(b).await?;
    b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
        .await?;
    // Later visits: the app shell comes from the service worker's cache.
    let mut warm = Vec::new();
    for _ in 0..NAVIGATIONS {
        b.reload().await?;
        warm.push(interactive_ms(b).await?);
    }
    rows.push(Row {
        metric: "navigation → first interactive render, first visit".into(),
        value: format!("{cold:.0} ms"),
        target: "",
    });
    rows.push(Row {
        metric: format!("navigation → first interactive render, reload (median of {NAVIGATIONS})"),
        value: format!("{:.0} ms", median(&mut warm)),
        target: "",
    });
    Ok(())
}

/// Creates a session through the UI and waits until the server has it.
async fn create_session(b: &Browser, title: &str) -> Result<()> {
    b.fill(&testid("session-title-input"), title).await?;
    b.click(&testid("create-session")).await?;
    b.wait_for_text(&testid("session-title"), title).await?;
    b.wait_for_attr(&testid("sync-status"), "data-pending", "0")
        .await
}

/// Renames through the real form; resolves with the time from the click to
/// the title changing in the DOM, and to the next frame after it.
const TIMED_RENAME: &str = r#"
const [title, done] = [arguments[0], arguments[arguments.length - 1]];
const input = document.querySelector('[data-testid="rename-input"]');
const button = document.querySelector('[data-testid="rename-session"]');
const shown = document.querySelector('[data-testid="session-title"]');
input.value = title;
input.dispatchEvent(new Event('input', { bubbles: true }));
let t0 = 0;
const observer = new MutationObserver(() => {
  if (shown.textContent !== title) return;
  observer.disconnect();
  const dom = performance.now() - t0;
  requestAnimationFrame(() => done({ dom, frame: performance.now() - t0 }));
});
observer.observe(shown, { childList: true, characterData: true, subtree: true });
t0 = performance.now();
button.click();
"#;

async fn optimistic_update(b: &Browser, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    b.goto(url).await?;
    create_session(b, "Bench").await?;
    let (mut dom, mut frame) = (Vec::new(), Vec::new());
    for i in 0..ACTIONS {
        let timing = b
            .eval_async(TIMED_RENAME, vec![json!(format!("Bench {i}"))])
            .await?;
        dom.push(timing["dom"].as_f64().context("dom timing")?);
        frame.push(timing["frame"].as_f64().context("frame timing")?);
    }
    b.wait_for_attr(&testid("sync-status"), "data-pending", "0")
        .await?;
    rows.push(Row {
        metric: format!("action → optimistic update in the DOM (median / p95 of {ACTIONS})"),
        value: format!(
            "{:.1} / {:.1} ms",
            median(&mut dom),
            percentile(&mut dom, 0.95)
        ),
        target: "< 16 ms",
    });
    rows.push(Row {
        metric: format!("action → next frame with the update (median / p95 of {ACTIONS})"),
        value: format!(
            "{:.1} / {:.1} ms",
            median(&mut frame),
            percentile(&mut frame, 0.95)
        ),
        target: "< 16 ms",
    });
    Ok(())
}

/// Submits `count` renames through the form in one script.
const MANY_RENAMES: &str = r#"
const count = arguments[0];
const input = document.querySelector('[data-testid="rename-input"]');
const button = document.querySelector('[data-testid="rename-session"]');
for (let i = 0; i < count; i++) {
  input.value = 'Offline ' + i;
  input.dispatchEvent(new Event('input', { bubbles: true }));
  button.click();
}
return document.querySelector('[data-testid="sync-status"]').getAttribute('data-pending');
"#;

async fn pending(b: &Browser) -> Result<usize> {
    let value: Value = b
        .eval(
            "return document.querySelector('[data-testid=\"sync-status\"]').getAttribute('data-pending');",
            vec![],
        )
        .await?;
    Ok(value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX))
}

async fn resync(
    b: &Browser,
    server: ServerProcess,
    data_dir: &Path,
    args: &[&str],
    rows: &mut Vec<Row>,
) -> Result<()> {
    let addr = server.addr.to_string();
    server.stop()?;
    b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
        .await?;
    let queued = Instant::now();
    b.eval(MANY_RENAMES, vec![json!(PENDING)]).await?;
    let queue_time = queued.elapsed();
    ensure!(pending(b).await? == PENDING, "{PENDING} commands pending");
    // Let the IndexedDB writes land, as a user would before the server returns.
    tokio::time::sleep(Duration::from_millis(500)).await;

    b.eval("performance.clearMarks();", vec![]).await?;
    let server = ServerProcess::start_on(data_dir, &addr, args)?;
    let back = Instant::now();
    // The same instant on the page's clock, to place its marks.
    let back_in_page = b.eval("return performance.now();", vec![]).await?;
    let back_in_page = back_in_page.as_f64().unwrap_or(0.0) - back.elapsed().as_secs_f64() * 1e3;
    let mut first_sent = None;
    loop {
        let left = pending(b).await?;
        if left < PENDING && first_sent.is_none() {
            first_sent = Some(back.elapsed());
        }
        if left == 0 {
            break;
        }
        if back.elapsed() > Duration::from_secs(120) {
            bail!("{left} commands still pending after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = back.elapsed();
    b.wait_for_text(
        &testid("session-title"),
        &format!("Offline {}", PENDING - 1),
    )
    .await?;
    let accepted = server
        .log()
        .lines()
        .filter(|l| l.contains("command accepted"))
        .count();
    ensure!(
        accepted == PENDING,
        "the server accepted {accepted} commands, expected {PENDING}"
    );
    rows.push(Row {
        metric: format!("queue {PENDING} renames offline (optimistic, IndexedDB)"),
        value: format!("{:.0} ms", queue_time.as_secs_f64() * 1000.0),
        target: "",
    });
    rows.push(Row {
        metric: "server back (healthy) → first pending command confirmed".into(),
        value: format!(
            "{:.0} ms",
            first_sent.unwrap_or(total).as_secs_f64() * 1000.0
        ),
        target: "",
    });
    rows.push(Row {
        metric: format!("server back (healthy) → all {PENDING} pending commands confirmed"),
        value: format!("{:.0} ms", total.as_secs_f64() * 1000.0),
        target: "< 1000 ms",
    });
    resync_phases(b, back_in_page, rows).await
}

/// Where the resync's time went, from the sync engine's `performance`
/// marks (`client/src/offline/engine.rs`), relative to the server being
/// back.
async fn resync_phases(b: &Browser, back_in_page: f64, rows: &mut Vec<Row>) -> Result<()> {
    let marks = b
        .eval(
            "return performance.getEntriesByType('mark')\
               .filter(m => m.name.startsWith('sextant-sync-'))\
               .map(m => [m.name, m.startTime]);",
            vec![],
        )
        .await?;
    let marks: Vec<(String, f64)> = serde_json::from_value(marks)?;
    let at = |name: &str| {
        marks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t - back_in_page)
    };
    let all = |name: &str| -> Vec<f64> {
        marks
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t - back_in_page)
            .collect()
    };
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
    rows.push(Row {
        metric: "  phase: the page notices the server (health probe)".into(),
        value: ms(at("sextant-sync-server-up")),
        target: "< 250 ms",
    });
    rows.push(Row {
        metric: "  phase: its feed is open".into(),
        value: ms(at("sextant-sync-feed-open")),
        target: "",
    });
    let (sent, answered, settled, stored) = (
        all("sextant-sync-batch-sent"),
        all("sextant-sync-batch-answered"),
        all("sextant-sync-batch-settled"),
        all("sextant-sync-batch-stored"),
    );
    // Sends that failed (the server was still down) have no answer: pair
    // each answer with the send just before it and the marks just after.
    for (i, answered) in answered.iter().enumerate() {
        let last_before = |marks: &[f64]| marks.iter().copied().rev().find(|t| t <= answered);
        let first_after = |marks: &[f64]| marks.iter().copied().find(|t| t >= answered);
        let (Some(sent), Some(settled)) = (last_before(&sent), first_after(&settled)) else {
            continue;
        };
        // Awaited per batch before the writer; since, stored in the
        // background ("-").
        let stored = first_after(&stored)
            .filter(|t| *t >= settled)
            .map_or("-".to_owned(), |t| format!("{:.0}", t - settled));
        rows.push(Row {
            metric: format!(
                "  phase: batch {} (sent at / request / settle / IndexedDB)",
                i + 1
            ),
            value: format!(
                "{sent:.0} / {:.0} / {:.0} / {stored} ms",
                answered - sent,
                settled - answered,
            ),
            target: "",
        });
    }
    let writes = all("sextant-sync-written");
    if let Some(last) = writes.last() {
        rows.push(Row {
            metric: format!(
                "  phase: IndexedDB writes ({} transactions), last done",
                writes.len()
            ),
            value: format!("{last:.0} ms"),
            target: "",
        });
    }
    if let Some((name, t)) = marks
        .iter()
        .find(|(n, _)| n.starts_with("sextant-sync-outbox-empty"))
    {
        rows.push(Row {
            metric: format!(
                "  phase: outbox empty ({})",
                name.trim_start_matches("sextant-sync-outbox-empty ")
            ),
            value: format!("{:.0} ms", t - back_in_page),
            target: "",
        });
    }
    Ok(())
}
