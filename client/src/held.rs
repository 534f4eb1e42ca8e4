//! The confirmed events this browser holds (the sync engine's IndexedDB
//! copy), read through the storage module's public API for views that need
//! a session's log rather than its folded state: time travel and the
//! sessions list's last activity. Works offline.

use shared_domain::EventEnvelope;
use uuid::Uuid;

use crate::offline::engine::engine;
use crate::offline::storage::LocalStore;

/// Every confirmed event the browser holds, of every session.
pub async fn all() -> Result<Vec<EventEnvelope>, String> {
    let store = LocalStore::open(&engine().database_name())
        .await
        .map_err(|e| e.to_string())?;
    let snapshot = store.load().await.map_err(|e| e.to_string());
    store.close();
    Ok(snapshot?.events)
}

/// The events of session `session_id`: those held here, else (nothing
/// held, e.g. storage unavailable) the server's.
pub async fn of_session(session_id: Uuid) -> Result<Vec<EventEnvelope>, String> {
    let held: Vec<EventEnvelope> = all()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.aggregate_id == session_id)
        .collect();
    if !held.is_empty() {
        return Ok(held);
    }
    crate::api::session_events(session_id)
        .await
        .map_err(|e| format!("{} (error id {})", e.message, e.error_id))
}
