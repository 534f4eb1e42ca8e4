//! `cargo xtask bench`: runs the benchmarks, each of which prints a table.
//! Server benches are `[[bench]] harness = false` targets of `server`
//! (`cargo bench -p server`); the browser app's bench is a `harness = false`
//! bench of the tests crate (`tests/benches/browser.rs`), run on the release
//! server and the trunk release build; so is the local engine's
//! (`tests/benches/local_engine.rs`, duckdb-wasm vs native DuckDB), and the
//! power-cut campaign (`tests/benches/power_cut.rs`, 100 cycles per mode).
//! The accounts fuzz campaign runs last with 100,000 cases (CI runs 300).
//! Record ratios in docs/BENCHMARKS.md with the command that made them.

use anyhow::Result;

use crate::util::{self, Steps};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments for the bench binaries, after `--` (e.g. a bench name filter).
    #[arg(last = true)]
    bench_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut steps = Steps::new("bench");
    crate::setup::ensure(&mut steps)?;
    steps.step("server benches (cargo bench -p server)", || {
        let mut bench = util::cargo();
        bench.args(["bench", "--package", "server"]);
        if !args.bench_args.is_empty() {
            bench.arg("--").args(&args.bench_args);
        }
        util::run(&mut bench)
    })?;
    // Power cuts under the store during write load (issue 12): 100 cycles
    // per durability mode (SEXTANT_POWER_CUT_CYCLES to change).
    steps.step(
        "power-cut bench (cargo bench -p sextant-tests --bench power_cut)",
        || {
            util::run(util::cargo().args([
                "bench",
                "--package",
                "sextant-tests",
                "--bench",
                "power_cut",
            ]))
        },
    )?;
    // The browser app (issue 5): the release server serving the trunk build.
    steps.step("client (trunk build --release)", crate::client::build)?;
    steps.step("server release build", || {
        util::run(util::cargo().args(["build", "--release", "--package", "server"]))
    })?;
    steps.step(
        "browser app bench (cargo bench -p sextant-tests --bench browser)",
        || {
            util::run(util::cargo().args([
                "bench",
                "--package",
                "sextant-tests",
                "--bench",
                "browser",
            ]))
        },
    )?;
    // The local engine (issue 6): duckdb-wasm vs native DuckDB, taking
    // data offline, duckdb-wasm start-up; same release server and build.
    steps.step(
        "local engine bench (cargo bench -p sextant-tests --bench local_engine)",
        || {
            util::run(util::cargo().args([
                "bench",
                "--package",
                "sextant-tests",
                "--bench",
                "local_engine",
            ]))
        },
    )?;
    // Several nodes (issue 14): durable commands/s with 64 issuers on one
    // node on SQLite, one and three nodes on a throwaway PostgreSQL cluster.
    steps.step(
        "nodes bench (cargo bench -p sextant-tests --bench nodes)",
        || {
            util::run(util::cargo().args([
                "bench",
                "--package",
                "sextant-tests",
                "--bench",
                "nodes",
            ]))
        },
    )?;
    // The accounts fuzz campaign (issue 10): 100,000 generated requests
    // against a real server; it prints the count and the statuses seen.
    steps.step(
        "fuzz campaign (100,000 requests against a real server)",
        || {
            util::run(
                util::cargo()
                    .args([
                        "test",
                        "--package",
                        "sextant-tests",
                        "--test",
                        "suite",
                        "--",
                        "fuzz::",
                        "--nocapture",
                    ])
                    .env("SEXTANT_FUZZ_CASES", "100000"),
            )
        },
    )?;
    steps.finish();
    Ok(())
}
