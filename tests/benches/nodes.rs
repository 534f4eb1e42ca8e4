//! Durable commands per second with 64 concurrent issuers, in one run, on
//! the three shapes of a deployment (issue 14): one node on SQLite
//! (`--durability full`), one node on PostgreSQL, three nodes on one
//! PostgreSQL database. `cargo bench -p sextant-tests --bench nodes` (also
//! run by `cargo xtask bench`). Prints one table.
//!
//! A "node" here is the node's write path in process: the real
//! [`Pipeline`] (group commit, idempotency record, version check) on its
//! own writer connection, without HTTP (the store bench measures the HTTP
//! round trip). The PostgreSQL cluster is a throwaway one from
//! `sextant_tests::postgres` with PostgreSQL's default durability (`fsync`
//! and `synchronous_commit` on), on the same disk as the SQLite file.
//! `SEXTANT_BENCH_SCALE=0.1` shortens the run.

use std::time::Instant;

use serde_json::json;
use server::bus::Bus;
use server::pipeline::{CommandContext, Pipeline};
use server::store::{Durability, PgStore, SqliteStore, StoreOptions};
use sextant_tests::postgres::{self, PgCluster};
use shared_domain::CommandEnvelope;
use uuid::Uuid;

const ISSUERS: usize = 64;

fn scale() -> f64 {
    std::env::var("SEXTANT_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let per_issuer = ((100.0 * scale()) as usize).max(2);
    let total = per_issuer * ISSUERS;
    eprintln!("starting a durable PostgreSQL cluster …");
    let cluster = PgCluster::start(postgres::Durability::Durable).expect("PostgreSQL cluster");

    eprintln!("SQLite, 1 node …");
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Full,
        vfs: None,
    };
    let sqlite = {
        let (_store, writer) =
            SqliteStore::open_with(&dir.path().join("bench.sqlite3"), &options).unwrap();
        let _inside = runtime.enter();
        vec![Pipeline::start(writer, Bus::default())]
    };
    let sqlite_rate = runtime.block_on(throughput(&sqlite, per_issuer));
    drop(sqlite);

    let mut rows = vec![("1 node, SQLite (durability full)", sqlite_rate, sqlite_rate)];
    for (label, nodes) in [
        ("1 node, PostgreSQL", 1),
        ("3 nodes, one PostgreSQL database", 3),
    ] {
        eprintln!("{label} …");
        let url = cluster.database();
        let pipelines: Vec<Pipeline> = (0..nodes)
            .map(|_| {
                let (_store, writer) = runtime.block_on(PgStore::open(&url)).unwrap();
                let _inside = runtime.enter();
                Pipeline::start(writer, Bus::default())
            })
            .collect();
        let rate = runtime.block_on(throughput(&pipelines, per_issuer));
        rows.push((label, rate, sqlite_rate));
    }

    println!();
    println!("{total} commands, {ISSUERS} concurrent issuers (one session each, commands in sequence), acknowledged only after a durable commit");
    println!();
    println!("| deployment | durable commands/s | vs 1 node SQLite |");
    println!("|---|---:|---:|");
    for (label, rate, baseline) in rows {
        println!("| {label} | {rate:.0} | {:.2}x |", rate / baseline);
    }
}

/// Commands per second with [`ISSUERS`] issuers spread over `nodes`
/// round-robin, each sending its own session's commands one after the other.
async fn throughput(nodes: &[Pipeline], per_issuer: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for issuer in 0..ISSUERS {
        let pipeline = nodes[issuer % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let session = Uuid::now_v7();
            for version in 0..per_issuer as u64 {
                let command = if version == 0 {
                    json!({"type": "CreateSession", "title": "bench"})
                } else {
                    json!({"type": "RenameSession", "title": format!("title {version}")})
                };
                let envelope: CommandEnvelope<serde_json::Value> = serde_json::from_value(json!({
                    "command_id": Uuid::now_v7(),
                    "aggregate_type": "QuerySession",
                    "aggregate_id": session,
                    "expected_version": version,
                    "command": command,
                }))
                .unwrap();
                pipeline
                    .execute_json(&envelope, CommandContext::default())
                    .await
                    .expect("accepted");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (per_issuer * ISSUERS) as f64 / started.elapsed().as_secs_f64()
}
