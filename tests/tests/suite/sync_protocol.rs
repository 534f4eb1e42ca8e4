//! The sync protocol v2 against a real server process: the exact base of a
//! command (409 unless version and base match, with the current head), the
//! store id on every answer, and the feed's `hello` frame that confirms a
//! client's state or tells it to reset (a recreated store, a store restored
//! from an older backup). See docs/SYNC.md.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api};

fn start() -> (tempfile::TempDir, ServerProcess, Api) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let api = Api::new(server.url());
    (dir, server, api)
}

fn with_base(mut envelope: Value, base: Value) -> Value {
    envelope["base_command"] = base;
    envelope
}

async fn store_id(api: &Api) -> String {
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, 200, "{health}");
    let id = health["store_id"].as_str().expect("store_id").to_owned();
    Uuid::parse_str(&id).expect("the store id is a UUID");
    id
}

/// Issue 9, first edge, at the API: a command decided on another history of
/// the same length is a conflict, not a decision on the wrong state.
#[tokio::test]
async fn a_command_is_decided_only_on_its_exact_base() {
    let (_dir, _server, api) = start();
    let session = Uuid::new_v4();
    let created = envelope(session, 0, create("a"));
    api.accept(&created).await;
    let ours = created["command_id"].clone();
    // Another replica renames: the session is at version 2, by its command.
    let theirs = envelope(session, 1, rename("theirs"));
    api.accept(&with_base(theirs.clone(), ours.clone())).await;

    // Decided on version 2 as we believed it (after a rename of ours that the
    // server never got): refused with the current head, nothing stored.
    let stale = with_base(envelope(session, 2, rename("ours")), json!(Uuid::new_v4()));
    let (status, body) = api.command(&stale).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["current_version"], 2);
    assert_eq!(body["current_command"], theirs["command_id"]);
    assert_eq!(api.session_events(session).await.len(), 2);

    // The same command rebased on the real head is decided; a resend on an
    // older base still gets its original answer (the base is not part of
    // the idempotency fingerprint).
    let rebased = with_base(stale.clone(), theirs["command_id"].clone());
    let first = api.accept(&rebased).await;
    assert_eq!(first["version"], 3);
    let mut resend = stale.clone();
    resend["expected_version"] = json!(9);
    resend["base_command"] = json!(Uuid::new_v4());
    let again = api.accept(&resend).await;
    assert_eq!(again["events"], first["events"]);

    // Without a base, the number alone is checked (older clients, the executor).
    let numbered = envelope(session, 3, rename("numbered"));
    api.accept(&numbered).await;
    // A base at version 0 names an event that cannot exist.
    let (status, body) = api
        .command(&with_base(
            envelope(Uuid::new_v4(), 0, create("x")),
            json!(Uuid::new_v4()),
        ))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["current_version"], 0);
}

