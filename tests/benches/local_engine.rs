//! The local engine's benchmark (issues 6 and 13), printed as a table: the
//! same aggregation over the same rows in duckdb-wasm (headless Chromium,
//! the dataset taken offline as Arrow IPC into an in-memory table) and in
//! the native DuckDB the server uses, at equal thread counts: duckdb-wasm's
//! threaded COI build in the cross-origin isolated page with all the
//! browser's cores and with one thread, its single-threaded EH build in a
//! page served without isolation (`--no-cross-origin-isolation`), native
//! DuckDB on the same in-memory table with the same thread counts (and over
//! the Parquet file); what taking the dataset offline costs; and
//! duckdb-wasm's start-up, cold and from the service-worker cache with the
//! server stopped. Real parts: the release server serving the trunk-built
//! `dist/`.
//!
//! Run with `cargo xtask bench`, or after `trunk build --release` and
//! `cargo build --release -p server`:
//! `cargo bench -p sextant-tests --bench local_engine`
//! (`SEXTANT_BENCH_LOCAL_ROWS` changes the row count, default 1,000,000).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sextant_tests::browser::{dist_dir, testid, Browser};
use sextant_tests::ServerProcess;

const RUNS: usize = 5;
const SQL: &str = "SELECT borough, payment_type, count(*) AS trips, sum(fare) AS fares, \
                   avg(distance_km) AS km, max(tip) AS max_tip, min(pickup_at) AS first_pickup \
                   FROM bench GROUP BY borough, payment_type ORDER BY borough, payment_type";

fn gzip_len(path: &Path) -> Result<u64> {
    let output = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .context("running gzip")?;
    Ok(output.stdout.len() as u64)
}

fn leb128(bytes: &[u8], at: &mut usize) -> Result<u64> {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = *bytes.get(*at).context("truncated wasm")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Bytes of function bodies in a wasm module, in total and for functions
/// whose (mangled) name lies in `path` (e.g. `6client6duckdb`), from the
/// module's name section. Only imported functions shift the indices here,
/// since rustc's output imports nothing else.
fn code_attribution(wasm: &[u8], path: &str) -> Result<(u64, u64)> {
    let mut at = 8;
    let mut imported = 0u64;
    let mut bodies = Vec::new();
    let mut names = std::collections::HashMap::new();
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let size = leb128(wasm, &mut at)? as usize;
        let end = at + size;
        let mut p = at;
        match id {
            2 => {
                for _ in 0..leb128(wasm, &mut p)? {
                    for _ in 0..2 {
                        let len = leb128(wasm, &mut p)? as usize;
                        p += len;
                    }
                    let kind = wasm[p];
                    p += 1;
                    match kind {
                        0 => {
                            leb128(wasm, &mut p)?;
                            imported += 1;
                        }
                        1 | 2 => {
                            if kind == 1 {
                                p += 1;
                            }
                            let flags = wasm[p];
                            p += 1;
                            leb128(wasm, &mut p)?;
                            if flags & 1 == 1 {
                                leb128(wasm, &mut p)?;
                            }
                        }
                        _ => p += 2,
                    }
                }
            }
            10 => {
                for _ in 0..leb128(wasm, &mut p)? {
                    let len = leb128(wasm, &mut p)?;
                    bodies.push(len);
                    p += len as usize;
                }
            }
            0 => {
                let len = leb128(wasm, &mut p)? as usize;
                if &wasm[p..p + len] == b"name" {
                    p += len;
                    while p < end {
                        let sub = wasm[p];
                        p += 1;
                        let sub_len = leb128(wasm, &mut p)? as usize;
                        let sub_end = p + sub_len;
                        if sub == 1 {
                            for _ in 0..leb128(wasm, &mut p)? {
                                let index = leb128(wasm, &mut p)?;
                                let len = leb128(wasm, &mut p)? as usize;
                                names.insert(
                                    index,
                                    String::from_utf8_lossy(&wasm[p..p + len]).into_owned(),
                                );
                                p += len;
                            }
                        }
                        p = sub_end;
                    }
                }
            }
            _ => {}
        }
        at = end;
    }
    if names.is_empty() {
        bail!("the module has no name section");
    }
    let total = bodies.iter().sum();
    let ours = bodies
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            names
                .get(&(*i as u64 + imported))
                .is_some_and(|name| name.contains(path))
        })
        .map(|(_, len)| len)
        .sum();
    Ok((total, ours))
}

