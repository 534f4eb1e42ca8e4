//! One suite of event-store tests, run unchanged against both backends:
//! SQLite (a file in a temp dir) and PostgreSQL (a fresh database in the
//! test process's throwaway cluster, `sextant_tests::postgres`).
//!
//! Each case is a plain function over a [`Backend`]: the store interface's
//! read side ([`Store`]), its writer ([`WriteBackend`]), more writers for
//! concurrency, and the real pipeline on top. `conformance!` runs every
//! case once per backend (`store_conformance::sqlite::…`,
//! `store_conformance::postgres::…`), as arrow-rs's `object_store` runs one
//! suite over every backend.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use server::accounts::{Accounts, User};
use server::bus::Bus;
use server::error::ErrorKind;
use server::pipeline::{CommandContext, CommandOutcome, Origin, Pipeline};
use server::store::accounts::UserRow;
use server::store::{
    append_command, AppendError, NewClaim, NewCommand, PgStore, SqliteStore, Store, StoreError,
    WriteBackend,
};
use shared_domain::{
    CommandEnvelope, Engine, EventEnvelope, EventMetadata, QuerySession, SessionEvent, SessionTitle,
};
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Opens another writer on the store under test.
type OpenWriter = Box<dyn Fn(&Runtime) -> Box<dyn WriteBackend>>;

/// One backend under test.
struct Backend {
    rt: Runtime,
    store: Store,
    /// Opens another writer on the same store (another node, for PostgreSQL).
    open_writer: OpenWriter,
    /// Opens the same store again (a restart).
    reopen: Box<dyn Fn(&Runtime) -> Store>,
    data_dir: tempfile::TempDir,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

impl Backend {
    fn sqlite() -> Backend {
        let data_dir = tempfile::tempdir().unwrap();
        let path = data_dir.path().join("events.sqlite3");
        let rt = runtime();
        let (store, _first_writer) = SqliteStore::open(&path).unwrap();
        let writer_path = path.clone();
        Backend {
            rt,
            store: store.into(),
            open_writer: Box::new(move |_| {
                Box::new(SqliteStore::open(&writer_path).unwrap().1) as Box<dyn WriteBackend>
            }),
            reopen: Box::new(move |_| SqliteStore::open(&path).unwrap().0.into()),
            data_dir,
        }
    }

    fn postgres() -> Backend {
        let url = sextant_tests::postgres::cluster().database();
        let rt = runtime();
        let (store, _first_writer) = rt.block_on(PgStore::open(&url)).unwrap();
        let (writer_url, reopen_url) = (url.clone(), url);
        Backend {
            rt,
            store: store.into(),
            open_writer: Box::new(move |rt| {
                Box::new(rt.block_on(PgStore::open(&writer_url)).unwrap().1)
                    as Box<dyn WriteBackend>
            }),
            reopen: Box::new(move |rt| rt.block_on(PgStore::open(&reopen_url)).unwrap().0.into()),
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn writer(&self) -> Box<dyn WriteBackend> {
        (self.open_writer)(&self.rt)
    }

    /// Runs `f` in one group transaction of `writer` and commits it.
    fn group<T>(
        &self,
        writer: &mut dyn WriteBackend,
        f: impl FnOnce(&mut dyn server::store::WriteTx) -> T,
    ) -> T {
        let mut tx = writer.begin().unwrap();
        let result = f(&mut *tx);
        tx.commit().unwrap();
        result
    }

    fn read<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(future)
    }

    fn all_events(&self) -> Vec<EventEnvelope> {
        self.read(self.store.events_after(0, None, 100_000))
            .unwrap()
    }

    /// The real pipeline on a writer of this store.
    fn pipeline(&self) -> Pipeline {
        let _inside = self.rt.enter();
        Pipeline::start(self.writer(), Bus::default())
    }

    fn execute(
        &self,
        pipeline: &Pipeline,
        envelope: &Value,
        user: Option<&User>,
    ) -> CommandOutcome {
        let envelope: CommandEnvelope<Value> = serde_json::from_value(envelope.clone()).unwrap();
        let context = CommandContext {
            origin: Origin::Http,
            user: user.cloned(),
            ..CommandContext::default()
        };
        self.read(pipeline.execute_json(&envelope, context))
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(&super::Backend::sqlite()); })*
        }
        mod postgres {
            $(#[test] fn $case() { super::$case(&super::Backend::postgres()); })*
        }
    };
}

