//! The SQL of the `users` table (migration 0004): adding, revoking, listing
//! users and replacing a token hash. The rules around it (token generation,
//! hashing, the in-memory directory) live in [`crate::accounts`].

use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

/// One row of `users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub user_id: Uuid,
    pub name: String,
    pub admin: bool,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

const USER_COLUMNS: &str = "user_id, name, is_admin, token_hash, created_at, revoked_at";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    let id: String = row.get(0)?;
    Ok(UserRow {
        user_id: Uuid::parse_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        name: row.get(1)?,
        admin: row.get::<_, i64>(2)? != 0,
        token_hash: row.get(3)?,
        created_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

/// Every user, active and revoked, oldest first.
pub fn all_users(conn: &Connection) -> rusqlite::Result<Vec<UserRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, rowid"
    ))?;
    let rows = stmt.query_map([], user_from_row)?;
    rows.collect()
}

/// The active users, oldest first.
pub fn active_users(conn: &Connection) -> rusqlite::Result<Vec<UserRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE revoked_at IS NULL ORDER BY created_at, rowid"
    ))?;
    let rows = stmt.query_map([], user_from_row)?;
    rows.collect()
}

/// One user by id, active or not.
pub fn user_by_id(conn: &Connection, user_id: Uuid) -> rusqlite::Result<Option<UserRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"
    ))?;
    stmt.query_row([user_id.to_string()], user_from_row)
        .optional()
}

/// How many users exist, revoked ones included.
pub fn user_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
}

/// Inserts a user. Fails with a UNIQUE violation when an active user has
/// this name (or, impossibly, the hash is taken).
pub fn insert_user(conn: &Connection, user: &UserRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO users (user_id, name, is_admin, token_hash, created_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            user.user_id.to_string(),
            user.name,
            user.admin as i64,
            user.token_hash,
            user.created_at,
            user.revoked_at,
        ],
    )?;
    Ok(())
}

/// Revokes the active user called `name`; returns its id, or `None` when no
/// active user has that name.
pub fn revoke_user(conn: &Connection, name: &str, at: &str) -> rusqlite::Result<Option<Uuid>> {
    let id: Option<String> = conn
        .query_row(
            "UPDATE users SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL
             RETURNING user_id",
            params![name, at],
            |r| r.get(0),
        )
        .optional()?;
    Ok(id.and_then(|id| Uuid::parse_str(&id).ok()))
}

/// Gives an active user a new token hash (the owner's lost token file).
pub fn replace_token_hash(conn: &Connection, user_id: Uuid, hash: &str) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE users SET token_hash = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        params![user_id.to_string(), hash],
    )?;
    Ok(changed == 1)
}
