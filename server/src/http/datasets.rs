//! `GET /api/datasets`: the server's dataset catalog, and
//! `GET /api/datasets/{name}/download`: a whole dataset as Arrow IPC.

use std::io;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::extract::PathParams;
use super::queries::ARROW_STREAM;
use crate::error::AppError;
use crate::query::download;
use crate::state::AppState;

/// Where a dataset's Arrow IPC download is served.
pub fn download_href(name: &str) -> String {
    format!("/api/datasets/{name}/download")
}

/// Rescans the datasets directory (new files appear without a restart) and
/// lists every dataset with its format, size, columns and, where cheap, rows.
/// `download` names the Arrow IPC stream of the whole dataset; `bytes` (the
/// file's size) is what the browser weighs before taking it offline.
pub async fn list_datasets(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let catalog = state.query().catalog().clone();
    let datasets = tokio::task::spawn_blocking(move || {
        catalog.refresh().map_err(AppError::internal)?;
        Ok::<_, AppError>(catalog.list())
    })
    .await
    .map_err(AppError::internal)??;
    let mut listed = serde_json::to_value(datasets).map_err(AppError::internal)?;
    if let Some(entries) = listed.as_array_mut() {
        for entry in entries {
            let href = entry["name"].as_str().map(download_href);
            if let (Some(object), Some(href)) = (entry.as_object_mut(), href) {
                object.insert(
                    "download".into(),
                    json!({ "href": href, "media_type": ARROW_STREAM }),
                );
            }
        }
    }
    Ok(Json(json!({ "datasets": listed })))
}

/// Streams the whole dataset as Arrow IPC (schema, then batches as DuckDB
/// produces them), read in the sandbox on a query slot. An error after the
/// first byte aborts the body, so a truncated download never looks complete.
pub async fn download_dataset(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Response, AppError> {
    let service = state.query().clone();
    let catalog = service.catalog().clone();
    let probe = name.clone();
    let known = tokio::task::spawn_blocking(move || {
        catalog.refresh().map_err(AppError::internal)?;
        Ok::<_, AppError>(catalog.list().into_iter().find(|d| d.name == probe))
    })
    .await
    .map_err(AppError::internal)??;
    let Some(dataset) = known else {
        return Err(AppError::not_found(format!("no dataset is named {name:?}")).with("name", name));
    };
    let (sender, receiver) = mpsc::channel::<download::Chunk>(4);
    let (finished, complete) = oneshot::channel::<bool>();
    let view = dataset.name.clone();
    tokio::spawn(async move {
        let outcome = service.download_dataset(view, sender).await;
        let whole = outcome.unwrap_or_else(|error| {
            error.log();
            false
        });
        let _ = finished.send(whole);
    });
    // When the rows end, the body ends cleanly only if the whole dataset
    // was sent; otherwise it errors, and the client sees a broken transfer.
    let body = futures_util::stream::unfold(
        (receiver, Some(complete)),
        |(mut receiver, complete)| async move {
            if let Some(chunk) = receiver.recv().await {
                return Some((chunk, (receiver, complete)));
            }
            let whole = complete?.await.unwrap_or(false);
            (!whole).then(|| {
                let error = io::Error::other("the download stopped before the end of the dataset");
                (Err(error), (receiver, None))
            })
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, ARROW_STREAM.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.arrow\"", dataset.name),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
