//! The event store. [`interface`] is the one interface the rest of the
//! server uses ([`Store`] to read, [`WriteBackend`] for the pipeline's
//! writer), [`postgres`] the PostgreSQL backend, and this module (with
//! `accounts`, `sync` and `migrations`) the SQLite backend: schema and
//! migrations, the connection settings, the SQL that appends and reads
//! events and processed commands, and a small pool of read-only connections
//! for async callers.
//!
//! Writing is not done here but by the one writer thread of
//! [`crate::pipeline`], which owns the single write connection this module
//! opens ([`SqliteStore::open`]) and calls the append functions below inside
//! its group transactions. Everything else reads through [`SqliteStore::read`]
//! on separate connections (WAL lets readers run beside the writer).

pub mod accounts;
pub mod claims;
pub mod interface;
pub mod migrations;
pub mod postgres;
pub mod sync;

pub use interface::{
    append_command, AppendError, ExpiredClaim, NewClaim, NewCommand, SessionVisitor, Store,
    StoreError, WriteBackend, WriteTx,
};
pub use postgres::PgStore;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use shared_domain::{
    Aggregate, DomainEvent, EventEnvelope, EventMetadata, QuerySession, SessionEvent, Upcaster,
};
use uuid::Uuid;

use crate::error::AppError;

/// How many read connections are kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite backend's name before the store interface existed, kept so
/// tests and benches that open a SQLite store directly read the same.
pub type EventStore = SqliteStore;

/// Shared handle to the SQLite store: cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: StoreOptions,
    idle_readers: Mutex<Vec<Connection>>,
    /// Stops (after a last checkpoint) when the store is dropped.
    #[allow(dead_code)]
    checkpointer: Checkpointer,
}

/// The one connection allowed to write. Handed to the pipeline's writer thread.
pub struct WriteConnection(pub Connection);

/// A processed command as recorded in `processed_commands`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessedCommand {
    pub request: String,
    pub aggregate_id: Uuid,
    pub version: u64,
    pub first_global_sequence: Option<u64>,
    pub last_global_sequence: Option<u64>,
    /// Who issued it: a user id, the executor, or `None` before accounts.
    pub actor: Option<String>,
}

/// The columns every event query selects, in [`event_from_row`]'s order.
const EVENT_COLUMNS: &str =
    "global_sequence, id, aggregate_type, aggregate_id, aggregate_sequence, \
     event_type, event_version, payload, metadata, created_at";

/// What a 200 from `POST /api/commands` guarantees (`--durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// `synchronous = FULL`: every group commit is fsynced before its
    /// answers are sent, so an acknowledged command survives a power cut or
    /// a kernel crash. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: a commit is written to the WAL file (the
    /// operating system's page cache) before the answer, and fsynced only at
    /// the next checkpoint. An acknowledged command survives a crash of the
    /// server process (kill -9), but a power cut can lose the last
    /// acknowledged commands, whose global sequences are then given again.
    Normal,
}

impl Durability {
    fn synchronous_pragma(self) -> &'static str {
        match self {
            Durability::Full => "PRAGMA synchronous = FULL;",
            Durability::Normal => "PRAGMA synchronous = NORMAL;",
        }
    }
}

/// How the store opens its connections.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub durability: Durability,
    /// The SQLite VFS every connection uses; `None` is SQLite's default.
    /// Only tests set it (a power-cut or fault-injecting VFS they register).
    pub vfs: Option<String>,
}

