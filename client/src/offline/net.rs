//! The client's HTTP calls to the sync server, and the pure rules around
//! them: how to split an outbox into batches and how to read an answer (what
//! to do with it is the table in `shared_domain::sync::answers`).

use gloo_net::http::Request;
use serde::Deserialize;
use serde_json::Value;
use shared_domain::sync::answers::{command_verdict, CommandVerdict};
use shared_domain::sync::identity::{judgement_from_header, ResetReason, Witness, WITNESS_HEADER};
use shared_domain::{CommandEnvelope, EventEnvelope, SessionCommand};
use uuid::Uuid;

/// The most commands the server takes in one batch.
pub const MAX_BATCH_COMMANDS: usize = 500;
/// Stay well under the server's default 1 MiB body limit.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// The authority's answer to one command, classified by
/// [`shared_domain::sync::answers::command_verdict`].
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200: the events it stored for this command (the originals for a resend).
    Accepted { events: Vec<EventEnvelope> },
    /// 409: not the current version and base.
    Conflict {
        current_version: Option<u64>,
        /// The command behind the server's current head.
        current_command: Option<Uuid>,
        error_id: Option<String>,
    },
    /// 400, 403, 404, 413, 422: the authority's log refuses the command.
    Rejected {
        status: u16,
        detail: String,
        error_id: Option<String>,
    },
    /// 401, 408, 429, 5xx, …: not decided; keep it and try again later.
    Retry,
}

/// The answers to one batch, and the store that gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchAnswers {
    pub answers: Vec<Answer>,
    pub store_id: Option<Uuid>,
    /// The server's judgement of the witness sent (`None`: not judged).
    pub judged: Option<Result<(), ResetReason>>,
}

/// An aggregate's events, the store they come from and the server's
/// judgement of the witness sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub events: Vec<EventEnvelope>,
    pub store_id: Option<Uuid>,
    pub judged: Option<Result<(), ResetReason>>,
}

/// Why a request did not get an answer per command. Never a rejection:
/// see [`shared_domain::sync::answers::batch_verdict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// The status of the whole request (`None`: no answer, network down).
    pub status: Option<u16>,
    /// `Retry-After`, in milliseconds.
    pub retry_after_ms: Option<u64>,
    pub message: String,
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// No connection (server down, network gone).
    Unreachable(String),
    /// The server answered an error, or something we could not parse.
    Server(String),
}

