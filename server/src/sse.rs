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
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use shared_domain::sync::identity::{
    judge_resume, ResumeRequest, ResumeVerdict, StoreFacts, Witness,
};
use shared_domain::UserId;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::accounts::Directory;
use crate::bus::{BusMessage, ProgressFrame, StoredEvent};
use crate::error::AppError;
use crate::http::auth::Authenticated;
use crate::projections::Projections;
use crate::state::AppState;
use crate::store::Store;

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
    Authenticated(user): Authenticated,
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
    let slot = state.limits().streams.acquire(user.id)?;
    let mut request = StreamRequest::parse(last_event_id, &query)?;
    let hello = match parse_resume(&query, request.after)? {
        Some(resume) => {
            let (frame, verdict) = judge(&state, resume).await?;
            if verdict != ResumeVerdict::Confirm {
                // The client drops what it holds: send the whole log again.
                request.after = 0;
            }
            Some(frame)
        }
        None => None,
    };
    // Subscribe now, before the replay starts.
    let mut feed = Feed::new(
        state.store().clone(),
        state.bus().subscribe(),
        request,
        Ending::of(&state, user.id),
        Some(Viewer {
            user: UserId(user.id),
            projections: state.projections().clone(),
        }),
    );
    feed.slot = Some(slot);
    feed.bus = Some(state.bus().clone());
    if let Some(frame) = hello {
        feed.pending.push_back(frame);
    }
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

/// When a stream must end: the server is stopping, or its user was revoked
/// (from the admin API or `server users revoke` in another process). Held
/// by the stream itself, not by a watcher task: an idle stream costs one
/// allocation less.
struct Ending {
    shutdown: watch::Receiver<bool>,
    /// The stream's user and the user directory (none in unit tests).
    access: Option<(Uuid, watch::Receiver<Arc<Directory>>)>,
}

impl Ending {
    #[cfg(test)]
    fn new(shutdown: watch::Receiver<bool>) -> Self {
        Ending {
            shutdown,
            access: None,
        }
    }

    fn of(state: &AppState, user_id: Uuid) -> Self {
        Ending {
            shutdown: state.shutdown_signal(),
            access: Some((user_id, state.accounts().watch())),
        }
    }

    /// Whether the stream must end now.
    fn reached(&mut self) -> bool {
        *self.shutdown.borrow_and_update()
            || self
                .access
                .as_mut()
                .is_some_and(|(user, users)| !users.borrow_and_update().is_active(*user))
    }

    /// Resolves when either signal changes (then ask [`Ending::reached`]),
    /// or when a sender is gone (the server is stopping: end the stream).
    async fn changed(&mut self) -> bool {
        let users = async {
            match &mut self.access {
                Some((_, users)) => users.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.shutdown.changed() => changed.is_ok(),
            changed = users => changed,
        }
    }
}

/// Whose stream this is: it carries only events of sessions that user may
/// read, plus the `SessionShared` / `SessionUnshared` events naming the user
/// (so a newly shared session appears, and an unshared one leaves, without
/// a reconnect).
struct Viewer {
    user: UserId,
    projections: Projections,
}

impl Viewer {
    /// Whether this stream carries `event`: a lookup in the event's
    /// audience, decided once per event for every stream.
    async fn may_see(&self, event: &StoredEvent) -> bool {
        if let Some(audience) = event.decided_audience() {
            return audience.admits(self.user);
        }
        // Boxed: deciding is rare (the projections usually decided first)
        // and its future is large; an idle stream stays small.
        let audience =
            Box::pin(event.audience(|| self.projections.audience_of(&event.envelope))).await;
        audience.is_ok_and(|audience| audience.admits(self.user))
    }
}

/// The resume request of a client that asks for the `hello` frame
/// (`?hello=1`, with `store`, `witness_sequence` and `witness_id` for what it
/// holds); `None` for clients that do not ask (plain `EventSource` users,
/// older apps).
fn parse_resume(
    query: &HashMap<String, String>,
    after: u64,
) -> Result<Option<ResumeRequest>, AppError> {
    if query.get("hello").is_none_or(|v| v != "1") {
        return Ok(None);
    }
    let uuid = |name: &str| {
        query
            .get(name)
            .filter(|raw| !raw.is_empty())
            .map(|raw| {
                Uuid::parse_str(raw).map_err(|_| {
                    AppError::bad_request(format!("{name} must be a UUID, not {raw:?}"))
                })
            })
            .transpose()
    };
    let witness_sequence = query
        .get("witness_sequence")
        .filter(|raw| !raw.is_empty())
        .map(|raw| {
            raw.parse::<u64>().map_err(|_| {
                AppError::bad_request(format!(
                    "witness_sequence must be a global sequence, not {raw:?}"
                ))
            })
        })
        .transpose()?;
    let witness = match (witness_sequence, uuid("witness_id")?) {
        (Some(global_sequence), Some(event_id)) => Some(Witness {
            global_sequence,
            event_id,
        }),
        (None, None) => None,
        _ => {
            return Err(AppError::bad_request(
                "witness_sequence and witness_id go together",
            ))
        }
    };
    Ok(Some(ResumeRequest {
        store_id: uuid("store")?,
        after,
        witness,
    }))
}

/// Judges a resume request against the store: the `hello` frame, which
/// says `confirmed` or `reset` (then the stream starts from the beginning).
async fn judge(
    state: &AppState,
    resume: ResumeRequest,
) -> Result<(Bytes, ResumeVerdict), AppError> {
    let store_id = state.store_id();
    let witness_sequence = resume.witness.map(|w| w.global_sequence);
    let (head, event_at_witness) = state.store().head_and_event_at(witness_sequence).await?;
    let verdict = judge_resume(
        resume,
        StoreFacts {
            store_id,
            head,
            event_at_witness,
        },
    );
    let body = match verdict {
        ResumeVerdict::Confirm => {
            serde_json::json!({ "store_id": store_id, "status": "confirmed", "head": head })
        }
        ResumeVerdict::Reset(reason) => serde_json::json!({
            "store_id": store_id,
            "status": "reset",
            "reason": reason,
            "message": reason.describe(),
            "head": head,
        }),
    };
    Ok((
        Bytes::from(format!("event: hello\ndata: {body}\n\n")),
        verdict,
    ))
}

/// One connection's position: the replay from the store, then the bus.
struct Feed {
    viewer: Option<Viewer>,
    /// This stream's place under the SSE caps, freed when the body is dropped.
    slot: Option<crate::limits::StreamSlot>,
    store: Store,
    subscription: broadcast::Receiver<BusMessage>,
    request: StreamRequest,
    ending: Ending,
    keep_alive: tokio::time::Interval,
    /// The last global sequence sent: everything at or below it is dropped.
    last_sent: u64,
    /// Whether the store may hold events after `last_sent` that the bus will
    /// not deliver (at the start, and after lagging).
    catching_up: bool,
    /// Frames of a replay page not sent yet.
    pending: VecDeque<Bytes>,
    /// The bus, to count this stream's lags (metrics).
    bus: Option<crate::bus::Bus>,
}

impl Feed {
    fn new(
        store: Store,
        subscription: broadcast::Receiver<BusMessage>,
        request: StreamRequest,
        ending: Ending,
        viewer: Option<Viewer>,
    ) -> Self {
        let mut keep_alive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Feed {
            viewer,
            slot: None,
            store,
            subscription,
            request,
            ending,
            keep_alive,
            last_sent: request.after,
            catching_up: true,
            pending: VecDeque::new(),
            bus: None,
        }
    }