/// How often the background checkpointer looks at the WAL at most.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// The WAL is truncated back to this size after a checkpoint reset it.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with the default
    /// options (durability `full`), applies pending migrations and returns
    /// the store with its one write connection.
    pub fn open(path: &Path) -> anyhow::Result<(SqliteStore, WriteConnection)> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// Like [`SqliteStore::open`] with explicit options.
    pub fn open_with(
        path: &Path,
        options: &StoreOptions,
    ) -> anyhow::Result<(SqliteStore, WriteConnection)> {
        let mut writer = open_connection(path, options, OpenFlags::default())
            .with_context(|| format!("opening the event store {}", path.display()))?;
        configure(&writer)?;
        // WAL: readers never block the writer and see only committed data.
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "the event store could not switch to WAL mode (got {mode})"
        );
        // Durability (see [`Durability`]): with FULL, COMMIT fsyncs the WAL
        // before it returns, once per group commit; with NORMAL only
        // checkpoints fsync.
        writer.execute_batch(options.durability.synchronous_pragma())?;
        // No checkpoint on the commit path: the writer never checkpoints
        // (a checkpoint copies pages into the database file and fsyncs it),
        // the checkpointer thread does, beside it.
        writer.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        ))?;
        migrations::migrate(&mut writer, migrations::MIGRATIONS)?;
        let checkpointer = Checkpointer::start(path, options)?;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                options: options.clone(),
                idle_readers: Mutex::new(Vec::new()),
                checkpointer,
            }),
        };
        Ok((store, WriteConnection(writer)))
    }

    /// How the store was opened.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a read-only connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(AppError::internal)?
    }

    /// Runs `f` on a read-only connection on the current thread.
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, AppError> {
        let conn = match self.inner.idle_readers.lock().expect("reader pool").pop() {
            Some(conn) => conn,
            None => self.open_reader().map_err(AppError::internal)?,
        };
        let result = f(&conn).map_err(|e| AppError::internal(format!("event store: {e}")));
        let mut idle = self.inner.idle_readers.lock().expect("reader pool");
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    fn open_reader(&self) -> anyhow::Result<Connection> {
        let conn = open_connection(
            &self.inner.path,
            &self.inner.options,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .with_context(|| format!("opening a reader on {}", self.inner.path.display()))?;
        configure(&conn)?;
        Ok(conn)
    }

    /// Events with a global sequence greater than `after`, oldest first, at
    /// most `limit`, optionally only those of one session.
    pub async fn events_after(
        &self,
        after: u64,
        aggregate_id: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, AppError> {
        self.read(move |conn| events_after(conn, after, aggregate_id, limit))
            .await
    }

    /// The highest global sequence stored (0 when empty).
    pub async fn max_global_sequence(&self) -> Result<u64, AppError> {
        self.read(max_global_sequence).await
    }

    /// Runs `f` on a fresh side writer (see [`open_side_writer`]) on the
    /// blocking pool: the rare writes outside the event log (users).
    pub async fn write_side<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let path = self.inner.path.clone();
        let options = self.inner.options.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_side_writer(&path, &options)
                .map_err(|e| StoreError::Failed(format!("{e:#}")))?;
            f(&conn).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Failed(e.to_string()))?
    }
}

impl WriteBackend for WriteConnection {
    fn begin(&mut self) -> Result<Box<dyn WriteTx + '_>, StoreError> {
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(Box::new(SqliteTx(tx)))
    }

    fn sole_writer(&self) -> bool {
        true
    }

    fn durable_commits(&self) -> bool {
        let synchronous: i64 = self
            .0
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap_or(2);
        synchronous >= 2
    }
}

/// A group transaction on the one write connection (BEGIN IMMEDIATE).
struct SqliteTx<'c>(rusqlite::Transaction<'c>);

impl SqliteTx<'_> {
    /// Runs one cached statement without parameters (savepoints run for
    /// every command: prepared once).
    fn run(&self, sql: &str) -> Result<(), StoreError> {
        self.0.prepare_cached(sql)?.execute([])?;
        Ok(())
    }
}

