//! The one event-store interface the rest of the server uses, with its two
//! backends: SQLite (the embedded default, [`super::SqliteStore`]) and
//! PostgreSQL (several nodes, [`super::postgres::PgStore`]).
//!
//! Two halves, because the two sides run in different places:
//!
//! - [`Store`], the read side, is an enum with one async method per read
//!   the pipeline's neighbours need (SSE, projections, accounts, the HTTP
//!   reads). An enum, not a trait object: there are exactly two backends,
//!   async methods on a `dyn` trait would box every future, and each method
//!   shows both implementations side by side.
//! - [`WriteBackend`] / [`WriteTx`], the write side, is a small synchronous
//!   trait the pipeline's one writer thread drives: begin a group
//!   transaction, read and append inside it under per-command savepoints,
//!   commit. Synchronous because the writer is a thread (SQLite blocks
//!   anyway; the PostgreSQL backend blocks on its async client), and a
//!   trait object because the writer holds one of either kind for its
//!   whole life.
//!
//! [`append_command`] is the one unit of writing both backends share and the
//! conformance suite (`tests/tests/suite/store_conformance.rs`) tests:
//! the version check against the store inside the transaction, the events
//! with their global sequences, and the processed-command record, all or
//! nothing.

use chrono::{DateTime, Utc};
use shared_domain::EventEnvelope;
use uuid::Uuid;

use super::accounts::UserRow;
use super::postgres::PgStore;
use super::{ProcessedCommand, SqliteStore};
use crate::error::AppError;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write: a second event at one aggregate
    /// sequence, a command id or an active user name already taken.
    #[error("{0}")]
    Duplicate(String),
    /// Anything else: I/O, a lost connection, a full disk.
    #[error("{0}")]
    Failed(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match &error {
            rusqlite::Error::SqliteFailure(e, _)
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Duplicate(error.to_string())
            }
            _ => StoreError::Failed(error.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        let text = match error.as_db_error() {
            Some(db) => format!("postgres: {}: {}", db.code().code(), db.message()),
            None => format!("postgres: {error}"),
        };
        if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            StoreError::Duplicate(text)
        } else {
            StoreError::Failed(text)
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        AppError::internal(format!("event store: {error}"))
    }
}

/// The read side of the event store; cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Store::Sqlite(store)
    }
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Self {
        Store::Postgres(store)
    }
}

/// Runs the SQLite closure on a pooled read connection (blocking pool), or
/// the PostgreSQL call on the pool of async connections.
macro_rules! dispatch {
    ($self:ident, $sqlite:expr, |$pg:ident| $pg_call:expr) => {
        match $self {
            Store::Sqlite(store) => store.read($sqlite).await,
            Store::Postgres($pg) => $pg_call.await,
        }
    };
}

impl Store {
    /// Which backend this is (`sqlite` or `postgres`), for logs and health.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The store's random id, given once when it was created.
    pub async fn store_id(&self) -> Result<Uuid, AppError> {
        dispatch!(self, super::sync::store_id, |s| s.store_id())
    }

    /// The highest global sequence stored (0 when empty).
    pub async fn max_global_sequence(&self) -> Result<u64, AppError> {
        dispatch!(self, super::max_global_sequence, |s| s
            .max_global_sequence())
    }

    /// The id of the event at `global_sequence`, if there is one (the witness).
    pub async fn event_id_at(&self, global_sequence: u64) -> Result<Option<Uuid>, AppError> {
        dispatch!(
            self,
            move |c| super::sync::event_id_at(c, global_sequence),
            |s| s.event_id_at(global_sequence)
        )
    }

