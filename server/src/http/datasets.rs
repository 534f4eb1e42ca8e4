//! `GET /api/datasets`: the server's dataset catalog.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::state::AppState;

/// Rescans the datasets directory (new files appear without a restart) and
/// lists every dataset with its format, size, columns and, where cheap, rows.
pub async fn list_datasets(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let catalog = state.query().catalog().clone();
    let datasets = tokio::task::spawn_blocking(move || {
        catalog.refresh().map_err(AppError::internal)?;
        Ok::<_, AppError>(catalog.list())
    })
    .await
    .map_err(AppError::internal)??;
    Ok(Json(json!({ "datasets": datasets })))
}
