//! `POST /api/commands` and `POST /api/commands/batch`: the write side.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shared_domain::CommandEnvelope;

use super::auth::Authenticated;
use super::extract::JsonBody;
use crate::error::AppError;
use crate::pipeline::{CommandAccepted, CommandContext, CommandOutcome, Origin};
use crate::state::AppState;

/// The most commands one batch may carry.
pub const MAX_BATCH: usize = 500;

/// The header a client may send to name itself in event metadata.
pub const CLIENT_ID_HEADER: &str = "x-sextant-client";

fn http_context(headers: &HeaderMap, user: crate::accounts::User) -> CommandContext {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect::<String>())
    };
    CommandContext {
        origin: Origin::Http,
        user: Some(user),
        client_id: text(CLIENT_ID_HEADER),
        user_agent: text("user-agent"),
        correlation_id: None,
        causation_id: None,
    }
}

/// Query submissions count against their own, lower, per-user rate.
fn check_query_rate(
    state: &AppState,
    user: &crate::accounts::User,
    commands: &[&Value],
) -> Result<(), AppError> {
    let submissions = commands
        .iter()
        .filter(|command| command["type"] == "SubmitQuery")
        .count();
    if submissions == 0 {
        return Ok(());
    }
    state
        .limits()
        .queries
        .check(user.id, submissions as u32, "query submissions")
}

/// Read-your-writes: answer only once the read models show this command.
async fn settle(state: &AppState, outcome: CommandOutcome) -> CommandOutcome {
    let accepted = outcome?;
    if let Some(sequence) = accepted.last_global_sequence() {
        state.projections().wait_for(sequence).await?;
    }
    Ok(accepted)
}

pub async fn post_command(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
    JsonBody(envelope): JsonBody<CommandEnvelope<Value>>,
) -> Result<Json<CommandAccepted>, AppError> {
    check_query_rate(&state, &user, &[&envelope.command])?;
    let outcome = state
        .pipeline()
        .execute_json(&envelope, http_context(&headers, user))
        .await;
    settle(&state, outcome).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    commands: Vec<Value>,
}

pub async fn post_batch(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
    JsonBody(batch): JsonBody<Batch>,
) -> Result<Response, AppError> {
    if batch.commands.len() > MAX_BATCH {
        return Err(AppError::bad_request(format!(
            "a batch holds at most {MAX_BATCH} commands, this one has {}",
            batch.commands.len()
        )));
    }
    // Each element is judged alone: one malformed command is a 400 in its
    // slot, not a failed batch.
    let parsed: Vec<Result<CommandEnvelope<Value>, AppError>> = batch
        .commands
        .into_iter()
        .map(|raw| {
            serde_json::from_value(raw)
                .map_err(|e| AppError::bad_request(format!("invalid command envelope: {e}")))
        })
        .collect();
    let valid: Vec<CommandEnvelope<Value>> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let commands: Vec<&Value> = valid.iter().map(|e| &e.command).collect();
    check_query_rate(&state, &user, &commands)?;
    let mut outcomes = state
        .pipeline()
        .execute_batch(&valid, http_context(&headers, user))
        .await
        .into_iter();
    let mut results = Vec::with_capacity(parsed.len());
    for slot in parsed {
        let outcome = match slot {
            Ok(_) => outcomes.next().expect("one outcome per valid command"),
            Err(error) => Err(error),
        };
        let outcome = settle(&state, outcome).await;
        results.push(match outcome {
            Ok(accepted) => json!({ "status": 200, "body": accepted }),
            Err(error) => {
                error.log();
                json!({ "status": error.kind.status().as_u16(), "body": error.problem() })
            }
        });
    }
    Ok(Json(json!({ "results": results, "store_id": state.store_id() })).into_response())
}