    /// The head and the event at `witness` (if asked), read together, so a
    /// resuming feed is judged on one state of the store.
    pub async fn head_and_event_at(
        &self,
        witness: Option<u64>,
    ) -> Result<(u64, Option<Uuid>), AppError> {
        dispatch!(
            self,
            move |conn| {
                conn.execute_batch("BEGIN")?;
                let read = (|| {
                    let head = super::max_global_sequence(conn)?;
                    let at = match witness {
                        Some(sequence) => super::sync::event_id_at(conn, sequence)?,
                        None => None,
                    };
                    Ok((head, at))
                })();
                conn.execute_batch("COMMIT")?;
                read
            },
            |s| s.head_and_event_at(witness)
        )
    }

    /// Events with a global sequence greater than `after`, oldest first, at
    /// most `limit`, optionally only those of one session.
    pub async fn events_after(
        &self,
        after: u64,
        aggregate_id: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, AppError> {
        dispatch!(
            self,
            move |c| super::events_after(c, after, aggregate_id, limit),
            |s| s.events_after(after, aggregate_id, limit)
        )
    }

    /// Events whose global sequence lies in `first..=last`.
    pub async fn events_in_range(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<EventEnvelope>, AppError> {
        dispatch!(self, move |c| super::events_in_range(c, first, last), |s| s
            .events_in_range(first, last))
    }

    /// The events of one aggregate after `after_version`, in order (one
    /// consistent read).
    pub async fn aggregate_events(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, AppError> {
        dispatch!(
            self,
            move |c| super::aggregate_events(c, aggregate_type, aggregate_id, after_version),
            |s| s.aggregate_events(aggregate_type, aggregate_id, after_version)
        )
    }

    /// The current version of one aggregate (0 if it has no events).
    pub async fn aggregate_version(
        &self,
        aggregate_type: &'static str,
        aggregate_id: Uuid,
    ) -> Result<u64, AppError> {
        dispatch!(
            self,
            move |c| super::aggregate_version(c, aggregate_type, aggregate_id),
            |s| s.aggregate_version(aggregate_type, aggregate_id)
        )
    }

    /// The record of a processed command, if `command_id` was accepted.
    pub async fn find_processed(
        &self,
        command_id: Uuid,
    ) -> Result<Option<ProcessedCommand>, AppError> {
        dispatch!(self, move |c| super::find_processed(c, command_id), |s| s
            .find_processed(command_id))
    }

    /// The session that submitted `query_id`, if any.
    pub async fn session_of_query(&self, query_id: Uuid) -> Result<Option<Uuid>, AppError> {
        dispatch!(self, move |c| super::session_of_query(c, query_id), |s| s
            .session_of_query(query_id))
    }

    /// Folds every stored session event after `after` into `state`, oldest
    /// first, upcasting old versions (the projections' rebuild). Returns the
    /// state and how many events were visited.
    pub async fn fold_session_events<S: Send + 'static>(
        &self,
        after: u64,
        state: S,
        visit: SessionVisitor<S>,
    ) -> Result<(S, u64), AppError> {
        match self {
            Store::Sqlite(store) => {
                store
                    .read(move |conn| {
                        let mut state = state;
                        super::fold_session_events(conn, after, &mut state, visit)
                            .map(|visited| (state, visited))
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
                    })
                    .await
            }
            Store::Postgres(store) => store.fold_session_events(after, state, visit).await,
        }
    }

    /// Every user, active and revoked, oldest first.
    pub async fn all_users(&self) -> Result<Vec<UserRow>, AppError> {
        dispatch!(self, super::accounts::all_users, |s| s.all_users())
    }

    /// The active users, oldest first.
    pub async fn active_users(&self) -> Result<Vec<UserRow>, AppError> {
        dispatch!(self, super::accounts::active_users, |s| s.active_users())
    }

    /// One user by id, active or not.
    pub async fn user_by_id(&self, user_id: Uuid) -> Result<Option<UserRow>, AppError> {
        dispatch!(
            self,
            move |c| super::accounts::user_by_id(c, user_id),
            |s| s.user_by_id(user_id)
        )
    }

    /// How many users exist, revoked ones included.
    pub async fn user_count(&self) -> Result<u64, AppError> {
        dispatch!(self, super::accounts::user_count, |s| s.user_count())
    }

    /// Inserts a user; [`StoreError::Duplicate`] when an active user has
    /// its name.
    pub async fn insert_user(&self, user: UserRow) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(store) => {
                store
                    .write_side(move |c| super::accounts::insert_user(c, &user))
                    .await
            }
            Store::Postgres(store) => store.insert_user(&user).await,
        }
    }