/// The size rows: the bindings' share of the app wasm, and what duckdb-wasm
/// itself adds (loaded only when a local query needs it).
fn sizes(dist: &Path) -> Result<Vec<(String, String)>> {
    let kib = |bytes: u64| format!("{:.0} KiB", bytes as f64 / 1024.0);
    let mut rows = Vec::new();
    let app = std::fs::read_dir(dist)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_bg.wasm"))
        .context("no *_bg.wasm in dist/")?;
    let app_raw = std::fs::metadata(&app)?.len();
    rows.push((
        "app wasm (wasm-opt -Oz), raw / gzip -9".into(),
        format!("{} / {}", kib(app_raw), kib(gzip_len(&app)?)),
    ));
    // Trunk's cargo output before wasm-bindgen and wasm-opt keeps the names.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| sextant_tests::repo_root().join("target"));
    let unoptimized = target.join("wasm32-unknown-unknown/wasm-release/client.wasm");
    match std::fs::read(&unoptimized) {
        Ok(wasm) => {
            let (total, ours) = code_attribution(&wasm, "6client6duckdb")?;
            let share = ours as f64 / total as f64;
            rows.push((
                "bindings (client::duckdb) code, by symbol before wasm-opt".into(),
                format!(
                    "{} of {} ({:.1} %, ≈ {} of the final app wasm)",
                    kib(ours),
                    kib(total),
                    share * 100.0,
                    kib((app_raw as f64 * share) as u64)
                ),
            ));
        }
        Err(error) => rows.push((
            "bindings (client::duckdb) code".into(),
            format!("not measured ({}: {error})", unoptimized.display()),
        )),
    }
    for (file, label) in [
        (
            "duckdb-bridge.js",
            "bridge JS (bundled duckdb-wasm API + arrow), lazy",
        ),
        (
            "duckdb-browser-eh.worker.js",
            "duckdb-wasm worker (EH), lazy",
        ),
        ("duckdb-eh.wasm", "duckdb-wasm module (EH), lazy"),
        (
            "duckdb-browser-coi.worker.js",
            "duckdb-wasm worker (COI, threads), lazy",
        ),
        (
            "duckdb-browser-coi.pthread.worker.js",
            "duckdb-wasm thread worker (COI), lazy",
        ),
        ("duckdb-coi.wasm", "duckdb-wasm module (COI, threads), lazy"),
    ] {
        let path = dist.join("duckdb-wasm").join(file);
        let raw = std::fs::metadata(&path)
            .with_context(|| format!("{} missing", path.display()))?
            .len();
        rows.push((
            format!("{label}, raw / gzip -9"),
            format!("{} / {}", kib(raw), kib(gzip_len(&path)?)),
        ));
    }
    Ok(rows)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median of `RUNS` runs after one warm-up, in ms, and the groups.
fn native(connection: &duckdb::Connection) -> Result<(f64, usize)> {
    let run = || -> Result<(f64, usize)> {
        let started = Instant::now();
        let mut statement = connection.prepare(SQL)?;
        let groups = statement.query_map([], |_| Ok(()))?.count();
        Ok((started.elapsed().as_secs_f64() * 1000.0, groups))
    };
    let (_, groups) = run()?;
    let times = (0..RUNS)
        .map(|_| run().map(|(ms, _)| ms))
        .collect::<Result<Vec<_>>>()?;
    Ok((median(times), groups))
}

/// Runs `body` (an async function body using `bridge`, the loaded module)
/// in the page and returns what it returns.
async fn in_page(browser: &Browser, body: &str) -> Result<Value> {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         (async () => {{
           const bridge = await import('/duckdb-wasm/duckdb-bridge.js');
           {body}
         }})().then(done, (e) => done({{ error: String(e && e.message || e) }}));"
    );
    let value = browser.eval_async(&script, vec![]).await?;
    if let Some(error) = value.get("error") {
        bail!("in the page: {error}");
    }
    Ok(value)
}

async fn set_script_timeout(browser: &Browser) -> Result<()> {
    browser
        .client
        .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
            Some(Duration::from_secs(300)),
            None,
            None,
        ))
        .await
        .context("setting the script timeout")
}

