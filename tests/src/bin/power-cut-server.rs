//! The real server with its event store on the power-cut VFS
//! ([`sextant_tests::vfs`]), for the power-cut tests and bench.
//!
//! `power-cut-server <data-dir> <full|normal> <ops>`: starts the server on
//! an ephemeral loopback port, prints `Sextant listening on http://…`, then
//! cuts the power at the `ops`-th write or sync of the event store from that
//! moment (every write not yet fsynced is lost) and exits with
//! [`sextant_tests::power_cut::POWER_CUT_EXIT`].

use clap_free_args::Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let vfs = sextant_tests::vfs::TestVfs::register("power-cut");
    let mut config = server::Config::for_data_dir(&args.data_dir);
    config.durability = args.durability;
    config.sqlite_vfs = Some(vfs.name().to_owned());
    config.no_demo = true;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let running = server::start(config).await?;
        vfs.cut_power_after(args.ops, || {
            eprintln!("power cut");
            std::process::exit(sextant_tests::power_cut::POWER_CUT_EXIT);
        });
        println!("Sextant listening on {}", running.sign_in_url());
        std::future::pending::<anyhow::Result<()>>().await
    })
}

mod clap_free_args {
    //! Three positional arguments; no flag parser needed.
    use std::path::PathBuf;

    use anyhow::Context;
    use server::store::Durability;

    pub struct Args {
        pub data_dir: PathBuf,
        pub durability: Durability,
        pub ops: u64,
    }

    impl Args {
        pub fn parse() -> anyhow::Result<Self> {
            let mut args = std::env::args().skip(1);
            let usage = "usage: power-cut-server <data-dir> <full|normal> <ops>";
            let data_dir = args.next().context(usage)?.into();
            let durability = match args.next().context(usage)?.as_str() {
                "full" => Durability::Full,
                "normal" => Durability::Normal,
                other => anyhow::bail!("unknown durability {other:?}; {usage}"),
            };
            let ops = args.next().context(usage)?.parse().context(usage)?;
            Ok(Self {
                data_dir,
                durability,
                ops,
            })
        }
    }
}