    /// The next frame to send, or `None` to end the response (server
    /// shutting down, or the store failing).
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if self.ending.reached() {
                return None;
            }
            if self.catching_up {
                // Boxed: the replay's futures are large and rare; an idle
                // stream's state stays the size of its bus wait.
                if Box::pin(self.replay_page()).await.is_err() {
                    return None;
                }
                continue;
            }
            let received = tokio::select! {
                received = self.subscription.recv() => received,
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b":\n\n")),
                // Ending the body lets graceful shutdown finish.
                changed = self.ending.changed() => if changed { continue } else { return None },
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
                    if let Some(viewer) = &self.viewer {
                        if !viewer.may_see(&event).await {
                            continue;
                        }
                    }
                    return Some(event.sse_frame());
                }
                Ok(BusMessage::Progress(progress)) => {
                    if self
                        .request
                        .session
                        .is_some_and(|s| s != progress.session_id)
                        || self.viewer.as_ref().is_some_and(|viewer| {
                            !viewer
                                .projections
                                .can_read(progress.session_id, viewer.user)
                        })
                    {
                        continue;
                    }
                    return Some(progress_frame(&progress));
                }
                Ok(BusMessage::CatchUp) => self.catching_up = true,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "SSE stream lagged; catching up from the store");
                    if let Some(bus) = &self.bus {
                        bus.note_lag();
                    }
                    self.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Feed {
    /// Queues the next page of stored events after `last_sent` that this
    /// stream carries; `Err` when the store fails (logged).
    async fn replay_page(&mut self) -> Result<(), ()> {
        let page = self
            .store
            .events_after(self.last_sent, self.request.session, REPLAY_PAGE)
            .await
            .map_err(|error| error.log())?;
        self.catching_up = page.len() == REPLAY_PAGE;
        for envelope in page {
            self.last_sent = envelope.global_sequence;
            let event = StoredEvent::new(envelope);
            if let Some(viewer) = &self.viewer {
                if !viewer.may_see(&event).await {
                    continue;
                }
            }
            self.pending.push_back(event.sse_frame());
        }
        Ok(())
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
        let (store, _writer) =
            crate::store::SqliteStore::open(&dir.path().join("events.sqlite3")).unwrap();
        let store = Store::from(store);
        let bus = crate::bus::Bus::default();
        let (stopping, shutdown) = watch::channel(false);
        let request = StreamRequest {
            after: 0,
            session: None,
        };
        let mut feed = Feed::new(store, bus.subscribe(), request, Ending::new(shutdown), None);
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
