//! The PostgreSQL backend of the event store (`--database-url
//! postgres://…`), for several nodes sharing one database.
//!
//! Schema in `migrations/postgres/` (its own numbering). Global order
//! without gaps: a group transaction first locks the one row of
//! `event_counter` (`SELECT … FOR UPDATE`), so appends of every node
//! serialize and each group's reads see every committed append; each
//! command takes its global sequences with `UPDATE event_counter SET seq =
//! seq + n RETURNING seq`. The lock is held to COMMIT, so commit order is
//! global-sequence order and a reader resuming with `> last` never skips an
//! event committed late (the trap of plain sequences). A group that
//! appended sends `NOTIFY sextant_events` with the new head, delivered on
//! commit.
//!
//! Reads go through a small pool of async connections (deadpool); the
//! writer thread drives its own connection by blocking on the runtime.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use shared_domain::{Aggregate, EventEnvelope, EventMetadata, QuerySession};
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use uuid::Uuid;

use super::accounts::UserRow;
use super::interface::{ExpiredClaim, NewClaim, SessionVisitor, StoreError, WriteBackend, WriteTx};
use super::migrations::Migration;
use super::ProcessedCommand;
use crate::error::AppError;

/// The channel a commit notifies with the new head (a global sequence).
pub const NOTIFY_CHANNEL: &str = "sextant_events";
/// Read connections per node.
const POOL_SIZE: usize = 8;
/// Events fetched per page by [`PgStore::fold_session_events`].
const FOLD_PAGE: usize = 5000;

/// Every PostgreSQL migration this binary knows, in order (own numbering,
/// 1..n without gaps). Append; never edit a shipped one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../../../migrations/postgres/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "query_claims",
        sql: include_str!("../../../migrations/postgres/0002_query_claims.sql"),
    },
];

/// The columns every event query selects, in [`event_from_row`]'s order.
const EVENT_COLUMNS: &str =
    "global_sequence, id, aggregate_type, aggregate_id, aggregate_sequence, \
     event_type, event_version, payload, metadata, created_at";

const USER_COLUMNS: &str = "user_id, name, is_admin, token_hash, created_at, revoked_at";

/// The PostgreSQL store's read side; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: std::sync::Arc<tokio_postgres::Config>,
}

impl PgStore {
    /// Connects to `url`, applies pending migrations (one node at a time:
    /// an advisory lock) and returns the store with its write connection.
    pub async fn open(url: &str) -> anyhow::Result<(PgStore, PgWriter)> {
        let config: tokio_postgres::Config = url
            .parse()
            .with_context(|| "parsing the database URL".to_string())?;
        let mut client = connect(&config).await?;
        migrate(&mut client, MIGRATIONS).await?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .context("building the PostgreSQL pool")?;
        let writer = PgWriter {
            client,
            config: config.clone(),
            handle: Handle::current(),
            statements: HashMap::new(),
        };
        let config = std::sync::Arc::new(config);
        Ok((PgStore { pool, config }, writer))
    }

