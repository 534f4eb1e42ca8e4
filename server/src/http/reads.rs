//! The read side: an aggregate's events (for clients rebasing pending
//! commands) and the session read models.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};
use shared_domain::{Aggregate, QuerySession, UserId};

use super::auth::Authenticated;
use super::extract::{parse_uuid, PathParams};
use crate::error::AppError;
use crate::state::AppState;

/// The events of a session the caller may read; 404 for one it may not
/// read or that does not exist (the two look the same).
pub async fn aggregate_events(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    PathParams((aggregate_type, id)): PathParams<(String, String)>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    if aggregate_type != QuerySession::TYPE {
        return Err(AppError::not_found(format!(
            "unknown aggregate type {aggregate_type:?}; the only one is {:?}",
            QuerySession::TYPE
        )));
    }
    let aggregate_id = parse_uuid("the aggregate id", &id)?;
    let after_version = match query.get("after_version") {
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            AppError::bad_request(format!(
                "after_version must be a non-negative integer, not {raw:?}"
            ))
        })?,
        None => 0,
    };
    let reader = UserId(user.id);
    // One read: the version, the events and the access they grant agree
    // (the read models may trail the store).
    let all = state
        .store()
        .aggregate_events(QuerySession::TYPE, aggregate_id, 0)
        .await?;
    let mut session = QuerySession::default();
    for envelope in &all {
        if let Ok(event) = envelope.decode::<QuerySession>() {
            session.apply(&event);
        }
    }
    let version = all.last().map_or(0, |e| e.aggregate_sequence);
    let events: Vec<_> = all
        .into_iter()
        .filter(|e| e.aggregate_sequence > after_version)
        .collect();
    let readable = session.can_read(reader);
    if !readable {
        return Err(AppError::not_found(crate::error::not_readable(
            aggregate_id,
        )));
    }
    Ok(Json(json!({
        "aggregate_id": aggregate_id,
        "version": version,
        "events": events,
        "store_id": state.store_id(),
    })))
}

/// The sessions the caller may read.
pub async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
) -> Json<Value> {
    let (sessions, global_sequence) = state.projections().sessions_readable_by(UserId(user.id));
    Json(json!({ "sessions": sessions, "global_sequence": global_sequence }))
}

/// One session the caller may read (404 otherwise).
pub async fn get_session(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, AppError> {
    let id = parse_uuid("the session id", &id)?;
    let (view, global_sequence) = state.projections().session(id);
    let view = view
        .filter(|view| view.session.can_read(UserId(user.id)))
        .ok_or_else(|| AppError::not_found(crate::error::not_readable(id)))?;
    let mut body = serde_json::to_value(view).map_err(AppError::internal)?;
    body["global_sequence"] = json!(global_sequence);
    Ok(Json(body))
}
