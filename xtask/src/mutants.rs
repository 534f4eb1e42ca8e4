//! `cargo xtask mutants`: how much wrong code the tests would let through.
//!
//! Runs cargo-mutants ([`CARGO_MUTANTS_VERSION`], installed when missing)
//! over two targets, each with the test suites that exercise it:
//! - `shared-domain` with its own unit, property and integration tests;
//! - the server's `pipeline`, `store` and `sse` modules with the server's
//!   unit tests and the integration suite's process-level areas (API,
//!   store, SSE, crash, sync client), not the browser tests.
//!
//! It prints caught / missed / unviable / timeouts per file and writes the
//! table, with the command, into `docs/TESTING.md` between the
//! `mutants-table` markers. Slow (tens of minutes): not part of
//! `cargo xtask test`. `--in-diff FILE` limits a run to the mutants a diff
//! touches (`git diff main > d.diff`), which is what a CI step can afford.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::{self, Steps};

pub const CARGO_MUTANTS_VERSION: &str = "27.1.0";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only `shared-domain` or only `server` (default: both).
    #[arg(long, value_parser = ["shared-domain", "server"])]
    only: Option<String>,
    /// Test only the mutants in the lines this diff changes.
    #[arg(long)]
    in_diff: Option<PathBuf>,
    /// Do not rewrite docs/TESTING.md (print the table only).
    #[arg(long)]
    no_docs: bool,
}

/// One cargo-mutants run: what it mutates and which tests judge it.
struct Target {
    name: &'static str,
    args: &'static [&'static str],
    /// Arguments for the test binaries (after `--`).
    test_args: &'static [&'static str],
}

const TARGETS: &[Target] = &[
    Target {
        name: "shared-domain",
        args: &["--package", "shared-domain"],
        test_args: &[],
    },
    Target {
        name: "server",
        args: &[
            "--package",
            "server",
            "--file",
            "server/src/pipeline.rs",
            "--file",
            "server/src/store/**/*.rs",
            "--file",
            "server/src/sse.rs",
            "--test-package",
            "server",
            "--test-package",
            "sextant-tests",
        ],
        // The suite's process-level areas; the browser areas test the client.
        test_args: &[
            "--skip",
            "browser::",
            "--skip",
            "workbench::",
            "--skip",
            "local_engine::",
        ],
    },
];

pub fn run(args: Args) -> Result<()> {
    let mut steps = Steps::new("mutants");
    steps.step("cargo-mutants", ensure_cargo_mutants)?;
    let mut rows = Vec::new();
    for target in TARGETS {
        if args.only.as_deref().is_some_and(|only| only != target.name) {
            continue;
        }
        let output = util::target_dir().join("mutants").join(target.name);
        steps.step(&format!("mutants of {}", target.name), || {
            let mut command = util::cargo();
            command
                .args(["mutants", "--no-shuffle", "--timeout-multiplier", "3"])
                .args(target.args)
                .arg("--output")
                .arg(&output);
            if let Some(diff) = &args.in_diff {
                command.arg("--in-diff").arg(diff);
            }
            if !target.test_args.is_empty() {
                // cargo-mutants passes what follows its `--` to `cargo test`;
                // the second `--` hands the rest to the test binaries.
                command.arg("--").arg("--").args(target.test_args);
            }
            // cargo-mutants exits 2 when mutants were missed: that is a
            // finding for the table, not a failure of this command.
            println!("$ {}", util::describe(&command));
            let status = command.status().context("running cargo mutants")?;
            match status.code() {
                Some(0 | 2 | 3) => Ok(()),
                _ => bail!("cargo mutants failed ({status}); see {}", output.display()),
            }
        })?;
        rows.extend(count_outcomes(target.name, &output.join("mutants.out"))?);
    }
    steps.finish();
    let table = render_table(&rows);
    println!("\n{table}");
    if !args.no_docs && args.in_diff.is_none() && args.only.is_none() {
        write_docs(&table)?;
        println!("written to docs/TESTING.md");
    }
    Ok(())
}

fn ensure_cargo_mutants() -> Result<()> {
    let wanted = format!("cargo-mutants {CARGO_MUTANTS_VERSION}");
    match util::probe(util::cargo_program(), &["mutants", "--version"]) {
        Some(found) if found == wanted => {
            println!("present: {found}");
            return Ok(());
        }
        Some(found) => println!("found {found}, need {wanted}: installing"),
        None => println!("cargo-mutants not found: installing {wanted}"),
    }
    util::run(util::cargo().args([
        "install",
        "cargo-mutants",
        "--version",
        CARGO_MUTANTS_VERSION,
        "--locked",
        "--force",
    ]))
}