/// Issue 9's first edge in one batch: the outbox of a local query
/// (submit, start, complete) sent after another replica renamed.
#[tokio::test]
async fn a_batch_decided_on_a_replaced_base_conflicts_instead_of_failing() {
    let (_dir, _server, api) = start();
    let session = Uuid::new_v4();
    let created = envelope(session, 0, create("a"));
    api.accept(&created).await;
    api.accept(&envelope(session, 1, rename("by B"))).await;

    let query = Uuid::new_v4();
    let submit = with_base(
        envelope(
            session,
            1,
            json!({"type": "SubmitQuery", "query_id": query, "sql": "SELECT 1", "engine": "local"}),
        ),
        created["command_id"].clone(),
    );
    let start = with_base(
        envelope(session, 2, json!({"type": "StartQuery", "query_id": query})),
        submit["command_id"].clone(),
    );
    let complete = with_base(
        envelope(
            session,
            3,
            json!({"type": "CompleteQuery", "query_id": query, "row_count": 1, "columns": [], "elapsed_ms": 1}),
        ),
        start["command_id"].clone(),
    );
    let (status, body) = api
        .post(
            "/api/commands/batch",
            &json!({"commands": [submit, start, complete]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    // Before bases, the start was refused with 422 ("not the active query")
    // and the client believed it; now each is a conflict to rebase.
    assert_eq!(statuses, vec![409, 409, 409], "{body}");
    assert_eq!(body["store_id"], json!(store_id(&api).await));
}

#[tokio::test]
async fn every_answer_names_the_store_which_keeps_its_id_across_restarts() {
    let (dir, server, api) = start();
    let id = store_id(&api).await;
    let response = api
        .http
        .get(format!("{}/api/sessions", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-sextant-store"], id.as_str());
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("a"))).await;
    let (_, fetched) = api
        .get(&format!("/api/aggregates/QuerySession/{session}/events"))
        .await;
    assert_eq!(fetched["store_id"], json!(id));

    let server = server.restart().unwrap();
    let api = Api::new(server.url());
    assert_eq!(
        store_id(&api).await,
        id,
        "the id is the store's, not the process's"
    );
    drop(server);

    let other = tempfile::tempdir().unwrap();
    let second = ServerProcess::start(other.path(), &[]).unwrap();
    assert_ne!(store_id(&Api::new(second.url())).await, id);
    drop(dir);
}

/// The `x-sextant-witness` judgement an answer carries for a request that
/// named `witness` (`None`: the answer carries none).
async fn judged(api: &Api, method: &str, path: &str, witness: Option<&str>) -> Option<String> {
    let url = format!("{}{path}", api.base);
    let mut request = match method {
        "POST" => api
            .http
            .post(url)
            .json(&json!({ "commands": [] }))
            .header("content-type", "application/json"),
        _ => api.http.get(url),
    };
    if let Some(witness) = witness {
        request = request.header("x-sextant-witness", witness);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response
        .headers()
        .get("x-sextant-witness")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Answers that bring events (the batch, an aggregate's events) say whether
/// the store holds the witness the request named: a replica takes events
/// only from a store that holds everything it holds.
#[tokio::test]
async fn an_answer_says_whether_the_store_holds_the_witness_sent() {
    let (_dir, _server, api) = start();
    let session = Uuid::new_v4();
    let created = api.accept(&envelope(session, 0, create("a"))).await;
    let event = &created["events"][0];
    let sequence = event["global_sequence"].as_u64().unwrap();
    let held = format!("{sequence}:{}", event["id"].as_str().unwrap());
    let other = format!("{sequence}:{}", Uuid::new_v4());
    let missing = format!("{}:{}", sequence + 100, Uuid::new_v4());
    let events = format!("/api/aggregates/QuerySession/{session}/events");
    for (method, path) in [("GET", events.as_str()), ("POST", "/api/commands/batch")] {
        assert_eq!(
            judged(&api, method, path, Some(&held)).await.as_deref(),
            Some("held")
        );
        assert_eq!(
            judged(&api, method, path, Some(&other)).await.as_deref(),
            Some("witness_differs")
        );
        assert_eq!(
            judged(&api, method, path, Some(&missing)).await.as_deref(),
            Some("witness_missing")
        );
        assert_eq!(judged(&api, method, path, None).await, None);
        assert_eq!(
            judged(&api, method, path, Some("not a witness")).await,
            None,
            "a malformed witness is not judged"
        );
    }
}

/// The feed's first frame for a client that asks (`hello=1`).
async fn hello(api: &Api, query: &str) -> (Value, crate::sync_client::SseStream) {
    let mut stream = api.sse(None, query).await;
    let frame = stream
        .next(Duration::from_secs(10))
        .await
        .expect("a hello frame");
    assert_eq!(frame.event.as_deref(), Some("hello"), "{frame:?}");
    (frame.json(), stream)
}

#[tokio::test]
async fn the_feed_confirms_a_matching_witness_and_resets_any_other() {
    let (_dir, _server, api) = start();
    let id = store_id(&api).await;
    let session = Uuid::new_v4();
    let created = api.accept(&envelope(session, 0, create("a"))).await;
    let event = &created["events"][0];
    let (sequence, event_id) = (event["global_sequence"].as_u64().unwrap(), &event["id"]);

    // A new client, and one whose witness matches: confirmed, resumed.
    let (first, _) = hello(&api, "?hello=1").await;
    assert_eq!(first["status"], "confirmed");
    assert_eq!(first["store_id"], json!(id));
    let query = format!(
        "?hello=1&after={sequence}&store={id}&witness_sequence={sequence}&witness_id={}",
        event_id.as_str().unwrap()
    );
    let (matched, mut stream) = hello(&api, &query).await;
    assert_eq!(matched["status"], "confirmed", "{matched}");
    api.accept(&envelope(session, 1, rename("b"))).await;
    let next = stream.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        next.json()["aggregate_sequence"],
        2,
        "resumed after the cursor"
    );

    // Another store, another event at the witness, no event there, a cursor
    // past the head: reset, and the whole log follows.
    let other_store = Uuid::new_v4();
    let cases = [
        (
            format!("?hello=1&after=0&store={other_store}"),
            "other_store",
        ),
        (
            format!(
                "?hello=1&after={sequence}&store={id}&witness_sequence={sequence}&witness_id={}",
                Uuid::new_v4()
            ),
            "witness_differs",
        ),
        (
            format!(
                "?hello=1&after=99&store={id}&witness_sequence=99&witness_id={}",
                Uuid::new_v4()
            ),
            "witness_missing",
        ),
        (format!("?hello=1&after=99&store={id}"), "cursor_ahead"),
    ];
    for (query, reason) in cases {
        let (frame, mut stream) = hello(&api, &query).await;
        assert_eq!(frame["status"], "reset", "{query}: {frame}");
        assert_eq!(frame["reason"], reason, "{query}");
        assert!(frame["message"].as_str().unwrap().contains("server"));
        let first = stream.next_event(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            first.json()["aggregate_sequence"],
            1,
            "{query}: from the start"
        );
    }

    // Clients that do not ask get no hello frame (plain EventSource users).
    let mut plain = api.sse(None, "").await;
    let frame = plain.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(frame.event, None);
    let (status, body) = api.get("/api/events?hello=1&witness_sequence=3").await;
    assert_eq!(status, 400, "{body}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Issue 9, third edge, at the API: the data directory is restored from an
/// older backup and grows again past the client's cursor; the client's
/// witness tells it to reset instead of resuming into a different history.
#[tokio::test]
async fn a_store_restored_from_a_backup_is_noticed_by_the_witness() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let api = Api::new(server.url());
    let id = store_id(&api).await;
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("a"))).await;
    let server = {
        let addr = server.addr.to_string();
        server.stop().unwrap();
        copy_dir(dir.path(), backup.path());
        ServerProcess::start_on(dir.path(), &addr, &[]).unwrap()
    };
    // The client saw this rename: its witness. (A new HTTP client after
    // each restart: pooled connections died with the process.)
    let api = Api::new(server.url());
    let renamed = api.accept(&envelope(session, 1, rename("seen"))).await;
    let witness = renamed["events"][0].clone();
    let addr = server.addr.to_string();
    server.stop().unwrap();
    for name in [
        "sextant.sqlite3",
        "sextant.sqlite3-wal",
        "sextant.sqlite3-shm",
    ] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    copy_dir(backup.path(), dir.path());
    let server = ServerProcess::start_on(dir.path(), &addr, &[]).unwrap();
    let api = Api::new(server.url());
    assert_eq!(store_id(&api).await, id, "restored, not recreated");
    // The restored store grows past the client's cursor, differently.
    api.accept(&envelope(session, 1, rename("other history")))
        .await;
    api.accept(&envelope(session, 2, rename("more"))).await;

    let sequence = witness["global_sequence"].as_u64().unwrap();
    let query = format!(
        "?hello=1&after={sequence}&store={id}&witness_sequence={sequence}&witness_id={}",
        witness["id"].as_str().unwrap()
    );
    let (frame, _) = hello(&api, &query).await;
    assert_eq!(frame["status"], "reset", "{frame}");
    assert_eq!(frame["reason"], "witness_differs");
    // A batch or a fetch naming that witness hears the same.
    let named = format!("{sequence}:{}", witness["id"].as_str().unwrap());
    let events = format!("/api/aggregates/QuerySession/{session}/events");
    for (method, path) in [("GET", events.as_str()), ("POST", "/api/commands/batch")] {
        assert_eq!(
            judged(&api, method, path, Some(&named)).await.as_deref(),
            Some("witness_differs")
        );
    }
    drop(server);
}
