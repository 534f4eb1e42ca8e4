//! `cargo xtask setup`: installs what this machine lacks to build and test
//! Sextant, at pinned versions, and nothing that is already there.
//!
//! - the `wasm32-unknown-unknown` target (rustup);
//! - trunk [`TRUNK_VERSION`] (`cargo install --locked`);
//! - wasm-bindgen-cli at exactly the version of the `wasm-bindgen` crate in
//!   Cargo.lock (the two must match, and trunk must not download its own);
//! - the npm packages of package-lock.json (`npm ci`) when `node_modules` is
//!   missing or older than the lockfile: DuckDB's prebuilt library for the
//!   server, duckdb-wasm, and binaryen's `wasm-opt` for release builds.
//!
//! Chromium and chromedriver are Debian packages (`.ci/run` installs them);
//! setup only checks for them, since installing them needs root.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::util::{self, Steps};

/// The trunk release the project builds with (also `trunk-version` in Trunk.toml).
pub const TRUNK_VERSION: &str = "0.21.14";

pub fn run() -> Result<()> {
    let mut steps = Steps::new("setup");
    ensure(&mut steps)?;
    browser_check(&mut steps, false)?;
    steps.finish();
    Ok(())
}

/// Adds the install steps to `steps`; fast when everything is present.
pub fn ensure(steps: &mut Steps) -> Result<()> {
    steps.step("wasm32 target", ensure_wasm_target)?;
    steps.step("trunk", ensure_trunk)?;
    steps.step("wasm-bindgen-cli", ensure_wasm_bindgen)?;
    steps.step("npm packages", ensure_npm)?;
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    const TARGET: &str = "wasm32-unknown-unknown";
    let sysroot = util::probe("rustc", &["--print", "sysroot"]).context("rustc not found")?;
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        println!("present: {TARGET}");
        return Ok(());
    }
    util::run(util::command("rustup").args(["target", "add", TARGET]))
}

fn ensure_trunk() -> Result<()> {
    let wanted = format!("trunk {TRUNK_VERSION}");
    match util::probe("trunk", &["--version"]) {
        Some(found) if found == wanted => {
            println!("present: {found}");
            return Ok(());
        }
        Some(found) => println!("found {found}, need {wanted}: installing"),
        None => println!("trunk not found: installing {wanted}"),
    }
    util::run(util::cargo().args([
        "install",
        "trunk",
        "--version",
        TRUNK_VERSION,
        "--locked",
        "--force",
    ]))
}

fn ensure_wasm_bindgen() -> Result<()> {
    let version = locked_wasm_bindgen_version()?;
    let wanted = format!("wasm-bindgen {version}");
    match util::probe("wasm-bindgen", &["--version"]) {
        Some(found) if found == wanted => {
            println!("present: {found}");
            return Ok(());
        }
        Some(found) => println!("found {found}, need {wanted} (from Cargo.lock): installing"),
        None => println!("wasm-bindgen not found: installing {wanted}"),
    }
    // Not --locked: the CLI's own lockfile can pin crates that no longer
    // build on the current compiler.
    util::run(util::cargo().args([
        "install",
        "wasm-bindgen-cli",
        "--version",
        &version,
        "--force",
    ]))
}

/// The version of the `wasm-bindgen` crate pinned in Cargo.lock.
pub fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(util::repo_root().join("Cargo.lock"))
        .context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == r#"name = "wasm-bindgen""# {
            if let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
            {
                return Ok(version.to_owned());
            }
        }
    }
    bail!("Cargo.lock pins no wasm-bindgen crate; is client/ a workspace member?")
}

fn ensure_npm() -> Result<()> {
    let root = util::repo_root();
    let lockfile = root.join("package-lock.json");
    // npm writes this hidden lockfile on every install: newer than the real
    // lockfile means node_modules matches it.
    let installed = root.join("node_modules/.package-lock.json");
    let wasm_opt = util::binaryen_bin_dir().join("wasm-opt");
    let up_to_date = wasm_opt.is_file() && modified(&installed)? >= modified(&lockfile)?;
    if up_to_date {
        println!("present: node_modules matches package-lock.json");
        return Ok(());
    }
    // A worktree often links node_modules to another checkout's: `npm ci`
    // would empty the directory it points to (it happened, twice).
    let modules = root.join("node_modules");
    if std::fs::symlink_metadata(&modules).is_ok_and(|m| m.file_type().is_symlink()) {
        let target = std::fs::read_link(&modules).unwrap_or_default();
        println!(
            "node_modules is a link to {}: not reinstalling there (run `npm ci` in that checkout if its packages are stale)",
            target.display()
        );
        return Ok(());
    }
    if util::find_program("npm").is_none() {
        bail!("npm not found: install Node.js and npm (Debian: apt-get install nodejs npm)");
    }
    util::run(util::command("npm").args(["ci", "--no-audit", "--no-fund"]))
}

fn modified(path: &Path) -> Result<Option<std::time::SystemTime>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.modified()?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Checks for headless Chromium and chromedriver, which the browser tests
/// drive. With `required`, their absence is an error.
pub fn browser_check(steps: &mut Steps, required: bool) -> Result<()> {
    steps.step("chromium and chromedriver", || {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find_map(util::find_program);
        let driver = util::find_program("chromedriver");
        match (chromium, driver) {
            (Some(chromium), Some(driver)) => {
                println!("present: {} and {}", chromium.display(), driver.display());
                Ok(())
            }
            _ if required => bail!(
                "the browser tests need Chromium and chromedriver: \
                 apt-get install chromium chromium-driver (.ci/run does)"
            ),
            _ => {
                println!(
                    "missing: the browser tests need `apt-get install chromium chromium-driver`"
                );
                Ok(())
            }
        }
    })
}
