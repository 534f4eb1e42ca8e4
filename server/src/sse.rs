//! `GET /api/events`: the Server-Sent Events feed of committed events, plus
//! ephemeral `event: progress` frames.
//!
//! Each stream subscribes to the bus *before* replaying the store from its
//! cursor, then follows the bus, dropping anything at or below the last
//! global sequence it sent. Because the writer publishes after each commit in
//! global-sequence order, an event is either in the replay or arrives on the
//! bus afterwards: none is lost, none is sent twice. A stream that lags
//! behind the bus catches up from the store the same way.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::bus::{BusMessage, ProgressFrame, StoredEvent};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::EventStore;

/// The keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read from the store per replay page.
const REPLAY_PAGE: usize = 500;
/// Frames buffered per connection before the stream stops pulling the bus
/// (it then lags and catches up from the store).
const CONNECTION_BUFFER: usize = 256;

/// Where a stream starts and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRequest {
    /// Send events with a global sequence greater than this.
    pub after: u64,
    /// Only this session's events and progress frames.
    pub session: Option<Uuid>,
}

impl StreamRequest {
    /// `Last-Event-ID` (sent by a reconnecting browser) wins over `?after=`;
    /// with neither, the stream starts at the beginning.
    pub fn parse(
        last_event_id: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Result<Self, AppError> {
        let parse_sequence = |name: &str, raw: &str| {
            raw.trim().parse::<u64>().map_err(|_| {
                AppError::bad_request(format!(
                    "{name} must be a global sequence (a non-negative integer), not {raw:?}"
                ))
            })
        };
        let after = match (last_event_id, query.get("after")) {
            (Some(id), _) if !id.trim().is_empty() => parse_sequence("Last-Event-ID", id)?,
            (_, Some(after)) => parse_sequence("after", after)?,
            _ => 0,
        };
        let session = query
            .get("session")
            .map(|raw| {
                Uuid::parse_str(raw).map_err(|_| {
                    AppError::bad_request(format!(
                        "session must be a session id (UUID), not {raw:?}"
                    ))
                })
            })
            .transpose()?;
        Ok(Self { after, session })
    }
}

/// The `/api/events` handler. Frames are written as pre-rendered bytes: an
/// event's frame is rendered once and shared by every stream that sends it.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_request(e.body_text()))?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| AppError::bad_request("Last-Event-ID is not valid text"))
        })
        .transpose()?;
    let request = StreamRequest::parse(last_event_id, &query)?;
    // Subscribe now, before the replay starts.
    let subscription = state.bus().subscribe();
    let (frames, rx) = mpsc::channel(CONNECTION_BUFFER);
    let mut shutdown = state.shutdown_signal();
    let feed = feed(state.store().clone(), subscription, request, frames);
    tokio::spawn(async move {
        tokio::select! {
            _ = feed => {}
            // Dropping the sender ends the response: graceful shutdown can finish.
            _ = shutdown.wait_for(|stopping| *stopping) => {}
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<Bytes, Infallible>(frame), rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Sends the replay, then the bus, to one connection until it closes.
async fn feed(
    store: EventStore,
    mut subscription: broadcast::Receiver<BusMessage>,
    request: StreamRequest,
    frames: mpsc::Sender<Bytes>,
) {
    let mut last_sent = request.after;
    if catch_up(&store, request.session, &mut last_sent, &frames)
        .await
        .is_err()
    {
        return;
    }
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await; // the first tick is immediate
    loop {
        let received = tokio::select! {
            received = subscription.recv() => received,
            _ = keep_alive.tick() => {
                if frames.send(Bytes::from_static(b":\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let frame = match received {
            Ok(BusMessage::Event(event)) => {
                let envelope = &event.envelope;
                if envelope.global_sequence <= last_sent
                    || request.session.is_some_and(|s| s != envelope.aggregate_id)
                {
                    continue;
                }
                last_sent = envelope.global_sequence;
                event.sse_frame()
            }
            Ok(BusMessage::Progress(progress)) => {
                if request.session.is_some_and(|s| s != progress.session_id) {
                    continue;
                }
                progress_frame(&progress)
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "SSE stream lagged; catching up from the store");
                if catch_up(&store, request.session, &mut last_sent, &frames)
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if frames.send(frame).await.is_err() {
            return; // The client went away.
        }
    }
}

/// Sends every stored event after `last_sent`; `Err` when the client is gone.
async fn catch_up(
    store: &EventStore,
    session: Option<Uuid>,
    last_sent: &mut u64,
    frames: &mpsc::Sender<Bytes>,
) -> Result<(), ()> {
    loop {
        let page = match store.events_after(*last_sent, session, REPLAY_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                error.log();
                return Err(());
            }
        };
        let done = page.len() < REPLAY_PAGE;
        for envelope in page {
            let sequence = envelope.global_sequence;
            frames
                .send(StoredEvent::new(envelope).sse_frame())
                .await
                .map_err(|_| ())?;
            *last_sent = sequence;
        }
        if done {
            return Ok(());
        }
    }
}

fn progress_frame(progress: &ProgressFrame) -> Bytes {
    let json = serde_json::to_string(progress).expect("progress frames serialize");
    Bytes::from(format!("event: progress\ndata: {json}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn last_event_id_wins_over_after() {
        let request = StreamRequest::parse(Some("7"), &query(&[("after", "3")])).unwrap();
        assert_eq!(request.after, 7);
        let request = StreamRequest::parse(None, &query(&[("after", "3")])).unwrap();
        assert_eq!(request.after, 3);
        let request = StreamRequest::parse(None, &query(&[])).unwrap();
        assert_eq!(
            request,
            StreamRequest {
                after: 0,
                session: None
            }
        );
    }

    #[test]
    fn malformed_cursors_and_sessions_are_bad_requests() {
        assert!(StreamRequest::parse(Some("x"), &query(&[])).is_err());
        assert!(StreamRequest::parse(None, &query(&[("after", "-1")])).is_err());
        assert!(StreamRequest::parse(None, &query(&[("session", "nope")])).is_err());
        let id = Uuid::new_v4();
        let request = StreamRequest::parse(None, &query(&[("session", &id.to_string())])).unwrap();
        assert_eq!(request.session, Some(id));
    }
}