impl WriteTx for SqliteTx<'_> {
    fn find_processed(&mut self, command_id: Uuid) -> Result<Option<ProcessedCommand>, StoreError> {
        Ok(find_processed(&self.0, command_id)?)
    }

    fn events_in_range(&mut self, first: u64, last: u64) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(events_in_range(&self.0, first, last)?)
    }

    fn aggregate_events(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(aggregate_events(
            &self.0,
            aggregate_type,
            aggregate_id,
            after_version,
        )?)
    }

    fn aggregate_version(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<u64, StoreError> {
        Ok(aggregate_version(&self.0, aggregate_type, aggregate_id)?)
    }

    fn last_command(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        Ok(sync::last_command(&self.0, aggregate_type, aggregate_id)?)
    }

    fn session_of_query(&mut self, query_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        Ok(session_of_query(&self.0, query_id)?)
    }

    fn savepoint(&mut self) -> Result<(), StoreError> {
        self.run("SAVEPOINT command")
    }

    fn release_savepoint(&mut self) -> Result<(), StoreError> {
        self.run("RELEASE command")
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        self.run("ROLLBACK TO command")
    }

    fn append_events(&mut self, events: &mut [EventEnvelope]) -> Result<(), StoreError> {
        // AUTOINCREMENT under the one writer: rowids grow in commit order,
        // and a rolled-back group gives its numbers again.
        for event in events {
            event.global_sequence = insert_event(&self.0, event)?;
        }
        Ok(())
    }

    fn insert_processed(
        &mut self,
        command_id: Uuid,
        aggregate_type: &str,
        record: &ProcessedCommand,
        processed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Ok(insert_processed(
            &self.0,
            command_id,
            aggregate_type,
            record,
            processed_at,
        )?)
    }

    fn insert_query_claim(
        &mut self,
        claim: &NewClaim,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Ok(claims::insert(&self.0, claim, at)?)
    }

    fn is_rolled_back(&self) -> bool {
        self.0.is_autocommit()
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        Ok(self.0.commit()?)
    }
}

/// A second read-write connection to an already migrated store, for the
/// rare writes outside the event log (user management). SQLite serializes
/// it with the pipeline's writer; the busy timeout makes it wait its turn.
pub fn open_side_writer(path: &Path, options: &StoreOptions) -> anyhow::Result<Connection> {
    let conn = open_connection(
        path,
        options,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    configure(&conn)?;
    conn.execute_batch(options.durability.synchronous_pragma())?;
    Ok(conn)
}

fn open_connection(
    path: &Path,
    options: &StoreOptions,
    flags: OpenFlags,
) -> rusqlite::Result<Connection> {
    match &options.vfs {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs.as_str()),
        None => Connection::open_with_flags(path, flags),
    }
}

/// The background checkpointer: its own connection copies committed WAL
/// frames into the database file (PASSIVE: it never blocks the writer or
/// readers), at most every [`CHECKPOINT_INTERVAL`], so the writer's commits
/// never pay for a checkpoint. Dropping it runs a last checkpoint.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, options: &StoreOptions) -> anyhow::Result<Self> {
        let conn = open_connection(path, options, OpenFlags::default())
            .with_context(|| format!("opening the checkpointer on {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Its own fsyncs (of the WAL before copying, of the database after)
        // follow the same durability setting.
        conn.execute_batch(options.durability.synchronous_pragma())?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("event-store-checkpointer".into())
            .spawn(move || loop {
                let last = matches!(
                    stopped.recv_timeout(CHECKPOINT_INTERVAL),
                    Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
                );
                if let Err(error) = checkpoint(&conn) {
                    tracing::warn!(%error, "event store checkpoint failed; retrying later");
                }
                if last {
                    return;
                }
            })
            .context("spawning the checkpointer")?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One PASSIVE checkpoint: copies what no reader still needs, waits for no one.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(64);
    // A 64 MiB page cache and memory-mapped reads: the indexes the writer
    // probes and the pages replays scan stay in memory instead of costing a
    // read(2) each.
    conn.execute_batch(
        "PRAGMA cache_size = -65536;
         PRAGMA mmap_size = 1073741824;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(())
}

/// The timestamp format stored in `created_at`: fixed-width RFC 3339 with
/// microseconds, so text order is time order and values round-trip exactly.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Now, truncated to what [`format_timestamp`] keeps.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

fn conversion_error(
    column: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(error))
}

pub(crate) fn uuid_column(row: &Row<'_>, column: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(column)?;
    Uuid::parse_str(&text).map_err(|e| conversion_error(column, e))
}

/// Decodes a row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventEnvelope> {
    let payload: String = row.get(7)?;
    let metadata: String = row.get(8)?;
    let created_at: String = row.get(9)?;
    Ok(EventEnvelope {
        global_sequence: row.get(0)?,
        id: uuid_column(row, 1)?,
        aggregate_type: row.get(2)?,
        aggregate_id: uuid_column(row, 3)?,
        aggregate_sequence: row.get(4)?,
        event_type: row.get(5)?,
        event_version: row.get(6)?,
        payload: serde_json::from_str(&payload).map_err(|e| conversion_error(7, e))?,
        metadata: serde_json::from_str::<EventMetadata>(&metadata)
            .map_err(|e| conversion_error(8, e))?,
        created_at: DateTime::parse_from_rfc3339(&created_at)
            .map_err(|e| conversion_error(9, e))?
            .with_timezone(&Utc),
    })
}

