//! The HTTP surface: `/api/*` handlers and the built client as static files.
//! Handlers live in submodules by concern; every error, including the
//! framework's own rejections, is problem JSON.

pub mod auth;
pub mod commands;
pub mod datasets;
pub mod extract;
pub mod health;
pub mod queries;
pub mod reads;
pub mod stream_listener;
pub mod users;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;

use shared_domain::sync::identity::{judge_witness, judgement_header, Witness, WITNESS_HEADER};

use crate::config::Config;
use crate::error::{AppError, ErrorKind};
use crate::state::AppState;

/// The whole application router; `hosts` are the names it answers for.
pub fn router(state: AppState, config: &Config, hosts: auth::HostPolicy) -> Router {
    let api = Router::new()
        .merge(health::routes(config))
        .route("/me", get(users::me))
        .route("/users", get(users::list_users).post(users::add_user))
        .route("/users/{name}", delete(users::revoke_user))
        .route("/metrics", get(metrics))
        .route("/commands", post(commands::post_command))
        .route("/commands/batch", post(commands::post_batch))
        .route("/events", get(crate::sse::events))
        .route(
            "/aggregates/{aggregate_type}/{id}/events",
            get(reads::aggregate_events),
        )
        .route("/sessions", get(reads::list_sessions))
        .route("/sessions/{id}", get(reads::get_session))
        .route("/datasets", get(datasets::list_datasets))
        .route("/datasets/{name}/download", get(datasets::download_dataset))
        .route("/queries/{query_id}/result", get(queries::result_page))
        .route("/queries/{query_id}/aggregate", get(queries::aggregate))
        .route("/queries/{query_id}/profile", get(queries::profile))
        .route(
            "/queries/{query_id}/result.parquet",
            get(queries::result_parquet),
        )
        .route("/queries/{query_id}/result.csv", get(queries::result_csv))
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_method_not_allowed)
        // Bodies over the limit are refused by the extractors with a 413 problem.
        .layer(DefaultBodyLimit::max(config.body_limit))
        // An answer to a request that names a witness says whether the
        // store holds it (docs/SYNC.md).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            judge_witness_header,
        ))
        // Every API answer names the store it comes from (docs/SYNC.md).
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            stamp_store_id,
        ));

    // Client routes (`/sessions/…`) fall back to index.html; the client routes itself.
    let index = config.static_dir.join("index.html");
    let static_files = ServeDir::new(&config.static_dir).fallback(ServeFile::new(index));

    let guard = auth::Guard {
        state: state.clone(),
        hosts: Arc::new(hosts),
    };
    Router::new()
        .nest("/api", api)
        .fallback_service(static_files)
        .layer(axum::middleware::from_fn_with_state(guard, auth::guard))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The response header that carries the store id on every API answer.
pub const STORE_ID_HEADER: &str = "x-sextant-store";

async fn stamp_store_id(State(state): State<AppState>, mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&state.store_id().to_string()) {
        response.headers_mut().insert(STORE_ID_HEADER, value);
    }
    response
}

/// Judges the witness a request names in `x-sextant-witness` and answers
/// the judgement in the same header: a replica takes events only from a
/// store that holds everything it holds. A malformed header is not judged.
async fn judge_witness_header(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let witness = request
        .headers()
        .get(WITNESS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(Witness::from_header);
    let mut response = next.run(request).await;
    let Some(witness) = witness else {
        return response;
    };
    // A restore replaces the store only across a restart, so judging after
    // the handler judges the store that answered.
    let sequence = witness.global_sequence;
    let at = state.store().event_id_at(sequence).await;
    match at {
        Ok(at) => {
            let value = judgement_header(judge_witness(witness, at));
            response
                .headers_mut()
                .insert(WITNESS_HEADER, HeaderValue::from_static(value));
        }
        Err(error) => tracing::warn!("could not judge a witness: {error:?}"),
    }
    response
}

/// The Prometheus text exposition of the server's figures.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(&state);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn api_not_found() -> AppError {
    AppError::not_found("no such API endpoint")
}

async fn api_method_not_allowed() -> AppError {
    AppError::new(
        ErrorKind::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}
