//! Query claims on SQLite (migration 0005): the same semantics as the
//! PostgreSQL backend's, for one process. Leases are milliseconds since the
//! Unix epoch by this process's clock (one process owns the file, so one
//! clock compares them); each operation runs in one IMMEDIATE transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, TransactionBehavior};
use uuid::Uuid;

use super::interface::{ExpiredClaim, NewClaim};

/// Milliseconds since the Unix epoch, `lease` from now.
fn until(lease: Duration) -> i64 {
    Utc::now().timestamp_millis() + lease.as_millis() as i64
}

fn uuid(text: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&text).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Claims a query for `claim.node_id` (inside the append transaction).
pub fn insert(conn: &Connection, claim: &NewClaim, at: DateTime<Utc>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO query_claims (query_id, session_id, node_id, lease_until, claimed_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        claim.query_id.to_string(),
        claim.session_id.to_string(),
        claim.node_id.to_string(),
        until(claim.lease),
        at.to_rfc3339(),
    ])?;
    Ok(())
}

/// See [`super::Store::renew_query_claims`].
pub fn renew(
    conn: &Connection,
    node: Uuid,
    query_ids: &[Uuid],
    lease: Duration,
) -> rusqlite::Result<Vec<Uuid>> {
    let tx = immediate(conn)?;
    let mut held = Vec::new();
    {
        let mut renew = tx.prepare_cached(
            "UPDATE query_claims SET lease_until = ?3
             WHERE query_id = ?1 AND node_id = ?2 AND finished_at IS NULL",
        )?;
        for query_id in query_ids {
            if renew.execute(params![
                query_id.to_string(),
                node.to_string(),
                until(lease)
            ])? == 1
            {
                held.push(*query_id);
            }
        }
    }
    tx.commit()?;
    Ok(held)
}

/// See [`super::Store::take_expired_query_claims`].
pub fn take_expired(
    conn: &Connection,
    node: Uuid,
    lease: Duration,
    limit: usize,
    any_other_node: bool,
) -> rusqlite::Result<Vec<ExpiredClaim>> {
    let tx = immediate(conn)?;
    let expired = {
        let mut select = tx.prepare_cached(
            "SELECT query_id, session_id, node_id FROM query_claims
             WHERE finished_at IS NULL AND (lease_until < ?1 OR (?2 AND node_id <> ?3))
             ORDER BY lease_until LIMIT ?4",
        )?;
        let rows = select.query_map(
            params![
                Utc::now().timestamp_millis(),
                any_other_node,
                node.to_string(),
                limit as i64
            ],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            },
        )?;
        let mut expired = Vec::new();
        for row in rows {
            let (query_id, session_id, node_id) = row?;
            expired.push(ExpiredClaim {
                query_id: uuid(query_id)?,
                session_id: uuid(session_id)?,
                node_id: uuid(node_id)?,
            });
        }
        expired
    };
    {
        let mut take = tx.prepare_cached(
            "UPDATE query_claims SET node_id = ?2, lease_until = ?3 WHERE query_id = ?1",
        )?;
        for claim in &expired {
            take.execute(params![
                claim.query_id.to_string(),
                node.to_string(),
                until(lease)
            ])?;
        }
    }
    tx.commit()?;
    Ok(expired)
}

/// See [`super::Store::finish_query_claim`].
pub fn finish(conn: &Connection, node: Uuid, query_id: Uuid) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE query_claims SET finished_at = ?3
         WHERE query_id = ?1 AND node_id = ?2 AND finished_at IS NULL",
        params![
            query_id.to_string(),
            node.to_string(),
            Utc::now().to_rfc3339()
        ],
    )?;
    Ok(changed == 1)
}

/// See [`super::Store::adopt_unclaimed_queries`].
pub fn adopt(conn: &Connection, queries: &[(Uuid, Uuid)]) -> rusqlite::Result<u64> {
    let tx = immediate(conn)?;
    let mut adopted = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO query_claims (query_id, session_id, node_id, lease_until, claimed_at)
             VALUES (?1, ?2, ?3, 0, ?4) ON CONFLICT (query_id) DO NOTHING",
        )?;
        for (query_id, session_id) in queries {
            adopted += insert.execute(params![
                query_id.to_string(),
                session_id.to_string(),
                Uuid::nil().to_string(),
                Utc::now().to_rfc3339()
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(adopted)
}

fn immediate(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}
