//! `cargo xtask dev`: set up, build the client with trunk (release) and run
//! the server on it. The server prints `Sextant listening on
//! http://127.0.0.1:8080/?token=TOKEN`: the URL to open, which signs the
//! browser in as the admin `owner` (the token is also in DATA_DIR/owner.token).
//! Ctrl-C stops it gracefully.

use anyhow::Result;

use crate::util::{self, Steps};
use crate::{client, setup};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Build the server with optimizations too (the client always is).
    #[arg(long)]
    release: bool,
    /// Address for the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Where the server keeps its event store.
    #[arg(long, default_value = "data")]
    data_dir: String,
    /// More flags for the server, after `--`.
    #[arg(last = true)]
    server_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut steps = Steps::new("dev");
    setup::ensure(&mut steps)?;
    steps.step("client (trunk build --release)", client::build)?;
    steps.finish();

    println!(
        "\n==> starting the server; open the URL it prints below, `Sextant listening on http://…/?token=…`:\n    \
         it signs you in as `owner` (Ctrl-C stops it; add users with `cargo run -p server -- users add NAME --data-dir {}`)\n",
        args.data_dir
    );
    let dist = util::dist_dir();
    let mut server = util::cargo();
    server.args(["run", "--package", "server", "--bin", "server"]);
    if args.release {
        server.arg("--release");
    }
    server
        .arg("--")
        .args(["--bind", &args.bind, "--data-dir", &args.data_dir])
        .arg("--static-dir")
        .arg(&dist)
        .args(&args.server_args);
    util::run(&mut server)
}
