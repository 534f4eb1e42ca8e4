//! Results of server queries: pages as JSON or Arrow IPC, and whole-result
//! downloads as Parquet or CSV.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared_domain::{QueryId, UserId};

use super::auth::Authenticated;
use super::extract::{parse_uuid, PathParams};
use crate::error::AppError;
use crate::query::export::ExportFormat;
use crate::query::results::{arrow_ipc, JsonPage};
use crate::state::AppState;

/// The Arrow IPC stream media type (what duckdb-wasm reads natively).
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// Rows per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u64 = 1_000;
/// The largest page.
pub const MAX_LIMIT: u64 = 10_000;

type QueryParams = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn number(params: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, AppError> {
    match params.get(name) {
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            AppError::bad_request(format!(
                "{name} must be a non-negative integer, not {raw:?}"
            ))
        }),
        None => Ok(default),
    }
}

/// 404 unless `user` may read the session that ran `query_id` (a query of a
/// session the caller may not read does not exist for it).
fn require_readable(
    state: &AppState,
    user: &crate::accounts::User,
    query_id: QueryId,
) -> Result<(), AppError> {
    let readable = state
        .projections()
        .session_of_query(query_id)
        .is_some_and(|session| state.projections().can_read(session, UserId(user.id)));
    if readable {
        Ok(())
    } else {
        Err(AppError::not_found(format!("no query {query_id}")))
    }
}

/// `GET /api/queries/{query_id}/result?offset=&limit=`.
pub async fn result_page(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    params: QueryParams,
) -> Result<Response, AppError> {
    let Query(params) = params.map_err(|e| AppError::bad_request(e.body_text()))?;
    let query_id = QueryId(parse_uuid("the query id", &id)?);
    let offset = number(&params, "offset", 0)?;
    let limit = number(&params, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    require_readable(&state, &user, query_id)?;
    let result = state.query().result(query_id).await?;
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(ARROW_STREAM));
    if wants_arrow {
        let bytes = arrow_ipc(&result.page(offset, limit)).map_err(AppError::internal)?;
        return Ok((
            [
                (header::CONTENT_TYPE, ARROW_STREAM.to_owned()),
                (
                    header::HeaderName::from_static("x-total-rows"),
                    result.total_rows.to_string(),
                ),
                (
                    header::HeaderName::from_static("x-truncated"),
                    result.truncated.to_string(),
                ),
            ],
            bytes,
        )
            .into_response());
    }
    let page = JsonPage::new(&result, offset, limit).map_err(AppError::internal)?;
    Ok(Json(page).into_response())
}

/// `GET /api/queries/{query_id}/result.parquet`.
pub async fn result_parquet(
    state: State<AppState>,
    user: Authenticated,
    id: PathParams<String>,
) -> Result<Response, AppError> {
    download(state, user, id, ExportFormat::Parquet).await
}

/// `GET /api/queries/{query_id}/result.csv`.
pub async fn result_csv(
    state: State<AppState>,
    user: Authenticated,
    id: PathParams<String>,
) -> Result<Response, AppError> {
    download(state, user, id, ExportFormat::Csv).await
}

async fn download(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    PathParams(id): PathParams<String>,
    format: ExportFormat,
) -> Result<Response, AppError> {
    let query_id = QueryId(parse_uuid("the query id", &id)?);
    require_readable(&state, &user, query_id)?;
    let path = state.query().export(query_id, format).await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(AppError::internal)?;
    let length = file.metadata().await.map_err(AppError::internal)?.len();
    // The open file stays readable after its name is gone: nothing to clean up later.
    let _ = tokio::fs::remove_file(&path).await;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"query-{query_id}.{}\"",
                    format.extension()
                ),
            ),
        ],
        body,
    )
        .into_response())
}
