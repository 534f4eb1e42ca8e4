//! The browser's durable copy of the replica, in IndexedDB (through rexie):
//! one row per pending command, the confirmed events of every session, the
//! SSE cursor, and the local queries this browser runs (so one whose tab
//! closed is ended later). A reload or a browser restart loses nothing.
//!
//! Versions and migrations, in three layers:
//! - the database's shape (object stores) has the IndexedDB version
//!   [`DB_VERSION`]: opening an older database upgrades it in place (rexie
//!   creates what is missing); a database a newer app upgraded is refused;
//! - rows are JSON strings with a record format number `v` ([`RECORD_FORMAT`],
//!   so far only 1): a row of a newer format is refused before its fields are
//!   read; a future format 2 upgrades older rows where [`decode`] checks `v`;
//! - confirmed events are kept as the server sent them and go through the
//!   domain's upcaster when restored, so events stored by an older app are
//!   read in today's shape.
//!
//! Refusals are [`StorageError::NewerFormat`]: never misread, the user is
//! asked to reload to update the app.
//!
//! Several tabs share the database. No tab ever rewrites the whole outbox:
//! rows are added, updated and deleted one command id at a time, so a row
//! another tab just added is never lost.

use rexie::{KeyRange, ObjectStore, Rexie, TransactionMode};
use serde::{Deserialize, Serialize};
use shared_domain::sync::orphans::LocalRun;
use shared_domain::sync::{Gap, PendingCommand};
use shared_domain::{EventEnvelope, QueryId, SessionCommand};
use uuid::Uuid;
use wasm_bindgen::JsValue;

/// The IndexedDB schema version this app creates (object stores, keys).
const DB_VERSION: u32 = 1;
/// The record format this app writes and the newest it can read.
const RECORD_FORMAT: u32 = 1;

const PENDING: &str = "pending";
const EVENTS: &str = "events";
const META: &str = "meta";
const CURSOR_KEY: &str = "cursor";
/// The gap ledger, JSON, written with the cursor it holds back.
const GAPS_KEY: &str = "gaps";
/// The id of the server store the confirmed events came from.
const STORE_ID_KEY: &str = "store_id";
/// Remembered local runs: one `meta` row each, keyed by this prefix and
/// the query id (several tabs add and remove runs; none rewrites a list).
const RUN_PREFIX: &str = "run/";

/// Why local storage failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("local data was written by a newer version of Sextant; reload to update the app")]
    NewerFormat,
    #[error("IndexedDB failed: {0}")]
    IndexedDb(String),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
}

impl From<rexie::Error> for StorageError {
    fn from(error: rexie::Error) -> Self {
        // rexie's own message is just "idb error": the DOM exception is in the source.
        let text = match &error {
            rexie::Error::IdbError(inner) => inner.to_string(),
            other => other.to_string(),
        };
        // Opening with a lower version than the stored one is a VersionError.
        if text.contains("VersionError") || text.contains("version") && text.contains("less") {
            StorageError::NewerFormat
        } else {
            StorageError::IndexedDb(text)
        }
    }
}

/// A pending command as stored: its place in the outbox and the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRow {
    v: u32,
    /// Sort key: outbox order across tabs and reloads.
    order: f64,
    pending: PendingCommand<SessionCommand>,
}

/// Changes stored together ([`LocalStore::write`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Write {
    /// Confirmed events to add.
    pub events: Vec<EventEnvelope>,
    /// The feed position to store with them.
    pub position: Option<FeedPosition>,
    /// Outbox rows to delete: their commands are confirmed or rejected.
    pub finished: Vec<Uuid>,
    /// Outbox rows to add or update (rebased), with their order.
    pub put: Vec<(f64, PendingCommand<SessionCommand>)>,
}

impl Write {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.position.is_none()
            && self.finished.is_empty()
            && self.put.is_empty()
    }

    /// Adds `later` to this write: its events, rows and deletions after
    /// these, its position instead of this one.
    pub fn merge(&mut self, later: Write) {
        self.events.extend(later.events);
        if later.position.is_some() {
            self.position = later.position;
        }
        self.put
            .retain(|(_, p)| !later.finished.contains(&p.command_id));
        self.finished.extend(later.finished);
        self.put.extend(later.put);
    }
}

