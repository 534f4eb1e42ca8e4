//! The command and read API against a real server process: statuses and
//! problem bodies, idempotency, optimistic concurrency, batches, executor-only
//! commands, read models, exposure flags and the per-command log line.

use std::collections::HashSet;

use serde_json::{json, Value};
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api};

fn start(extra: &[&str]) -> (tempfile::TempDir, ServerProcess, Api) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), extra).unwrap();
    let api = Api::new(server.url());
    (dir, server, api)
}

/// Every problem carries a UUID error id that the server also logged.
fn assert_problem(server: &ServerProcess, status: u16, body: &Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected, "{body}");
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem without {member}: {body}");
    }
    let error_id = body["error_id"].as_str().expect("error_id");
    Uuid::parse_str(error_id).expect("error_id is a UUID");
    assert!(
        server.log_eventually_contains(error_id, std::time::Duration::from_secs(5)),
        "error id {error_id} not in the log"
    );
}

async fn raw_post(
    api: &Api,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = api.http.post(format!("{}{path}", api.base)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn bad_input_gets_a_problem_with_an_error_id_and_appends_nothing() {
    let (_dir, server, api) = start(&["--body-limit", "4096"]);
    let session = Uuid::new_v4();
    let created = api.accept(&envelope(session, 0, create("Bad input"))).await;
    assert_eq!(created["version"], 1);

    let valid = serde_json::to_vec(&envelope(session, 1, rename("ok"))).unwrap();
    // No content type, wrong content type: 415.
    let (status, body) = raw_post(&api, "/api/commands", None, valid.clone()).await;
    assert_problem(&server, status, &body, 415);
    let (status, body) = raw_post(&api, "/api/commands", Some("text/plain"), valid).await;
    assert_problem(&server, status, &body, 415);
    // Malformed JSON, wrong shape: 400.
    let json = Some("application/json");
    let (status, body) = raw_post(&api, "/api/commands", json, b"{\"command_id\":".to_vec()).await;
    assert_problem(&server, status, &body, 400);
    let (status, body) = raw_post(&api, "/api/commands", json, b"[1, 2]".to_vec()).await;
    assert_problem(&server, status, &body, 400);
    // Unknown command, invalid value objects, unknown aggregate type: 400.
    for command in [
        json!({"type": "DropEverything"}),
        json!({"type": "RenameSession", "title": "   "}),
        json!({"type": "RenameSession", "title": "x".repeat(201)}),
        json!({"type": "AttachDataset", "dataset": {"kind": "url", "url": "file:///etc/passwd"}}),
        json!({"type": "RenameSession"}),
    ] {
        let (status, body) = api.command(&envelope(session, 1, command)).await;
        assert_problem(&server, status, &body, 400);
    }
    let mut wrong_type = envelope(session, 1, rename("x"));
    wrong_type["aggregate_type"] = json!("Spreadsheet");
    let (status, body) = api.command(&wrong_type).await;
    assert_problem(&server, status, &body, 400);
    // Over the body limit: 413.
    let huge = envelope(session, 1, rename(&"y".repeat(5000)));
    let (status, body) = api.command(&huge).await;
    assert_problem(&server, status, &body, 413);
    // Domain rejection: 422.
    let (status, body) = api.command(&envelope(session, 1, create("again"))).await;
    assert_problem(&server, status, &body, 422);
    // Stale and future versions: 409 with the current version.
    for expected in [0, 2, 99] {
        let (status, body) = api.command(&envelope(session, expected, rename("z"))).await;
        assert_problem(&server, status, &body, 409);
        assert_eq!(body["current_version"], 1, "{body}");
    }
    // Unknown session, bad ids, bad cursors: 404 / 400 problems.
    let (status, body) = api.get(&format!("/api/sessions/{}", Uuid::new_v4())).await;
    assert_problem(&server, status, &body, 404);
    let (status, body) = api.get("/api/sessions/not-a-uuid").await;
    assert_problem(&server, status, &body, 400);
    let (status, body) = api.get("/api/events?after=minus-one").await;
    assert_problem(&server, status, &body, 400);
    let (status, body) = api
        .get(&format!(
            "/api/aggregates/QuerySession/{session}/events?after_version=x"
        ))
        .await;
    assert_problem(&server, status, &body, 400);

    // Nothing of that was appended.
    assert_eq!(api.session_events(session).await.len(), 1);
    let (_, sessions) = api.get("/api/sessions").await;
    assert_eq!(sessions["global_sequence"], 1);
}

#[tokio::test]
async fn accepted_commands_answer_with_their_events_and_are_readable_at_once() {
    let (_dir, server, api) = start(&[]);
    let session = Uuid::new_v4();
    let first = envelope(session, 0, create("Revenue"));
    let body = api.accept(&first).await;
    assert_eq!(body["aggregate_id"], json!(session));
    assert_eq!(body["version"], 1);
    let event = &body["events"][0];
    assert_eq!(event["aggregate_sequence"], 1);
    assert_eq!(event["event_type"], "SessionCreated");
    assert_eq!(event["payload"]["title"], "Revenue");
    assert_eq!(event["metadata"]["command_id"], first["command_id"]);
    assert!(event["global_sequence"].as_u64().unwrap() >= 1);

    // Read-your-writes: the read model reflects the command as soon as it answered.
    for (version, title) in [(1, "Revenue Q3"), (2, "Revenue Q4")] {
        let body = api.accept(&envelope(session, version, rename(title))).await;
        let sequence = body["events"][0]["global_sequence"].as_u64().unwrap();
        let (status, view) = api.get(&format!("/api/sessions/{session}")).await;
        assert_eq!(status, 200);
        assert_eq!(view["title"], title);
        assert_eq!(view["version"], version + 1);
        assert_eq!(view["id"], json!(session));
        assert_eq!(view["lifecycle"], "open");
        assert!(view["global_sequence"].as_u64().unwrap() >= sequence);
    }
    let (_, list) = api.get("/api/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(list["sessions"][0]["title"], "Revenue Q4");
    assert_eq!(list["global_sequence"], 3);

    // The aggregate's events after a version, for rebasing clients.
    let (_, tail) = api
        .get(&format!(
            "/api/aggregates/QuerySession/{session}/events?after_version=1"
        ))
        .await;
    assert_eq!(tail["version"], 3);
    let sequences: Vec<u64> = tail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["aggregate_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, vec![2, 3]);
    // An unknown session is 404, like one the caller may not read.
    let (status, _) = api
        .get(&format!(
            "/api/aggregates/QuerySession/{}/events",
            Uuid::new_v4()
        ))
        .await;
    assert_eq!(status, 404);

    // One info line per accepted command, with its id, aggregate and version.
    let command_id = first["command_id"].as_str().unwrap();
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(command_id)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("INFO") && lines[0].contains("command accepted"));
    assert!(lines[0].contains(&session.to_string()) && lines[0].contains("version=1"));
}

#[tokio::test]
async fn a_resent_command_appends_once_and_always_gets_the_same_answer() {
    let (_dir, server, api) = start(&[]);
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("Idempotent")))
        .await;
    let command = envelope(session, 1, rename("once"));

    // Many concurrent resends of the same command.
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let api = api.clone();
        let command = command.clone();
        tasks.push(tokio::spawn(async move { api.command(&command).await }));
    }
    let mut bodies = HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        bodies.insert(body.to_string());
    }
    assert_eq!(bodies.len(), 1, "every resend gets the same body");
    let original: Value = serde_json::from_str(bodies.iter().next().unwrap()).unwrap();

    // The session moves on; the resend's expected version is stale now, and
    // it still gets its original 200.
    api.accept(&envelope(session, 2, rename("later"))).await;
    let (status, again) = api.command(&command).await;
    assert_eq!(status, 200);
    assert_eq!(again, original);
    // A client that rebased the pending command resends it with a new
    // expected version: still the original answer, nothing appended.
    let mut rebased = command.clone();
    rebased["expected_version"] = json!(3);
    let (status, again) = api.command(&rebased).await;
    assert_eq!(status, 200);
    assert_eq!(again, original);
    assert_eq!(api.session_events(session).await.len(), 3);

    // The same id with another body is refused, and nothing is appended.
    let mut reused = command.clone();
    reused["command"] = rename("something else");
    let (status, body) = api.command(&reused).await;
    assert_problem(&server, status, &body, 422);
    assert_eq!(api.session_events(session).await.len(), 3);

    // A rejected command is not recorded: its resend is judged again.
    let ahead = envelope(session, 4, rename("ahead of its time"));
    let (status, body) = api.command(&ahead).await;
    assert_eq!((status, &body["current_version"]), (409, &json!(3)));
    api.accept(&envelope(session, 3, rename("catch up"))).await;
    let (status, body) = api.command(&ahead).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 5);
}

