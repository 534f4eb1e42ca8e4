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
//!
//! A second table: concurrent server queries per second on one node and on
//! two nodes of one PostgreSQL database: real servers in process (HTTP,
//! pipeline, claims, DuckDB), one datasets directory with the demo dataset
//! both read, 16 issuers spread over the nodes, each submitting a query in
//! its own session and polling until it completed, then the next.

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

    let per_issuer = ((8.0 * scale()) as usize).max(2);
    let datasets = tempfile::tempdir().unwrap();
    server::query::demo::write_trips(&datasets.path().join("demo.parquet"), DEMO_ROWS).unwrap();
    let mut rows = Vec::new();
    for nodes in [1, 2] {
        eprintln!("server queries, {nodes} node(s) on PostgreSQL …");
        let rate = runtime.block_on(query_throughput(
            &cluster.database(),
            datasets.path(),
            nodes,
            per_issuer,
        ));
        rows.push((nodes, rate));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "{} server queries ({QUERY}), {QUERY_ISSUERS} concurrent issuers, demo dataset of {DEMO_ROWS} rows, {cores} cores shared by every node",
        per_issuer * QUERY_ISSUERS
    );
    println!();
    println!("| deployment | server queries/s | vs 1 node |");
    println!("|---|---:|---:|");
    for (nodes, rate) in &rows {
        println!(
            "| {nodes} node(s), one PostgreSQL database | {rate:.1} | {:.2}x |",
            rate / rows[0].1
        );
    }
}

const DEMO_ROWS: u64 = 500_000;
const QUERY_ISSUERS: usize = 16;
const QUERY: &str =
    "SELECT borough, count(*) AS trips, avg(fare) AS fare FROM demo GROUP BY borough ORDER BY borough";

/// Server queries per second through `nodes` real servers on `url`.
async fn query_throughput(
    url: &str,
    datasets: &std::path::Path,
    nodes: usize,
    per_issuer: usize,
) -> f64 {
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for index in 0..nodes {
        let dir = tempfile::tempdir().unwrap();
        if index > 0 {
            // The other nodes share the first node's owner (as deployed).
            let first: &tempfile::TempDir = &dirs[0];
            std::fs::copy(
                first.path().join("owner.token"),
                dir.path().join("owner.token"),
            )
            .unwrap();
        }
        let mut config = server::Config::for_data_dir(dir.path());
        config.database_url = Some(url.to_owned());
        config.datasets_dir = Some(datasets.to_path_buf());
        config.no_demo = true;
        // One user issues everything here: no per-user limits in the way.
        config.rate_limit = 1_000_000;
        config.query_rate_limit = 1_000_000;
        servers.push(sextant_tests::start_in_process(config).await.unwrap());
        dirs.push(dir);
    }
    let token = servers[0].owner_token.clone().expect("owner token");
    let client = sextant_tests::client_with_token(&token);
    let bases: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.addr))
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for issuer in 0..QUERY_ISSUERS {
        let base = bases[issuer % bases.len()].clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let session = Uuid::now_v7();
            let send = |version: u64, command: serde_json::Value| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    let answer = client
                        .post(format!("{base}/api/commands"))
                        .json(&json!({
                            "command_id": Uuid::now_v7(),
                            "aggregate_type": "QuerySession",
                            "aggregate_id": session,
                            "expected_version": version,
                            "command": command,
                        }))
                        .send()
                        .await
                        .unwrap();
                    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap());
                    let body: serde_json::Value = answer.json().await.unwrap();
                    body["version"].as_u64().unwrap()
                }
            };
            let mut version = send(0, json!({"type": "CreateSession", "title": "bench"})).await;
            version = send(
                version,
                json!({"type": "AttachDataset", "dataset": {"kind": "server", "name": "demo"}}),
            )
            .await;
            for _ in 0..per_issuer {
                let query_id = Uuid::now_v7();
                send(
                    version,
                    json!({"type": "SubmitQuery", "query_id": query_id, "sql": QUERY, "engine": "server"}),
                )
                .await;
                loop {
                    let view: serde_json::Value = client
                        .get(format!("{base}/api/sessions/{session}"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let record = view["history"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|q| q["query_id"] == json!(query_id))
                        .cloned()
                        .unwrap_or_default();
                    if record["state"] == "completed" {
                        version = view["version"].as_u64().unwrap();
                        break;
                    }
                    assert!(record["state"] != "failed", "{record}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rate = (per_issuer * QUERY_ISSUERS) as f64 / started.elapsed().as_secs_f64();
    for server in servers {
        server.stop().await.unwrap();
    }
    rate
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
