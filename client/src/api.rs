//! The read-side HTTP calls the views make (never through the outbox):
//! the dataset catalog and pages of query results. Every failure carries an
//! error id: the server's own when it sent a problem, else one minted here.

use gloo_net::http::Request;
use serde::Deserialize;
use serde_json::Value;
use shared_domain::{Column, Engine, QueryId};

use crate::ids::random_uuid;

/// A failed read, as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub error_id: String,
    pub message: String,
}

impl ApiError {
    fn local(message: impl Into<String>) -> Self {
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

/// Rows per page of the result table.
pub const PAGE_ROWS: u64 = 50;

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

/// One page of the result of `query_id`, which ran on `engine`.
///
/// The seam for the local engine: its results will come from duckdb-wasm in
/// this tab, not from the server.
pub async fn result_page(
    engine: Engine,
    query_id: QueryId,
    offset: u64,
) -> Result<ResultPage, ApiError> {
    match engine {
        Engine::Server => {
            let url = format!("/api/queries/{query_id}/result?offset={offset}&limit={PAGE_ROWS}");
            let body = get_json(&url).await?;
            serde_json::from_value(body)
                .map_err(|e| ApiError::local(format!("unreadable result page: {e}")))
        }
        // Rows of local queries stay in the tab that ran them (issue 6).
        Engine::Local => crate::duckdb::runner::result_page(query_id, offset, PAGE_ROWS),
    }
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