    /// The connection settings (for a node's LISTEN connection).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, AppError> {
        self.pool
            .get()
            .await
            .map_err(|e| AppError::internal(format!("event store: postgres pool: {e}")))
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, AppError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        client.query(&statement, params).await.map_err(pg_error)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, AppError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn events(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<EventEnvelope>, AppError> {
        self.query(sql, params)
            .await?
            .iter()
            .map(|row| event_from_row(row).map_err(AppError::from))
            .collect()
    }

    pub async fn store_id(&self) -> Result<Uuid, AppError> {
        let row = self
            .query_opt("SELECT store_id FROM store_identity", &[])
            .await?
            .ok_or_else(|| AppError::internal("the store has no identity row"))?;
        Ok(row.get(0))
    }

    pub async fn max_global_sequence(&self) -> Result<u64, AppError> {
        // The counter, not max(global_sequence): it is the committed head.
        let row = self
            .query_opt("SELECT seq FROM event_counter", &[])
            .await?
            .ok_or_else(|| AppError::internal("the store has no event counter"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    pub async fn event_id_at(&self, global_sequence: u64) -> Result<Option<Uuid>, AppError> {
        let row = self
            .query_opt(
                "SELECT id FROM events WHERE global_sequence = $1",
                &[&(global_sequence as i64)],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn head_and_event_at(
        &self,
        witness: Option<u64>,
    ) -> Result<(u64, Option<Uuid>), AppError> {
        // One statement, one snapshot.
        let row = self
            .query_opt(
                "SELECT (SELECT seq FROM event_counter),
                        (SELECT id FROM events WHERE global_sequence = $1)",
                &[&witness.map(|w| w as i64)],
            )
            .await?
            .ok_or_else(|| AppError::internal("the store has no event counter"))?;
        Ok((row.get::<_, i64>(0) as u64, row.get(1)))
    }

    pub async fn events_after(
        &self,
        after: u64,
        aggregate_id: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, AppError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        match aggregate_id {
            None => {
                self.events(
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM events WHERE global_sequence > $1
                         ORDER BY global_sequence LIMIT $2"
                    ),
                    &[&(after as i64), &limit],
                )
                .await
            }
            Some(id) => {
                self.events(
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM events
                         WHERE aggregate_type = 'QuerySession' AND aggregate_id = $1
                           AND global_sequence > $2
                         ORDER BY global_sequence LIMIT $3"
                    ),
                    &[&id, &(after as i64), &limit],
                )
                .await
            }
        }
    }

    pub async fn events_in_range(
        &self,
        first: u64,
        last: u64,
    ) -> Result<Vec<EventEnvelope>, AppError> {
        self.events(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE global_sequence BETWEEN $1 AND $2
                 ORDER BY global_sequence"
            ),
            &[&(first as i64), &(last as i64)],
        )
        .await
    }

    pub async fn aggregate_events(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, AppError> {
        self.events(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND aggregate_sequence > $3
                 ORDER BY aggregate_sequence"
            ),
            &[&aggregate_type, &aggregate_id, &(after_version as i64)],
        )
        .await
    }

    pub async fn aggregate_version(
        &self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<u64, AppError> {
        let rows = self
            .query(AGGREGATE_VERSION, &[&aggregate_type, &aggregate_id])
            .await?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }

    pub async fn find_processed(
        &self,
        command_id: Uuid,
    ) -> Result<Option<ProcessedCommand>, AppError> {
        let row = self.query_opt(FIND_PROCESSED, &[&command_id]).await?;
        Ok(row.as_ref().map(processed_from_row))
    }

    pub async fn session_of_query(&self, query_id: Uuid) -> Result<Option<Uuid>, AppError> {
        let row = self
            .query_opt(SESSION_OF_QUERY, &[&query_id.to_string()])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Pages through the session events after `after` and folds them.
    pub async fn fold_session_events<S: Send + 'static>(
        &self,
        after: u64,
        mut state: S,
        visit: SessionVisitor<S>,
    ) -> Result<(S, u64), AppError> {
        let mut cursor = after;
        let mut visited = 0;
        loop {
            let page = self.events_after(cursor, None, FOLD_PAGE).await?;
            for envelope in &page {
                cursor = envelope.global_sequence;
                if envelope.aggregate_type != QuerySession::TYPE {
                    continue;
                }
                let event = envelope.decode::<QuerySession>().map_err(|e| {
                    AppError::internal(format!(
                        "event {} cannot be projected: {e}",
                        envelope.global_sequence
                    ))
                })?;
                visit(
                    &mut state,
                    envelope.global_sequence,
                    envelope.aggregate_id,
                    &event,
                    envelope.created_at,
                );
                visited += 1;
            }
            if page.len() < FOLD_PAGE {
                return Ok((state, visited));
            }
        }
    }

    pub async fn all_users(&self) -> Result<Vec<UserRow>, AppError> {
        let rows = self
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, user_id"),
                &[],
            )
            .await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    pub async fn active_users(&self) -> Result<Vec<UserRow>, AppError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE revoked_at IS NULL
                     ORDER BY created_at, user_id"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    pub async fn user_by_id(&self, user_id: Uuid) -> Result<Option<UserRow>, AppError> {
        let row = self
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1"),
                &[&user_id],
            )
            .await?;
        Ok(row.as_ref().map(user_from_row))
    }

    pub async fn user_count(&self) -> Result<u64, AppError> {
        let rows = self.query("SELECT count(*) FROM users", &[]).await?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }

    async fn write_client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Failed(format!("postgres pool: {e}")))
    }

