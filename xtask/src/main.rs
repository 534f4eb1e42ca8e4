//! `cargo xtask <command>`: Sextant's automation, written in Rust so it runs
//! the same on every machine (the alias lives in `.cargo/config.toml`).
//!
//! Each subcommand is one module with a `run` function; `util` holds the
//! shared plumbing (step headers, running programs, paths, tool PATH).
//! To add a subcommand: add a module, a variant to [`Command`] and one
//! dispatch line in `main`.

mod bench;
mod client;
mod dev;
mod duckdb_bundle;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sextant's developer commands.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing: the wasm32 target, trunk, wasm-bindgen-cli, npm packages.
    Setup,
    /// Set up, build the client with trunk and run the server on it (prints the URL).
    Dev(dev::Args),
    /// Every check: fmt, clippy, builds (native, wasm, trunk), docs and all tests.
    Test(test::Args),
    /// Run the benchmarks (`cargo bench -p server`), which print tables.
    Bench(bench::Args),
    /// Bundle the duckdb-wasm bridge and copy its wasm into client/duckdb-wasm/ (trunk's pre_build hook).
    DuckdbBundle,
    // Further subcommands (e.g. `gen-data`) go here, each with its own module.
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Dev(args) => dev::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => bench::run(args),
        Command::DuckdbBundle => duckdb_bundle::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nxtask FAILED: {error:#}");
            ExitCode::FAILURE
        }
    }
}
