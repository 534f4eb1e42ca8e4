//! Puts the directory of the prebuilt libduckdb.so (`DUCKDB_LIB_DIR`, set in
//! `.cargo/config.toml`) into the rpath of this package's binaries, tests and
//! benches, so they run without `LD_LIBRARY_PATH` wherever the target dir is.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
