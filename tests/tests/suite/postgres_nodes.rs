//! Several Sextant nodes on one PostgreSQL database: the real server binary
//! three times against a fresh database of the test process's throwaway
//! cluster. Commands spread over the nodes converge to one gap-free log
//! that every node's feed shows; concurrent conflicting commands through
//! different nodes: exactly one wins per version, the rest are 409 with the
//! current version; an SSE client resumes on another node with no gap and
//! no duplicate; an answer is sent only once the answering node's read
//! models show the command.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use sextant_tests::postgres::Node;
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api, SseStream};

const WAIT: Duration = Duration::from_secs(10);

/// Three nodes on one fresh database; the first created the owner.
fn three_nodes() -> Vec<Node> {
    sextant_tests::postgres::nodes_on_a_fresh_database(3).0
}

/// The ids of the next `count` events of a feed.
async fn ids(feed: &mut SseStream, count: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let frame = feed
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("the feed stopped after {ids:?}"));
        ids.push(frame.id.unwrap());
    }
    ids
}

#[tokio::test]
async fn commands_spread_over_three_nodes_converge_to_one_gap_free_log() {
    let nodes = three_nodes();
    let apis: Vec<Api> = nodes.iter().map(|n| Api::new(n.url())).collect();
    // Every node's feed from the start, open before any command.
    let mut feeds = Vec::new();
    for api in &apis {
        feeds.push(api.sse(None, "").await);
    }
    const SESSIONS: usize = 6;
    const RENAMES: u64 = 4;
    let sessions: Vec<Uuid> = (0..SESSIONS).map(|_| Uuid::new_v4()).collect();
    // Each session's commands go to a different node each time, and the
    // sessions run concurrently.
    let runs = sessions.iter().enumerate().map(|(index, session)| {
        let apis = &apis;
        async move {
            let node = |step: usize| &apis[(index + step) % apis.len()];
            let answer = node(0)
                .accept(&envelope(*session, 0, create("spread")))
                .await;
            // Read-your-writes: the answering node's read model shows it.
            let (status, view) = node(0).get(&format!("/api/sessions/{session}")).await;
            assert_eq!(
                (status, view["version"].clone()),
                (200, json!(1)),
                "{answer}"
            );
            for version in 1..=RENAMES {
                let api = node(version as usize);
                let answer = api
                    .accept(&envelope(*session, version, rename(&format!("r{version}"))))
                    .await;
                let (_, view) = api.get(&format!("/api/sessions/{session}")).await;
                assert_eq!(view["version"], json!(version + 1), "{answer}");
            }
        }
    });
    join_all(runs).await;

    let total = SESSIONS * (1 + RENAMES as usize);
    let expected: Vec<u64> = (1..=total as u64).collect();
    for (index, feed) in feeds.iter_mut().enumerate() {
        assert_eq!(ids(feed, total).await, expected, "node {index}'s feed");
    }
    // Every node's read models agree with one another.
    for session in &sessions {
        let mut views = Vec::new();
        for api in &apis {
            let (_, view) = api.get(&format!("/api/sessions/{session}")).await;
            views.push((view["version"].clone(), view["title"].clone()));
        }
        assert!(views.iter().all(|v| *v == views[0]), "{views:?}");
        assert_eq!(views[0], (json!(RENAMES + 1), json!(format!("r{RENAMES}"))));
    }
}

#[tokio::test]
async fn concurrent_conflicting_commands_through_different_nodes_one_wins_per_version() {
    let nodes = three_nodes();
    let apis: Vec<Api> = nodes.iter().map(|n| Api::new(n.url())).collect();
    let session = Uuid::new_v4();
    apis[0]
        .accept(&envelope(session, 0, create("contested")))
        .await;
    const ISSUERS: usize = 64;
    const ROUNDS: u64 = 3;
    for round in 1..=ROUNDS {
        // Every node must know the current version before the race, so each
        // issuer decides on it (a node behind would answer 409 too, but
        // that would not test the race).
        for api in &apis {
            let (_, view) = wait_for_version(api, session, round).await;
            assert_eq!(view["version"], json!(round));
        }
        let attempts = (0..ISSUERS).map(|issuer| {
            let api = &apis[issuer % apis.len()];
            async move {
                api.command(&envelope(
                    session,
                    round,
                    rename(&format!("round {round} issuer {issuer}")),
                ))
                .await
            }
        });
        let answers: Vec<(u16, Value)> = join_all(attempts).await;
        let winners: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        assert_eq!(winners[0]["version"], json!(round + 1));
        for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
            assert_eq!(*status, 409, "{body}");
            assert_eq!(body["current_version"], json!(round + 1), "{body}");
        }
    }
    let events = apis[2].session_events(session).await;
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["aggregate_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=ROUNDS + 1).collect::<Vec<_>>());
}

/// Polls a node until its read model shows `session` at `version`.
async fn wait_for_version(api: &Api, session: Uuid, version: u64) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, view) = api.get(&format!("/api/sessions/{session}")).await;
        if view["version"] == json!(version) || tokio::time::Instant::now() > deadline {
            return (status, view);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_sse_client_resumes_on_another_node_without_gap_or_duplicate() {
    let nodes = three_nodes();
    let apis: Vec<Api> = nodes.iter().map(|n| Api::new(n.url())).collect();
    let session = Uuid::new_v4();
    // The client follows node 0 while commands arrive through nodes 1 and 2.
    let mut feed = apis[0].sse(None, "").await;
    apis[1]
        .accept(&envelope(session, 0, create("roaming")))
        .await;
    for version in 1..=4 {
        apis[1 + version as usize % 2]
            .accept(&envelope(session, version, rename(&format!("r{version}"))))
            .await;
    }
    assert_eq!(ids(&mut feed, 5).await, vec![1, 2, 3, 4, 5]);
    let (_, health) = apis[0].get("/api/health").await;
    let store_id = health["store_id"].as_str().unwrap().to_owned();
    let witness_id = apis[0].session_events(session).await[4]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(feed);

    // While it is away, more commands land on every node.
    for version in 5..=10 {
        apis[version as usize % 3]
            .accept(&envelope(session, version, rename(&format!("r{version}"))))
            .await;
    }
    // It resumes on node 2 with its cursor, store id and witness.
    let mut resumed = apis[2]
        .sse(
            Some(5),
            &format!("?hello=1&store={store_id}&witness_sequence=5&witness_id={witness_id}"),
        )
        .await;
    let hello = resumed.next(WAIT).await.unwrap();
    assert_eq!(hello.event.as_deref(), Some("hello"));
    assert_eq!(hello.json()["status"], "confirmed", "{}", hello.data);
    assert_eq!(ids(&mut resumed, 6).await, vec![6, 7, 8, 9, 10, 11]);
    // Then live events from any node, each once.
    apis[0]
        .accept(&envelope(session, 11, rename("after the resume")))
        .await;
    assert_eq!(ids(&mut resumed, 1).await, vec![12]);
    assert!(
        resumed
            .next_event(Duration::from_millis(700))
            .await
            .is_none(),
        "no duplicate follows"
    );
}
