//! The schema migrations runner: numbered `.sql` files from `migrations/`,
//! embedded into the binary, applied in order at start-up and recorded in
//! `schema_migrations`. A database migrated by a newer binary is refused.

use anyhow::{bail, Context};
use rusqlite::{Connection, OptionalExtension};

/// One embedded migration: its number, its name and its SQL.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this binary knows, in order. Append; never edit a shipped one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../../../migrations/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "query_ids",
        sql: include_str!("../../../migrations/0002_query_ids.sql"),
    },
    Migration {
        version: 3,
        name: "store_identity",
        sql: include_str!("../../../migrations/0003_store_identity.sql"),
    },
    Migration {
        version: 4,
        name: "accounts",
        sql: include_str!("../../../migrations/0004_accounts.sql"),
    },
    Migration {
        version: 5,
        name: "query_claims",
        sql: include_str!("../../../migrations/0005_query_claims.sql"),
    },
];

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies the pending migrations of `migrations` (each in its own
/// transaction) and returns the schema version the database is now at.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> anyhow::Result<i64> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )
    .context("creating schema_migrations")?;
    let applied: i64 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |row| {
            row.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    let known = migrations.last().map_or(0, |m| m.version);
    if applied > known {
        bail!(
            "the database schema is at version {applied}, newer than this server knows (version {known}); \
             it was written by a newer Sextant: run that version or a newer one, never an older one"
        );
    }
    for migration in migrations.iter().filter(|m| m.version > applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration.sql).with_context(|| {
            format!(
                "applying migration {} ({})",
                migration.version, migration.name
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                migration.version,
                migration.name,
                chrono::Utc::now().to_rfc3339()
            ],
        )?;
        tx.commit()?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
    }
    Ok(applied.max(known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_run_one_to_n_without_gaps() {
        // A database at version n skips every migration numbered below n:
        // a gap filled later would never run on it.
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
        }
    }

    #[test]
    fn applies_once_and_refuses_a_newer_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, MIGRATIONS).unwrap(), latest_version());
        // Running again is a no-op.
        assert_eq!(migrate(&mut conn, MIGRATIONS).unwrap(), latest_version());
        let count: i64 = conn
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, MIGRATIONS.len() as i64);

        conn.execute(
            "INSERT INTO schema_migrations VALUES (?1, 'from the future', 'now')",
            [latest_version() + 1],
        )
        .unwrap();
        let error = migrate(&mut conn, MIGRATIONS).unwrap_err().to_string();
        assert!(error.contains("newer than this server knows"), "{error}");
    }

    #[test]
    fn events_are_append_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, MIGRATIONS).unwrap();
        conn.execute(
            "INSERT INTO events (id, aggregate_type, aggregate_id, aggregate_sequence, event_type,
                                 event_version, payload, metadata, created_at)
             VALUES ('e1', 'QuerySession', 'a1', 1, 'SessionClosed', 1, '{}', '{}', 'now')",
            [],
        )
        .unwrap();
        let update = conn
            .execute("UPDATE events SET payload = '[]'", [])
            .unwrap_err();
        assert!(update.to_string().contains("append-only"), "{update}");
        let delete = conn.execute("DELETE FROM events", []).unwrap_err();
        assert!(delete.to_string().contains("append-only"), "{delete}");
        let duplicate = conn
            .execute(
                "INSERT INTO events (id, aggregate_type, aggregate_id, aggregate_sequence, event_type,
                                     event_version, payload, metadata, created_at)
                 VALUES ('e2', 'QuerySession', 'a1', 1, 'SessionClosed', 1, '{}', '{}', 'now')",
                [],
            )
            .unwrap_err();
        assert!(duplicate.to_string().contains("UNIQUE"), "{duplicate}");
    }
}
