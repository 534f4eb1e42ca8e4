//! The in-process bus: one `tokio::sync::broadcast` channel carrying every
//! committed event (in global-sequence order, published by the pipeline's
//! writer right after each commit, or on PostgreSQL by the node's fan-out
//! follower) and ephemeral frames such as query
//! progress, which are never stored.
//!
//! Subscribers that fall behind get `RecvError::Lagged`; event consumers
//! (SSE streams, projections) then catch up from the store, which is the
//! truth. Ephemeral frames lost that way are simply superseded by later ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;

use serde::Serialize;
use shared_domain::{EventEnvelope, QueryId, UserId};
use tokio::sync::{broadcast, OnceCell};
use uuid::Uuid;

/// How many messages a subscriber may fall behind before it lags.
pub const DEFAULT_CAPACITY: usize = 8192;

/// A committed event with its JSON, serialized once however many SSE
/// subscribers send it, and its [`Audience`], decided once however many
/// per-user streams filter it.
#[derive(Debug)]
pub struct StoredEvent {
    pub envelope: EventEnvelope,
    json: OnceLock<String>,
    frame: OnceLock<Bytes>,
    audience: OnceCell<Audience>,
}

/// Who may receive an event on a per-user feed: the readers of its session
/// once the event was applied to the projections, plus the user a
/// `SessionShared` / `SessionUnshared` names. Decided once per event (by the
/// projections right after they apply it, or by the first stream that needs
/// it), so a stream's filter is a lookup, not a decode and a wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    pub member_changed: Option<UserId>,
    pub readers: Vec<UserId>,
}

impl Audience {
    pub fn admits(&self, user: UserId) -> bool {
        self.member_changed == Some(user) || self.readers.contains(&user)
    }
}

impl StoredEvent {
    pub fn new(envelope: EventEnvelope) -> Self {
        Self {
            envelope,
            json: OnceLock::new(),
            frame: OnceLock::new(),
            audience: OnceCell::new(),
        }
    }

    /// Records the audience unless it was decided already (both deciders
    /// judge with the projections at or past this event).
    pub fn set_audience(&self, audience: Audience) {
        let _ = self.audience.set(audience);
    }

    /// The audience if someone decided it already.
    pub fn decided_audience(&self) -> Option<&Audience> {
        self.audience.get()
    }

    /// The audience, deciding it with `decide` if nobody has: concurrent
    /// callers wait for the one decision instead of each deciding.
    pub async fn audience<E, F>(&self, decide: impl FnOnce() -> F) -> Result<&Audience, E>
    where
        F: std::future::Future<Output = Result<Audience, E>>,
    {
        self.audience.get_or_try_init(decide).await
    }

    /// The envelope's JSON (one line), computed on first use.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            serde_json::to_string(&self.envelope).expect("event envelopes serialize")
        })
    }

    /// The SSE frame (`id: <global_sequence>` and `data: <json>`), rendered
    /// once and shared (cheap `Bytes` clones) by every stream.
    pub fn sse_frame(&self) -> Bytes {
        self.frame
            .get_or_init(|| {
                Bytes::from(format!(
                    "id: {}\ndata: {}\n\n",
                    self.envelope.global_sequence,
                    self.json()
                ))
            })
            .clone()
    }

    pub fn global_sequence(&self) -> u64 {
        self.envelope.global_sequence
    }
}

/// Progress of a running server query, streamed as `event: progress` with
/// `{"query_id", "percent", "elapsed_ms", "rows_read", "rows_total",
/// "rows_returned"}` and no `id` (it is not stored). DuckDB estimates the
/// percentage only for some sources (Parquet and CSV scans, not generated
/// rows); where it has none, elapsed time and the rows returned so far
/// still move, so a long query never looks frozen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressFrame {
    /// The session the query belongs to: routes the frame to `?session=`
    /// scoped streams. Not part of the JSON.
    #[serde(skip)]
    pub session_id: Uuid,
    pub query_id: QueryId,
    /// DuckDB's estimate, 0 to 100; null while it has none.
    pub percent: Option<f64>,
    pub elapsed_ms: u64,
    /// Rows the query's scans have read so far, when DuckDB counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_read: Option<u64>,
    /// Rows the scans will read in all (with `rows_read`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_total: Option<u64>,
    /// Result rows the query has produced so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_returned: Option<u64>,
}