    /// Revokes the active user `name`; its id, or `None` when there is none.
    pub async fn revoke_user(&self, name: String, at: String) -> Result<Option<Uuid>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                store
                    .write_side(move |c| super::accounts::revoke_user(c, &name, &at))
                    .await
            }
            Store::Postgres(store) => store.revoke_user(&name, &at).await,
        }
    }

    /// Gives an active user a new token hash; whether one was changed.
    pub async fn replace_token_hash(
        &self,
        user_id: Uuid,
        hash: String,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(store) => {
                store
                    .write_side(move |c| super::accounts::replace_token_hash(c, user_id, &hash))
                    .await
            }
            Store::Postgres(store) => store.replace_token_hash(user_id, &hash).await,
        }
    }
}

/// Query claims: which node runs a server query, for how long without a
/// renewal (see `query::claims` for who calls what, and why).
impl Store {
    /// Renews the leases `node` holds on `query_ids` (unfinished ones) and
    /// returns the ids it still holds: a missing one was taken over after
    /// its lease ran out, and its run must stop.
    pub async fn renew_query_claims(
        &self,
        node: Uuid,
        query_ids: Vec<Uuid>,
        lease: std::time::Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        if query_ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Sqlite(store) => {
                store
                    .write_side(move |c| super::claims::renew(c, node, &query_ids, lease))
                    .await
            }
            Store::Postgres(store) => store.renew_query_claims(node, &query_ids, lease).await,
        }
    }

    /// Takes over at most `limit` unfinished claims whose lease ran out
    /// (with `any_other_node`, also every claim another node holds: SQLite
    /// at start-up, where one process owns the store), each by exactly one
    /// caller, held by `node` for `lease` from now. The caller records the
    /// query's outcome, then [`Store::finish_query_claim`]s it.
    pub async fn take_expired_query_claims(
        &self,
        node: Uuid,
        lease: std::time::Duration,
        limit: usize,
        any_other_node: bool,
    ) -> Result<Vec<ExpiredClaim>, StoreError> {
        match self {
            Store::Sqlite(store) => {
                store
                    .write_side(move |c| {
                        super::claims::take_expired(c, node, lease, limit, any_other_node)
                    })
                    .await
            }
            Store::Postgres(store) => {
                store
                    .take_expired_query_claims(node, lease, limit, any_other_node)
                    .await
            }
        }
    }

    /// Marks the claim `node` holds on `query_id` finished (its outcome is
    /// recorded); whether it held it.
    pub async fn finish_query_claim(&self, node: Uuid, query_id: Uuid) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(store) => {
                store
                    .write_side(move |c| super::claims::finish(c, node, query_id))
                    .await
            }
            Store::Postgres(store) => store.finish_query_claim(node, query_id).await,
        }
    }

    /// Gives every `(query, session)` that has no claim at all an expired
    /// one held by no node, so the next [`Store::take_expired_query_claims`]
    /// ends it: queries submitted before claims existed. Returns how many.
    pub async fn adopt_unclaimed_queries(
        &self,
        queries: Vec<(Uuid, Uuid)>,
    ) -> Result<u64, StoreError> {
        if queries.is_empty() {
            return Ok(0);
        }
        match self {
            Store::Sqlite(store) => {
                store
                    .write_side(move |c| super::claims::adopt(c, &queries))
                    .await
            }
            Store::Postgres(store) => store.adopt_unclaimed_queries(&queries).await,
        }
    }
}

/// What [`Store::fold_session_events`] calls per event: the state, the
/// event's global sequence, aggregate id, decoded event and time.
pub type SessionVisitor<S> = fn(&mut S, u64, Uuid, &shared_domain::SessionEvent, DateTime<Utc>);