/// Outcome counts of one source file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    caught: u32,
    missed: u32,
    unviable: u32,
    timeout: u32,
}

impl Counts {
    /// Caught among the mutants that built (timeouts count as caught: the
    /// tests noticed the program no longer finishes).
    fn score(&self) -> Option<f64> {
        let viable = self.caught + self.missed + self.timeout;
        (viable > 0).then(|| f64::from(self.caught + self.timeout) * 100.0 / f64::from(viable))
    }
}

/// Per-file counts from cargo-mutants' `caught.txt`, `missed.txt`,
/// `unviable.txt` and `timeout.txt` (one `file:line:col: mutant` per line).
fn count_outcomes(target: &str, dir: &Path) -> Result<Vec<(String, String, Counts)>> {
    let mut files: BTreeMap<String, Counts> = BTreeMap::new();
    for (list, field) in [
        ("caught.txt", 0),
        ("missed.txt", 1),
        ("unviable.txt", 2),
        ("timeout.txt", 3),
    ] {
        let text = match std::fs::read_to_string(dir.join(list)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {list}")),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let file = line.split(':').next().unwrap_or(line).to_owned();
            let counts = files.entry(file).or_default();
            match field {
                0 => counts.caught += 1,
                1 => counts.missed += 1,
                2 => counts.unviable += 1,
                _ => counts.timeout += 1,
            }
        }
    }
    Ok(files
        .into_iter()
        .map(|(file, counts)| (target.to_owned(), file, counts))
        .collect())
}

fn render_table(rows: &[(String, String, Counts)]) -> String {
    let mut out = String::from(
        "| target | file | caught | missed | unviable | timeouts | caught of viable |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut totals: BTreeMap<&str, Counts> = BTreeMap::new();
    for (target, file, c) in rows {
        out += &format!(
            "| {target} | `{file}` | {} | {} | {} | {} | {} |\n",
            c.caught,
            c.missed,
            c.unviable,
            c.timeout,
            percent(c.score())
        );
        let t = totals.entry(target).or_default();
        t.caught += c.caught;
        t.missed += c.missed;
        t.unviable += c.unviable;
        t.timeout += c.timeout;
    }
    for (target, c) in totals {
        out += &format!(
            "| **{target}** | all | {} | {} | {} | {} | {} |\n",
            c.caught,
            c.missed,
            c.unviable,
            c.timeout,
            percent(c.score())
        );
    }
    out
}

fn percent(score: Option<f64>) -> String {
    score.map_or_else(|| "n/a".into(), |s| format!("{s:.0}%"))
}

const BEGIN: &str = "<!-- mutants-table:begin -->";
const END: &str = "<!-- mutants-table:end -->";

/// Replaces the table between the markers of docs/TESTING.md.
fn write_docs(table: &str) -> Result<()> {
    let path = util::repo_root().join("docs/TESTING.md");
    let text = std::fs::read_to_string(&path).context("reading docs/TESTING.md")?;
    let (Some(start), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("docs/TESTING.md lacks the {BEGIN} … {END} markers");
    };
    let updated = format!("{}{BEGIN}\n{table}{}", &text[..start], &text[end..]);
    std::fs::write(&path, updated).context("writing docs/TESTING.md")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_list_per_file_and_scores_viable_mutants() {
        let dir = tempfile_dir();
        std::fs::write(
            dir.join("caught.txt"),
            "src/a.rs:1:1: replace f -> bool with true\nsrc/a.rs:2:1: x\nsrc/b.rs:3:1: y\n",
        )
        .unwrap();
        std::fs::write(dir.join("missed.txt"), "src/a.rs:9:1: z\n").unwrap();
        std::fs::write(dir.join("unviable.txt"), "src/b.rs:4:1: w\n").unwrap();
        let rows = count_outcomes("t", &dir).unwrap();
        assert_eq!(rows.len(), 2);
        let a = &rows[0].2;
        assert_eq!((a.caught, a.missed, a.unviable, a.timeout), (2, 1, 0, 0));
        assert_eq!(percent(a.score()), "67%");
        let table = render_table(&rows);
        assert!(
            table.contains("| **t** | all | 3 | 1 | 1 | 0 | 75% |"),
            "{table}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