impl ProgressFrame {
    /// A frame with a percentage and elapsed time only (no row counts).
    pub fn new(session_id: Uuid, query_id: QueryId, percent: Option<f64>, elapsed_ms: u64) -> Self {
        Self {
            session_id,
            query_id,
            percent,
            elapsed_ms,
            rows_read: None,
            rows_total: None,
            rows_returned: None,
        }
    }
}

/// What travels on the bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    Event(Arc<StoredEvent>),
    Progress(Arc<ProgressFrame>),
    /// The store may hold events that were never published (a commit
    /// reported failed): re-read it past the last event you have.
    CatchUp,
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<BusMessage>,
    /// Times a subscriber fell behind and caught up from the store.
    lag_catch_ups: Arc<AtomicU64>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self {
            sender,
            lag_catch_ups: Arc::default(),
        }
    }

    /// A receiver of every message published from now on. Subscribe before
    /// replaying from the store, then drop duplicates by global sequence.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.sender.subscribe()
    }

    /// Publishes a committed event. Only one publisher per node calls this,
    /// after the commit, in global-sequence order: the pipeline's writer
    /// (SQLite) or the fan-out follower (PostgreSQL, [`crate::fanout`]).
    pub fn publish_event(&self, event: Arc<StoredEvent>) {
        // No subscribers is fine: nobody is listening yet.
        let _ = self.sender.send(BusMessage::Event(event));
    }

    /// Publishes an ephemeral progress frame to the SSE streams.
    pub fn publish_progress(&self, frame: ProgressFrame) {
        let _ = self.sender.send(BusMessage::Progress(Arc::new(frame)));
    }

    /// Tells every event consumer to catch up from the store.
    pub fn publish_catch_up(&self) {
        let _ = self.sender.send(BusMessage::CatchUp);
    }

    /// Counts a subscriber that lagged behind and catches up from the store.
    pub fn note_lag(&self) {
        self.lag_catch_ups.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times subscribers lagged and caught up from the store.
    pub fn lag_catch_ups(&self) -> u64 {
        self.lag_catch_ups.load(Ordering::Relaxed)
    }

    /// The number of live receivers.
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_frames_serialize_without_the_session() {
        let frame = ProgressFrame::new(Uuid::new_v4(), QueryId(Uuid::nil()), Some(42.5), 1200);
        let json = serde_json::to_value(&frame).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"query_id": Uuid::nil(), "percent": 42.5, "elapsed_ms": 1200})
        );
        let frame = ProgressFrame {
            rows_returned: Some(7),
            ..ProgressFrame::new(Uuid::new_v4(), QueryId(Uuid::nil()), None, 5)
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            serde_json::json!({"query_id": Uuid::nil(), "percent": null, "elapsed_ms": 5, "rows_returned": 7})
        );
    }

    #[tokio::test]
    async fn subscribers_receive_what_is_published_after_they_subscribe() {
        let bus = Bus::new(4);
        bus.publish_progress(ProgressFrame::new(
            Uuid::nil(),
            QueryId(Uuid::nil()),
            Some(1.0),
            1,
        ));
        let mut rx = bus.subscribe();
        bus.publish_progress(ProgressFrame::new(
            Uuid::nil(),
            QueryId(Uuid::nil()),
            Some(2.0),
            2,
        ));
        match rx.recv().await.unwrap() {
            BusMessage::Progress(frame) => assert_eq!(frame.percent, Some(2.0)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
