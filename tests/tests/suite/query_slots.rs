//! The one slot runner, against the real server binary: a request that
//! goes away stops its DuckDB work and never lets more work run than there
//! are `--query-slots`; a reader that stops reading loses its slot instead
//! of starving every query; the timeout counts the wait for a slot.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sextant_tests::ServerProcess;

use crate::query::{run_to_end, session_on, submit, wait_for_state};
use crate::sync_client::Api;

/// A query that DuckDB works on for a few seconds and that returns one row.
/// With `--result-max-rows 0` its stored result keeps no row, so an export
/// runs the query again and is as slow.
const SLOW_SQL: &str =
    "SELECT count(*) AS n FROM range(10000) a, range(10000) b WHERE (a.range * 7 + b.range) % 13 = 5";

/// One figure of `GET /api/metrics` (Prometheus text format).
pub(crate) async fn metric(api: &Api, name: &str) -> f64 {
    let (status, _, body) = api.get_raw("/api/metrics", None).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{name} is not in the metrics:\n{text}"))
}

/// Waits until `name` reads `want` (or fails after `within`).
async fn metric_reaches(api: &Api, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let value = metric(api, name).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {value}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn aborted_downloads_stop_their_work_and_never_exceed_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &["--query-slots", "1", "--result-max-rows", "0"],
    )
    .unwrap();
    let api = Api::new(server.url());
    let (session, _) = session_on(&api, "demo").await;
    let started = Instant::now();
    let (query_id, record) = run_to_end(&api, session, SLOW_SQL).await;
    assert_eq!(record["state"], "completed", "{record}");
    let query_took = started.elapsed();

    // `curl -m0.2 …/result.csv` in a loop: each export is far slower than
    // the client's patience.
    let impatient = reqwest::Client::builder()
        .default_headers(sextant_tests::bearer_headers(&server.token))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let url = format!("{}/api/queries/{query_id}/result.csv", server.url());
    for _ in 0..6 {
        let outcome = impatient.get(&url).send().await;
        assert!(outcome.is_err(), "the export answered within 200 ms");
    }
    let aborted = Instant::now();
    assert_eq!(
        metric(&api, "sextant_query_slots_peak_busy").await,
        1.0,
        "more DuckDB work ran at once than --query-slots allows"
    );
    // The last export was interrupted when its client left, long before
    // it would have ended by itself.
    metric_reaches(
        &api,
        "sextant_query_slots_busy",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        aborted.elapsed() < query_took / 2,
        "the abandoned export ran on for {:?} (the query takes {query_took:?})",
        aborted.elapsed()
    );
    // The server still serves: a quick query completes at once.
    let (_, record) = run_to_end(&api, session, "SELECT 42 AS answer").await;
    assert_eq!(record["state"], "completed", "{record}");
    // The metrics speak the Prometheus text format and count what happened.
    let (_, content_type, _) = api.get_raw("/api/metrics", None).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(metric(&api, "sextant_commands_total").await >= 6.0);
    assert_eq!(metric(&api, "sextant_query_slots").await, 1.0);
    assert_eq!(metric(&api, "sextant_result_store_results").await, 2.0);
}

#[tokio::test]
async fn readers_that_stop_reading_lose_their_slots_and_queries_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = dir.path().join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    // Tens of megabytes as Arrow: far more than the socket buffers hold.
    server::query::demo::write_trips(&datasets.join("big.parquet"), 400_000).unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &["--query-slots", "2", "--query-stall-timeout", "1s"],
    )
    .unwrap();
    let api = Api::new(server.url());
    let (session, _) = session_on(&api, "big").await;

    // Two clients ask for the whole dataset and never read a byte.
    let mut stalled: Vec<TcpStream> = (0..2).map(|_| stalled_download(&server, "big")).collect();
    metric_reaches(
        &api,
        "sextant_query_slots_busy",
        2.0,
        Duration::from_secs(10),
    )
    .await;

    // A query still runs: the stalled downloads give their slots up.
    let (_, record) = run_to_end(&api, session, "SELECT count(*) AS n FROM big").await;
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(record["row_count"], 1, "{record}");

    // The query needed one slot, so the other download may still be inside
    // its stall window; reading it now would let it finish whole. Wait until
    // both downloads have given their slots up (the query's is free too).
    metric_reaches(
        &api,
        "sextant_query_slots_busy",
        0.0,
        Duration::from_secs(10),
    )
    .await;

    // What the stalled clients got never looks like a complete download:
    // the chunked body is cut off without its final empty chunk.
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut received = Vec::new();
        let _ = stream.read_to_end(&mut received);
        assert!(received.starts_with(b"HTTP/1.1 200"));
        assert!(
            !received.ends_with(b"\r\n0\r\n\r\n"),
            "a stalled download ended as if it were whole"
        );
    }
}

#[tokio::test]
async fn time_waiting_for_a_slot_counts_toward_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = dir.path().join("datasets");
    std::fs::create_dir_all(&datasets).unwrap();
    server::query::demo::write_trips(&datasets.join("big.parquet"), 400_000).unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--query-slots",
            "1",
            "--query-timeout",
            "2s",
            "--query-stall-timeout",
            "60s",
        ],
    )
    .unwrap();
    let api = Api::new(server.url());
    let (session, _) = session_on(&api, "big").await;
    // A download that is not read holds the only slot (for up to a minute).
    let stalled = stalled_download(&server, "big");
    metric_reaches(
        &api,
        "sextant_query_slots_busy",
        1.0,
        Duration::from_secs(10),
    )
    .await;

    let queued_at = Instant::now();
    let waiting = submit(&api, session, "SELECT 1 AS one").await;
    let record = wait_for_state(&api, session, waiting, &["failed", "completed"]).await;
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        record["message"].as_str().unwrap().contains("limit of 2 s"),
        "{record}"
    );
    assert!(queued_at.elapsed() < Duration::from_secs(10));
    assert_eq!(
        metric(&api, "sextant_query_queue_timeouts_total").await,
        1.0
    );

    // The client hangs up: its download stops and the slot serves again.
    drop(stalled);
    metric_reaches(
        &api,
        "sextant_query_slots_busy",
        0.0,
        Duration::from_secs(10),
    )
    .await;
    let (_, record) = run_to_end(&api, session, "SELECT 1 AS one").await;
    assert_eq!(record["state"], "completed", "{record}");
}

/// A client that asks for a whole dataset and then reads nothing.
fn stalled_download(server: &ServerProcess, dataset: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET /api/datasets/{dataset}/download HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr, server.token
    )
    .unwrap();
    stream
}
