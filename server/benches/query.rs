//! The server query benchmark (`cargo bench -p server --bench query`, also
//! run by `cargo xtask bench`). Prints one table, measured in one run: the
//! same aggregation (group-by with a few aggregates) over a generated Parquet
//! file of 10 million synthetic trips, run
//!
//! (a) directly through the duckdb crate in this process, and
//! (b) end to end through Sextant: HTTP `SubmitQuery`, the executor's
//!     `StartQuery` / `CompleteQuery` events over SSE, and the result page
//!     fetched over HTTP,
//!
//! with the overhead ratio (b)/(a) and rows scanned per second. Each side is
//! warmed up once, then timed `RUNS` times alternately; medians are reported.
//! `SEXTANT_BENCH_ROWS` changes the file size (default 10,000,000).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use server::Config;
use uuid::Uuid;

const RUNS: usize = 5;

/// The measured queries: a light group-by and a heavy one (exact medians
/// and distinct counts) that runs for over a second, where the 1.2x target applies.
fn queries(table: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "group-by, 5 aggregates",
            format!(
                "SELECT borough, payment_type, count(*) AS trips, sum(fare) AS fares, \
                 avg(distance_km) AS avg_km, max(tip) AS max_tip, min(pickup_date) AS first_day \
                 FROM {table} GROUP BY ALL ORDER BY ALL"
            ),
        ),
        (
            "group-by, medians + distinct counts",
            format!(
                "SELECT borough, date_trunc('month', pickup_date) AS month, count(*) AS trips, \
                 median(fare) AS median_fare, median(distance_km) AS median_km, \
                 count(DISTINCT passengers * 100000 + (trip_id % 99991)) AS distinct_keys, sum(tip) AS tips \
                 FROM {table} GROUP BY ALL ORDER BY ALL"
            ),
        ),
    ]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// (a): the duckdb crate on its own in-memory instance, all rows fetched as Arrow.
fn direct(connection: &duckdb::Connection, sql: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut statement = connection.prepare(sql).expect("prepare");
    let rows = statement
        .query_arrow([])
        .expect("query")
        .map(|batch| batch.num_rows())
        .sum();
    (started.elapsed(), rows)
}

struct Client {
    base: String,
    http: reqwest::Client,
    session: Uuid,
    version: u64,
}

impl Client {
    async fn command(&mut self, command: Value) {
        let response = self
            .http
            .post(format!("{}/api/commands", self.base))
            .json(&json!({
                "command_id": Uuid::new_v4(),
                "aggregate_type": "QuerySession",
                "aggregate_id": self.session,
                "expected_version": self.version,
                "command": command,
            }))
            .send()
            .await
            .expect("post");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert!(status.is_success(), "{body}");
        self.version = body["version"].as_u64().expect("version");
    }

    /// (b): submit, wait for `QueryCompleted` on the SSE stream, fetch the page.
    async fn end_to_end(&mut self, sql: &str) -> (Duration, usize) {
        let session: Value = self
            .http
            .get(format!("{}/api/sessions/{}", self.base, self.session))
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("session json");
        let cursor = session["global_sequence"]
            .as_u64()
            .expect("global sequence");
        let events = self
            .http
            .get(format!(
                "{}/api/events?session={}&after={cursor}",
                self.base, self.session
            ))
            .send()
            .await
            .expect("sse");
        let mut stream = events.bytes_stream();
        let query_id = Uuid::new_v4();
        let started = Instant::now();
        self.command(json!({
            "type": "SubmitQuery", "query_id": query_id, "sql": sql, "engine": "server"
        }))
        .await;
        let mut buffer = String::new();
        'frames: while let Some(chunk) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("sse chunk")));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                        let ours = event["payload"]["query_id"] == json!(query_id);
                        match event["event_type"].as_str() {
                            Some("QueryCompleted") if ours => break 'frames,
                            Some("QueryFailed") if ours => panic!("query failed: {event}"),
                            _ => {}
                        }
                    }
                }
            }
        }
        let page: Value = self
            .http
            .get(format!("{}/api/queries/{query_id}/result", self.base))
            .send()
            .await
            .expect("result")
            .json()
            .await
            .expect("page");
        let elapsed = started.elapsed();
        // Follow the executor's events: the session version moved on.
        let session: Value = self
            .http
            .get(format!("{}/api/sessions/{}", self.base, self.session))
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("session json");
        self.version = session["version"].as_u64().expect("version");
        let rows = page["rows"].as_array().map(Vec::len);
        (
            elapsed,
            rows.unwrap_or_else(|| panic!("no result page: {page}")),
        )
    }
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("SEXTANT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let datasets = dir.path().join("datasets");
    let file = datasets.join("trips.parquet");
    let generated = Instant::now();
    let bytes = server::query::demo::write_trips(&file, rows).expect("generate");
    eprintln!(
        "generated {rows} rows ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        generated.elapsed().as_secs_f64()
    );

    let direct_connection = duckdb::Connection::open_in_memory().expect("duckdb");
    let direct_queries = queries(&format!("read_parquet('{}')", file.display()));

    let mut config = Config::for_data_dir(dir.path());
    config.no_demo = true;
    let running = server::start(config).await.expect("server");
    let mut client = Client {
        base: format!("http://{}", running.addr),
        http: {
            let mut headers = reqwest::header::HeaderMap::new();
            let bearer = format!("Bearer {}", running.owner_token.as_deref().unwrap());
            headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
            reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap()
        },
        session: Uuid::new_v4(),
        version: 0,
    };
    client
        .command(json!({"type": "CreateSession", "title": "bench"}))
        .await;
    client
        .command(json!({"type": "AttachDataset", "dataset": {"kind": "server", "name": "trips"}}))
        .await;
    let sextant_queries = queries("trips");

    let rate = |d: Duration| rows as f64 / d.as_secs_f64() / 1e6;
    let mut table = Vec::new();
    for ((name, direct_sql), (_, sextant_sql)) in direct_queries.iter().zip(&sextant_queries) {
        // Warm-up (file cache, metadata), then alternate so both see the same conditions.
        let (_, direct_rows) = direct(&direct_connection, direct_sql);
        let (_, sextant_rows) = client.end_to_end(sextant_sql).await;
        assert_eq!(direct_rows, sextant_rows, "both sides return the same rows");
        let mut direct_times = Vec::new();
        let mut sextant_times = Vec::new();
        for _ in 0..RUNS {
            direct_times.push(direct(&direct_connection, direct_sql).0);
            sextant_times.push(client.end_to_end(sextant_sql).await.0);
        }
        let (a, b) = (median(direct_times), median(sextant_times));
        table.push(format!(
            "| {name} | {direct_rows} | {:.0} ms | {:.0} ms | {:.2}x | {:.1} M/s | {:.1} M/s |",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            b.as_secs_f64() / a.as_secs_f64(),
            rate(a),
            rate(b),
        ));
    }
    println!();
    println!(
        "Server queries over {rows} Parquet rows ({:.0} MB), median of {RUNS}: \
         (a) duckdb crate direct, (b) Sextant end to end (HTTP submit, SSE events, result page)",
        bytes as f64 / 1e6
    );
    println!(
        "| query | result rows | (a) direct | (b) end to end | (b)/(a) | rows/s (a) | rows/s (b) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in table {
        println!("{row}");
    }
    running.stop().await.expect("stop");
}
