//! duckdb-wasm in the browser: the only module that speaks to it.
//!
//! - `bridge`: the wasm-bindgen declarations of `client/js/duckdb-bridge.js`,
//!   which esbuild bundles with `@duckdb/duckdb-wasm` (see
//!   `xtask/src/duckdb_bundle.rs`); everything is served from our origin at
//!   `/duckdb-wasm/`, extension autoloading is off.
//! - `engine`: [`LocalDb`], one duckdb-wasm per page in a Web Worker:
//!   queries with DuckDB's type names and the server's JSON conventions,
//!   cancellation, files and Arrow IPC.
//! - `sql`: the pure SQL wrapping (native unit tests).
//!
//! Results cross from JavaScript as one JSON string of plain values: DuckDB
//! already did the exact conversions (see `sql`), so the Rust side needs no
//! Arrow decoder (which would cost several hundred kB of wasm).

// The session view starts using the engine in the integration step of
// issue 6; until then parts of the API have no caller outside the tests.
#![allow(dead_code, unused_imports)]

pub mod bridge;
pub mod engine;
pub mod sql;

#[cfg(all(test, target_arch = "wasm32"))]
mod browser_tests;

pub use engine::{LocalDb, LocalError, LocalResult};
