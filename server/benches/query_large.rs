//! The large-data server query benchmark (`cargo bench -p server --bench
//! query_large`, also run by `cargo xtask bench`). Prints two tables,
//! measured in one run:
//!
//! 1. Typical analytical queries (group-by, joins with a dimension and fact
//!    to fact, a window function, top-k) over a Parquet file of 60 million
//!    synthetic trips, (a) directly through the duckdb crate in this
//!    process and (b) end to end through Sextant (HTTP `SubmitQuery`, the
//!    executor's `QueryCompleted` received by an SSE listener, the first
//!    result page over HTTP), with the ratio (b)/(a). Target: within 1.1x
//!    on queries that run for over a second.
//! 2. The fixed cost of one query through Sextant (`SELECT 42`): submit
//!    answered, `QueryStarted` and `QueryCompleted` seen by the SSE
//!    listener, first page fetched. Target: under 10 ms in all.
//!
//! The SSE listener is one stream for the whole run (as a browser holds
//! one), so timings never include connecting. Each side of table 1 is
//! warmed up once, then timed alternately; medians are reported.
//!
//! `SEXTANT_BENCH_LARGE_ROWS` (default 60,000,000) changes the generated
//! file's size; `SEXTANT_BENCH_LARGE_FILE` uses an existing file instead
//! (`cargo xtask gen-data --rows 60000000 --out …`), or generates it there
//! once when it does not exist yet; `SEXTANT_BENCH_RUNS`
//! the timed runs per side (default 3); `SEXTANT_BENCH_FIXED_RUNS` the
//! fixed-cost samples (default 50); `SEXTANT_BENCH_QUERIES` a comma-separated
//! filter on the query names (`none` for the fixed cost only).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use server::Config;
use tokio::sync::mpsc;
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The measured queries over `trips` and the `zones` dimension.
fn queries(trips: &str, zones: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "group-by, 6 aggregates",
            format!(
                "SELECT borough, payment_type, count(*) AS trips, sum(fare) AS fares, \
                 avg(distance_km) AS avg_km, max(tip) AS max_tip, min(pickup_date) AS first_day, \
                 count(DISTINCT passengers) AS party_sizes \
                 FROM {trips} GROUP BY ALL ORDER BY ALL"
            ),
        ),
        (
            "join with a dimension",
            format!(
                "SELECT z.region, z.airport, t.payment_type, count(*) AS trips, \
                 sum(t.fare) AS fares, avg(t.tip) AS avg_tip \
                 FROM {trips} t JOIN {zones} z ON z.borough = t.borough \
                 GROUP BY ALL ORDER BY ALL"
            ),
        ),
        (
            "join fact to fact (next trip)",
            format!(
                "SELECT a.borough, count(*) AS pairs, sum(a.fare + b.fare) AS fares \
                 FROM {trips} a JOIN {trips} b ON b.trip_id = a.trip_id + 1 \
                 WHERE a.passengers = 2 AND b.passengers = 3 \
                 GROUP BY ALL ORDER BY ALL"
            ),
        ),
        (
            "window: 7-day moving average per borough",
            format!(
                "WITH daily AS (SELECT borough, pickup_date, sum(fare) AS fares \
                 FROM {trips} GROUP BY ALL) \
                 SELECT borough, pickup_date, fares, \
                 avg(fares) OVER (PARTITION BY borough ORDER BY pickup_date ROWS 6 PRECEDING) AS week_avg, \
                 rank() OVER (PARTITION BY borough ORDER BY fares DESC) AS day_rank \
                 FROM daily ORDER BY borough, pickup_date"
            ),
        ),
        (
            "window over all rows: top 3 per borough",
            format!(
                "SELECT borough, trip_id, fare FROM {trips} \
                 QUALIFY row_number() OVER (PARTITION BY borough ORDER BY fare DESC, trip_id) <= 3 \
                 ORDER BY borough, fare DESC, trip_id"
            ),
        ),
        (
            "top-k: 100 highest fares",
            format!(
                "SELECT trip_id, borough, pickup_at, fare, tip FROM {trips} \
                 ORDER BY fare DESC, trip_id LIMIT 100"
            ),
        ),
    ]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    let at = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[at]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// (a): the duckdb crate on its own in-memory instance, all rows fetched as Arrow.
fn direct(connection: &duckdb::Connection, sql: &str) -> (Duration, u64) {
    let started = Instant::now();
    let mut statement = connection.prepare(sql).expect("prepare");
    let rows: usize = statement
        .query_arrow([])
        .expect("query")
        .map(|batch| batch.num_rows())
        .sum();
    (started.elapsed(), rows as u64)
}

/// When each step of one query through Sextant was done, from the submit.
struct Phases {
    submitted: Duration,
    started: Duration,
    completed: Duration,
    first_page: Duration,
    row_count: u64,
}

