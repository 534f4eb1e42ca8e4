//! A store that fails inside a group commit (issue 11): SQLite rolls back
//! the whole transaction on an I/O error, so the writer must stop the group,
//! answer the rest 503 with an error id, store nothing of it, drop its
//! cache and tell subscribers to catch up from the store. A UNIQUE violation
//! of one command stays that command's answer. The failing disk is the
//! fault-injecting VFS (`sextant_tests::vfs`).

use std::time::Duration;

use server::bus::{Bus, BusMessage};
use server::error::ErrorKind;
use server::pipeline::{CommandContext, CommandOutcome, Pipeline};
use server::store::{Durability, SqliteStore as EventStore, StoreOptions};
use sextant_tests::vfs::TestVfs;
use shared_domain::{Aggregate, CommandEnvelope, QuerySession, SessionCommand, SessionTitle};
use uuid::Uuid;

fn command(
    session: Uuid,
    expected_version: u64,
    title: &str,
) -> CommandEnvelope<serde_json::Value> {
    let command = if expected_version == 0 {
        SessionCommand::CreateSession {
            title: SessionTitle::new(title).unwrap(),
        }
    } else {
        SessionCommand::RenameSession {
            title: SessionTitle::new(title).unwrap(),
        }
    };
    CommandEnvelope {
        command_id: Uuid::new_v4(),
        aggregate_type: QuerySession::TYPE.into(),
        aggregate_id: session,
        expected_version,
        base_command: None,
        command,
    }
    .to_json()
}

fn stored_commands(path: &std::path::Path, vfs: Option<&str>) -> Vec<String> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = match vfs {
        Some(vfs) => rusqlite::Connection::open_with_flags_and_vfs(path, flags, vfs),
        None => rusqlite::Connection::open_with_flags(path, flags),
    }
    .unwrap();
    let mut select = conn
        .prepare("SELECT json_extract(metadata, '$.command_id') FROM events")
        .unwrap();
    let ids = select
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_error_inside_a_group_fails_the_rest_of_the_group_and_stores_none_of_it() {
    let vfs = TestVfs::register("failing-disk");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sextant.sqlite3");
    let options = StoreOptions {
        durability: Durability::Normal,
        vfs: Some(vfs.name().to_owned()),
    };
    let (_store, writer) = EventStore::open_with(&path, &options).unwrap();
    // A tiny page cache: a group's dirty pages spill into the WAL before its
    // COMMIT, so the failing write lands in the middle of the group.
    writer.0.execute_batch("PRAGMA cache_size = 2").unwrap();
    let bus = Bus::default();
    let mut subscriber = bus.subscribe();
    let pipeline = Pipeline::start(writer, bus);
    let context = CommandContext::default;

    let long = "x".repeat(SessionTitle::MAX_CHARS);
    let sessions: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    let creates: Vec<_> = sessions.iter().map(|s| command(*s, 0, &long)).collect();
    for outcome in pipeline.execute_batch(&creates, context()).await {
        outcome.unwrap();
    }

    // Make the next group 200 renames: hold the write lock while a refused
    // command (which writes nothing) occupies the writer, queue the renames
    // behind it, plan one failing WAL write, let go.
    let blocker =
        rusqlite::Connection::open_with_flags_and_vfs(&path, Default::default(), vfs.name())
            .unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let refused = tokio::spawn({
        let pipeline = pipeline.clone();
        let stale = command(sessions[0], 9, "stale");
        async move { pipeline.execute_batch(&[stale], context()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let renames: Vec<_> = sessions.iter().map(|s| command(*s, 1, &long)).collect();
    let batch = tokio::spawn({
        let pipeline = pipeline.clone();
        let renames = renames.clone();
        async move { pipeline.execute_batch(&renames, context()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    vfs.fail_one_wal_write_after(4);
    blocker.execute_batch("COMMIT").unwrap();
    let refused = refused.await.unwrap();
    assert_eq!(refused[0].as_ref().unwrap_err().kind, ErrorKind::Conflict);
    let outcomes: Vec<CommandOutcome> = batch.await.unwrap();
    assert!(
        vfs.failed_a_write(),
        "the planned write failure did not happen"
    );

    let stored = stored_commands(&path, Some(vfs.name()));
    let mut failed = 0;
    for (rename, outcome) in renames.iter().zip(&outcomes) {
        let id = rename.command_id.to_string();
        match outcome {
            Ok(_) => assert!(stored.contains(&id), "accepted {id} is not stored"),
            Err(error) => {
                failed += 1;
                assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
                assert!(
                    !stored.contains(&id),
                    "{id} was answered {error} but its events are stored"
                );
            }
        }
    }
    // The write failed early in the group: most of it got 503.
    assert!(failed > 100, "{failed} failed: {outcomes:?}");
    // One error id per failed group, shared by its commands.
    let ids: std::collections::HashSet<_> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(|e| e.id))
        .collect();
    assert!(ids.len() < failed, "{outcomes:?}");

    // Subscribers were told to catch up from the store.
    let caught_up = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(BusMessage::CatchUp) = subscriber.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(caught_up.is_ok(), "no catch-up message on the bus");

    // The very same commands (same ids, same expected
    // versions) go through, decided on the store, not on a stale cache.
    for outcome in pipeline.execute_batch(&renames, context()).await {
        let accepted = outcome.unwrap();
        assert_eq!(accepted.version, 2);
    }
}

#[tokio::test]
async fn a_unique_violation_stays_the_answer_of_its_own_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sextant.sqlite3");
    let options = StoreOptions {
        durability: Durability::Normal,
        vfs: None,
    };
    let (_store, writer) = EventStore::open_with(&path, &options).unwrap();
    let pipeline = Pipeline::start(writer, Bus::default());
    let context = CommandContext::default;
    let [a, b, c] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let creates = [command(a, 0, "a"), command(b, 0, "b"), command(c, 0, "c")];
    for outcome in pipeline.execute_batch(&creates, context()).await {
        outcome.unwrap();
    }
    // Behind the writer's back (its cache says `a` is at version 1), a
    // second event of `a` is appended.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO events (id, aggregate_type, aggregate_id, aggregate_sequence, event_type,
                             event_version, payload, metadata, created_at)
         VALUES (?1, 'QuerySession', ?2, 2, 'SessionRenamed', 1,
                 '{\"type\":\"SessionRenamed\",\"title\":\"elsewhere\"}', ?3,
                 '2026-01-01T00:00:00.000000Z')",
        rusqlite::params![
            Uuid::new_v4().to_string(),
            a.to_string(),
            format!("{{\"command_id\":\"{}\"}}", Uuid::new_v4())
        ],
    )
    .unwrap();

    let group = [
        command(b, 1, "b2"),
        command(a, 1, "a2"),
        command(c, 1, "c2"),
    ];
    let outcomes = pipeline.execute_batch(&group, context()).await;
    let refused = outcomes[1].as_ref().unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Conflict, "{refused}");
    assert_eq!(refused.extensions["current_version"], 2);
    assert_eq!(outcomes[0].as_ref().unwrap().version, 2);
    assert_eq!(outcomes[2].as_ref().unwrap().version, 2);
    let stored = stored_commands(&path, None);
    assert!(stored.contains(&group[0].command_id.to_string()));
    assert!(stored.contains(&group[2].command_id.to_string()));
    assert!(!stored.contains(&group[1].command_id.to_string()));

    // The stale cache entry was dropped: deciding on version 2 works.
    let retry = pipeline
        .execute_batch(&[command(a, 2, "a3")], context())
        .await;
    assert_eq!(retry[0].as_ref().unwrap().version, 3);
}
