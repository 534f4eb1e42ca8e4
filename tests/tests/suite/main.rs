//! The one integration-test binary. Each module tests one area against
//! real parts: server processes, SQLite files, DuckDB, headless Chromium.

mod api;
mod browser;
mod crash;
mod dataset_download;
mod defaults;
mod local_engine;
mod query;
mod skeleton;
mod sse;
mod store;
mod sync_client;
mod workbench;
