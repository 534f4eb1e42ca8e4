//! `GET /api/health`: ready or not, and why. The server is ready once
//! start-up is done and as long as its two long-lived workers run: the event
//! store writer (every command goes through it) and the query executor
//! (the reactor that runs server queries). Either one dead answers 503 with
//! a problem naming it, so a supervisor (systemd, an orchestrator) restarts
//! the process; the restart fails the queries a dead executor left behind.
//!
//! `POST /api/faults` exists only with the hidden `--fault-injection` flag:
//! it kills the writer or the executor, for the tests that prove the above.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;
use crate::error::{AppError, ErrorKind};
use crate::http::extract::JsonBody;
use crate::state::AppState;

/// The health route, and the fault route when the flag allows it.
pub fn routes(config: &Config) -> Router<AppState> {
    let routes = Router::new().route("/health", get(health));
    if config.fault_injection {
        routes.route("/faults", post(inject_fault))
    } else {
        routes
    }
}

/// The state of a long-lived worker, as health reports it.
fn worker(alive: bool) -> &'static str {
    if alive {
        "running"
    } else {
        "dead"
    }
}

/// 200 with the version, the store id and the workers once the server is
/// ready; 503 while it starts or when a worker died.
async fn health(State(state): State<AppState>) -> Response {
    if !state.is_ready() {
        return AppError::new(ErrorKind::Unavailable, "the server is still starting")
            .into_response();
    }
    let writer = state.pipeline().writer_alive();
    let executor = state.query().is_alive();
    if writer && executor {
        return Json(json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "store_id": state.store_id(),
            "writer": worker(writer),
            "executor": worker(executor),
        }))
        .into_response();
    }
    let detail = match (writer, executor) {
        (false, false) => "the event store writer and the query executor died: the server takes no commands and runs no queries until it restarts",
        (false, _) => "the event store writer died: the server takes no commands until it restarts",
        _ => "the query executor died: server queries do not run until the server restarts",
    };
    AppError::new(ErrorKind::Unavailable, detail)
        .with("writer", worker(writer))
        .with("executor", worker(executor))
        .into_response()
}

/// Which worker `POST /api/faults` kills.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Victim {
    /// Panics on the next command it takes.
    Writer,
    /// Panics on the next committed events.
    Executor,
}

#[derive(Debug, Deserialize)]
struct FaultRequest {
    kill: Victim,
}

/// Arms the fault; it strikes on the next command (writer) or the next
/// committed events (executor).
async fn inject_fault(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<FaultRequest>,
) -> Response {
    tracing::warn!(victim = ?request.kill, "fault injection: a worker will die");
    match request.kill {
        Victim::Writer => state.pipeline().inject_writer_death(),
        Victim::Executor => state.query().faults().kill_executor(),
    }
    Json(json!({"armed": format!("{:?}", request.kill).to_lowercase()})).into_response()
}
