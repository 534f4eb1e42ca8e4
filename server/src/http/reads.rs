//! The read side: an aggregate's events (for clients rebasing pending
//! commands) and the session read models.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};
use shared_domain::{Aggregate, QuerySession};

use super::extract::{parse_uuid, PathParams};
use crate::error::AppError;
use crate::state::AppState;
use crate::store;

pub async fn aggregate_events(
    State(state): State<AppState>,
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
    let (version, events) = state
        .store()
        .read(move |conn| {
            // One read transaction: the version and the events agree.
            conn.execute_batch("BEGIN")?;
            let result = (|| {
                let version = store::aggregate_version(conn, QuerySession::TYPE, aggregate_id)?;
                let events =
                    store::aggregate_events(conn, QuerySession::TYPE, aggregate_id, after_version)?;
                Ok((version, events))
            })();
            conn.execute_batch("COMMIT")?;
            result
        })
        .await?;
    Ok(Json(json!({
        "aggregate_id": aggregate_id,
        "version": version,
        "events": events,
        "store_id": state.store_id(),
    })))
}

pub async fn list_sessions(State(state): State<AppState>) -> Json<Value> {
    let (sessions, global_sequence) = state.projections().sessions();
    Json(json!({ "sessions": sessions, "global_sequence": global_sequence }))
}

pub async fn get_session(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, AppError> {
    let id = parse_uuid("the session id", &id)?;
    let (view, global_sequence) = state.projections().session(id);
    let view = view.ok_or_else(|| AppError::not_found(format!("no session {id}")))?;
    let mut body = serde_json::to_value(view).map_err(AppError::internal)?;
    body["global_sequence"] = json!(global_sequence);
    Ok(Json(body))
}
