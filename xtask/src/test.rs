//! `cargo xtask test`: every check the project has, in the order that fails
//! cheapest first, stopping at the first failing step:
//!
//! 1. setup (installs what is missing) and the Chromium check;
//! 2. `cargo fmt --check`;
//! 3. `cargo clippy --workspace --all-targets -D warnings` (the client is
//!    linted natively: Leptos and web-sys compile on the host, they only
//!    panic if called outside a browser), then the client again for wasm32,
//!    so its browser-only code is linted as well;
//! 4. `cargo build -p server` (the binary the test suite starts);
//! 5. `cargo build -p shared-domain --target wasm32-unknown-unknown`;
//! 6. `trunk build --release` of the client into `dist/`;
//! 7. `cargo doc -p shared-domain --no-deps` with warnings denied;
//! 8. `cargo test --workspace`: unit, property and doc tests, and the one
//!    integration binary (`tests/`), whose browser tests drive headless
//!    Chromium against the real server serving `dist/`;
//! 9. `cargo test -p client --target wasm32-unknown-unknown`: the client's
//!    wasm-bindgen-test suites in headless Chromium (runner in
//!    `.cargo/config.toml`, flags in `client/webdriver.json`).
//!
//! It ends with one line `tests: N passed, N failed, N skipped` summed over
//! every test binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::util::{self, Steps};
use crate::{client, setup};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments for the test binaries, after `--` (e.g. a test name filter).
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let summary_file = util::target_dir().join("xtask-test-summary.txt");
    let _ = std::fs::remove_file(&summary_file);
    let mut steps = Steps::new("test");
    setup::ensure(&mut steps)?;
    setup::browser_check(&mut steps, true)?;
    steps.step("fmt", || {
        util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    steps.step("clippy", || {
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // The browser-only code (`cfg(target_arch = "wasm32")`) is linted too.
    steps.step("clippy (client, wasm32)", || {
        util::run(util::cargo().args([
            "clippy",
            "--package",
            "client",
            "--target",
            "wasm32-unknown-unknown",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    steps.step("server build", || {
        util::run(util::cargo().args(["build", "--package", "server"]))
    })?;
    steps.step("shared-domain for wasm32", || {
        util::run(util::cargo().args([
            "build",
            "--package",
            "shared-domain",
            "--target",
            "wasm32-unknown-unknown",
        ]))
    })?;
    steps.step("client (trunk build --release)", client::build)?;
    steps.step("shared-domain docs", || {
        util::run(
            util::cargo()
                .args(["doc", "--package", "shared-domain", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    let mut totals = Totals::default();
    let outcome = steps
        .step("tests (native, integration, browser)", || {
            let mut test = util::cargo();
            test.args(["test", "--workspace"])
                .env("SEXTANT_DIST", util::dist_dir());
            if !args.test_args.is_empty() {
                test.arg("--").args(&args.test_args);
            }
            run_counted(test, &mut totals, args.test_args.is_empty())
        })
        .and_then(|()| {
            steps.step("client tests in Chromium (wasm-bindgen-test)", || {
                let mut test = util::cargo();
                test.args([
                    "test",
                    "--package",
                    "client",
                    "--target",
                    "wasm32-unknown-unknown",
                ]);
                if let Some(driver) = util::find_program("chromedriver") {
                    test.env("CHROMEDRIVER", driver);
                }
                if !args.test_args.is_empty() {
                    test.arg("--").args(&args.test_args);
                }
                run_counted(test, &mut totals, args.test_args.is_empty())
            })
        });
    // The summary is printed (and kept for .ci/run) whether or not tests failed.
    let _ = std::fs::write(&summary_file, totals.summary_line() + "\n");
    if outcome.is_ok() {
        steps.finish(); // a failed step has printed the table already
    }
    println!("{}", totals.summary_line());
    outcome
}

/// Runs a `cargo test` command, echoing its output while adding the
/// `test result:` lines of every test binary to `totals`. Unless a filter
/// was given (`require_tests` false), running no test at all is a failure.
fn run_counted(mut test: Command, totals: &mut Totals, require_tests: bool) -> Result<()> {
    test.stdout(Stdio::piped());
    println!("$ {}", util::describe(&test));
    let mut child = test.spawn().context("could not start cargo test")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let before = totals.passed;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test exited with {status}");
    }
    if totals.failed > 0 {
        bail!("{} tests failed", totals.failed);
    }
    if require_tests && totals.passed == before {
        bail!("cargo test ran no test");
    }
    Ok(())
}

/// Test counts summed over `test result: ok. 3 passed; 0 failed; 1 ignored; …` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }

    fn summary_line(&self) -> String {
        format!(
            "tests: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_result_lines_of_every_binary() {
        let mut totals = Totals::default();
        for line in [
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 10 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.50s",
            "test passed ... ok",
        ] {
            totals.add_line(line);
        }
        assert_eq!(
            totals,
            Totals {
                passed: 13,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(
            totals.summary_line(),
            "tests: 13 passed, 2 failed, 1 skipped"
        );
    }
}
