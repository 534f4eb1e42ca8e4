//! The reads the sync protocol needs: the store's identity, the command
//! behind an aggregate's last event (the exact-base check), and the event
//! at a global sequence (the witness check). See `docs/SYNC.md`.

use rusqlite::{params, Connection, OptionalExtension};
use shared_domain::sync::base::Head;
use uuid::Uuid;

use super::uuid_column;

/// The store's random id, given by migration 0003.
pub fn store_id(conn: &Connection) -> rusqlite::Result<Uuid> {
    conn.query_row(
        "SELECT store_id FROM store_identity WHERE only_row = 1",
        [],
        |row| uuid_column(row, 0),
    )
}

/// The command that produced the last event of one aggregate, if any.
/// Sees the caller's uncommitted writes (the writer's group transaction).
pub fn last_command(
    conn: &Connection,
    aggregate_type: &str,
    aggregate_id: Uuid,
) -> rusqlite::Result<Option<Uuid>> {
    let mut stmt = conn.prepare_cached(
        "SELECT json_extract(metadata, '$.command_id') FROM events
         WHERE aggregate_type = ?1 AND aggregate_id = ?2
         ORDER BY aggregate_sequence DESC LIMIT 1",
    )?;
    stmt.query_row(params![aggregate_type, aggregate_id.to_string()], |row| {
        uuid_column(row, 0)
    })
    .optional()
}

/// The head of an aggregate at `version`, reading the last command only
/// when `base_command` asks for the exact-base check.
pub fn head(
    conn: &Connection,
    aggregate_type: &str,
    aggregate_id: Uuid,
    version: u64,
    base_command: Option<Uuid>,
) -> rusqlite::Result<Head> {
    let last_command = match base_command {
        Some(_) if version > 0 => last_command(conn, aggregate_type, aggregate_id)?,
        _ => None,
    };
    Ok(Head {
        version,
        last_command,
    })
}

/// The id of the event stored at `global_sequence`, if there is one.
pub fn event_id_at(conn: &Connection, global_sequence: u64) -> rusqlite::Result<Option<Uuid>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM events WHERE global_sequence = ?1")?;
    stmt.query_row(params![global_sequence], |row| uuid_column(row, 0))
        .optional()
}
