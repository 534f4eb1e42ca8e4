//! Puts the directory of the prebuilt libduckdb.so (`DUCKDB_LIB_DIR`, set in
//! `.cargo/config.toml`) into the rpath of the test suite (build-script link args
//! apply only to their own package), so it runs without `LD_LIBRARY_PATH`.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if let Ok(dir) = std::env::var("DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