conformance!(
    appended_events_read_back_in_order,
    a_processed_command_answers_its_retry_with_the_same_result,
    a_stale_or_future_version_is_a_conflict_with_the_current_version,
    global_sequences_are_gap_free_and_commit_ordered_across_writers,
    old_event_versions_are_upcast_on_read,
    the_store_has_one_identity_and_judges_witnesses,
    users_and_sharing,
    a_query_is_claimed_once_renewed_by_its_holder_and_taken_over_once_expired,
);

fn renamed(aggregate: Uuid, sequence: u64, title: &str) -> EventEnvelope {
    EventEnvelope::new::<QuerySession>(
        Uuid::now_v7(),
        aggregate,
        sequence,
        &SessionEvent::SessionRenamed {
            title: SessionTitle::new(title).unwrap(),
        },
        EventMetadata {
            command_id: Uuid::new_v4(),
            client_id: Some("conformance".into()),
            ..Default::default()
        },
        server::store::now(),
    )
}

/// A command of `count` renames of `aggregate` decided on `expected`.
fn command(aggregate: Uuid, expected: u64, count: u64) -> NewCommand {
    let command_id = Uuid::new_v4();
    let events = (1..=count)
        .map(|i| {
            let mut event = renamed(aggregate, expected + i, &format!("v{}", expected + i));
            event.metadata.command_id = command_id;
            event
        })
        .collect();
    NewCommand {
        command_id,
        aggregate_type: "QuerySession",
        aggregate_id: aggregate,
        expected_version: expected,
        events,
        request: format!("{{\"command\":\"{command_id}\"}}"),
        actor: Some("conformance".into()),
        at: server::store::now(),
        claims: Vec::new(),
    }
}

fn envelope(session: Uuid, expected_version: u64, command: Value) -> Value {
    json!({
        "command_id": Uuid::new_v4(),
        "aggregate_type": "QuerySession",
        "aggregate_id": session,
        "expected_version": expected_version,
        "command": command,
    })
}

fn sequences(events: &[EventEnvelope]) -> Vec<u64> {
    events.iter().map(|e| e.global_sequence).collect()
}

