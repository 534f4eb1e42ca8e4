//! Results of server queries: pages as JSON or Arrow IPC (optionally
//! filtered and sorted), chart aggregations, column profiles, and
//! whole-result downloads as Parquet or CSV. The structured parameters are
//! parsed here and turned into SQL by `query::structured`; the client never
//! sends SQL for these.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use shared_domain::{QueryId, UserId};

use super::auth::Authenticated;
use super::extract::{parse_uuid, PathParams};
use crate::error::AppError;
use crate::query::arrow::array::{Array, Int64Array, RecordBatch};
use crate::query::export::ExportFormat;
use crate::query::results::{arrow_ipc, JsonPage, StoredResult};
use crate::query::structured::{self, parse_sort, Aggregation, Filter, Measure, Table, MAX_GROUPS};
use crate::state::AppState;

/// The Arrow IPC stream media type (what duckdb-wasm reads natively).
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// Rows per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u64 = 1_000;
/// The largest page.
pub const MAX_LIMIT: u64 = 10_000;

/// The query string as pairs, repeats kept (`filter=…&filter=…`).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<String>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, AppError> {
        match self.one(name) {
            Some(raw) => raw.parse::<u64>().map_err(|_| {
                AppError::bad_request(format!(
                    "{name} must be a non-negative integer, not {raw:?}"
                ))
            }),
            None => Ok(default),
        }
    }

    fn filters(&self) -> Result<Vec<Filter>, AppError> {
        self.all("filter")
            .map(Filter::parse)
            .collect::<Result<_, _>>()
            .map_err(AppError::bad_request)
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

fn query_id(id: &str) -> Result<QueryId, AppError> {
    Ok(QueryId(parse_uuid("the query id", id)?))
}

/// `GET /api/queries/{query_id}/result?offset=&limit=&sort=col:desc,col2:asc&filter=col:op:value`.
/// Without `sort` and `filter` a page of the kept rows; with them, the
/// page of the kept rows that match, `total_rows` counting those.
pub async fn result_page(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let params = Params::parse(raw);
    let query_id = query_id(&id)?;
    require_readable(&state, &user, query_id)?;
    let offset = params.number("offset", 0)?;
    let limit = params.number("limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    let filters = params.filters()?;
    let sort = match params.one("sort") {
        Some(raw) => parse_sort(raw).map_err(AppError::bad_request)?,
        None => Vec::new(),
    };
    let (result, page, total_rows) = if filters.is_empty() && sort.is_empty() {
        let result = state.query().result(query_id).await?;
        let page = result.page(offset, limit);
        let total = result.total_rows;
        (result, page, total)
    } else {
        let (result, (page, total)) = state
            .query()
            .over_result(query_id, move |connection, control, result, stored| {
                let (page_sql, count_sql) =
                    structured::page_sql(&result.columns, &filters, &sort, offset, limit)?;
                let (_, batches) =
                    structured::run_over(connection, control, stored, &page_sql, limit)?;
                let (_, counted) =
                    structured::run_over(connection, control, stored, &count_sql, 1)?;
                let total = counted
                    .first()
                    .and_then(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(0) as u64;
                Ok((page_of(result, batches)?, total))
            })
            .await?;
        (result, page, total)
    };
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(ARROW_STREAM));
    if wants_arrow {
        let bytes = arrow_ipc(&page).map_err(AppError::internal)?;
        return Ok((
            [
                (header::CONTENT_TYPE, ARROW_STREAM.to_owned()),
                (
                    header::HeaderName::from_static("x-total-rows"),
                    total_rows.to_string(),
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
    let page = JsonPage::of(&result, &page, total_rows, offset).map_err(AppError::internal)?;
    Ok(Json(page).into_response())
}

/// The batches of a computed page as one batch in the result's own schema.
fn page_of(result: &StoredResult, batches: Vec<RecordBatch>) -> Result<RecordBatch, String> {
    let schema = result.batch.schema();
    let mut aligned = Vec::with_capacity(batches.len());
    for batch in batches {
        // Same columns and types; only field metadata may differ after DuckDB.
        aligned.push(
            RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                .map_err(|e| e.to_string())?,
        );
    }
    structured::concat(Arc::clone(&schema), &aligned)
}

/// `GET /api/queries/{query_id}/aggregate?x=col&bin=N&y=count:*&y=sum:fare&color=col&filter=…`
/// → `{"columns": [{name, type}], "rows": [[…]], "truncated": bool}`.
pub async fn aggregate(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Table>, AppError> {
    let params = Params::parse(raw);
    let query_id = query_id(&id)?;
    let x = params
        .one("x")
        .ok_or_else(|| AppError::bad_request("x (the column to group by) is required"))?
        .to_owned();
    let bin = match params.one("bin") {
        Some(raw) => Some(raw.parse::<u32>().map_err(|_| {
            AppError::bad_request(format!("bin must be a positive integer, not {raw:?}"))
        })?),
        None => None,
    };
    let mut y: Vec<Measure> = params
        .all("y")
        .map(Measure::parse)
        .collect::<Result<_, _>>()
        .map_err(AppError::bad_request)?;
    if y.is_empty() {
        y.push(Measure::parse("count:*").expect("valid"));
    }
    let request = Aggregation {
        x,
        bin,
        y,
        color: params.one("color").map(str::to_owned),
        filters: params.filters()?,
    };
    let (_, table) = state
        .query()
        .over_result(query_id, move |connection, control, result, stored| {
            let sql = structured::aggregate_sql(&result.columns, &request)?;
            let (columns, batches) =
                structured::run_over(connection, control, stored, &sql, MAX_GROUPS + 1)?;
            let mut rows = structured::json_rows(&batches)?;
            let truncated = rows.len() as u64 > MAX_GROUPS;
            rows.truncate(MAX_GROUPS as usize);
            Ok(Table {
                columns,
                rows,
                truncated,
            })
        })
        .await?;
    Ok(Json(table))
}

/// `GET /api/queries/{query_id}/profile?column=col`
/// → `{"column", "type", "rows", "nulls", "distinct", "min", "max"}`.
pub async fn profile(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, AppError> {
    let params = Params::parse(raw);
    let query_id = query_id(&id)?;
    let column = params
        .one("column")
        .ok_or_else(|| AppError::bad_request("column is required"))?
        .to_owned();
    let name = column.clone();
    let (result, row) = state
        .query()
        .over_result(query_id, move |connection, control, result, stored| {
            let sql = structured::profile_sql(&result.columns, &name)?;
            let (_, batches) = structured::run_over(connection, control, stored, &sql, 1)?;
            structured::json_rows(&batches)?
                .into_iter()
                .next()
                .ok_or_else(|| "the profile returned no row".to_owned())
        })
        .await?;
    let type_name = result
        .columns
        .iter()
        .find(|c| c.name == column)
        .map(|c| c.data_type.clone());
    Ok(Json(json!({
        "column": column,
        "type": type_name,
        "rows": row[0],
        "nulls": row[1],
        "distinct": row[2],
        "min": row[3],
        "max": row[4],
    })))
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
    let query_id = query_id(&id)?;
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