/// A remembered local run, in `meta` under [`run_key`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRow {
    v: u32,
    run: LocalRun,
}

/// What to do with one remembered local run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunChange {
    /// Store it (it starts, or its tab kept an outcome it could not submit).
    Remember(LocalRun),
    /// Forget it (its outcome is in the outbox, or it will never run).
    Forget(QueryId),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventRow {
    v: u32,
    event: EventEnvelope,
}

/// Everything a replica needs to resume.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Confirmed events of every session, ordered by aggregate sequence within each.
    pub events: Vec<EventEnvelope>,
    /// The outbox, oldest first, each with its order key (first submission time).
    pub outbox: Vec<(f64, PendingCommand<SessionCommand>)>,
    /// The SSE resume cursor.
    pub last_global_sequence: u64,
    /// Sessions whose feed events could not be applied yet (older
    /// databases have none).
    pub gaps: Vec<(Uuid, Gap)>,
    /// The server store the events came from (older databases: unknown).
    /// The witness is not stored apart: it is the highest event stored.
    pub store_id: Option<Uuid>,
}

/// Where the feed stands: written atomically with the events it covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedPosition {
    pub cursor: u64,
    pub gaps: Vec<(Uuid, Gap)>,
}

/// The local database.
pub struct LocalStore {
    db: Rexie,
}

impl LocalStore {
    /// Opens (creating or upgrading) the database `name`.
    pub async fn open(name: &str) -> Result<Self, StorageError> {
        let db = Rexie::builder(name)
            .version(DB_VERSION)
            .add_object_store(ObjectStore::new(PENDING))
            .add_object_store(ObjectStore::new(EVENTS))
            .add_object_store(ObjectStore::new(META))
            .build()
            .await?;
        Ok(Self { db })
    }

    /// Closes this connection (a deletion waits for every connection to close).
    pub fn close(self) {
        self.db.close();
    }

    /// Deletes the database `name` and everything in it.
    pub async fn destroy(name: &str) -> Result<(), StorageError> {
        Rexie::delete(name).await.map_err(Into::into)
    }

    /// Reads everything back.
    pub async fn load(&self) -> Result<Snapshot, StorageError> {
        let tx = self
            .db
            .transaction(&[PENDING, EVENTS, META], TransactionMode::ReadOnly)?;
        let mut rows: Vec<PendingRow> = tx
            .store(PENDING)?
            .get_all(None, None)
            .await?
            .into_iter()
            .map(|value| decode(&value))
            .collect::<Result<_, _>>()?;
        rows.sort_by(|a, b| a.order.total_cmp(&b.order));
        // Event keys sort by aggregate, then zero-padded sequence.
        let events: Vec<EventRow> = tx
            .store(EVENTS)?
            .get_all(None, None)
            .await?
            .into_iter()
            .map(|value| decode(&value))
            .collect::<Result<_, _>>()?;
        let meta = tx.store(META)?;
        let cursor = meta.get(JsValue::from_str(CURSOR_KEY)).await?;
        let gaps = meta.get(JsValue::from_str(GAPS_KEY)).await?;
        let store_id = meta.get(JsValue::from_str(STORE_ID_KEY)).await?;
        tx.done().await?;
        let gaps = match gaps.and_then(|g| g.as_string()) {
            Some(json) => {
                serde_json::from_str(&json).map_err(|e| StorageError::Corrupt(e.to_string()))?
            }
            None => Vec::new(),
        };
        let store_id = store_id
            .and_then(|id| id.as_string())
            .and_then(|id| Uuid::parse_str(&id).ok());
        Ok(Snapshot {
            events: events.into_iter().map(|row| row.event).collect(),
            outbox: rows
                .into_iter()
                .map(|row| (row.order, row.pending))
                .collect(),
            last_global_sequence: cursor.and_then(|c| c.as_f64()).unwrap_or(0.0) as u64,
            gaps,
            store_id,
        })
    }

