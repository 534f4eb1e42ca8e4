//! One Sextant node on PostgreSQL (`--database-url`): the real server
//! binary against a fresh database of the test process's throwaway cluster.
//! Commands, idempotent retries, 409 with the current version, the SSE
//! feed and its resume, accounts and sharing, and a restart that rebuilds
//! everything from the database.

use std::time::Duration;

use serde_json::json;
use sextant_tests::postgres::{cluster, users_command, Node};
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_node_on_postgres_accepts_commands_retries_conflicts_and_streams() {
    let url = cluster().database();
    let node = Node::start(&url, None, &[]).unwrap();
    let api = Api::new(node.url());
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, 200, "{health}");
    assert!(
        node.server.log().contains("backend=\"postgres\""),
        "{}",
        node.server.log()
    );

    // Commands, read back through the read models and the events.
    let session = Uuid::new_v4();
    let first = envelope(session, 0, create("On Postgres"));
    let accepted = api.accept(&first).await;
    assert_eq!(accepted["version"], 1);
    let accepted = api.accept(&envelope(session, 1, rename("Renamed"))).await;
    assert_eq!(accepted["version"], 2);
    let (status, view) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["title"], "Renamed");
    let events = api.session_events(session).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        (
            events[0]["global_sequence"].as_u64(),
            events[1]["global_sequence"].as_u64()
        ),
        (Some(1), Some(2))
    );

    // An idempotent retry gets the original answer; nothing is appended.
    let (status, again) = api.command(&first).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["version"], 1);
    assert_eq!(again["events"][0]["id"], events[0]["id"]);
    assert_eq!(api.session_events(session).await.len(), 2);

    // A stale command: 409 with the current version and its command.
    let (status, conflict) = api.command(&envelope(session, 1, rename("Late"))).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["current_version"], 2);
    assert!(conflict["current_command"].is_string(), "{conflict}");

    // The feed: everything, then a resume after the first event, then live.
    let mut feed = api.sse(None, "").await;
    let frame = feed.next_event(WAIT).await.unwrap();
    assert_eq!(frame.id, Some(1));
    let mut resumed = api.sse(Some(1), "").await;
    assert_eq!(resumed.next_event(WAIT).await.unwrap().id, Some(2));
    api.accept(&envelope(session, 2, rename("Live"))).await;
    let live = resumed.next_event(WAIT).await.unwrap();
    assert_eq!(live.id, Some(3));
    assert_eq!(live.json()["payload"]["title"], "Live");

    // The hello frame names the database's store id, confirmed.
    let (_, health) = api.get("/api/health").await;
    let store_id = health["store_id"].as_str().unwrap().to_owned();
    let mut hello = api
        .sse(None, &format!("?hello=1&store={store_id}&after=3"))
        .await;
    let frame = hello.next(WAIT).await.unwrap();
    assert_eq!(frame.event.as_deref(), Some("hello"));
    assert_eq!(frame.json()["status"], "confirmed", "{}", frame.data);

    // A restart rebuilds the read models from the database: same store, same state.
    let data_dir = node.server.data_dir.clone();
    let restarted = node.server.restart().unwrap();
    assert_eq!(restarted.data_dir, data_dir);
    let api = Api::new(restarted.url());
    let (_, view) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(
        (view["title"].clone(), view["version"].clone()),
        (json!("Live"), json!(3))
    );
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["store_id"], json!(store_id));
}

#[tokio::test]
async fn users_and_sharing_live_in_the_database() {
    let url = cluster().database();
    let node = Node::start(&url, None, &[]).unwrap();
    let owner = Api::new(node.url());
    // `server users add` against the database, beside the running node.
    let out = users_command(&url, node.data_dir.path(), &["add", "bob"]).unwrap();
    let bob_token = out.lines().last().unwrap().to_owned();
    let bob = Api::with_token(node.url(), &bob_token);
    // The node notices the new user (it re-reads users every 250 ms).
    let mut waited = Duration::ZERO;
    while bob.get("/api/me").await.0 != 200 {
        assert!(waited < WAIT, "the node never noticed bob");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }

    let session = Uuid::new_v4();
    owner.accept(&envelope(session, 0, create("Owner's"))).await;
    let (status, _) = bob.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 404, "not shared yet");
    owner
        .accept(&envelope(
            session,
            1,
            json!({"type": "ShareSession", "user": "bob", "role": "viewer"}),
        ))
        .await;
    let (status, view) = bob.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200, "{view}");
    let (status, refused) = bob.command(&envelope(session, 2, rename("Bob's"))).await;
    assert_eq!(status, 403, "a viewer may not write: {refused}");
    let (status, refused) = owner
        .command(&envelope(
            session,
            2,
            json!({"type": "ShareSession", "user": "nobody", "role": "viewer"}),
        ))
        .await;
    assert_eq!(status, 422, "{refused}");
    let listed = users_command(&url, node.data_dir.path(), &["list"]).unwrap();
    assert!(
        listed.contains("bob") && listed.contains("owner"),
        "{listed}"
    );
}