/// duckdb-wasm in the page at `url`: start-up (cold), taking `bench`
/// offline, then the query's median time with each of `threads` (the
/// engine's `threads` setting; the single-threaded build ignores it).
async fn wasm_engine(browser: &Browser, url: &str, threads: &[u64]) -> Result<Value> {
    browser.goto(url).await?;
    // The service worker controls the page, so it caches duckdb-wasm's
    // files as they are fetched.
    browser
        .wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
        .await?;
    let cold = in_page(
        browser,
        "const t0 = performance.now();
         const db = await bridge.start();
         const ms = performance.now() - t0;
         window.__benchDb = db;
         return { ms, bundle: db.bundle, threads: db.threads, isolated: self.crossOriginIsolated };",
    )
    .await?;
    let offline = in_page(
        browser,
        "const db = window.__benchDb;
         const t0 = performance.now();
         const response = await fetch('/api/datasets/bench/download');
         const bytes = new Uint8Array(await response.arrayBuffer());
         const size = bytes.length; // the buffer is transferred to the worker
         const t1 = performance.now();
         await db.insertArrowIpc('bench', bytes);
         const t2 = performance.now();
         return { download_ms: t1 - t0, insert_ms: t2 - t1, bytes: size };",
    )
    .await?;
    let mut runs = Vec::new();
    for &n in threads {
        let local = in_page(
            browser,
            &format!(
                "const db = window.__benchDb;
                 if (db.bundle === 'coi') await db.run('SET threads = {n}', 1);
                 const setting = JSON.parse(await db.run(\"SELECT current_setting('threads')\", 1)).rows[0][0];
                 const sql = {sql};
                 const first = JSON.parse(await db.run(sql, 100000));
                 const times = [];
                 for (let i = 0; i < {RUNS}; i++) {{
                   const t0 = performance.now();
                   await db.run(sql, 100000);
                   times.push(performance.now() - t0);
                 }}
                 return {{ times, groups: first.rows.length, threads: setting }};",
                sql = json!(SQL)
            ),
        )
        .await?;
        runs.push(local);
    }
    in_page(browser, "await window.__benchDb.terminate(); return {};").await?;
    Ok(json!({ "cold": cold, "offline": offline, "runs": runs }))
}

/// The median of a run's times and its group count.
fn run_median(run: &Value) -> Result<(f64, usize, u64)> {
    let times: Vec<f64> = run["times"]
        .as_array()
        .context("times")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    Ok((
        median(times),
        run["groups"].as_u64().unwrap_or(0) as usize,
        run["threads"].as_u64().unwrap_or(0),
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let rows: u64 = std::env::var("SEXTANT_BENCH_LOCAL_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let data = tempfile::tempdir()?;
    let datasets = data.path().join("datasets");
    let parquet = datasets.join("bench.parquet");
    let parquet_bytes = server::query::demo::write_trips(&parquet, rows)?;

    let dist = dist_dir();
    let size_rows = sizes(&dist)?;
    let args = [
        "--static-dir",
        dist.to_str().context("utf-8 path")?,
        "--no-demo",
    ];
    let server = ServerProcess::start(data.path(), &args)?;
    // The same datasets, served without cross-origin isolation.
    let plain_data = tempfile::tempdir()?;
    let plain = ServerProcess::start(
        plain_data.path(),
        &[
            args[0],
            args[1],
            args[2],
            "--datasets-dir",
            datasets.to_str().context("utf-8 path")?,
            "--no-cross-origin-isolation",
        ],
    )?;
    let browser = Browser::launch().await?;
    let outcome = async {
        set_script_timeout(&browser).await?;
        browser.goto(&server.url()).await?;
        let cores = browser
            .eval("return navigator.hardwareConcurrency;", vec![])
            .await?
            .as_u64()
            .context("hardwareConcurrency")?
            .clamp(1, 16);
        let threaded = wasm_engine(&browser, &server.url(), &[cores, 1]).await?;
        let single = wasm_engine(&browser, &plain.url(), &[1]).await?;
        // The server goes away: the reloaded page and duckdb-wasm come from
        // the service worker's cache.
        browser.goto(&server.url()).await?;
        browser.wait_for(&testid("app-ready")).await?;
        server.stop()?;
        browser.reload().await?;
        browser.wait_for(&testid("app-ready")).await?;
        let cached = in_page(
            &browser,
            "const t0 = performance.now();
             const db = await bridge.start();
             const ms = performance.now() - t0;
             const bundle = db.bundle;
             await db.terminate();
             return { ms, bundle };",
        )
        .await?;
        Ok::<_, anyhow::Error>((cores, threaded, single, cached))
    }
    .await;
    let _ = browser.close().await;
    drop(plain);
    let (cores, threaded, single, cached) = outcome?;

    // Native DuckDB, as the server runs it (the same prebuilt library), after
    // the browser is done so that the two never share the cores.
    let connection = duckdb::Connection::open_in_memory()?;
    connection.execute_batch(&format!(
        "SET autoinstall_known_extensions = false; SET autoload_known_extensions = false;
         SET threads = {cores};
         CREATE VIEW bench AS SELECT * FROM read_parquet('{}');",
        parquet.display()
    ))?;
    let (native_parquet_all, groups) = native(&connection)?;
    connection.execute_batch("SET threads = 1")?;
    let (native_parquet_one, _) = native(&connection)?;
    // Like duckdb-wasm after taking the dataset offline: an in-memory table.
    connection.execute_batch(
        "ALTER VIEW bench RENAME TO bench_parquet;
         CREATE TABLE bench AS SELECT * FROM bench_parquet;",
    )?;
    let (native_table_one, _) = native(&connection)?;
    connection.execute_batch(&format!("SET threads = {cores}"))?;
    let (native_table_all, _) = native(&connection)?;
    drop(connection);

    let (coi_all, coi_all_groups, coi_all_threads) = run_median(&threaded["runs"][0])?;
    let (coi_one, coi_one_groups, coi_one_threads) = run_median(&threaded["runs"][1])?;
    let (eh_one, eh_groups, eh_threads) = run_median(&single["runs"][0])?;
    for (engine, got) in [
        ("duckdb-wasm COI", coi_all_groups),
        ("duckdb-wasm COI, 1 thread", coi_one_groups),
        ("duckdb-wasm EH", eh_groups),
    ] {
        if got != groups {
            bail!("{engine} returned {got} groups, native {groups}");
        }
    }
    let bundle = |run: &Value| run["cold"]["bundle"].as_str().unwrap_or("?").to_owned();
    if bundle(&threaded) != "coi" || coi_all_threads != cores || coi_one_threads != 1 {
        bail!(
            "the isolated page ran {} with {coi_all_threads} / {coi_one_threads} threads, \
             expected coi with {cores} / 1: {threaded}",
            bundle(&threaded)
        );
    }
    if bundle(&single) != "eh" || eh_threads != 1 {
        bail!(
            "the page without isolation ran {}: {single}",
            bundle(&single)
        );
    }
    let mb = |bytes: f64| bytes / 1_000_000.0;
    let offline = &threaded["offline"];
    let ipc_bytes = offline["bytes"].as_f64().unwrap_or(0.0);
    println!(
        "\nlocal engine (issues 6, 13): {rows} rows, {groups} groups; median of {RUNS} runs after a warm-up; \
         the browser reports {cores} cores"
    );
    println!("| metric | value |");
    println!("|---|---:|");
    println!(
        "| native DuckDB 1.4.3, in-memory table, {cores} threads | {native_table_all:.1} ms |"
    );
    println!(
        "| duckdb-wasm 1.32.0 COI, in-memory table from Arrow, {cores} threads | {coi_all:.1} ms |"
    );
    println!(
        "| ratio duckdb-wasm COI / native, {cores} threads | {:.2}x |",
        coi_all / native_table_all
    );
    println!("| native DuckDB 1.4.3, in-memory table, 1 thread | {native_table_one:.1} ms |");
    println!("| duckdb-wasm 1.32.0 COI, in-memory table, 1 thread | {coi_one:.1} ms |");
    println!(
        "| ratio duckdb-wasm COI / native, 1 thread | {:.2}x |",
        coi_one / native_table_one
    );
    println!(
        "| duckdb-wasm 1.32.0 EH (no isolation), in-memory table, 1 thread | {eh_one:.1} ms |"
    );
    println!(
        "| ratio duckdb-wasm EH / native, 1 thread | {:.2}x |",
        eh_one / native_table_one
    );
    println!(
        "| speed-up duckdb-wasm COI {cores} threads vs EH | {:.2}x |",
        eh_one / coi_all
    );
    println!(
        "| speed-up native {cores} threads vs 1 (same table) | {:.2}x |",
        native_table_one / native_table_all
    );
    println!(
        "| native DuckDB 1.4.3, Parquet ({:.1} MB), {cores} threads | {native_parquet_all:.1} ms |",
        mb(parquet_bytes as f64)
    );
    println!("| native DuckDB 1.4.3, Parquet, 1 thread | {native_parquet_one:.1} ms |");
    println!(
        "| take offline: download {:.1} MB Arrow IPC | {:.0} ms |",
        mb(ipc_bytes),
        offline["download_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "| take offline: insert into duckdb-wasm (COI) | {:.0} ms |",
        offline["insert_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "| duckdb-wasm start-up, cold (fetch + compile + open): COI / EH | {:.0} / {:.0} ms |",
        threaded["cold"]["ms"].as_f64().unwrap_or(0.0),
        single["cold"]["ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "| duckdb-wasm start-up, service-worker cache, server stopped ({}) | {:.0} ms |",
        cached["bundle"].as_str().unwrap_or("?"),
        cached["ms"].as_f64().unwrap_or(0.0)
    );
    for (metric, value) in size_rows {
        println!("| {metric} | {value} |");
    }
    Ok(())
}