    /// Adds or updates pending commands (after a submit or a rebase). `order`
    /// keeps a command's place: pass the time it was first submitted.
    #[cfg(all(test, target_arch = "wasm32"))]
    pub async fn put_pending(
        &self,
        pending: &[(f64, PendingCommand<SessionCommand>)],
    ) -> Result<(), StorageError> {
        self.put_pending_with_run(pending, None).await
    }

    /// [`LocalStore::put_pending`], and stores or forgets one local run in
    /// the same transaction: a local query is remembered with the command
    /// that submits it, and forgotten with the one that ends it, so no
    /// moment exists where its tab could close with neither stored.
    pub async fn put_pending_with_run(
        &self,
        pending: &[(f64, PendingCommand<SessionCommand>)],
        run: Option<&RunChange>,
    ) -> Result<(), StorageError> {
        let tx = self
            .db
            .transaction(&[PENDING, META], TransactionMode::ReadWrite)?;
        if let Some(run) = run {
            let meta = tx.store(META)?;
            match run {
                RunChange::Remember(run) => {
                    let row = RunRow {
                        v: RECORD_FORMAT,
                        run: run.clone(),
                    };
                    meta.put(&encode(&row)?, Some(&run_key(run.query_id)))
                        .await?;
                }
                RunChange::Forget(query_id) => meta.delete(run_key(*query_id)).await?,
            }
        }
        let store = tx.store(PENDING)?;
        for (order, command) in pending {
            let row = PendingRow {
                v: RECORD_FORMAT,
                order: *order,
                pending: command.clone(),
            };
            store
                .put(&encode(&row)?, Some(&key_of(command.command_id)))
                .await?;
        }
        tx.done().await?;
        Ok(())
    }

    /// Removes commands that were applied or rejected.
    #[cfg(all(test, target_arch = "wasm32"))]
    pub async fn remove_pending(&self, command_ids: &[Uuid]) -> Result<(), StorageError> {
        if command_ids.is_empty() {
            return Ok(());
        }
        let tx = self
            .db
            .transaction(&[PENDING], TransactionMode::ReadWrite)?;
        let store = tx.store(PENDING)?;
        for id in command_ids {
            store.delete(key_of(*id)).await?;
        }
        tx.done().await?;
        Ok(())
    }

    /// The local runs this browser remembers (`shared_domain::sync::orphans`).
    pub async fn local_runs(&self) -> Result<Vec<LocalRun>, StorageError> {
        let tx = self.db.transaction(&[META], TransactionMode::ReadOnly)?;
        let range = KeyRange::bound(
            &JsValue::from_str(RUN_PREFIX),
            &JsValue::from_str(&format!("{RUN_PREFIX}\u{ffff}")),
            None,
            None,
        )
        .map_err(|e| StorageError::IndexedDb(e.to_string()))?;
        let rows = tx.store(META)?.get_all(Some(range), None).await?;
        tx.done().await?;
        rows.iter()
            .map(|value| decode::<RunRow>(value).map(|row| row.run))
            .collect()
    }

    /// Stores or forgets one local run.
    pub async fn change_run(&self, run: &RunChange) -> Result<(), StorageError> {
        self.put_pending_with_run(&[], Some(run)).await
    }

    /// Stores confirmed events and, when given, the feed position (cursor
    /// and gap ledger), atomically.
    #[cfg(all(test, target_arch = "wasm32"))]
    pub async fn add_events(
        &self,
        events: &[EventEnvelope],
        position: Option<&FeedPosition>,
    ) -> Result<(), StorageError> {
        self.add_events_finishing(events, position, &[]).await
    }

