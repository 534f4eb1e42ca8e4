//! `GET /api/events`: the Server-Sent Events feed of committed events, plus
//! ephemeral `event: progress` frames.
//!
//! Each stream subscribes to the bus *before* replaying the store from its
//! cursor, then follows the bus, dropping anything at or below the last
//! global sequence it sent. Because the writer publishes after each commit in
//! global-sequence order, an event is either in the replay or arrives on the
//! bus afterwards: none is lost, none is sent twice. A stream that lags
//! behind the bus catches up from the store the same way.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::bus::{BusMessage, ProgressFrame, StoredEvent};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::EventStore;

/// The keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read from the store per replay page.
const REPLAY_PAGE: usize = 500;

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
/// The response body pulls frames straight from the bus receiver (no task
/// or queue per connection): a client that reads slowly makes its receiver
/// lag, and the stream then catches up from the store.
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
    let feed = Feed::new(
        state.store().clone(),
        state.bus().subscribe(),
        request,
        state.shutdown_signal(),
    );
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        feed.next_frame()
            .await
            .map(|frame| (Ok::<Bytes, Infallible>(frame), feed))
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

/// One connection's position: the replay from the store, then the bus.
struct Feed {
    store: EventStore,
    subscription: broadcast::Receiver<BusMessage>,
    request: StreamRequest,
    shutdown: watch::Receiver<bool>,
    keep_alive: tokio::time::Interval,
    /// The last global sequence sent: everything at or below it is dropped.
    last_sent: u64,
    /// Whether the store may hold events after `last_sent` that the bus will
    /// not deliver (at the start, and after lagging).
    catching_up: bool,
    /// Frames of a replay page not sent yet.
    pending: VecDeque<Bytes>,
}

impl Feed {
    fn new(
        store: EventStore,
        subscription: broadcast::Receiver<BusMessage>,
        request: StreamRequest,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut keep_alive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Feed {
            store,
            subscription,
            request,
            shutdown,
            keep_alive,
            last_sent: request.after,
            catching_up: true,
            pending: VecDeque::new(),
        }
    }

    /// The next frame to send, or `None` to end the response (server
    /// shutting down, or the store failing).
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if *self.shutdown.borrow() {
                return None;
            }
            if self.catching_up {
                let page = self
                    .store
                    .events_after(self.last_sent, self.request.session, REPLAY_PAGE)
                    .await;
                let page = match page {
                    Ok(page) => page,
                    Err(error) => {
                        error.log();
                        return None;
                    }
                };
                self.catching_up = page.len() == REPLAY_PAGE;
                for envelope in page {
                    self.last_sent = envelope.global_sequence;
                    self.pending
                        .push_back(StoredEvent::new(envelope).sse_frame());
                }
                continue;
            }
            let received = tokio::select! {
                received = self.subscription.recv() => received,
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b":\n\n")),
                // Ending the body lets graceful shutdown finish.
                _ = self.shutdown.changed() => return None,
            };
            match received {
                Ok(BusMessage::Event(event)) => {
                    let envelope = &event.envelope;
                    if envelope.global_sequence <= self.last_sent
                        || self
                            .request
                            .session
                            .is_some_and(|s| s != envelope.aggregate_id)
                    {
                        continue;
                    }
                    self.last_sent = envelope.global_sequence;
                    return Some(event.sse_frame());
                }
                Ok(BusMessage::Progress(progress)) => {
                    if self
                        .request
                        .session
                        .is_some_and(|s| s != progress.session_id)
                    {
                        continue;
                    }
                    return Some(progress_frame(&progress));
                }
                Ok(BusMessage::CatchUp) => self.catching_up = true,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "SSE stream lagged; catching up from the store");
                    self.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
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

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sends_a_keep_alive_comment_and_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _writer) = EventStore::open(&dir.path().join("events.sqlite3")).unwrap();
        let bus = crate::bus::Bus::default();
        let (stopping, shutdown) = watch::channel(false);
        let request = StreamRequest {
            after: 0,
            session: None,
        };
        let mut feed = Feed::new(store, bus.subscribe(), request, shutdown);
        let started = tokio::time::Instant::now();
        let frame = feed.next_frame().await.unwrap();
        assert_eq!(&frame[..], b":\n\n");
        assert!(started.elapsed() >= KEEP_ALIVE, "{:?}", started.elapsed());
        stopping.send_replace(true);
        assert!(feed.next_frame().await.is_none());
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