/// The writer's end of a store: one connection that runs group transactions.
pub trait WriteBackend: Send + 'static {
    /// Starts a group transaction. On PostgreSQL it first takes the global
    /// counter's row lock, so the group's reads see every committed append
    /// and no other node appends until this one commits.
    fn begin(&mut self) -> Result<Box<dyn WriteTx + '_>, StoreError>;

    /// Whether this writer is the store's only one, so an aggregate state it
    /// cached after its own commits is exactly what the store holds
    /// (SQLite). `false` when other nodes append too (PostgreSQL): a cached
    /// state is then checked against the store's version before use.
    fn sole_writer(&self) -> bool;

    /// Whether a commit waits for stable storage (an fsync), so waiting a
    /// moment to share it with more commands pays off.
    fn durable_commits(&self) -> bool;
}

/// A writer chosen at run time (tests, the server's start-up) is a writer too.
impl WriteBackend for Box<dyn WriteBackend> {
    fn begin(&mut self) -> Result<Box<dyn WriteTx + '_>, StoreError> {
        (**self).begin()
    }

    fn sole_writer(&self) -> bool {
        (**self).sole_writer()
    }

    fn durable_commits(&self) -> bool {
        (**self).durable_commits()
    }
}

/// One group transaction. Dropping it without [`WriteTx::commit`] rolls
/// back everything in it.
pub trait WriteTx {
    /// The record of an accepted command, if `command_id` was processed.
    fn find_processed(&mut self, command_id: Uuid) -> Result<Option<ProcessedCommand>, StoreError>;
    /// Events whose global sequence lies in `first..=last`.
    fn events_in_range(&mut self, first: u64, last: u64) -> Result<Vec<EventEnvelope>, StoreError>;
    /// The events of one aggregate after `after_version`, in order.
    fn aggregate_events(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError>;
    /// The current version of one aggregate, as stored (0 if none).
    fn aggregate_version(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<u64, StoreError>;
    /// The command behind the last event of one aggregate, if any.
    fn last_command(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<Option<Uuid>, StoreError>;
    /// The session that submitted `query_id`, including this transaction's
    /// own appends.
    fn session_of_query(&mut self, query_id: Uuid) -> Result<Option<Uuid>, StoreError>;
    /// Marks a point [`WriteTx::rollback_to_savepoint`] returns to.
    fn savepoint(&mut self) -> Result<(), StoreError>;
    fn release_savepoint(&mut self) -> Result<(), StoreError>;
    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError>;
    /// Appends `events` in order, giving each the next global sequence
    /// (written into the envelopes). Global sequences are commit-ordered
    /// and gap-free: a later commit never holds a lower one.
    fn append_events(&mut self, events: &mut [EventEnvelope]) -> Result<(), StoreError>;
    /// Records an accepted command.
    fn insert_processed(
        &mut self,
        command_id: Uuid,
        aggregate_type: &str,
        record: &ProcessedCommand,
        processed_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Claims a server query for the node that will run it (see [`NewClaim`]).
    fn insert_query_claim(&mut self, claim: &NewClaim, at: DateTime<Utc>)
        -> Result<(), StoreError>;
    /// Whether the backend already rolled the whole transaction back (after
    /// an I/O error): nothing more may run in it.
    fn is_rolled_back(&self) -> bool;
    /// Commits the group.
    fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// One command's write, for [`append_command`].
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub command_id: Uuid,
    pub aggregate_type: &'static str,
    pub aggregate_id: Uuid,
    /// The version the command was decided on.
    pub expected_version: u64,
    /// Its events, with aggregate sequences `expected_version + 1 …`.
    pub events: Vec<EventEnvelope>,
    /// The envelope's canonical JSON (the idempotency fingerprint).
    pub request: String,
    /// Who issued it.
    pub actor: Option<String>,
    pub at: DateTime<Utc>,
    /// Server queries the command submits, claimed in the same transaction
    /// by the node that will run them (see [`NewClaim`]).
    pub claims: Vec<NewClaim>,
}

/// A claim on a server query, written with the `QuerySubmitted` that asks
/// for it: no query is ever stored unclaimed, and the node that accepted
/// it holds it from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewClaim {
    pub query_id: Uuid,
    pub session_id: Uuid,
    /// The node that will run it (random per process start).
    pub node_id: Uuid,
    /// How long the claim holds without a renewal.
    pub lease: std::time::Duration,
}

/// A claim whose lease ran out, taken over by the caller of
/// [`Store::take_expired_query_claims`]; `node_id` is its previous holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredClaim {
    pub query_id: Uuid,
    pub session_id: Uuid,
    pub node_id: Uuid,
}

/// Why [`append_command`] stored nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The aggregate is not at the expected version (another command, maybe
    /// on another node, got there first).
    #[error("expected version {expected}, but the aggregate is at version {current}")]
    Conflict { expected: u64, current: u64 },
    #[error(transparent)]
    Store(StoreError),
}

/// Appends one command inside the group transaction `tx`, all or nothing:
/// checks against the store (not a cache) that the aggregate is at
/// `expected_version`, appends the events with their global sequences and
/// records the command for idempotent resends. Returns the stored events.
pub fn append_command(
    tx: &mut dyn WriteTx,
    command: NewCommand,
) -> Result<Vec<EventEnvelope>, AppendError> {
    let (aggregate_type, aggregate_id, expected) = (
        command.aggregate_type,
        command.aggregate_id,
        command.expected_version,
    );
    tx.savepoint().map_err(AppendError::Store)?;
    let appended = append_inside_savepoint(tx, command);
    let finish = match appended {
        Ok(_) => tx.release_savepoint(),
        Err(_) => tx
            .rollback_to_savepoint()
            .and_then(|()| tx.release_savepoint()),
    };
    finish.map_err(AppendError::Store)?;
    match appended {
        Ok(events) => Ok(events),
        // Another writer appended at this version after the check (possible
        // only without the counter lock; the UNIQUE key is the last line of
        // defence): still a conflict, read after the rollback.
        Err(Failure::Raced) => {
            let current = tx
                .aggregate_version(aggregate_type, aggregate_id)
                .map_err(AppendError::Store)?;
            Err(AppendError::Conflict { expected, current })
        }
        Err(Failure::Refused(error)) => Err(error),
    }
}

/// Why [`append_inside_savepoint`] stopped.
enum Failure {
    /// The store refused an event's aggregate sequence as taken.
    Raced,
    Refused(AppendError),
}

fn append_inside_savepoint(
    tx: &mut dyn WriteTx,
    command: NewCommand,
) -> Result<Vec<EventEnvelope>, Failure> {
    let NewCommand {
        command_id,
        aggregate_type,
        aggregate_id,
        expected_version,
        mut events,
        request,
        actor,
        at,
        claims,
    } = command;
    let refused = |error| Failure::Refused(AppendError::Store(error));
    let current = tx
        .aggregate_version(aggregate_type, aggregate_id)
        .map_err(refused)?;
    if current != expected_version {
        return Err(Failure::Refused(AppendError::Conflict {
            expected: expected_version,
            current,
        }));
    }
    match tx.append_events(&mut events) {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => return Err(Failure::Raced),
        Err(error) => return Err(refused(error)),
    }
    let record = ProcessedCommand {
        request,
        aggregate_id,
        version: expected_version + events.len() as u64,
        first_global_sequence: events.first().map(|e| e.global_sequence),
        last_global_sequence: events.last().map(|e| e.global_sequence),
        actor,
    };
    tx.insert_processed(command_id, aggregate_type, &record, at)
        .map_err(refused)?;
    for claim in &claims {
        tx.insert_query_claim(claim, at).map_err(refused)?;
    }
    Ok(events)
}
