//! duckdb-wasm in the browser: the only module that speaks to it.
//!
//! - `bridge`: the wasm-bindgen declarations of `client/js/duckdb-bridge.js`,
//!   which esbuild bundles with `@duckdb/duckdb-wasm` (see
//!   `xtask/src/duckdb_bundle.rs`); everything is served from our origin at
//!   `/duckdb-wasm/`, extension autoloading is off.
//! - `engine`: [`LocalDb`], one duckdb-wasm per page in a Web Worker:
//!   queries with DuckDB's type names and the server's JSON conventions,
//!   cancellation, files and Arrow IPC.
//! - `local_data`: files opened in the browser and offline copies, kept in
//!   OPFS and loaded when a statement names them; `names`: their distinct
//!   SQL names and which ones a statement mentions (pure).
//! - `sql`: the pure SQL wrapping (native unit tests).
//!
//! Parquet is read and written by parquet-wasm (`client/js/parquet.js`, in
//! the worker of `client/js/parquet-worker.js`, started on first use):
//! duckdb-wasm's Parquet support is an extension it
//! would download from extensions.duckdb.org at run time.
//!
//! Results cross from JavaScript as one JSON string of plain values: DuckDB
//! already did the exact conversions (see `sql`), so the Rust side needs no
//! Arrow decoder (which would cost several hundred kB of wasm).

pub mod bridge;
pub mod choice;
pub mod engine;
pub mod local_data;
pub mod names;
pub mod panel;
pub mod runner;
pub mod sql;

#[cfg(all(test, target_arch = "wasm32"))]
mod browser_tests;