struct Client {
    base: String,
    http: reqwest::Client,
    session: Uuid,
    version: u64,
    /// Event payloads of this session, from one long-lived SSE stream.
    events: mpsc::UnboundedReceiver<Value>,
}

impl Client {
    async fn connect(base: String, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {token}");
        headers.insert(
            reqwest::header::AUTHORIZATION,
            bearer.parse().expect("header"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        let session = Uuid::new_v4();
        let (tx, events) = mpsc::unbounded_channel();
        let response = http
            .get(format!("{base}/api/events?session={session}"))
            .send()
            .await
            .expect("sse");
        tokio::spawn(async move {
            let mut stream = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if block.lines().any(|l| l == "event: progress") {
                        continue;
                    }
                    for line in block.lines() {
                        if let Some(data) = line.strip_prefix("data: ") {
                            if let Ok(event) = serde_json::from_str::<Value>(data) {
                                let _ = tx.send(event);
                            }
                        }
                    }
                }
            }
        });
        let mut client = Self {
            base,
            http,
            session,
            version: 0,
            events,
        };
        client
            .command(json!({"type": "CreateSession", "title": "large bench"}))
            .await;
        client
            .command(
                json!({"type": "AttachDataset", "dataset": {"kind": "server", "name": "trips"}}),
            )
            .await;
        client
    }

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

    /// (b): submit, wait for `QueryStarted` and `QueryCompleted` on the SSE
    /// stream, fetch the first page.
    async fn end_to_end(&mut self, sql: &str) -> Phases {
        let query_id = Uuid::new_v4();
        let started_at = Instant::now();
        self.command(json!({
            "type": "SubmitQuery", "query_id": query_id, "sql": sql, "engine": "server"
        }))
        .await;
        let submitted = started_at.elapsed();
        let mut started = Duration::ZERO;
        let row_count;
        loop {
            let event = self.events.recv().await.expect("the SSE stream ended");
            if let Some(version) = event["aggregate_sequence"].as_u64() {
                self.version = self.version.max(version);
            }
            if event["payload"]["query_id"] != json!(query_id) {
                continue;
            }
            match event["event_type"].as_str() {
                Some("QueryStarted") => started = started_at.elapsed(),
                Some("QueryCompleted") => {
                    row_count = event["payload"]["row_count"].as_u64().expect("row count");
                    break;
                }
                Some("QueryFailed") => panic!("query failed: {event}"),
                _ => {}
            }
        }
        let completed = started_at.elapsed();
        let page: Value = self
            .http
            .get(format!("{}/api/queries/{query_id}/result", self.base))
            .send()
            .await
            .expect("result")
            .json()
            .await
            .expect("page");
        let first_page = started_at.elapsed();
        assert!(page["rows"].is_array(), "no result page: {page}");
        Phases {
            submitted,
            started,
            completed,
            first_page,
            row_count,
        }
    }
}

/// Writes the `zones` dimension: one row per borough of the generator.
fn write_zones(path: &std::path::Path) {
    let connection = duckdb::Connection::open_in_memory().expect("duckdb");
    connection
        .execute_batch(&format!(
            "COPY (SELECT * FROM (VALUES \
               ('Manhattan', 'city', false), ('Brooklyn', 'city', false), \
               ('Queens', 'city', true), ('Bronx', 'city', false), \
               ('Staten Island', 'suburb', false), ('EWR', 'new jersey', true)) \
               AS z(borough, region, airport)) TO '{}' (FORMAT parquet)",
            path.display()
        ))
        .expect("zones");
}