    pub async fn insert_user(&self, user: &UserRow) -> Result<(), StoreError> {
        self.write_client()
            .await?
            .execute(
                "INSERT INTO users (user_id, name, is_admin, token_hash, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &user.user_id,
                    &user.name,
                    &user.admin,
                    &user.token_hash,
                    &user.created_at,
                    &user.revoked_at,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn revoke_user(&self, name: &str, at: &str) -> Result<Option<Uuid>, StoreError> {
        let row = self
            .write_client()
            .await?
            .query_opt(
                "UPDATE users SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL
                 RETURNING user_id",
                &[&name, &at],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn replace_token_hash(&self, user_id: Uuid, hash: &str) -> Result<bool, StoreError> {
        let changed = self
            .write_client()
            .await?
            .execute(
                "UPDATE users SET token_hash = $2 WHERE user_id = $1 AND revoked_at IS NULL",
                &[&user_id, &hash],
            )
            .await?;
        Ok(changed == 1)
    }

    pub async fn renew_query_claims(
        &self,
        node: Uuid,
        query_ids: &[Uuid],
        lease: std::time::Duration,
    ) -> Result<Vec<Uuid>, StoreError> {
        let rows = self
            .write_client()
            .await?
            .query(
                "UPDATE query_claims SET lease_until = now() + $3::float8 * interval '1 millisecond'
                 WHERE node_id = $1 AND query_id = ANY($2) AND finished_at IS NULL
                 RETURNING query_id",
                &[&node, &query_ids, &millis(lease)],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// One statement: the expired claims are locked with `SKIP LOCKED`
    /// (a claim another node is taking or renewing right now is left to
    /// it), re-checked on their latest version, and handed to `node`.
    pub async fn take_expired_query_claims(
        &self,
        node: Uuid,
        lease: std::time::Duration,
        limit: usize,
        any_other_node: bool,
    ) -> Result<Vec<ExpiredClaim>, StoreError> {
        let rows = self
            .write_client()
            .await?
            .query(
                "UPDATE query_claims AS claim
                 SET node_id = $1, lease_until = now() + $2::float8 * interval '1 millisecond'
                 FROM (SELECT query_id, node_id FROM query_claims
                       WHERE finished_at IS NULL
                         AND (lease_until < now() OR ($4 AND node_id <> $1))
                       ORDER BY lease_until
                       LIMIT $3
                       FOR UPDATE SKIP LOCKED) AS expired
                 WHERE claim.query_id = expired.query_id
                 RETURNING claim.query_id, claim.session_id, expired.node_id",
                &[&node, &millis(lease), &(limit as i64), &any_other_node],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| ExpiredClaim {
                query_id: row.get(0),
                session_id: row.get(1),
                node_id: row.get(2),
            })
            .collect())
    }

    pub async fn finish_query_claim(&self, node: Uuid, query_id: Uuid) -> Result<bool, StoreError> {
        let changed = self
            .write_client()
            .await?
            .execute(
                "UPDATE query_claims SET finished_at = now()
                 WHERE query_id = $1 AND node_id = $2 AND finished_at IS NULL",
                &[&query_id, &node],
            )
            .await?;
        Ok(changed == 1)
    }

    pub async fn adopt_unclaimed_queries(
        &self,
        queries: &[(Uuid, Uuid)],
    ) -> Result<u64, StoreError> {
        let (query_ids, session_ids): (Vec<Uuid>, Vec<Uuid>) = queries.iter().copied().unzip();
        let adopted = self
            .write_client()
            .await?
            .execute(
                "INSERT INTO query_claims (query_id, session_id, node_id, lease_until)
                 SELECT q, s, $3, '-infinity' FROM unnest($1::uuid[], $2::uuid[]) AS t(q, s)
                 ON CONFLICT (query_id) DO NOTHING",
                &[&query_ids, &session_ids, &Uuid::nil()],
            )
            .await?;
        Ok(adopted)
    }
}

/// A lease in whole milliseconds, for `$n * interval '1 millisecond'`.
fn millis(lease: std::time::Duration) -> f64 {
    lease.as_millis() as f64
}

const AGGREGATE_VERSION: &str = "SELECT coalesce(max(aggregate_sequence), 0)::bigint FROM events
     WHERE aggregate_type = $1 AND aggregate_id = $2";
const FIND_PROCESSED: &str =
    "SELECT request, aggregate_id, version, first_global_sequence, last_global_sequence, actor
     FROM processed_commands WHERE command_id = $1";
const SESSION_OF_QUERY: &str = "SELECT aggregate_id FROM events
     WHERE event_type = 'QuerySubmitted' AND payload->>'query_id' = $1 LIMIT 1";

/// Opens one connection and drives it on the current runtime.
pub async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Applies the pending migrations, each in its own transaction, under an
/// advisory lock so nodes starting together migrate once. A database
/// migrated by a newer binary is refused.
pub async fn migrate(client: &mut Client, migrations: &[Migration]) -> anyhow::Result<i64> {
    let tx = client.transaction().await?;
    // Any constant shared by every node: "sextant" in ASCII.
    tx.execute("SELECT pg_advisory_xact_lock(7310594637247606900)", &[])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .context("creating schema_migrations")?;
    let applied: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = migrations.last().map_or(0, |m| m.version);
    if applied > known {
        anyhow::bail!(
            "the database schema is at version {applied}, newer than this server knows (version {known}); \
             it was written by a newer Sextant: run that version or a newer one, never an older one"
        );
    }
    for migration in migrations.iter().filter(|m| m.version > applied) {
        tx.batch_execute(migration.sql).await.with_context(|| {
            format!(
                "applying PostgreSQL migration {} ({})",
                migration.version, migration.name
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied PostgreSQL migration"
        );
    }
    tx.commit().await?;
    Ok(applied.max(known))
}

fn pg_error(error: tokio_postgres::Error) -> AppError {
    StoreError::from(error).into()
}

fn decode_error(column: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("postgres: column {column} cannot be read: {error}"))
}

/// Decodes a row selected with [`EVENT_COLUMNS`].
fn event_from_row(row: &Row) -> Result<EventEnvelope, StoreError> {
    let metadata: serde_json::Value = row.try_get(8).map_err(|e| decode_error("metadata", e))?;
    Ok(EventEnvelope {
        global_sequence: row.get::<_, i64>(0) as u64,
        id: row.get(1),
        aggregate_type: row.get(2),
        aggregate_id: row.get(3),
        aggregate_sequence: row.get::<_, i64>(4) as u64,
        event_type: row.get(5),
        event_version: row.get::<_, i32>(6) as u32,
        payload: row.try_get(7).map_err(|e| decode_error("payload", e))?,
        metadata: serde_json::from_value::<EventMetadata>(metadata)
            .map_err(|e| decode_error("metadata", e))?,
        created_at: row.get::<_, DateTime<Utc>>(9),
    })
}

fn processed_from_row(row: &Row) -> ProcessedCommand {
    ProcessedCommand {
        request: row.get(0),
        aggregate_id: row.get(1),
        version: row.get::<_, i64>(2) as u64,
        first_global_sequence: row.get::<_, Option<i64>>(3).map(|s| s as u64),
        last_global_sequence: row.get::<_, Option<i64>>(4).map(|s| s as u64),
        actor: row.get(5),
    }
}

fn user_from_row(row: &Row) -> UserRow {
    UserRow {
        user_id: row.get(0),
        name: row.get(1),
        admin: row.get(2),
        token_hash: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
    }
}

/// The writer thread's connection. Its calls block on the runtime the
/// store was opened on, so it must be used from a thread outside it (the
/// pipeline's writer thread).
pub struct PgWriter {
    client: Client,
    config: tokio_postgres::Config,
    handle: Handle,
    statements: HashMap<&'static str, Statement>,
}

impl PgWriter {
    fn block<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.handle.block_on(future)
    }

    /// The prepared statement for `sql`, prepared on first use (one round
    /// trip per statement instead of two).
    fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.handle.block_on(self.client.prepare(sql))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        Ok(self.block(self.client.query(&statement, params))?)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        Ok(self.block(self.client.execute(&statement, params))?)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.block(self.client.batch_execute(sql))?)
    }

    /// A lost connection (the database restarted) is replaced at the next
    /// group; its prepared statements go with it.
    fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            tracing::warn!("the writer's PostgreSQL connection was lost; reconnecting");
            let config = self.config.clone();
            self.client = self
                .handle
                .block_on(connect(&config))
                .map_err(|e| StoreError::Failed(format!("{e:#}")))?;
            self.statements.clear();
        }
        Ok(())
    }
}

impl WriteBackend for PgWriter {
    fn begin(&mut self) -> Result<Box<dyn WriteTx + '_>, StoreError> {
        self.reconnect_if_closed()?;
        self.batch("BEGIN")?;
        let tx = PgTx {
            writer: self,
            head: None,
            open: true,
            aborted: false,
        };
        // The counter's row lock, held to COMMIT: appends of all nodes
        // serialize, and every read below sees each append committed before.
        tx.writer
            .query("SELECT seq FROM event_counter FOR UPDATE", &[])?;
        Ok(Box::new(tx))
    }