    /// [`LocalStore::add_events`], and removes the outbox rows of the
    /// commands these events finished, in the same transaction: a row never
    /// outlives the events that confirm its command, nor goes before them.
    #[cfg(all(test, target_arch = "wasm32"))]
    pub async fn add_events_finishing(
        &self,
        events: &[EventEnvelope],
        position: Option<&FeedPosition>,
        finished: &[Uuid],
    ) -> Result<(), StorageError> {
        self.write(&Write {
            events: events.to_vec(),
            position: position.cloned(),
            finished: finished.to_vec(),
            put: Vec::new(),
        })
        .await
    }

    /// Everything in `write`, in one transaction, its requests issued
    /// together (not one after the other's completion): a resync stores a
    /// batch's events and outbox changes at once.
    pub async fn write(&self, write: &Write) -> Result<(), StorageError> {
        if write.is_empty() {
            return Ok(());
        }
        let tx = self
            .db
            .transaction(&[EVENTS, META, PENDING], TransactionMode::ReadWrite)?;
        let pending = tx.store(PENDING)?;
        let events = tx.store(EVENTS)?;
        let meta = tx.store(META)?;
        let mut values = Vec::new();
        for (order, command) in &write.put {
            let row = PendingRow {
                v: RECORD_FORMAT,
                order: *order,
                pending: command.clone(),
            };
            values.push((PENDING, encode(&row)?, key_of(command.command_id)));
        }
        for event in &write.events {
            let key = format!("{}/{:020}", event.aggregate_id, event.aggregate_sequence);
            let row = EventRow {
                v: RECORD_FORMAT,
                event: event.clone(),
            };
            values.push((EVENTS, encode(&row)?, JsValue::from_str(&key)));
        }
        if let Some(position) = &write.position {
            let gaps = serde_json::to_string(&position.gaps)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            values.push((
                META,
                JsValue::from_f64(position.cursor as f64),
                JsValue::from_str(CURSOR_KEY),
            ));
            values.push((META, JsValue::from_str(&gaps), JsValue::from_str(GAPS_KEY)));
        }
        let store_of = |name: &str| match name {
            PENDING => &pending,
            EVENTS => &events,
            _ => &meta,
        };
        let puts = values
            .iter()
            .map(|(store, value, key)| store_of(store).put(value, Some(key)));
        let deletes = write.finished.iter().map(|id| pending.delete(key_of(*id)));
        let (put, deleted) = futures::future::join(
            futures::future::try_join_all(puts),
            futures::future::try_join_all(deletes),
        )
        .await;
        put?;
        deleted?;
        tx.done().await?;
        Ok(())
    }

    /// Remembers the server store the confirmed events come from.
    pub async fn put_store_id(&self, store_id: Uuid) -> Result<(), StorageError> {
        let tx = self.db.transaction(&[META], TransactionMode::ReadWrite)?;
        tx.store(META)?
            .put(
                &JsValue::from_str(&store_id.to_string()),
                Some(&JsValue::from_str(STORE_ID_KEY)),
            )
            .await?;
        tx.done().await?;
        Ok(())
    }

    /// Forgets every confirmed event, the cursor and the gap ledger, and
    /// records the store that replaces them, in one transaction (a reset:
    /// the server is not the store they came from). Pending commands stay.
    pub async fn reset_confirmed(&self, store_id: Option<Uuid>) -> Result<(), StorageError> {
        let tx = self
            .db
            .transaction(&[EVENTS, META], TransactionMode::ReadWrite)?;
        tx.store(EVENTS)?.clear().await?;
        let meta = tx.store(META)?;
        meta.delete(JsValue::from_str(CURSOR_KEY)).await?;
        meta.delete(JsValue::from_str(GAPS_KEY)).await?;
        if let Some(id) = store_id {
            meta.put(
                &JsValue::from_str(&id.to_string()),
                Some(&JsValue::from_str(STORE_ID_KEY)),
            )
            .await?;
        } else {
            meta.delete(JsValue::from_str(STORE_ID_KEY)).await?;
        }
        tx.done().await?;
        Ok(())
    }
}

fn run_key(query_id: QueryId) -> JsValue {
    JsValue::from_str(&format!("{RUN_PREFIX}{}", query_id.0))
}

