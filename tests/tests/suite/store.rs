//! The event store across process boundaries: old event versions in the
//! database load into the current aggregate (upcasting), and a database
//! migrated by a newer binary is refused.

use serde_json::json;
use server::store::SqliteStore as EventStore;
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{envelope, Api};

const DATABASE: &str = "sextant.sqlite3";

#[tokio::test]
async fn a_database_with_old_event_versions_loads_into_the_current_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let session = Uuid::new_v4();
    let query = Uuid::new_v4();
    {
        // Rows exactly as the first version of the code stored them:
        // QuerySubmitted v1 had no engine (every query ran on the server).
        let (_store, writer) = EventStore::open(&dir.path().join(DATABASE)).unwrap();
        let rows = [
            (
                1,
                "SessionCreated",
                1,
                json!({"type": "SessionCreated", "title": "Legacy"}),
            ),
            (
                2,
                "QuerySubmitted",
                1,
                json!({"type": "QuerySubmitted", "query_id": query, "sql": "SELECT count(*) FROM demo"}),
            ),
            (
                3,
                "QueryStarted",
                1,
                json!({"type": "QueryStarted", "query_id": query}),
            ),
            (
                4,
                "QueryCompleted",
                1,
                json!({"type": "QueryCompleted", "query_id": query, "row_count": 1,
                       "columns": [{"name": "count_star()", "type": "BIGINT"}], "elapsed_ms": 3}),
            ),
        ];
        for (sequence, event_type, version, payload) in rows {
            writer
                .0
                .execute(
                    &format!(
                        "INSERT INTO events (id, aggregate_type, aggregate_id, aggregate_sequence,
                             event_type, event_version, payload, metadata, created_at)
                         VALUES ('{}', 'QuerySession', '{session}', {sequence}, '{event_type}',
                                 {version}, '{payload}', '{{\"command_id\":\"{}\"}}',
                                 '2025-01-0{sequence}T10:00:00.000000Z')",
                        Uuid::new_v4(),
                        Uuid::new_v4()
                    ),
                    [],
                )
                .unwrap();
        }
    }
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let api = Api::new(server.url());

    // The projection upcast the stored v1 event.
    let (status, view) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["version"], 4);
    assert_eq!(view["history"][0]["engine"], "server");
    assert_eq!(view["history"][0]["state"], "completed");
    assert_eq!(view["history"][0]["row_count"], 1);
    // The stored row itself is never rewritten.
    let events = api.session_events(session).await;
    assert_eq!(events[1]["event_version"], 1);
    assert!(events[1]["payload"].get("engine").is_none());

    // The pipeline loads the upcast aggregate: the query ran on the server,
    // so reporting on it is the executor's business (403) …
    let (status, body) = api
        .command(&envelope(
            session,
            4,
            json!({"type": "FailQuery", "query_id": query, "error_id": Uuid::new_v4(), "message": "forged"}),
        ))
        .await;
    assert_eq!(status, 403, "{body}");
    // … and the session goes on from version 4.
    let local = Uuid::new_v4();
    let body = api
        .accept(&envelope(
            session,
            4,
            json!({"type": "SubmitQuery", "query_id": local, "sql": "SELECT 1", "engine": "local"}),
        ))
        .await;
    assert_eq!(body["version"], 5);
    let (_, view) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["history"][1]["engine"], "local");
    assert_eq!(view["history"][1]["state"], "submitted");
}

#[tokio::test]
async fn a_database_from_a_newer_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, writer) = EventStore::open(&dir.path().join(DATABASE)).unwrap();
        writer
            .0
            .execute(
                "INSERT INTO schema_migrations (version, name, applied_at)
                 VALUES (9999, 'from the future', '2030-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
    }
    let output = std::process::Command::new(sextant_tests::server_binary())
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("newer than this server knows"), "{stderr}");
}