    fn sole_writer(&self) -> bool {
        false
    }

    fn durable_commits(&self) -> bool {
        true
    }
}

/// One group transaction on PostgreSQL, holding the counter's lock.
struct PgTx<'w> {
    writer: &'w mut PgWriter,
    /// The new head when this group appended (for the NOTIFY).
    head: Option<u64>,
    /// Whether BEGIN ran and neither COMMIT nor ROLLBACK did.
    open: bool,
    /// Whether a statement failed since the last savepoint rollback:
    /// PostgreSQL then refuses everything but a rollback, and a COMMIT would
    /// quietly roll back.
    aborted: bool,
}

impl PgTx<'_> {
    /// Notes a failed statement (see [`PgTx::aborted`]).
    fn track<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.aborted = true;
        }
        result
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let result = self.writer.query(sql, params);
        self.track(result)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let result = self.writer.execute(sql, params);
        self.track(result)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        let result = self.writer.batch(sql);
        self.track(result)
    }

    fn events(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.query(sql, params)?
            .iter()
            .map(event_from_row)
            .collect()
    }
}

impl WriteTx for PgTx<'_> {
    fn find_processed(&mut self, command_id: Uuid) -> Result<Option<ProcessedCommand>, StoreError> {
        let rows = self.query(FIND_PROCESSED, &[&command_id])?;
        Ok(rows.first().map(processed_from_row))
    }

    fn events_in_range(&mut self, first: u64, last: u64) -> Result<Vec<EventEnvelope>, StoreError> {
        self.events(
            "SELECT global_sequence, id, aggregate_type, aggregate_id, aggregate_sequence,
                    event_type, event_version, payload, metadata, created_at
             FROM events WHERE global_sequence BETWEEN $1 AND $2 ORDER BY global_sequence",
            &[&(first as i64), &(last as i64)],
        )
    }

    fn aggregate_events(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
        after_version: u64,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.events(
            "SELECT global_sequence, id, aggregate_type, aggregate_id, aggregate_sequence,
                    event_type, event_version, payload, metadata, created_at
             FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND aggregate_sequence > $3
             ORDER BY aggregate_sequence",
            &[&aggregate_type, &aggregate_id, &(after_version as i64)],
        )
    }

    fn aggregate_version(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<u64, StoreError> {
        let rows = self.query(AGGREGATE_VERSION, &[&aggregate_type, &aggregate_id])?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }

    fn last_command(
        &mut self,
        aggregate_type: &str,
        aggregate_id: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        let rows = self.query(
            "SELECT metadata->>'command_id' FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2
             ORDER BY aggregate_sequence DESC LIMIT 1",
            &[&aggregate_type, &aggregate_id],
        )?;
        rows.first()
            .and_then(|row| row.get::<_, Option<String>>(0))
            .map(|text| Uuid::parse_str(&text).map_err(|e| decode_error("metadata", e)))
            .transpose()
    }

    fn session_of_query(&mut self, query_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let rows = self.query(SESSION_OF_QUERY, &[&query_id.to_string()])?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    fn savepoint(&mut self) -> Result<(), StoreError> {
        self.batch("SAVEPOINT command")
    }

    fn release_savepoint(&mut self) -> Result<(), StoreError> {
        self.batch("RELEASE SAVEPOINT command")
    }

    fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        self.batch("ROLLBACK TO SAVEPOINT command")?;
        // What failed after the savepoint is undone: the transaction works again.
        self.aborted = false;
        Ok(())
    }

    fn append_events(&mut self, events: &mut [EventEnvelope]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let count = events.len() as i64;
        let rows = self.query(
            "UPDATE event_counter SET seq = seq + $1 RETURNING seq",
            &[&count],
        )?;
        let last = rows[0].get::<_, i64>(0);
        let mut sequence = last - count;
        for event in events.iter_mut() {
            sequence += 1;
            let metadata = serde_json::to_value(&event.metadata).expect("metadata serializes");
            self.execute(
                "INSERT INTO events (global_sequence, id, aggregate_type, aggregate_id,
                                     aggregate_sequence, event_type, event_version, payload,
                                     metadata, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &sequence,
                    &event.id,
                    &event.aggregate_type,
                    &event.aggregate_id,
                    &(event.aggregate_sequence as i64),
                    &event.event_type,
                    &(event.event_version as i32),
                    &event.payload,
                    &metadata,
                    &event.created_at,
                ],
            )?;
            event.global_sequence = sequence as u64;
        }
        self.head = Some(last as u64);
        Ok(())
    }

    fn insert_processed(
        &mut self,
        command_id: Uuid,
        aggregate_type: &str,
        record: &ProcessedCommand,
        processed_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO processed_commands (command_id, aggregate_type, aggregate_id, request,
                                             version, first_global_sequence,
                                             last_global_sequence, processed_at, actor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &command_id,
                &aggregate_type,
                &record.aggregate_id,
                &record.request,
                &(record.version as i64),
                &record.first_global_sequence.map(|s| s as i64),
                &record.last_global_sequence.map(|s| s as i64),
                &processed_at,
                &record.actor,
            ],
        )?;
        Ok(())
    }

    fn insert_query_claim(
        &mut self,
        claim: &NewClaim,
        _at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The database's clock, like every lease comparison.
        self.execute(
            "INSERT INTO query_claims (query_id, session_id, node_id, lease_until)
             VALUES ($1, $2, $3, now() + $4::float8 * interval '1 millisecond')",
            &[
                &claim.query_id,
                &claim.session_id,
                &claim.node_id,
                &millis(claim.lease),
            ],
        )?;
        Ok(())
    }

    fn is_rolled_back(&self) -> bool {
        !self.open || self.aborted
    }

    fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.aborted {
            return Err(StoreError::Failed(
                "a statement of the group failed: the transaction was rolled back".into(),
            ));
        }
        if let Some(head) = self.head {
            // Delivered to every LISTENer when (and only if) this commits.
            self.execute(
                "SELECT pg_notify('sextant_events', $1)",
                &[&head.to_string()],
            )?;
        }
        self.open = false;
        self.batch("COMMIT")
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(error) = self.batch("ROLLBACK") {
                tracing::warn!(%error, "rolling back a PostgreSQL group failed");
            }
        }
    }
}
