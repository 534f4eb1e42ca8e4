//! Server queries across nodes on one PostgreSQL database (the real server
//! binary twice, datasets in one directory both read): a query is claimed
//! with its submission by the node that took it and runs there exactly
//! once; restarting another node never touches it; when its node is killed,
//! another node fails it once its lease runs out, never leaving it
//! `running`; a cancel sent to either node stops it where it runs.
//! A short `--query-lease` keeps these tests fast.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use sextant_tests::postgres::{cluster, Node};
use uuid::Uuid;

use crate::query::{record, session_on, submit, version_of, wait_for_state, LONG_SQL};
use crate::query_slots::metric;
use crate::sync_client::{envelope, Api};

/// The lease the nodes of these tests hold their claims with.
const LEASE: &str = "1s";
const RUNS: &str = "sextant_server_queries_run_total";

/// Two nodes on one fresh database, reading one datasets directory.
fn two_nodes(datasets: &Path) -> (Node, Node) {
    std::fs::create_dir_all(datasets).unwrap();
    std::fs::write(
        datasets.join("sales.csv"),
        "id,region,amount\n1,north,10.5\n2,south,7.25\n3,north,1.0\n4,east,99.99\n",
    )
    .unwrap();
    let url = cluster().database();
    let dir = datasets.to_str().unwrap();
    let args = ["--datasets-dir", dir, "--query-lease", LEASE];
    let a = Node::start(&url, None, &args).unwrap();
    let b = Node::start(&url, Some(a.data_dir.path()), &args).unwrap();
    (a, b)
}

/// How many events of each type the session's log holds for `query_id`.
async fn events_of(api: &Api, session: Uuid, query_id: Uuid) -> Vec<String> {
    api.session_events(session)
        .await
        .into_iter()
        .filter(|e| e["payload"]["query_id"] == json!(query_id))
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

/// A query of about `target` on this machine now: measures a small one on
/// `api` and scales the rows (one cross join; time grows with rows).
async fn query_of_about(api: &Api, session: Uuid, target: Duration) -> String {
    let sql = |rows: u64| {
        format!("SELECT count(*) AS n FROM range({rows}) a, range(10000) b WHERE (a.range * 7 + b.range) % 13 = 5")
    };
    let probe = submit(api, session, &sql(500)).await;
    let done = wait_for_state(api, session, probe, &["completed"]).await;
    let elapsed = done["elapsed_ms"].as_u64().unwrap().max(1);
    let rows = (500 * target.as_millis() as u64 / elapsed).clamp(500, 500_000);
    sql(rows)
}

#[tokio::test]
async fn each_query_submitted_through_two_nodes_runs_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(&dir.path().join("datasets"));
    let apis = [Api::new(a.url()), Api::new(b.url())];
    const PER_NODE: usize = 6;
    // A session runs one query at a time: one session per query, each made
    // and submitted through one node, all at once.
    let submitted = join_all((0..PER_NODE * 2).map(|i| {
        let (node, api) = (i % 2, &apis[i % 2]);
        async move {
            let (session, _) = session_on(api, "sales").await;
            let sql = format!("SELECT count(*) AS n, {i} AS i FROM sales WHERE amount > {i}");
            (node, session, submit(api, session, &sql).await)
        }
    }))
    .await;
    for (node, session, query_id) in &submitted {
        // Either node's read model shows every outcome.
        let other = &apis[1 - node];
        let done = wait_for_state(other, *session, *query_id, &["completed", "failed"]).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(
            events_of(other, *session, *query_id).await,
            ["QuerySubmitted", "QueryStarted", "QueryCompleted"],
            "one start and one outcome in the log"
        );
    }
    // Each ran once, on the node that took its submission.
    assert_eq!(metric(&apis[0], RUNS).await, PER_NODE as f64);
    assert_eq!(metric(&apis[1], RUNS).await, PER_NODE as f64);
    for (index, node) in [&a, &b].into_iter().enumerate() {
        let log = node.server.log();
        for (_, _, query_id) in submitted.iter().filter(|(n, _, _)| *n == index) {
            let line = format!("running a claimed server query query_id={query_id}");
            assert_eq!(log.matches(&line).count(), 1, "node {index}: {line}");
        }
    }
}

#[tokio::test]
async fn restarting_one_node_leaves_the_other_nodes_query_running_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(&dir.path().join("datasets"));
    let api_a = Api::new(a.url());
    let (session, _) = session_on(&api_a, "sales").await;
    let sql = query_of_about(&api_a, session, Duration::from_secs(6)).await;
    let query_id = submit(&api_a, session, &sql).await;
    wait_for_state(&api_a, session, query_id, &["running"]).await;
    let submitted_at = Instant::now();

    // B restarts (its start-up used to fail every running query), then a
    // whole lease passes.
    let Node {
        server,
        data_dir: b_dir,
    } = b;
    let b = server.restart().unwrap();
    let api_b = Api::new(b.url());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = record(&api_b, session, query_id).await;
    assert_eq!(
        during["state"],
        "running",
        "still running after B restarted and a lease passed ({:?} after it started): {during}",
        submitted_at.elapsed()
    );

    let done = wait_for_state(
        &api_b,
        session,
        query_id,
        &["completed", "failed", "cancelled"],
    )
    .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        events_of(&api_b, session, query_id).await,
        ["QuerySubmitted", "QueryStarted", "QueryCompleted"]
    );
    assert!(!b.log().contains("failing a query whose claim is over"));

    // A cancel sent to B stops a query running on A.
    let long = submit(&api_a, session, LONG_SQL).await;
    wait_for_state(&api_b, session, long, &["running"]).await;
    let version = version_of(&api_b, session).await;
    api_b
        .accept(&envelope(
            session,
            version,
            json!({"type": "CancelQuery", "query_id": long}),
        ))
        .await;
    wait_for_state(&api_a, session, long, &["cancelled"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&api_a, "sextant_query_slots_busy").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "A kept running the query cancelled through B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b_dir);
}

#[tokio::test]
async fn a_query_whose_node_is_killed_is_failed_by_another_node_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(&dir.path().join("datasets"));
    let (api_a, api_b) = (Api::new(a.url()), Api::new(b.url()));
    let (session, _) = session_on(&api_a, "sales").await;
    let query_id = submit(&api_a, session, LONG_SQL).await;
    wait_for_state(&api_b, session, query_id, &["running"]).await;

    let Node { server, data_dir } = a;
    server.kill9();
    let killed = Instant::now();
    let failed: Value = wait_for_state(
        &api_b,
        session,
        query_id,
        &["failed", "completed", "cancelled"],
    )
    .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["message"], server::query::executor::LEASE_EXPIRED);
    let error_id = failed["error_id"].as_str().unwrap();
    assert!(
        b.server
            .log_eventually_contains(error_id, Duration::from_secs(5)),
        "B logs the error id"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "ended about a lease after the kill, not at some later start: {:?}",
        killed.elapsed()
    );
    // Failed once, and never run again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        events_of(&api_b, session, query_id).await,
        ["QuerySubmitted", "QueryStarted", "QueryFailed"]
    );
    assert_eq!(metric(&api_b, RUNS).await, 0.0);
    drop(data_dir);
}
