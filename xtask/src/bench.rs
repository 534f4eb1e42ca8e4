//! `cargo xtask bench`: runs the benchmarks, each of which prints a table.
//! Server benches are `[[bench]] harness = false` targets of `server`
//! (`cargo bench -p server`); browser benches join here when they exist.
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
    steps.finish();
    Ok(())
}