#[tokio::test]
async fn concurrent_commands_on_one_version_let_exactly_one_through() {
    let (_dir, _server, api) = start(&[]);
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("Race"))).await;
    let mut total_accepted = 0;
    for round in 0..5u64 {
        let version = 1 + round;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let api = api.clone();
            let command = envelope(session, version, rename(&format!("r{round} w{i}")));
            tasks.push(tokio::spawn(async move { api.command(&command).await }));
        }
        let mut accepted = 0;
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                200 => accepted += 1,
                409 => assert_eq!(body["current_version"], version + 1, "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(accepted, 1, "round {round}");
        total_accepted += accepted;
    }
    let events = api.session_events(session).await;
    assert_eq!(events.len(), 1 + total_accepted);
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["aggregate_sequence"], index as u64 + 1);
    }
    let globals: Vec<u64> = events
        .iter()
        .map(|e| e["global_sequence"].as_u64().unwrap())
        .collect();
    assert!(globals.windows(2).all(|w| w[0] < w[1]), "{globals:?}");
}

#[tokio::test]
async fn batches_are_processed_in_order_each_as_if_alone() {
    let (_dir, _server, api) = start(&[]);
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let create_a = envelope(a, 0, create("A"));
    let commands = json!([
        create_a,
        envelope(a, 1, rename("A1")),
        envelope(b, 0, create("B")),
        {"command_id": "not a uuid"},
        envelope(a, 1, rename("stale")),
        envelope(a, 2, rename("A2")),
        create_a,
    ]);
    let (status, body) = api
        .post("/api/commands/batch", &json!({ "commands": commands }))
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 400, 409, 200, 200]);
    assert_eq!(results[1]["body"]["version"], 2);
    assert_eq!(results[4]["body"]["current_version"], 2);
    assert!(results[3]["body"]["error_id"].is_string());
    assert_eq!(results[5]["body"]["version"], 3);
    // The resend inside the batch answers like the original.
    assert_eq!(results[6]["body"], results[0]["body"]);
    assert_eq!(api.session_events(a).await.len(), 3);
    let (_, view) = api.get(&format!("/api/sessions/{a}")).await;
    assert_eq!(view["title"], "A2");

    let too_many: Vec<Value> = (0..501)
        .map(|_| envelope(Uuid::new_v4(), 0, create("x")))
        .collect();
    let (status, body) = api
        .post("/api/commands/batch", &json!({ "commands": too_many }))
        .await;
    assert_eq!(status, 400, "{body}");
    let (_, list) = api.get("/api/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);

    // A full batch of 500 offline commands in one round trip.
    let session = Uuid::new_v4();
    let mut pending = vec![envelope(session, 0, create("offline"))];
    pending.extend((1..500).map(|v| envelope(session, v, rename(&format!("edit {v}")))));
    let (status, body) = api
        .post("/api/commands/batch", &json!({ "commands": pending }))
        .await;
    assert_eq!(status, 200);
    assert!(body["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == 200));
    let (_, view) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["version"], 500);
}

#[tokio::test]
async fn executor_only_commands_are_forbidden_over_http_before_any_other_check() {
    let (_dir, server, api) = start(&[]);
    let session = Uuid::new_v4();
    let query = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("Forged"))).await;
    api.accept(&envelope(
        session,
        1,
        json!({"type": "SubmitQuery", "query_id": query, "sql": "SELECT 1", "engine": "server"}),
    ))
    .await;
    let forged = [
        json!({"type": "StartQuery", "query_id": query}),
        json!({"type": "CompleteQuery", "query_id": query, "row_count": 1, "columns": [], "elapsed_ms": 1}),
        json!({"type": "FailQuery", "query_id": query, "error_id": Uuid::new_v4(), "message": "no"}),
    ];
    for command in forged {
        // A wrong expected version and a domain-invalid state still give 403.
        for expected in [2, 0, 7] {
            let (status, body) = api
                .command(&envelope(session, expected, command.clone()))
                .await;
            assert_problem(&server, status, &body, 403);
        }
    }
    // The server's executor runs the server query meanwhile; wait until it
    // has finished with it, whatever the outcome.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let version = loop {
        let (_, view) = api.get(&format!("/api/sessions/{session}")).await;
        let state = view["history"][0]["state"].as_str().unwrap().to_owned();
        if !["submitted", "running"].contains(&state.as_str()) {
            break view["version"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "query still {state}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // A local-engine query is the browser's to run and report.
    let local = Uuid::new_v4();
    api.accept(&envelope(
        session,
        version,
        json!({"type": "SubmitQuery", "query_id": local, "sql": "SELECT 1", "engine": "local"}),
    ))
    .await;
    api.accept(&envelope(
        session,
        version + 1,
        json!({"type": "StartQuery", "query_id": local}),
    ))
    .await;
    // The forged commands appended nothing: only the executor's events and ours.
    let events = api.session_events(session).await;
    assert_eq!(events.len() as u64, version + 2);
    for event in &events {
        let about_server_query = event["payload"]["query_id"] == json!(query);
        let executor_only = ["QueryStarted", "QueryCompleted", "QueryFailed"]
            .contains(&event["event_type"].as_str().unwrap());
        if about_server_query && executor_only {
            assert_eq!(event["metadata"]["client_id"], "server:query-executor");
        }
    }
}

#[tokio::test]
async fn binding_beyond_loopback_needs_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new(sextant_tests::server_binary())
        .args(["--bind", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");

    let server = ServerProcess::start_on(dir.path(), "0.0.0.0:0", &["--allow-remote"]).unwrap();
    assert!(server
        .log()
        .contains("serving plain HTTP on a non-loopback address"));
}

#[tokio::test]
async fn read_models_are_the_same_after_a_restart() {
    let (_dir, server, api) = start(&[]);
    for i in 0..5 {
        let session = Uuid::new_v4();
        api.accept(&envelope(session, 0, create(&format!("s{i}"))))
            .await;
        api.accept(&envelope(session, 1, rename(&format!("t{i}"))))
            .await;
    }
    let (_, before) = api.get("/api/sessions").await;
    let server = server.restart().unwrap();
    let api = Api::new(server.url());
    let (status, health) = api.get("/api/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (_, after) = api.get("/api/sessions").await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_query_id_is_refused_in_a_second_session() {
    let (_dir, server, api) = start(&[]);
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    api.accept(&envelope(first, 0, create("first"))).await;
    api.accept(&envelope(second, 0, create("second"))).await;
    let query_id = Uuid::new_v4();
    let submit =
        json!({"type": "SubmitQuery", "query_id": query_id, "sql": "SELECT 42", "engine": "local"});
    api.accept(&envelope(first, 1, submit.clone())).await;

    // Results are looked up by query id alone: another session may not reuse it.
    let (status, body) = api.command(&envelope(second, 1, submit)).await;
    assert_problem(&server, status, &body, 422);
    assert!(
        body["detail"].as_str().unwrap().contains("another session"),
        "{body}"
    );
    assert_eq!(
        api.session_events(second).await.len(),
        1,
        "nothing appended"
    );
}