/// Splits envelopes, in order, into batches under both limits. A single
/// command larger than the byte limit still travels alone (the server will
/// answer 413 for it, which rejects just that one).
pub fn split_batches(
    envelopes: &[CommandEnvelope<SessionCommand>],
    max_bytes: usize,
    max_commands: usize,
) -> Vec<Vec<CommandEnvelope<SessionCommand>>> {
    let mut batches: Vec<Vec<CommandEnvelope<SessionCommand>>> = Vec::new();
    let mut current = Vec::new();
    // `{"commands":[` + `]}` plus a comma per command.
    let mut size = 16;
    for envelope in envelopes {
        let bytes = serde_json::to_vec(envelope).map_or(0, |b| b.len()) + 1;
        if !current.is_empty() && (size + bytes > max_bytes || current.len() >= max_commands) {
            batches.push(std::mem::take(&mut current));
            size = 16;
        }
        size += bytes;
        current.push(envelope.clone());
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[derive(Deserialize)]
struct BatchResponse {
    results: Vec<BatchResult>,
    #[serde(default)]
    store_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct BatchResult {
    status: u16,
    body: Value,
}

#[derive(Deserialize)]
struct Accepted {
    #[serde(default)]
    events: Vec<EventEnvelope>,
}

#[derive(Deserialize)]
struct EventsResponse {
    events: Vec<EventEnvelope>,
    #[serde(default)]
    store_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct Health {
    #[serde(default)]
    store_id: Option<Uuid>,
}

/// Classifies one result of a batch.
pub fn classify(status: u16, body: &Value) -> Answer {
    match command_verdict(status) {
        CommandVerdict::Accepted => match serde_json::from_value::<Accepted>(body.clone()) {
            Ok(accepted) => Answer::Accepted {
                events: accepted.events,
            },
            // Something between us and the server answered: not a decision.
            Err(_) => Answer::Retry,
        },
        CommandVerdict::CatchUp => Answer::Conflict {
            current_version: body["current_version"].as_u64(),
            current_command: body["current_command"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok()),
            error_id: body["error_id"].as_str().map(str::to_owned),
        },
        CommandVerdict::Reject => Answer::Rejected {
            status,
            detail: body["detail"]
                .as_str()
                .or_else(|| body["title"].as_str())
                .unwrap_or("refused")
                .to_owned(),
            error_id: body["error_id"].as_str().map(str::to_owned),
        },
        CommandVerdict::Retry => Answer::Retry,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by our server
/// and is treated as absent).
pub fn parse_retry_after(value: Option<&str>) -> Option<u64> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| seconds.saturating_mul(1000))
}

/// `POST /api/commands/batch`: one answer per envelope, in order, or why
/// the request as a whole failed.
pub async fn post_batch(
    envelopes: &[CommandEnvelope<SessionCommand>],
    witness: Option<Witness>,
    user: Option<Uuid>,
) -> Result<BatchAnswers, BatchFailure> {
    let failure =
        |status: Option<u16>, retry_after_ms: Option<u64>, message: String| BatchFailure {
            status,
            retry_after_ms,
            message,
        };
    let body = serde_json::json!({ "commands": envelopes });
    let mut request = for_user(Request::post("/api/commands/batch"), user)
        .header("content-type", "application/json");
    if let Some(witness) = witness {
        request = request.header(WITNESS_HEADER, &witness.to_header());
    }
    let response = request
        .body(body.to_string())
        .map_err(|e| failure(None, None, e.to_string()))?
        .send()
        .await
        .map_err(|e| failure(None, None, e.to_string()))?;
    let status = response.status();
    let judged = judgement_from_header(response.headers().get(WITNESS_HEADER).as_deref());
    if status != 200 {
        let retry_after = parse_retry_after(response.headers().get("retry-after").as_deref());
        return Err(failure(
            Some(status),
            retry_after,
            format!("the batch was answered {status}"),
        ));
    }
    let parsed: BatchResponse = response
        .json()
        .await
        .map_err(|e| failure(Some(status), None, format!("unreadable batch answer: {e}")))?;
    if parsed.results.len() != envelopes.len() {
        return Err(failure(
            Some(status),
            None,
            format!(
                "{} answers for {} commands",
                parsed.results.len(),
                envelopes.len()
            ),
        ));
    }
    Ok(BatchAnswers {
        answers: parsed
            .results
            .iter()
            .map(|r| classify(r.status, &r.body))
            .collect(),
        store_id: parsed.store_id,
        judged,
    })
}

/// Names the user whose local data the request is for (see `owner`).
fn for_user(
    request: gloo_net::http::RequestBuilder,
    user: Option<Uuid>,
) -> gloo_net::http::RequestBuilder {
    match user {
        Some(user) => request.header(super::owner::USER_HEADER, &user.to_string()),
        None => request,
    }
}

/// The store id `GET /api/health` names once the server is up and ready;
/// `None` while it is down or starting.
pub async fn server_is_up() -> Option<Option<Uuid>> {
    let response = Request::get("/api/health").send().await.ok()?;
    if !response.ok() {
        return None;
    }
    Some(
        response
            .json::<Health>()
            .await
            .ok()
            .and_then(|h| h.store_id),
    )
}

/// `GET /api/aggregates/QuerySession/{id}/events?after_version=N`: the
/// events and the store they come from.
pub async fn fetch_events(
    aggregate_id: Uuid,
    after_version: u64,
    witness: Option<Witness>,
    user: Option<Uuid>,
) -> Result<Fetched, NetError> {
    let url =
        format!("/api/aggregates/QuerySession/{aggregate_id}/events?after_version={after_version}");
    let mut request = for_user(Request::get(&url), user);
    if let Some(witness) = witness {
        request = request.header(WITNESS_HEADER, &witness.to_header());
    }
    let response = request
        .send()
        .await
        .map_err(|e| NetError::Unreachable(e.to_string()))?;
    if !response.ok() {
        return Err(NetError::Server(format!(
            "fetching events answered {}",
            response.status()
        )));
    }
    let judged = judgement_from_header(response.headers().get(WITNESS_HEADER).as_deref());
    let parsed: EventsResponse = response
        .json()
        .await
        .map_err(|e| NetError::Server(e.to_string()))?;
    Ok(Fetched {
        events: parsed.events,
        store_id: parsed.store_id,
        judged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_domain::{SessionTitle, SqlQuery};

    fn envelope(sql_len: usize) -> CommandEnvelope<SessionCommand> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CommandEnvelope {
            command_id: Uuid::from_u128(u128::from(n)),
            aggregate_type: "QuerySession".into(),
            aggregate_id: Uuid::nil(),
            expected_version: 0,
            base_command: None,
            command: if sql_len == 0 {
                SessionCommand::RenameSession {
                    title: SessionTitle::new("t").unwrap(),
                }
            } else {
                SessionCommand::SubmitQuery {
                    query_id: shared_domain::QueryId(Uuid::nil()),
                    sql: SqlQuery::new("x".repeat(sql_len)).unwrap(),
                    engine: shared_domain::Engine::Server,
                }
            },
        }
    }

    #[test]
    fn batches_respect_count_and_bytes_and_keep_order() {
        let many: Vec<_> = (0..1201).map(|_| envelope(0)).collect();
        let batches = split_batches(&many, MAX_BATCH_BYTES, MAX_BATCH_COMMANDS);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 201]
        );
        let flat: Vec<Uuid> = batches.iter().flatten().map(|e| e.command_id).collect();
        assert_eq!(flat, many.iter().map(|e| e.command_id).collect::<Vec<_>>());

        let big: Vec<_> = (0..12).map(|_| envelope(90_000)).collect();
        let batches = split_batches(&big, MAX_BATCH_BYTES, MAX_BATCH_COMMANDS);
        assert!(batches.len() >= 3);
        for batch in &batches {
            let bytes = serde_json::to_vec(&serde_json::json!({ "commands": batch }))
                .unwrap()
                .len();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        }
    }

    #[test]
    fn answers_are_classified_by_status() {
        assert_eq!(
            classify(
                409,
                &serde_json::json!({"current_version": 4, "error_id": "c"})
            ),
            Answer::Conflict {
                current_version: Some(4),
                current_command: None,
                error_id: Some("c".into())
            }
        );
        assert_eq!(
            classify(
                422,
                &serde_json::json!({"detail": "the session is closed", "error_id": "e"})
            ),
            Answer::Rejected {
                status: 422,
                detail: "the session is closed".into(),
                error_id: Some("e".into())
            }
        );
        assert_eq!(classify(503, &Value::Null), Answer::Retry);
        for status in [401, 408, 429] {
            assert_eq!(classify(status, &Value::Null), Answer::Retry, "{status}");
        }
        assert!(matches!(
            classify(413, &Value::Null),
            Answer::Rejected { status: 413, .. }
        ));
        assert!(matches!(
            classify(404, &Value::Null),
            Answer::Rejected { status: 404, .. }
        ));
        assert_eq!(
            classify(200, &serde_json::json!("<html>proxy</html>")),
            Answer::Retry,
            "an unreadable 200 is not a decision"
        );
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(3000));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
        assert_eq!(
            classify(200, &serde_json::json!({"events": []})),
            Answer::Accepted { events: vec![] }
        );
    }
}
