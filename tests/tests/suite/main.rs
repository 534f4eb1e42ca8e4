//! The one integration-test binary. Each module tests one area against
//! real parts: server processes, SQLite files, DuckDB, headless Chromium.

mod accounts;
mod api;
mod browser;
mod catalog_lookup;
mod crash;
mod dataset_download;
mod defaults;
mod fuzz;
mod local_engine;
mod postgres_node;
mod postgres_nodes;
mod postgres_queries;
mod postgres_resilience;
mod power_cut;
mod query;
mod query_faults;
mod query_health;
mod query_results;
mod query_slots;
mod skeleton;
mod sse;
mod store;
mod store_conformance;
mod store_failure;
mod sync_client;
mod sync_edges;
mod sync_protocol;
mod threads;
mod workbench;