/// Events after global sequence `after`, oldest first.
pub fn events_after(
    conn: &Connection,
    after: u64,
    aggregate_id: Option<Uuid>,
    limit: usize,
) -> rusqlite::Result<Vec<EventEnvelope>> {
    let limit = limit.min(i64::MAX as usize) as i64;
    match aggregate_id {
        None => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_sequence > ?1
                 ORDER BY global_sequence LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after, limit], event_from_row)?;
            rows.collect()
        }
        Some(id) => {
            // Sessions are the only aggregate type; naming it lets SQLite use
            // the (aggregate_type, aggregate_id, aggregate_sequence) index.
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE aggregate_type = 'QuerySession' AND aggregate_id = ?1 AND global_sequence > ?2
                 ORDER BY global_sequence LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![id.to_string(), after, limit], event_from_row)?;
            rows.collect()
        }
    }
}

/// The events of one aggregate with `aggregate_sequence > after_version`, in order.
pub fn aggregate_events(
    conn: &Connection,
    aggregate_type: &str,
    aggregate_id: Uuid,
    after_version: u64,
) -> rusqlite::Result<Vec<EventEnvelope>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND aggregate_sequence > ?3
         ORDER BY aggregate_sequence"
    ))?;
    let rows = stmt.query_map(
        params![aggregate_type, aggregate_id.to_string(), after_version],
        event_from_row,
    )?;
    rows.collect()
}

/// The current version (highest aggregate sequence) of one aggregate, 0 if none.
pub fn aggregate_version(
    conn: &Connection,
    aggregate_type: &str,
    aggregate_id: Uuid,
) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "SELECT coalesce(max(aggregate_sequence), 0) FROM events
         WHERE aggregate_type = ?1 AND aggregate_id = ?2",
    )?;
    stmt.query_row(params![aggregate_type, aggregate_id.to_string()], |r| {
        r.get(0)
    })
}

/// Events whose global sequence lies in `first..=last` (one command's result).
pub fn events_in_range(
    conn: &Connection,
    first: u64,
    last: u64,
) -> rusqlite::Result<Vec<EventEnvelope>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE global_sequence BETWEEN ?1 AND ?2
         ORDER BY global_sequence"
    ))?;
    let rows = stmt.query_map(params![first, last], event_from_row)?;
    rows.collect()
}

/// The highest global sequence stored (0 when empty).
pub fn max_global_sequence(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT coalesce(max(global_sequence), 0) FROM events",
        [],
        |r| r.get(0),
    )
}

/// Appends one event and returns the global sequence the store gave it.
/// The UNIQUE constraint refuses a second event at the same aggregate sequence.
pub fn insert_event(conn: &Connection, event: &EventEnvelope) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events (id, aggregate_type, aggregate_id, aggregate_sequence, event_type,
                             event_version, payload, metadata, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        event.id.to_string(),
        event.aggregate_type,
        event.aggregate_id.to_string(),
        event.aggregate_sequence,
        event.event_type,
        event.event_version,
        event.payload.to_string(),
        serde_json::to_string(&event.metadata).expect("metadata serializes"),
        format_timestamp(event.created_at),
    ])?;
    Ok(conn.last_insert_rowid() as u64)
}