#[tokio::main]
async fn main() {
    let runs: usize = env_or("SEXTANT_BENCH_RUNS", 3);
    let fixed_runs: usize = env_or("SEXTANT_BENCH_FIXED_RUNS", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let datasets = dir.path().join("datasets");
    std::fs::create_dir_all(&datasets).expect("datasets dir");
    let file = datasets.join("trips.parquet");
    let rows = match std::env::var("SEXTANT_BENCH_LARGE_FILE") {
        Ok(existing) => {
            if !std::path::Path::new(&existing).exists() {
                // Generated once, kept for the next runs.
                let rows: u64 = env_or("SEXTANT_BENCH_LARGE_ROWS", 60_000_000);
                server::query::demo::write_trips(std::path::Path::new(&existing), rows)
                    .expect("generate");
            }
            // A hard link (the catalog lists regular files only), so the
            // catalog sees it under the name `trips`; a copy across file systems.
            let existing = PathBuf::from(existing).canonicalize().expect("the file");
            if std::fs::hard_link(&existing, &file).is_err() {
                std::fs::copy(&existing, &file).expect("copy");
            }
            let connection = duckdb::Connection::open_in_memory().expect("duckdb");
            let rows: i64 = connection
                .query_row(
                    &format!("SELECT count(*) FROM read_parquet('{}')", file.display()),
                    [],
                    |r| r.get(0),
                )
                .expect("count");
            rows as u64
        }
        Err(_) => {
            let rows: u64 = env_or("SEXTANT_BENCH_LARGE_ROWS", 60_000_000);
            let generated = Instant::now();
            server::query::demo::write_trips(&file, rows).expect("generate");
            eprintln!(
                "generated {rows} rows in {:.1} s",
                generated.elapsed().as_secs_f64()
            );
            rows
        }
    };
    let bytes = std::fs::metadata(&file).expect("file").len();
    write_zones(&datasets.join("zones.parquet"));

    let direct_connection = duckdb::Connection::open_in_memory().expect("duckdb");
    let direct_queries = queries(
        &format!("read_parquet('{}')", file.display()),
        &format!(
            "read_parquet('{}')",
            datasets.join("zones.parquet").display()
        ),
    );

    let mut config = Config::for_data_dir(dir.path());
    config.no_demo = true;
    config.query_timeout = Duration::from_secs(3600);
    // Results are small; the page is what a user sees first.
    let running = server::start(config).await.expect("server");
    let token = running.owner_token.clone().expect("the owner's token");
    let mut client = Client::connect(format!("http://{}", running.addr), &token).await;
    let sextant_queries = queries("trips", "zones");

    // `SEXTANT_BENCH_QUERIES=top-k,group-by`: only the queries whose names contain one of these.
    let only: Vec<String> = std::env::var("SEXTANT_BENCH_QUERIES")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut table = Vec::new();
    for ((name, direct_sql), (_, sextant_sql)) in direct_queries.iter().zip(&sextant_queries) {
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        // Warm-up (file cache, metadata), then alternate so both see the same conditions.
        let (_, direct_rows) = direct(&direct_connection, direct_sql);
        let warm = client.end_to_end(sextant_sql).await;
        assert_eq!(
            direct_rows, warm.row_count,
            "{name}: both sides return the same rows"
        );
        let mut direct_times = Vec::new();
        let mut sextant_times = Vec::new();
        for _ in 0..runs {
            direct_times.push(direct(&direct_connection, direct_sql).0);
            sextant_times.push(client.end_to_end(sextant_sql).await.first_page);
        }
        let (a, b) = (median(direct_times), median(sextant_times));
        let ratio = b.as_secs_f64() / a.as_secs_f64();
        let verdict = if a < Duration::from_secs(1) {
            "under 1 s: fixed cost dominates"
        } else if ratio <= 1.1 {
            "met"
        } else {
            "missed"
        };
        eprintln!("{name}: {} vs {}", ms(a), ms(b));
        table.push(format!(
            "| {name} | {direct_rows} | {} | {} | {ratio:.2}x | {verdict} |",
            ms(a),
            ms(b),
        ));
    }

    // The fixed cost of one query: a query DuckDB answers at once.
    let (direct_tiny, _) = {
        let mut samples = Vec::new();
        for _ in 0..fixed_runs {
            samples.push(direct(&direct_connection, "SELECT 42 AS answer").0);
        }
        (median(samples), ())
    };
    client.end_to_end("SELECT 42 AS answer").await;
    let mut phases = Vec::new();
    for _ in 0..fixed_runs {
        phases.push(client.end_to_end("SELECT 42 AS answer").await);
    }
    let column =
        |pick: fn(&Phases) -> Duration| -> Vec<Duration> { phases.iter().map(pick).collect() };
    let fixed_rows = [
        (
            "submit answered (SubmitQuery committed)",
            column(|p| p.submitted),
        ),
        ("QueryStarted seen on SSE", column(|p| p.started)),
        ("QueryCompleted seen on SSE", column(|p| p.completed)),
        ("first page fetched (total)", column(|p| p.first_page)),
    ];

    println!();
    println!(
        "Large-data server queries over {rows} Parquet rows ({:.0} MB) and a 6-row dimension, \
         median of {runs}: (a) duckdb crate direct, (b) Sextant end to end \
         (HTTP submit, QueryCompleted over SSE, first result page)",
        bytes as f64 / 1e6
    );
    println!("| query | result rows | (a) direct | (b) end to end | (b)/(a) | target 1.1x (queries over 1 s) |");
    println!("|---|---:|---:|---:|---:|---|");
    for row in table {
        println!("{row}");
    }
    println!();
    println!(
        "Fixed cost per query (`SELECT 42`, {fixed_runs} runs, time from the submit; direct DuckDB: {}):",
        ms(direct_tiny)
    );
    println!("| step done | median | p95 |");
    println!("|---|---:|---:|");
    for (name, samples) in fixed_rows {
        println!(
            "| {name} | {} | {} |",
            ms(median(samples.clone())),
            ms(percentile(samples, 0.95))
        );
    }
    running.stop().await.expect("stop");
}
