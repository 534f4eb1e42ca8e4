//! The read-side HTTP calls the views make (never through the outbox):
//! the dataset catalog and pages of query results. Every failure carries an
//! error id: the server's own when it sent a problem, else one minted here.

use gloo_net::http::Request;
use serde::Deserialize;
use serde_json::Value;
use shared_domain::{Column, Engine, QueryId};

use crate::grid::{self, GridView};
use crate::ids::random_uuid;

/// A failed read, as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub error_id: String,
    pub message: String,
}

impl ApiError {
    /// An error found in this tab, with an id minted here (also logged).
    pub fn local(message: impl Into<String>) -> Self {
        let error = Self {
            error_id: random_uuid().to_string(),
            message: message.into(),
        };
        web_sys::console::warn_1(
            &format!("sextant error {}: {}", error.error_id, error.message).into(),
        );
        error
    }
}

/// One dataset of the server's catalog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dataset {
    pub name: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub columns: Vec<Column>,
    #[serde(default)]
    pub rows: Option<u64>,
}

/// One page of a query result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResultPage {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    pub total_rows: u64,
    pub offset: u64,
    #[serde(default)]
    pub available_rows: Option<u64>,
    #[serde(default)]
    pub truncated: bool,
}

async fn get_json(url: &str) -> Result<Value, ApiError> {
    let response = Request::get(url)
        .send()
        .await
        .map_err(|e| ApiError::local(format!("the server cannot be reached ({e})")))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = body["detail"]
        .as_str()
        .or_else(|| body["title"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the server answered {status}"));
    match body["error_id"].as_str() {
        Some(id) => Err(ApiError {
            error_id: id.to_owned(),
            message,
        }),
        None => Err(ApiError::local(message)),
    }
}

/// `GET /api/datasets`: the server's catalog.
pub async fn datasets() -> Result<Vec<Dataset>, ApiError> {
    let body = get_json("/api/datasets").await?;
    // Either a bare list or `{"datasets": [...]}`.
    let list = match body {
        Value::Object(mut object) => object.remove("datasets").unwrap_or(Value::Null),
        other => other,
    };
    serde_json::from_value(list).map_err(|e| ApiError::local(format!("unreadable catalog: {e}")))
}

/// Rows `offset..offset + limit` of `view` (sorted and filtered) of the
/// whole result of `query_id` (whose SQL is `sql`), on the engine that ran
/// it: the server's structured result API, or duckdb-wasm in this tab.
pub async fn result_view(
    engine: Engine,
    query_id: QueryId,
    sql: &str,
    view: &GridView,
    offset: u64,
    limit: u64,
) -> Result<ResultPage, ApiError> {
    match engine {
        Engine::Server => {
            let url = format!(
                "/api/queries/{query_id}/result?offset={offset}&limit={limit}{}",
                grid::server_params(view)
            );
            let body = get_json(&url).await?;
            serde_json::from_value(body)
                .map_err(|e| ApiError::local(format!("unreadable result page: {e}")))
        }
        Engine::Local if view.is_plain() => {
            crate::duckdb::runner::result_page(query_id, offset, limit)
        }
        Engine::Local => crate::duckdb::runner::view_page(query_id, sql, view, offset, limit)
            .await
            .map_err(|e| ApiError::local(e.to_string())),
    }
}

/// A column's profile over a whole result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ColumnProfile {
    pub column: String,
    #[serde(default, rename = "type")]
    pub data_type: Option<String>,
    pub rows: u64,
    pub nulls: u64,
    pub distinct: u64,
    #[serde(default)]
    pub min: Value,
    #[serde(default)]
    pub max: Value,
}

/// The profile of `column` of the result of `query_id` on its engine
/// (the server's `GET /api/queries/{id}/profile`, or duckdb-wasm).
pub async fn profile(
    engine: Engine,
    query_id: QueryId,
    sql: &str,
    view: &GridView,
    column: &str,
) -> Result<ColumnProfile, ApiError> {
    match engine {
        Engine::Server => {
            let url = format!(
                "/api/queries/{query_id}/profile?column={}{}",
                grid::encode(column),
                grid::server_params(&GridView {
                    sort: None,
                    filters: view.filters.clone(),
                })
            );
            let body = get_json(&url).await?;
            serde_json::from_value(body)
                .map_err(|e| ApiError::local(format!("unreadable profile: {e}")))
        }
        Engine::Local => crate::duckdb::runner::profile(sql, view, column)
            .await
            .map_err(|e| ApiError::local(e.to_string())),
    }
}

/// An aggregation over a whole result: columns and rows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Aggregated {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

/// `GET /api/queries/{id}/aggregate?{params}` (see `chart::server_params`).
/// `Ok(None)` when this server has no aggregation API yet (the router's 404
/// for an unknown path), so the caller can say so and fall back.
pub async fn aggregate(query_id: QueryId, params: &str) -> Result<Option<Aggregated>, ApiError> {
    let url = format!("/api/queries/{query_id}/aggregate?{params}");
    let response = Request::get(&url)
        .send()
        .await
        .map_err(|e| ApiError::local(format!("the server cannot be reached ({e})")))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    // The router's answer for a path it does not know (a server older than the API).
    let unknown_path =
        body["error_id"].is_null() || body["detail"].as_str() == Some("no such API endpoint");
    if status == 404 && unknown_path {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        let message = body["detail"]
            .as_str()
            .or_else(|| body["title"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the server answered {status}"));
        return Err(match body["error_id"].as_str() {
            Some(id) => ApiError {
                error_id: id.to_owned(),
                message,
            },
            None => ApiError::local(message),
        });
    }
    serde_json::from_value(body)
        .map(Some)
        .map_err(|e| ApiError::local(format!("unreadable aggregation: {e}")))
}

/// `GET /api/aggregates/QuerySession/{id}/events`: the server's log of one session.
pub async fn session_events(
    session_id: uuid::Uuid,
) -> Result<Vec<shared_domain::EventEnvelope>, ApiError> {
    let body = get_json(&format!(
        "/api/aggregates/QuerySession/{session_id}/events?after_version=0"
    ))
    .await?;
    serde_json::from_value(body["events"].clone())
        .map_err(|e| ApiError::local(format!("unreadable events: {e}")))
}

/// Where the whole result of a server query downloads as `format` (csv, parquet).
pub fn download_url(query_id: QueryId, format: &str) -> String {
    format!("/api/queries/{query_id}/result.{format}")
}

/// A cell as text for the table.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
