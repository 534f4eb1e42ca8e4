//! `/api/health` supervises the two long-lived workers, against the real
//! server binary: when the event store writer or the query executor dies
//! (killed through the hidden `--fault-injection` flag's `POST /api/faults`),
//! health answers 503 with a problem naming the dead worker, commands are
//! refused with 503 (writer) and a restart brings everything back, failing
//! the queries a dead executor left behind.

use serde_json::{json, Value};
use uuid::Uuid;

use sextant_tests::ServerProcess;

use crate::query::{record, run_to_end, session_on, submit, wait_for_state};
use crate::sync_client::{create, envelope, Api};

const FAULTS: &[&str] = &["--fault-injection"];

async fn health(api: &Api) -> (u16, Value) {
    api.get("/api/health").await
}

/// Polls health until it answers `status` (the dispatcher dies just after
/// the command that killed it was answered).
async fn health_turns(api: &Api, status: u16) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (now, body) = health(api).await;
        if now == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never answered {status}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn assert_healthy(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["writer"], "running", "{body}");
    assert_eq!(body["executor"], "running", "{body}");
}

#[tokio::test]
async fn a_dead_writer_makes_health_and_commands_answer_503_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), FAULTS).unwrap();
    let api = Api::new(server.url());
    let (status, body) = health(&api).await;
    assert_healthy(status, &body);
    let (session, _) = session_on(&api, "demo").await;

    let (status, body) = api.post("/api/faults", &json!({"kill": "writer"})).await;
    assert_eq!(status, 200, "{body}");
    // The writer dies on the next command: that one is dropped unanswered.
    let (status, body) = api.command(&envelope(Uuid::new_v4(), 0, create("x"))).await;
    assert_eq!(status, 500, "{body}");

    let body = health_turns(&api, 503).await;
    assert_eq!(body["writer"], "dead", "{body}");
    assert_eq!(body["executor"], "running", "{body}");
    assert!(body["error_id"].is_string(), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("writer died"),
        "{body}"
    );
    // Every later command is refused at once with 503, nothing hangs.
    let (status, body) = api.command(&envelope(Uuid::new_v4(), 0, create("y"))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error_id"].is_string(), "{body}");
    // Reads still answer from what is stored.
    let (status, body) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(server.log().contains("the event store writer died"));

    let server = server.restart().unwrap();
    let api = Api::new(server.url());
    let (status, body) = health(&api).await;
    assert_healthy(status, &body);
    let (_, record) = run_to_end(&api, session, "SELECT count(*) FROM demo").await;
    assert_eq!(record["state"], "completed", "{record}");
}

#[tokio::test]
async fn a_dead_executor_makes_health_answer_503_and_a_restart_fails_its_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), FAULTS).unwrap();
    let api = Api::new(server.url());
    let (session, _) = session_on(&api, "demo").await;

    let (status, body) = api.post("/api/faults", &json!({"kill": "executor"})).await;
    assert_eq!(status, 200, "{body}");
    // The next committed events kill it: this query is stored but never runs.
    let stranded = submit(&api, session, "SELECT count(*) FROM demo").await;
    let body = health_turns(&api, 503).await;
    assert_eq!(body["executor"], "dead", "{body}");
    assert_eq!(body["writer"], "running", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("executor died"),
        "{body}"
    );
    // Commands are still taken; the query stays submitted.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(record(&api, session, stranded).await["state"], "submitted");

    let server = server.restart().unwrap();
    let api = Api::new(server.url());
    let (status, body) = health(&api).await;
    assert_healthy(status, &body);
    let failed = wait_for_state(&api, session, stranded, &["failed"]).await;
    assert_eq!(failed["message"], "interrupted by server restart");
    let (_, record) = run_to_end(&api, session, "SELECT count(*) FROM demo").await;
    assert_eq!(record["state"], "completed", "{record}");
}

#[tokio::test]
async fn faults_cannot_be_injected_without_the_hidden_flag() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let api = Api::new(server.url());
    let (status, body) = api.post("/api/faults", &json!({"kill": "writer"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = health(&api).await;
    assert_healthy(status, &body);
}