fn key_of(command_id: Uuid) -> JsValue {
    JsValue::from_str(&command_id.to_string())
}

fn encode<T: Serialize>(row: &T) -> Result<JsValue, StorageError> {
    serde_json::to_string(row)
        .map(|json| JsValue::from_str(&json))
        .map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Parses a row, refusing formats newer than this app.
fn decode<T: serde::de::DeserializeOwned>(value: &JsValue) -> Result<T, StorageError> {
    let text = value
        .as_string()
        .ok_or_else(|| StorageError::Corrupt("row is not a JSON string".into()))?;
    check_format(&text)?;
    serde_json::from_str(&text).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Refuses rows written by a newer app before reading their fields.
fn check_format(text: &str) -> Result<(), StorageError> {
    #[derive(Deserialize)]
    struct Format {
        v: u32,
    }
    let format: Format =
        serde_json::from_str(text).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    if format.v > RECORD_FORMAT {
        return Err(StorageError::NewerFormat);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_rows_are_refused_before_reading() {
        assert_eq!(
            check_format(r#"{"v": 2, "something": "new"}"#),
            Err(StorageError::NewerFormat)
        );
        assert_eq!(check_format(r#"{"v": 1}"#), Ok(()));
        assert!(matches!(
            check_format("not json"),
            Err(StorageError::Corrupt(_))
        ));
    }
}

/// The IndexedDB layer against the real IndexedDB of headless Chromium
/// (`wasm-bindgen-test-runner`; `cargo test -p client --target wasm32-unknown-unknown`).
#[cfg(all(test, target_arch = "wasm32"))]
mod browser_tests {
    use chrono::{TimeZone, Utc};
    use shared_domain::{EventMetadata, QuerySession, SessionEvent, SessionTitle};
    use wasm_bindgen_test::*;

    use super::*;

    wasm_bindgen_test_configure!(run_in_browser);

    async fn fresh(name: &str) -> LocalStore {
        LocalStore::destroy(name).await.expect("delete");
        LocalStore::open(name).await.expect("open")
    }

    fn pending(n: u128) -> PendingCommand<SessionCommand> {
        PendingCommand {
            command_id: Uuid::from_u128(n),
            aggregate_id: Uuid::from_u128(1),
            expected_version: n as u64,
            base_command: None,
            command: SessionCommand::RenameSession {
                title: SessionTitle::new(format!("title {n}")).unwrap(),
            },
        }
    }

    fn position(cursor: u64) -> FeedPosition {
        FeedPosition {
            cursor,
            gaps: Vec::new(),
        }
    }

    fn event(sequence: u64, global: u64) -> EventEnvelope {
        let mut envelope = EventEnvelope::new::<QuerySession>(
            Uuid::from_u128(1000 + u128::from(global)),
            Uuid::from_u128(1),
            sequence,
            &SessionEvent::SessionRenamed {
                title: SessionTitle::new(format!("t{sequence}")).unwrap(),
            },
            EventMetadata {
                command_id: Uuid::from_u128(2000 + u128::from(global)),
                ..Default::default()
            },
            Utc.timestamp_opt(0, 0).unwrap(),
        );
        envelope.global_sequence = global;
        envelope
    }

    #[wasm_bindgen_test]
    async fn everything_survives_closing_and_reopening() {
        let store = fresh("sextant-test-reopen").await;
        store
            .put_pending(&[(20.0, pending(2)), (10.0, pending(1))])
            .await
            .unwrap();
        store
            .add_events(&[event(1, 5), event(2, 9)], Some(&position(9)))
            .await
            .unwrap();
        drop(store);
        let store = LocalStore::open("sextant-test-reopen").await.unwrap();
        let snapshot = store.load().await.unwrap();
        // Outbox order is submission order, not insertion order.
        let ids: Vec<Uuid> = snapshot.outbox.iter().map(|(_, p)| p.command_id).collect();
        assert_eq!(ids, vec![Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert_eq!(snapshot.outbox[1].1, pending(2));
        let sequences: Vec<u64> = snapshot
            .events
            .iter()
            .map(|e| e.aggregate_sequence)
            .collect();
        assert_eq!(sequences, vec![1, 2]);
        assert_eq!(snapshot.events[1], event(2, 9));
        assert_eq!(snapshot.last_global_sequence, 9);
    }

    #[wasm_bindgen_test]
    async fn the_events_that_finish_a_command_remove_its_row() {
        let store = fresh("sextant-test-finishing").await;
        store
            .put_pending(&[(1.0, pending(1)), (2.0, pending(2))])
            .await
            .unwrap();
        store
            .add_events_finishing(&[event(1, 3)], Some(&position(3)), &[Uuid::from_u128(1)])
            .await
            .unwrap();
        let snapshot = store.load().await.unwrap();
        let ids: Vec<Uuid> = snapshot.outbox.iter().map(|(_, p)| p.command_id).collect();
        assert_eq!(ids, vec![Uuid::from_u128(2)]);
        assert_eq!(snapshot.events.len(), 1);
        assert_eq!(snapshot.last_global_sequence, 3);
    }

    #[wasm_bindgen_test]
    async fn rows_change_one_command_at_a_time() {
        let store = fresh("sextant-test-rows").await;
        store
            .put_pending(&[(1.0, pending(1)), (2.0, pending(2)), (3.0, pending(3))])
            .await
            .unwrap();
        // A rebase rewrites one row in place (same order key, new version).
        let mut rebased = pending(2);
        rebased.expected_version = 42;
        store.put_pending(&[(2.0, rebased.clone())]).await.unwrap();
        store.remove_pending(&[Uuid::from_u128(1)]).await.unwrap();
        let outbox = store.load().await.unwrap().outbox;
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox[0], (2.0, rebased));
        assert_eq!(outbox[1].1.command_id, Uuid::from_u128(3));
        // Events are idempotent by (aggregate, sequence); the cursor only moves when given.
        store
            .add_events(&[event(1, 4)], Some(&position(4)))
            .await
            .unwrap();
        store.add_events(&[event(1, 4)], None).await.unwrap();
        let snapshot = store.load().await.unwrap();
        assert_eq!(snapshot.events.len(), 1);
        assert_eq!(snapshot.last_global_sequence, 4);
    }

    #[wasm_bindgen_test]
    async fn a_row_written_by_a_newer_app_is_refused_not_misread() {
        let store = fresh("sextant-test-newer-row").await;
        let tx = store
            .db
            .transaction(&[PENDING], TransactionMode::ReadWrite)
            .unwrap();
        tx.store(PENDING)
            .unwrap()
            .put(
                &JsValue::from_str(r#"{"v": 2, "order": 1, "pending": {"shape": "unknown"}}"#),
                Some(&JsValue::from_str("x")),
            )
            .await
            .unwrap();
        tx.done().await.unwrap();
        assert_eq!(store.load().await.unwrap_err(), StorageError::NewerFormat);
    }

    #[wasm_bindgen_test]
    async fn a_database_upgraded_by_a_newer_app_is_refused() {
        let name = "sextant-test-newer-db";
        LocalStore::destroy(name).await.unwrap();
        let newer = Rexie::builder(name)
            .version(DB_VERSION + 1)
            .add_object_store(ObjectStore::new(PENDING))
            .add_object_store(ObjectStore::new("something-new"))
            .build()
            .await
            .unwrap();
        newer.close();
        let refused = LocalStore::open(name).await.err();
        assert_eq!(refused, Some(StorageError::NewerFormat));
    }

    /// Confirmed events stored by an older app are migrated on read: the
    /// domain's upcaster turns a v1 `QuerySubmitted` (no engine) into v2.
    #[wasm_bindgen_test]
    async fn events_stored_by_an_older_app_are_upcast_when_restored() {
        use shared_domain::sync::{Replica, Source};
        use shared_domain::Engine;

        let store = fresh("sextant-test-old-events").await;
        let mut submitted = event(2, 2);
        submitted.event_type = "QuerySubmitted".into();
        submitted.event_version = 1;
        submitted.payload = serde_json::json!({
            "type": "QuerySubmitted",
            "query_id": Uuid::from_u128(77),
            "sql": "SELECT 1"
        });
        let mut created = event(1, 1);
        created.event_type = "SessionCreated".into();
        created.payload = serde_json::json!({"type": "SessionCreated", "title": "old"});
        store
            .add_events(&[created, submitted], Some(&position(2)))
            .await
            .unwrap();
        let snapshot = store.load().await.unwrap();
        let mut replica = Replica::<QuerySession>::new();
        for event in &snapshot.events {
            replica.receive(event, Source::Fetch).unwrap();
        }
        let session = replica.view(Uuid::from_u128(1));
        assert_eq!(session.history.len(), 1);
        assert_eq!(session.history[0].engine, Engine::Server);
    }

    /// Rows written before exact bases, gap ledgers and store ids are read,
    /// not dropped; a reset forgets confirmed state and keeps the outbox.
    #[wasm_bindgen_test]
    async fn rows_of_the_previous_app_load_and_a_reset_keeps_the_outbox() {
        let store = fresh("sextant-test-previous-rows").await;
        let tx = store
            .db
            .transaction(&[PENDING, META], TransactionMode::ReadWrite)
            .unwrap();
        let old_row = serde_json::json!({"v": 1, "order": 5.0, "pending": {
            "command_id": Uuid::from_u128(9), "aggregate_id": Uuid::from_u128(1),
            "expected_version": 1, "command": {"type": "RenameSession", "title": "x"}}});
        tx.store(PENDING)
            .unwrap()
            .put(
                &JsValue::from_str(&old_row.to_string()),
                Some(&key_of(Uuid::from_u128(9))),
            )
            .await
            .unwrap();
        tx.store(META)
            .unwrap()
            .put(
                &JsValue::from_f64(7.0),
                Some(&JsValue::from_str(CURSOR_KEY)),
            )
            .await
            .unwrap();
        tx.done().await.unwrap();
        store.add_events(&[event(1, 7)], None).await.unwrap();

        let snapshot = store.load().await.unwrap();
        assert_eq!(snapshot.outbox.len(), 1);
        assert_eq!(snapshot.outbox[0].1.base_command, None);
        assert_eq!(snapshot.last_global_sequence, 7);
        assert!(snapshot.gaps.is_empty());
        assert_eq!(snapshot.store_id, None);

        let gap = Gap {
            global_sequence: 12,
            aggregate_sequence: 3,
        };
        let position = FeedPosition {
            cursor: 11,
            gaps: vec![(Uuid::from_u128(1), gap)],
        };
        store.add_events(&[], Some(&position)).await.unwrap();
        store.put_store_id(Uuid::from_u128(70)).await.unwrap();
        let snapshot = store.load().await.unwrap();
        assert_eq!(snapshot.gaps, position.gaps);
        assert_eq!(snapshot.store_id, Some(Uuid::from_u128(70)));

        store
            .reset_confirmed(Some(Uuid::from_u128(71)))
            .await
            .unwrap();
        let snapshot = store.load().await.unwrap();
        assert!(snapshot.events.is_empty());
        assert_eq!(snapshot.last_global_sequence, 0);
        assert!(snapshot.gaps.is_empty());
        assert_eq!(snapshot.store_id, Some(Uuid::from_u128(71)));
        assert_eq!(snapshot.outbox.len(), 1, "pending work survives a reset");
    }

    #[wasm_bindgen_test]
    async fn destroying_forgets_everything() {
        let store = fresh("sextant-test-destroy").await;
        store.put_pending(&[(1.0, pending(1))]).await.unwrap();
        store.db.close();
        LocalStore::destroy("sextant-test-destroy").await.unwrap();
        let store = LocalStore::open("sextant-test-destroy").await.unwrap();
        let snapshot = store.load().await.unwrap();
        assert!(snapshot.outbox.is_empty() && snapshot.events.is_empty());
        assert_eq!(snapshot.last_global_sequence, 0);
    }
}
