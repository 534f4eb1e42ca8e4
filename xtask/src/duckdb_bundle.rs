//! `cargo xtask duckdb-bundle`: prepares duckdb-wasm for the browser client,
//! all from our own origin (nothing from a CDN, at build or run time).
//!
//! Writes `client/duckdb-wasm/` (gitignored), which `client/index.html`
//! copies into the trunk output with `rel="copy-dir"`:
//! - `duckdb-bridge.js`: `client/js/duckdb-bridge.js` bundled by npm's
//!   esbuild with `@duckdb/duckdb-wasm` and `apache-arrow` (the package's
//!   browser module imports `apache-arrow` by bare name, so it needs a
//!   bundler or an import map);
//! - the threaded build for cross-origin isolated pages (`duckdb-coi.wasm`,
//!   `duckdb-browser-coi.worker.js`, `duckdb-browser-coi.pthread.worker.js`),
//!   the exception-handling build (`duckdb-eh.wasm`, `duckdb-browser-eh.worker.js`)
//!   and the MVP build as fallbacks, copied from `node_modules`;
//! - `duckdb-worker-guard.js`, through which the bridge starts those workers
//!   (copied from `client/js/`);
//! - `parquet-worker.js`: `client/js/parquet-worker.js` (with `parquet.js`)
//!   bundled with npm's `parquet-wasm`, and its `parquet_wasm_bg.wasm`:
//!   Parquet for the local engine (duckdb-wasm's own Parquet support is an
//!   extension it would download at run time), in a module worker the bridge
//!   starts only when a Parquet file is read or written.
//!
//! It also bundles the app's other lazily loaded JavaScript into
//! `client/bundles/` (gitignored, copied to `/bundles/`), each one file with
//! its npm dependencies: `sql-editor.js` (CodeMirror 6 with the DuckDB
//! dialect of `client/js/duckdb-dialect.generated.js`) and `chart.js`
//! (Observable Plot).
//!
//! Trunk runs it as a `pre_build` hook (Trunk.toml), so `trunk serve` and
//! `trunk build` both get it. It only rewrites what is out of date, so it is
//! fast and does not retrigger trunk's watcher; the output is a pure function
//! of package-lock.json and the bridge source, so a fresh clone after
//! `npm ci` builds the same files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use crate::util;

/// The bundles copied next to the bridge, from `@duckdb/duckdb-wasm/dist`.
const DUCKDB_FILES: [&str; 7] = [
    "duckdb-coi.wasm",
    "duckdb-browser-coi.worker.js",
    "duckdb-browser-coi.pthread.worker.js",
    "duckdb-eh.wasm",
    "duckdb-browser-eh.worker.js",
    "duckdb-mvp.wasm",
    "duckdb-browser-mvp.worker.js",
];

/// The script the bridge starts duckdb-wasm's workers through (it reports a
/// module that fails to load, which duckdb-wasm leaves unhandled); copied
/// as it is from `client/js/`.
const WORKER_GUARD: &str = "duckdb-worker-guard.js";

/// The repository this run works on: trunk's hook environment names the
/// client directory (`TRUNK_SOURCE_DIR`), which is exact even when the xtask
/// binary was built from another checkout sharing the target directory.
fn root() -> PathBuf {
    std::env::var_os("TRUNK_SOURCE_DIR")
        .map(PathBuf::from)
        .and_then(|client| client.parent().map(Path::to_path_buf))
        .filter(|root| root.join("package.json").is_file())
        .unwrap_or_else(util::repo_root)
}

/// Where the generated files go (served at `/duckdb-wasm/`).
pub fn out_dir() -> PathBuf {
    root().join("client/duckdb-wasm")
}

/// Where the app's other lazy bundles go (served at `/bundles/`).
pub fn bundles_dir() -> PathBuf {
    root().join("client/bundles")
}

/// The app's lazy bundles: entry file in `client/js/`, same name in [`bundles_dir`].
const APP_BUNDLES: [&str; 2] = ["sql-editor.js", "chart.js"];

fn bridge_source() -> PathBuf {
    root().join("client/js/duckdb-bridge.js")
}

fn duckdb_dist() -> PathBuf {
    root().join("node_modules/@duckdb/duckdb-wasm/dist")
}

/// parquet-wasm's WebAssembly, copied next to `parquet-worker.js`.
const PARQUET_WASM: &str = "parquet_wasm_bg.wasm";

fn parquet_wasm() -> PathBuf {
    root()
        .join("node_modules/parquet-wasm/esm")
        .join(PARQUET_WASM)
}

pub fn run() -> Result<()> {
    let dist = duckdb_dist();
    if !dist.join("duckdb-browser.mjs").is_file() {
        bail!(
            "{} is missing: run `npm ci` (or `cargo xtask setup`) first",
            dist.display()
        );
    }
    let out = out_dir();
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for file in DUCKDB_FILES {
        copy_if_changed(&dist.join(file), &out.join(file))?;
    }
    copy_if_changed(
        &root().join("client/js").join(WORKER_GUARD),
        &out.join(WORKER_GUARD),
    )?;
    bundle(&bridge_source(), &out.join("duckdb-bridge.js"))?;
    copy_if_changed(&parquet_wasm(), &out.join(PARQUET_WASM))?;
    bundle(
        &root().join("client/js/parquet-worker.js"),
        &out.join("parquet-worker.js"),
    )?;
    let bundles = bundles_dir();
    fs::create_dir_all(&bundles).with_context(|| format!("creating {}", bundles.display()))?;
    for name in APP_BUNDLES {
        bundle(&root().join("client/js").join(name), &bundles.join(name))?;
    }
    Ok(())
}

/// Bundles `source` into `target` unless the bundle is newer than every
/// input (any file of `client/js/`, which the entries import, and the lock files).
fn bundle(source: &Path, target: &Path) -> Result<()> {
    let mut inputs = vec![
        source.to_path_buf(),
        root().join("package-lock.json"),
        root().join("node_modules/.package-lock.json"),
    ];
    let sources = root().join("client/js");
    for entry in fs::read_dir(&sources).with_context(|| format!("reading {}", sources.display()))? {
        inputs.push(entry?.path());
    }
    let target_time = modified(target);
    if target_time.is_some() && inputs.iter().all(|input| modified(input) <= target_time) {
        println!("up to date: {}", target.display());
        return Ok(());
    }
    let esbuild = root().join("node_modules/.bin/esbuild");
    if !esbuild.is_file() {
        bail!("{} is missing: run `npm ci`", esbuild.display());
    }
    util::run(util::command(esbuild).current_dir(root()).args([
        &source.display().to_string(),
        "--bundle",
        "--format=esm",
        "--platform=browser",
        "--target=es2022",
        "--minify",
        "--legal-comments=none",
        "--log-level=warning",
        &format!("--outfile={}", target.display()),
    ]))
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let source = fs::metadata(from).with_context(|| format!("reading {}", from.display()))?;
    if let Ok(existing) = fs::metadata(to) {
        if existing.len() == source.len() && existing.modified()? >= source.modified()? {
            return Ok(());
        }
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    println!("copied {}", to.display());
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}