/// The record of an accepted command, if `command_id` was processed before.
/// The session that already submitted `query_id`, if any (query ids are
/// unique across sessions). Sees the caller's uncommitted writes.
pub fn session_of_query(conn: &Connection, query_id: Uuid) -> rusqlite::Result<Option<Uuid>> {
    let mut stmt = conn.prepare_cached(
        "SELECT aggregate_id FROM events
         WHERE event_type = 'QuerySubmitted' AND json_extract(payload, '$.query_id') = ?1
         LIMIT 1",
    )?;
    let mut rows = stmt.query([query_id.to_string()])?;
    match rows.next()? {
        Some(row) => uuid_column(row, 0).map(Some),
        None => Ok(None),
    }
}

pub fn find_processed(
    conn: &Connection,
    command_id: Uuid,
) -> rusqlite::Result<Option<ProcessedCommand>> {
    let mut stmt = conn.prepare_cached(
        "SELECT request, aggregate_id, version, first_global_sequence, last_global_sequence, actor
         FROM processed_commands WHERE command_id = ?1",
    )?;
    stmt.query_row([command_id.to_string()], |row| {
        Ok(ProcessedCommand {
            request: row.get(0)?,
            aggregate_id: uuid_column(row, 1)?,
            version: row.get(2)?,
            first_global_sequence: row.get(3)?,
            last_global_sequence: row.get(4)?,
            actor: row.get(5)?,
        })
    })
    .optional()
}

/// Records an accepted command; call in the transaction that appended its events.
pub fn insert_processed(
    conn: &Connection,
    command_id: Uuid,
    aggregate_type: &str,
    record: &ProcessedCommand,
    processed_at: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO processed_commands (command_id, aggregate_type, aggregate_id, request, version,
                                         first_global_sequence, last_global_sequence, processed_at,
                                         actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        command_id.to_string(),
        aggregate_type,
        record.aggregate_id.to_string(),
        record.request,
        record.version,
        record.first_global_sequence,
        record.last_global_sequence,
        format_timestamp(processed_at),
        record.actor,
    ])?;
    Ok(())
}

