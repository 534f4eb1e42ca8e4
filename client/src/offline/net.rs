//! The client's HTTP calls to the sync server, and the pure rules around
//! them: how to split an outbox into batches, how long to back off, how to
//! classify an answer.

use gloo_net::http::Request;
use serde::Deserialize;
use serde_json::Value;
use shared_domain::{CommandEnvelope, EventEnvelope, SessionCommand};
use uuid::Uuid;

/// The most commands the server takes in one batch.
pub const MAX_BATCH_COMMANDS: usize = 500;
/// Stay well under the server's default 1 MiB body limit.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// The authority's answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200: the events it stored for this command (the originals for a resend).
    Accepted { events: Vec<EventEnvelope> },
    /// 409: the expected version is not the current one.
    Conflict {
        current_version: Option<u64>,
        error_id: Option<String>,
    },
    /// Any other 4xx: the command will never be accepted as it is.
    Rejected {
        status: u16,
        detail: String,
        error_id: Option<String>,
    },
    /// 5xx inside a batch: try again later.
    Retry,
}

/// Why a request did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// No connection (server down, network gone).
    Unreachable(String),
    /// The server answered 5xx, or something we could not parse.
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

/// Exponential backoff with a ceiling: 0.5 s, 1 s, 2 s, … 15 s.
pub fn backoff_ms(attempt: u32) -> u32 {
    500u32.saturating_mul(1 << attempt.min(5)).min(15_000)
}

#[derive(Deserialize)]
struct BatchResponse {
    results: Vec<BatchResult>,
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
}

/// Classifies one result of a batch.
pub fn classify(status: u16, body: &Value) -> Answer {
    match status {
        200..=299 => match serde_json::from_value::<Accepted>(body.clone()) {
            Ok(accepted) => Answer::Accepted {
                events: accepted.events,
            },
            Err(error) => Answer::Rejected {
                status,
                detail: format!("unreadable answer: {error}"),
                error_id: None,
            },
        },
        // Signed out (401) or rate-limited (429): nothing was judged; the
        // command stays pending and is sent again, never dropped.
        401 | 429 => Answer::Retry,
        409 => Answer::Conflict {
            current_version: body["current_version"].as_u64(),
            error_id: body["error_id"].as_str().map(str::to_owned),
        },
        400..=499 => Answer::Rejected {
            status,
            detail: body["detail"]
                .as_str()
                .or_else(|| body["title"].as_str())
                .unwrap_or("refused")
                .to_owned(),
            error_id: body["error_id"].as_str().map(str::to_owned),
        },
        _ => Answer::Retry,
    }
}

/// `POST /api/commands/batch`: one answer per envelope, in order.
pub async fn post_batch(
    envelopes: &[CommandEnvelope<SessionCommand>],
) -> Result<Vec<Answer>, NetError> {
    let body = serde_json::json!({ "commands": envelopes });
    let response = Request::post("/api/commands/batch")
        .header("content-type", "application/json")
        .body(body.to_string())
        .map_err(|e| NetError::Server(e.to_string()))?
        .send()
        .await
        .map_err(|e| NetError::Unreachable(e.to_string()))?;
    match response.status() {
        200 => {
            let parsed: BatchResponse = response
                .json()
                .await
                .map_err(|e| NetError::Server(e.to_string()))?;
            Ok(parsed
                .results
                .iter()
                .map(|r| classify(r.status, &r.body))
                .collect())
        }
        401 => Err(NetError::Server(
            "sign-in required: open your sign-in link again (pending work is kept)".into(),
        )),
        429 => Err(NetError::Server("rate limited; retrying".into())),
        // The batch as a whole was refused (too large, malformed): judge each alone.
        400..=499 => {
            let problem: Value = response.json().await.unwrap_or(Value::Null);
            let answer = classify(response.status(), &problem);
            Ok(envelopes.iter().map(|_| answer.clone()).collect())
        }
        status => Err(NetError::Server(format!("server answered {status}"))),
    }
}

/// Whether `GET /api/health` answers 200 (the server is up and ready).
pub async fn server_is_up() -> bool {
    Request::get("/api/health")
        .send()
        .await
        .is_ok_and(|response| response.ok())
}

/// `GET /api/aggregates/QuerySession/{id}/events?after_version=N`.
pub async fn fetch_events(
    aggregate_id: Uuid,
    after_version: u64,
) -> Result<Vec<EventEnvelope>, NetError> {
    let url =
        format!("/api/aggregates/QuerySession/{aggregate_id}/events?after_version={after_version}");
    let response = Request::get(&url)
        .send()
        .await
        .map_err(|e| NetError::Unreachable(e.to_string()))?;
    if !response.ok() {
        return Err(NetError::Server(format!(
            "fetching events answered {}",
            response.status()
        )));
    }
    let parsed: EventsResponse = response
        .json()
        .await
        .map_err(|e| NetError::Server(e.to_string()))?;
    Ok(parsed.events)
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
    fn backoff_grows_to_a_ceiling() {
        assert_eq!(backoff_ms(0), 500);
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(10), 15_000);
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
        assert_eq!(
            classify(200, &serde_json::json!({"events": []})),
            Answer::Accepted { events: vec![] }
        );
    }
}
