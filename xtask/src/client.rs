//! Building the browser client: `trunk build --release` into `dist/`.
//!
//! Trunk finds wasm-bindgen (from `cargo install`) and binaryen's wasm-opt
//! (from npm) on the tool PATH and must never download them (Trunk.toml
//! pins their versions, so a mismatch is an error, not a download).

use anyhow::{ensure, Result};

use crate::util;

/// Builds `client/` with trunk into [`util::dist_dir`].
pub fn build() -> Result<()> {
    util::run(util::command("trunk").args(["build", "--release"]))?;
    let index = util::dist_dir().join("index.html");
    ensure!(index.is_file(), "trunk did not write {}", index.display());
    Ok(())
}
