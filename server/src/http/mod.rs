//! The HTTP surface: `/api/*` handlers and the built client as static files.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::{AppError, ErrorKind};
use crate::state::AppState;

/// The whole application router.
pub fn router(state: AppState, config: &Config) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .fallback(api_not_found);

    // Client routes (`/sessions/…`) fall back to index.html; the client routes itself.
    let index = config.static_dir.join("index.html");
    let static_files = ServeDir::new(&config.static_dir).fallback(ServeFile::new(index));

    Router::new()
        .nest("/api", api)
        .fallback_service(static_files)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// 200 with the version once the server is ready, 503 before.
async fn health(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })).into_response()
    } else {
        AppError::new(ErrorKind::Unavailable, "the server is still starting").into_response()
    }
}

async fn api_not_found() -> AppError {
    AppError::not_found("no such API endpoint")
}