fn appended_events_read_back_in_order(b: &Backend) {
    let (a, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mut writer = b.writer();
    let stored = b.group(&mut *writer, |tx| {
        let mut stored = append_command(tx, command(a, 0, 1)).unwrap();
        stored.extend(append_command(tx, command(other, 0, 1)).unwrap());
        stored.extend(append_command(tx, command(a, 1, 2)).unwrap());
        stored
    });
    assert_eq!(sequences(&stored), vec![1, 2, 3, 4]);
    // Everything written comes back exactly (ids, payloads, metadata, times).
    assert_eq!(b.all_events(), stored);
    let only_a = b.read(b.store.events_after(0, Some(a), 100)).unwrap();
    assert_eq!(
        only_a,
        vec![stored[0].clone(), stored[2].clone(), stored[3].clone()]
    );
    let page = b.read(b.store.events_after(1, None, 2)).unwrap();
    assert_eq!(sequences(&page), vec![2, 3]);
    let range = b.read(b.store.events_in_range(2, 3)).unwrap();
    assert_eq!(range, stored[1..3].to_vec());
    let tail = b
        .read(b.store.aggregate_events("QuerySession", a, 1))
        .unwrap();
    assert_eq!(tail, stored[2..].to_vec());
    assert_eq!(
        b.read(b.store.aggregate_version("QuerySession", a))
            .unwrap(),
        3
    );
    assert_eq!(
        b.read(b.store.aggregate_version("QuerySession", Uuid::new_v4()))
            .unwrap(),
        0
    );
    assert_eq!(b.read(b.store.max_global_sequence()).unwrap(), 4);
}

fn a_processed_command_answers_its_retry_with_the_same_result(b: &Backend) {
    let a = Uuid::new_v4();
    let mut writer = b.writer();
    let first = command(a, 0, 2);
    let (command_id, request) = (first.command_id, first.request.clone());
    let stored = b.group(&mut *writer, |tx| {
        append_command(tx, first.clone()).unwrap()
    });

    // The record, read inside a later transaction and outside one, points
    // at exactly the stored events: the retry's answer.
    let inside = b.group(&mut *writer, |tx| tx.find_processed(command_id).unwrap());
    let outside = b.read(b.store.find_processed(command_id)).unwrap();
    assert_eq!(inside, outside);
    let record = inside.expect("the command was recorded with its events");
    assert_eq!(record.request, request);
    assert_eq!(record.version, 2);
    assert_eq!(record.actor.as_deref(), Some("conformance"));
    let (first_seq, last_seq) = (
        record.first_global_sequence.unwrap(),
        record.last_global_sequence.unwrap(),
    );
    assert_eq!(
        b.read(b.store.events_in_range(first_seq, last_seq))
            .unwrap(),
        stored
    );
    assert_eq!(
        b.read(b.store.find_processed(Uuid::new_v4())).unwrap(),
        None
    );

    // Recording the same command id twice is refused, and nothing of the
    // second attempt stays.
    let mut again = command(a, 2, 1);
    again.command_id = command_id;
    let refused = b.group(&mut *writer, |tx| append_command(tx, again).unwrap_err());
    assert!(
        matches!(refused, AppendError::Store(StoreError::Duplicate(_))),
        "{refused:?}"
    );
    assert_eq!(b.read(b.store.max_global_sequence()).unwrap(), 2);

    // Through the pipeline: a resend gets the original answer, not new events.
    let pipeline = b.pipeline();
    let session = Uuid::new_v4();
    let create = envelope(
        session,
        0,
        json!({"type": "CreateSession", "title": "Retry"}),
    );
    let original = b.execute(&pipeline, &create, None).unwrap();
    let resent = b.execute(&pipeline, &create, None).unwrap();
    assert!(resent.duplicate && !original.duplicate);
    assert_eq!(
        (resent.version, &resent.events),
        (original.version, &original.events)
    );
    assert_eq!(
        b.read(b.store.aggregate_version("QuerySession", session))
            .unwrap(),
        1,
        "the resend appended nothing"
    );
}

fn a_stale_or_future_version_is_a_conflict_with_the_current_version(b: &Backend) {
    let a = Uuid::new_v4();
    let mut writer = b.writer();
    b.group(&mut *writer, |tx| {
        append_command(tx, command(a, 0, 1)).unwrap()
    });
    for expected in [0, 5] {
        let late = command(a, expected, 1);
        let command_id = late.command_id;
        let refused = b.group(&mut *writer, |tx| append_command(tx, late).unwrap_err());
        assert_eq!(
            refused,
            AppendError::Conflict {
                expected,
                current: 1
            }
        );
        assert_eq!(b.read(b.store.find_processed(command_id)).unwrap(), None);
    }
    assert_eq!(b.read(b.store.max_global_sequence()).unwrap(), 1);
    assert_eq!(
        b.read(b.store.aggregate_version("QuerySession", a))
            .unwrap(),
        1
    );

    // Through the pipeline: 409 with the current version.
    let session = Uuid::new_v4();
    let node_a = b.pipeline();
    let create = envelope(session, 0, json!({"type": "CreateSession", "title": "One"}));
    b.execute(&node_a, &create, None).unwrap();
    let rename = |title: &str, expected| {
        envelope(
            session,
            expected,
            json!({"type": "RenameSession", "title": title}),
        )
    };
    let conflict = b.execute(&node_a, &rename("Stale", 0), None).unwrap_err();
    assert_eq!(conflict.kind, ErrorKind::Conflict, "{}", conflict.detail);
    assert_eq!(conflict.extensions["current_version"], json!(1));

    // A backend with several writers (nodes): a writer whose cache is stale
    // (another one appended) still decides on the truth. A sole writer
    // (SQLite: one process owns the file) is never given a second pipeline.
    if b.writer().sole_writer() {
        return;
    }
    let session = Uuid::new_v4();
    let node_b = b.pipeline();
    let create = envelope(session, 0, json!({"type": "CreateSession", "title": "One"}));
    b.execute(&node_a, &create, None).unwrap();
    let rename = |title: &str, expected| {
        envelope(
            session,
            expected,
            json!({"type": "RenameSession", "title": title}),
        )
    };
    // node_b caches the session at version 2 …
    b.execute(&node_b, &rename("Two", 1), None).unwrap();
    // … node_a moves it to 3 …
    b.execute(&node_a, &rename("Three", 2), None).unwrap();
    // … so node_b's cache is stale: a command decided on 2 is a conflict.
    let conflict = b.execute(&node_b, &rename("Stale", 2), None).unwrap_err();
    assert_eq!(conflict.kind, ErrorKind::Conflict, "{}", conflict.detail);
    assert_eq!(conflict.extensions["current_version"], json!(3));
    // And one decided on 3 is accepted by it.
    let accepted = b.execute(&node_b, &rename("Four", 3), None).unwrap();
    assert_eq!(accepted.version, 4);
}

fn global_sequences_are_gap_free_and_commit_ordered_across_writers(b: &Backend) {
    // A rolled-back group gives its numbers back: no gap after it.
    let mut writer = b.writer();
    {
        let mut tx = writer.begin().unwrap();
        append_command(&mut *tx, command(Uuid::new_v4(), 0, 3)).unwrap();
        // Dropped without a commit.
    }
    let after_rollback = b.group(&mut *writer, |tx| {
        append_command(tx, command(Uuid::new_v4(), 0, 1)).unwrap()
    });
    assert_eq!(sequences(&after_rollback), vec![1]);

    // Writers on their own connections append at once while a reader
    // follows with `events_after(last)`, as an SSE stream resumes: it must
    // see every sequence, each once, with none appearing behind its cursor.
    const WRITERS: usize = 4;
    const GROUPS: usize = 15;
    let done = Arc::new(AtomicBool::new(false));
    let store = b.store.clone();
    let handle = b.rt.handle().clone();
    let reader_done = done.clone();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut cursor = 1;
        loop {
            let finished = reader_done.load(Ordering::SeqCst);
            let page = handle
                .block_on(store.events_after(cursor, None, 1000))
                .unwrap();
            for event in &page {
                cursor = event.global_sequence;
                seen.push(event.global_sequence);
            }
            if finished && page.is_empty() {
                return seen;
            }
        }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let mut writer = b.writer();
            std::thread::spawn(move || {
                let aggregate = Uuid::new_v4();
                for group in 0..GROUPS as u64 {
                    let mut tx = writer.begin().unwrap();
                    append_command(&mut *tx, command(aggregate, group * 2, 2)).unwrap();
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    let total = (1 + WRITERS * GROUPS * 2) as u64;
    assert_eq!(seen, (2..=total).collect::<Vec<_>>(), "the follower's view");
    assert_eq!(sequences(&b.all_events()), (1..=total).collect::<Vec<_>>());
    assert_eq!(b.read(b.store.max_global_sequence()).unwrap(), total);
}

fn old_event_versions_are_upcast_on_read(b: &Backend) {
    let session = Uuid::new_v4();
    let query = Uuid::new_v4();
    // Payloads exactly as version 1 of the code stored them:
    // SessionCreated had no owner, QuerySubmitted no engine.
    let old = [
        (
            "SessionCreated",
            json!({"type": "SessionCreated", "title": "Legacy"}),
        ),
        (
            "QuerySubmitted",
            json!({"type": "QuerySubmitted", "query_id": query, "sql": "SELECT 1"}),
        ),
    ];
    let mut events: Vec<EventEnvelope> = old
        .iter()
        .enumerate()
        .map(|(index, (event_type, payload))| EventEnvelope {
            global_sequence: 0,
            id: Uuid::now_v7(),
            aggregate_type: "QuerySession".into(),
            aggregate_id: session,
            aggregate_sequence: index as u64 + 1,
            event_type: (*event_type).into(),
            event_version: 1,
            payload: payload.clone(),
            metadata: EventMetadata {
                command_id: Uuid::new_v4(),
                ..Default::default()
            },
            created_at: server::store::now(),
        })
        .collect();
    let mut writer = b.writer();
    b.group(&mut *writer, |tx| tx.append_events(&mut events).unwrap());

    // Stored rows are never rewritten …
    let stored = b.all_events();
    assert_eq!(stored[1].event_version, 1);
    assert!(stored[1].payload.get("engine").is_none());
    // … and read as the current events.
    let (folded, visited) = b
        .read(b.store.fold_session_events(
            0,
            Vec::new(),
            |seen: &mut Vec<SessionEvent>, _, _, event, _| seen.push(event.clone()),
        ))
        .unwrap();
    assert_eq!(visited, 2);
    match &folded[1] {
        SessionEvent::QuerySubmitted { engine, .. } => assert_eq!(*engine, Engine::Server),
        other => panic!("not a QuerySubmitted: {other:?}"),
    }
    // The pipeline loads the upcast session and goes on from its version.
    assert_eq!(
        b.read(b.store.session_of_query(query)).unwrap(),
        Some(session)
    );
    let pipeline = b.pipeline();
    let rename = envelope(
        session,
        2,
        json!({"type": "RenameSession", "title": "Renamed"}),
    );
    let accepted = b.execute(&pipeline, &rename, None).unwrap();
    assert_eq!(accepted.version, 3);
}

fn the_store_has_one_identity_and_judges_witnesses(b: &Backend) {
    let id = b.read(b.store.store_id()).unwrap();
    assert_eq!(
        b.read((b.reopen)(&b.rt).store_id()).unwrap(),
        id,
        "stable across restarts"
    );
    let other = Backend::sqlite();
    assert_ne!(other.read(other.store.store_id()).unwrap(), id);

    let mut writer = b.writer();
    let stored = b.group(&mut *writer, |tx| {
        append_command(tx, command(Uuid::new_v4(), 0, 2)).unwrap()
    });
    assert_eq!(b.read(b.store.event_id_at(2)).unwrap(), Some(stored[1].id));
    assert_eq!(b.read(b.store.event_id_at(3)).unwrap(), None);
    assert_eq!(
        b.read(b.store.head_and_event_at(Some(1))).unwrap(),
        (2, Some(stored[0].id))
    );
    assert_eq!(b.read(b.store.head_and_event_at(None)).unwrap(), (2, None));
    assert_eq!(
        b.read(b.store.head_and_event_at(Some(9))).unwrap(),
        (2, None)
    );
}

fn user(name: &str) -> UserRow {
    UserRow {
        user_id: Uuid::now_v7(),
        name: name.into(),
        admin: false,
        token_hash: format!("{:064x}", Uuid::new_v4().as_u128()),
        created_at: server::store::format_timestamp(server::store::now()),
        revoked_at: None,
    }
}

fn users_and_sharing(b: &Backend) {
    let store = &b.store;
    // The first start creates the owner.
    let (accounts, owner_token) = b
        .read(Accounts::open(store.clone(), b.data_dir.path()))
        .unwrap();
    let owner = accounts.authenticate(&owner_token.unwrap()).unwrap();
    assert_eq!(b.read(store.user_count()).unwrap(), 1);
    let alice = user("alice");
    b.read(store.insert_user(alice.clone())).unwrap();
    assert_eq!(
        b.read(store.user_by_id(alice.user_id)).unwrap(),
        Some(alice.clone())
    );
    let taken = b.read(store.insert_user(user("alice"))).unwrap_err();
    assert!(matches!(taken, StoreError::Duplicate(_)), "{taken:?}");
    let at = server::store::format_timestamp(server::store::now());
    assert_eq!(
        b.read(store.revoke_user("alice".into(), at.clone()))
            .unwrap(),
        Some(alice.user_id)
    );
    assert_eq!(b.read(store.revoke_user("alice".into(), at)).unwrap(), None);
    let again = user("alice");
    b.read(store.insert_user(again.clone())).unwrap();
    assert!(b
        .read(store.replace_token_hash(again.user_id, "f".repeat(64)))
        .unwrap());
    assert!(!b
        .read(store.replace_token_hash(alice.user_id, "e".repeat(64)))
        .unwrap());
    assert_eq!(b.read(store.user_count()).unwrap(), 3);
    let active: Vec<Uuid> = b
        .read(store.active_users())
        .unwrap()
        .iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(active, vec![owner.id, again.user_id]);
    let all: BTreeSet<Uuid> = b
        .read(store.all_users())
        .unwrap()
        .iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(
        all,
        BTreeSet::from([owner.id, alice.user_id, again.user_id])
    );

    // Sharing: the pipeline resolves a user name through the accounts.
    let (bob, _) = b.read(accounts.add("bob".into(), false)).unwrap();
    let pipeline = b.pipeline();
    pipeline.set_accounts(accounts);
    let session = Uuid::new_v4();
    let create = envelope(
        session,
        0,
        json!({"type": "CreateSession", "title": "Shared"}),
    );
    b.execute(&pipeline, &create, Some(&owner)).unwrap();
    let share = envelope(
        session,
        1,
        json!({"type": "ShareSession", "user": "bob", "role": "viewer"}),
    );
    let shared = b.execute(&pipeline, &share, Some(&owner)).unwrap();
    assert_eq!(shared.events[0].event_type, "SessionShared");
    assert_eq!(shared.events[0].payload["user"], json!(bob.id));
    let nobody = envelope(
        session,
        2,
        json!({"type": "ShareSession", "user": "nobody", "role": "viewer"}),
    );
    let refused = b.execute(&pipeline, &nobody, Some(&owner)).unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Unprocessable, "{}", refused.detail);
    // A viewer may read but not write.
    let rename = envelope(
        session,
        2,
        json!({"type": "RenameSession", "title": "Mine"}),
    );
    let forbidden = b.execute(&pipeline, &rename, Some(&bob)).unwrap_err();
    assert_eq!(forbidden.kind, ErrorKind::Forbidden, "{}", forbidden.detail);
}

/// A command of one rename that claims `query` for `node` (as the pipeline
/// claims a server query with its `QuerySubmitted`).
fn claiming(aggregate: Uuid, expected: u64, query: Uuid, node: Uuid, lease_ms: u64) -> NewCommand {
    NewCommand {
        claims: vec![NewClaim {
            query_id: query,
            session_id: aggregate,
            node_id: node,
            lease: std::time::Duration::from_millis(lease_ms),
        }],
        ..command(aggregate, expected, 1)
    }
}

fn a_query_is_claimed_once_renewed_by_its_holder_and_taken_over_once_expired(b: &Backend) {
    use std::time::Duration;
    const LONG: u64 = 60_000;
    const SHORT: u64 = 300;
    let lease = Duration::from_millis(LONG);
    let (node_a, node_b) = (Uuid::new_v4(), Uuid::new_v4());
    let session = Uuid::new_v4();
    let [q1, q2, q3, q4, q5, legacy] = [(); 6].map(|_| Uuid::new_v4());
    let mut writer = b.writer();

    // Claimed with the append, all or nothing: a rolled-back group claims nothing.
    b.group(&mut *writer, |tx| {
        append_command(tx, claiming(session, 0, q1, node_a, LONG)).unwrap();
    });
    {
        let mut tx = writer.begin().unwrap();
        append_command(&mut *tx, claiming(session, 1, q2, node_a, LONG)).unwrap();
        drop(tx);
    }
    let renew = |node, ids: Vec<Uuid>| {
        b.read(b.store.renew_query_claims(node, ids, lease))
            .unwrap()
    };
    assert_eq!(
        renew(node_a, vec![q1, q2]),
        vec![q1],
        "only the committed claim exists"
    );
    // Only its holder renews it, and nobody takes a live claim over.
    assert!(renew(node_b, vec![q1]).is_empty());
    let take = |node, any_other| {
        let mut taken = b
            .read(
                b.store
                    .take_expired_query_claims(node, lease, 100, any_other),
            )
            .unwrap();
        taken.sort_by_key(|c| c.query_id);
        taken
    };
    assert!(
        take(node_b, false).is_empty(),
        "a live claim is not taken over"
    );
    // A query is claimed once: a second claim on it is refused with its command.
    let mut second = b.writer();
    let refused = b.group(&mut *second, |tx| {
        append_command(tx, claiming(session, 1, q1, node_b, LONG)).unwrap_err()
    });
    assert!(
        matches!(refused, AppendError::Store(StoreError::Duplicate(_))),
        "{refused:?}"
    );
    assert_eq!(
        b.read(b.store.aggregate_version("QuerySession", session))
            .unwrap(),
        1
    );

    // A lease not renewed runs out; the claim is then taken over exactly
    // once however many nodes sweep at the same time.
    b.group(&mut *writer, |tx| {
        append_command(tx, claiming(session, 1, q3, node_a, SHORT)).unwrap();
    });
    assert_eq!(
        renew(node_a, vec![q3]),
        vec![q3],
        "renewed while its lease holds"
    );
    std::thread::sleep(Duration::from_millis(SHORT + 50));
    // Renewed (node_a still alive): not expired.
    assert!(take(node_b, false).is_empty());
    b.read(
        b.store
            .renew_query_claims(node_a, vec![q3], Duration::from_millis(SHORT)),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(SHORT * 2));
    let sweepers: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let taken = b.read(futures::future::join_all(sweepers.iter().map(|node| {
        let store = b.store.clone();
        let node = *node;
        async move {
            store
                .take_expired_query_claims(node, lease, 100, false)
                .await
                .unwrap()
                .into_iter()
                .map(move |claim| (node, claim))
                .collect::<Vec<_>>()
        }
    })));
    let taken: Vec<_> = taken.into_iter().flatten().collect();
    assert_eq!(taken.len(), 1, "taken over exactly once: {taken:?}");
    let (new_holder, claim) = taken[0];
    assert_eq!(
        (claim.query_id, claim.session_id, claim.node_id),
        (q3, session, node_a)
    );
    // The old holder finds it lost; the new one holds it and finishes it.
    assert!(renew(node_a, vec![q3]).is_empty(), "the old holder lost it");
    assert!(!b.read(b.store.finish_query_claim(node_a, q3)).unwrap());
    assert_eq!(renew(new_holder, vec![q3]), vec![q3]);
    assert!(b.read(b.store.finish_query_claim(new_holder, q3)).unwrap());
    assert!(
        renew(new_holder, vec![q3]).is_empty(),
        "a finished claim is not renewed"
    );

    // A finished claim never expires; an unfinished one of a lease past does.
    b.group(&mut *writer, |tx| {
        append_command(tx, claiming(session, 2, q4, node_a, SHORT)).unwrap();
    });
    assert!(b.read(b.store.finish_query_claim(node_a, q1)).unwrap());
    std::thread::sleep(Duration::from_millis(SHORT + 100));
    let taken = take(node_b, false);
    assert_eq!(
        taken.iter().map(|c| c.query_id).collect::<Vec<_>>(),
        vec![q4]
    );
    assert!(b.read(b.store.finish_query_claim(node_b, q4)).unwrap());

    // One process owning the store (SQLite at start-up) ends every other
    // node's live claim at once when asked to.
    b.group(&mut *writer, |tx| {
        append_command(tx, claiming(session, 3, q5, node_a, LONG)).unwrap();
    });
    assert!(take(node_b, false).is_empty());
    let taken = take(node_b, true);
    assert_eq!(
        taken
            .iter()
            .map(|c| (c.query_id, c.node_id))
            .collect::<Vec<_>>(),
        vec![(q5, node_a)]
    );
    assert!(
        take(node_b, true).is_empty(),
        "its own claims are not taken"
    );

    // Queries stored before claims existed get an expired claim of no node,
    // once; a claimed query keeps its claim.
    let adopted = b
        .read(
            b.store
                .adopt_unclaimed_queries(vec![(legacy, session), (q5, session)]),
        )
        .unwrap();
    assert_eq!(adopted, 1);
    let taken = take(node_a, false);
    assert_eq!(
        taken
            .iter()
            .map(|c| (c.query_id, c.node_id))
            .collect::<Vec<_>>(),
        vec![(legacy, Uuid::nil())]
    );
    // Claims survive a restart of the store.
    let reopened = (b.reopen)(&b.rt);
    let held = b
        .read(reopened.renew_query_claims(node_b, vec![q5], lease))
        .unwrap();
    assert_eq!(held, vec![q5]);
}
