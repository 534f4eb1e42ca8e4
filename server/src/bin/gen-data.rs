//! `gen-data`: writes a large synthetic trips dataset as Parquet, generated
//! by DuckDB itself (a trusted in-memory instance). Run by
//! `cargo xtask gen-data --rows N`; the output defaults to the server's
//! datasets directory, so the file is a dataset as soon as it is written.

use std::path::PathBuf;

use clap::Parser;

/// Writes synthetic taxi trips (dates, categories, amounts) as Parquet.
#[derive(Debug, Parser)]
#[command(name = "gen-data", about)]
struct Args {
    /// How many rows to write.
    #[arg(long, default_value_t = 100_000_000)]
    rows: u64,
    /// The Parquet file to write (its stem becomes the dataset name).
    #[arg(long, default_value = "data/datasets/trips.parquet")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let bytes = server::query::demo::write_trips(&args.out, args.rows)?;
    println!(
        "wrote {} rows ({:.1} MB) to {}",
        args.rows,
        bytes as f64 / 1e6,
        args.out.display()
    );
    Ok(())
}