/// Folds every stored session event after `after` into `state` with
/// `visit`, oldest first, upcasting old versions and reading only the
/// columns a projection needs (the rebuild's hot loop). Returns the number
/// of events visited.
pub fn fold_session_events<S>(
    conn: &Connection,
    after: u64,
    state: &mut S,
    visit: SessionVisitor<S>,
) -> Result<u64, AppError> {
    let upcaster: Upcaster = QuerySession::upcaster();
    // The unary `+` keeps SQLite from using the (aggregate_type, …) index,
    // which would then sort every row by global sequence: walk the rowid.
    let mut stmt = conn
        .prepare(
            "SELECT global_sequence, aggregate_id, event_type, event_version, payload, created_at
             FROM events WHERE global_sequence > ?1 AND +aggregate_type = 'QuerySession'
             ORDER BY global_sequence",
        )
        .map_err(AppError::internal)?;
    let mut rows = stmt.query(params![after]).map_err(AppError::internal)?;
    let mut applied = 0;
    while let Some(row) = rows.next().map_err(AppError::internal)? {
        let global_sequence: u64 = row.get(0).map_err(AppError::internal)?;
        let read = || -> Result<(Uuid, SessionEvent, DateTime<Utc>), String> {
            let aggregate_id = row.get_ref(1).map_err(|e| e.to_string())?;
            let aggregate_id =
                Uuid::try_parse_ascii(aggregate_id.as_bytes().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            let event_type = row.get_ref(2).map_err(|e| e.to_string())?;
            let event_type = event_type.as_str().map_err(|e| e.to_string())?;
            let version: u32 = row.get(3).map_err(|e| e.to_string())?;
            let payload = row.get_ref(4).map_err(|e| e.to_string())?;
            let payload = payload.as_bytes().map_err(|e| e.to_string())?;
            // Current events deserialize straight from the text; only old
            // versions go through the upcaster's JSON value.
            let event = if SessionEvent::current_version(event_type) == Some(version) {
                serde_json::from_slice::<SessionEvent>(payload).map_err(|e| e.to_string())?
            } else {
                let value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
                upcaster
                    .decode::<SessionEvent>(event_type, version, value)
                    .map_err(|e| e.to_string())?
            };
            let created_at = row.get_ref(5).map_err(|e| e.to_string())?;
            let created_at = created_at.as_str().map_err(|e| e.to_string())?;
            let created_at = match parse_store_timestamp(created_at) {
                Some(at) => at,
                None => DateTime::parse_from_rfc3339(created_at)
                    .map_err(|e| e.to_string())?
                    .with_timezone(&Utc),
            };
            Ok((aggregate_id, event, created_at))
        };
        let (aggregate_id, event, created_at) = read().map_err(|e| {
            AppError::internal(format!("event {global_sequence} cannot be projected: {e}"))
        })?;
        visit(state, global_sequence, aggregate_id, &event, created_at);
        applied += 1;
    }
    Ok(applied)
}

/// Parses the one form the store writes (`store::format_timestamp`:
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`) without chrono's general RFC 3339 parser,
/// which was a tenth of the rebuild's time; `None` for any other form (the
/// caller then falls back to the general parser).
pub fn parse_store_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let b = raw.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, digit| {
            digit
                .is_ascii_digit()
                .then(|| n * 10 + u32::from(digit - b'0'))
        })
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    let time = date.and_hms_micro_opt(
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..26)?,
    )?;
    Some(time.and_utc())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared_domain::{QuerySession, SessionEvent, SessionTitle};

    use super::*;

    fn envelope(aggregate_id: Uuid, sequence: u64) -> EventEnvelope {
        EventEnvelope::new::<QuerySession>(
            Uuid::now_v7(),
            aggregate_id,
            sequence,
            &SessionEvent::SessionRenamed {
                title: SessionTitle::new(format!("title {sequence}")).unwrap(),
            },
            EventMetadata {
                command_id: Uuid::new_v4(),
                ..Default::default()
            },
            now(),
        )
    }

    #[test]
    fn events_round_trip_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = SqliteStore::open(&dir.path().join("events.sqlite3")).unwrap();
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let mut stored = Vec::new();
        for (id, seq) in [(a, 1), (b, 1), (a, 2)] {
            let mut event = envelope(id, seq);
            event.global_sequence = insert_event(&writer.0, &event).unwrap();
            stored.push(event);
        }
        let all = store
            .read_blocking(|c| events_after(c, 0, None, 100))
            .unwrap();
        assert_eq!(all, stored);
        let only_a = store
            .read_blocking(move |c| events_after(c, 0, Some(a), 100))
            .unwrap();
        assert_eq!(only_a, vec![stored[0].clone(), stored[2].clone()]);
        let after_first = store
            .read_blocking(|c| events_after(c, stored[0].global_sequence, None, 1))
            .unwrap();
        assert_eq!(after_first, vec![stored[1].clone()]);
        let a_tail = store
            .read_blocking(move |c| aggregate_events(c, "QuerySession", a, 1))
            .unwrap();
        assert_eq!(a_tail, vec![stored[2].clone()]);
        assert_eq!(
            store
                .read_blocking(move |c| aggregate_version(c, "QuerySession", a))
                .unwrap(),
            2
        );

        // The store itself refuses a second event at the same aggregate sequence.
        let clash = insert_event(&writer.0, &envelope(a, 2)).unwrap_err();
        assert!(clash.to_string().contains("UNIQUE"), "{clash}");
        assert_eq!(json!(stored[0].payload["title"]), json!("title 1"));
    }

    #[test]
    fn readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _writer) = SqliteStore::open(&dir.path().join("events.sqlite3")).unwrap();
        let error = store
            .read_blocking(|c| c.execute("DELETE FROM schema_migrations", []))
            .unwrap_err();
        assert!(error.detail.contains("readonly"), "{}", error.detail);
    }
}
