//! Read models (projections) of the event store, kept in memory.
//!
//! The projection manager subscribes to the bus first, then replays the
//! whole store, then follows the bus, skipping what the replay already
//! covered (by global sequence) and catching up from the store when it lags.
//! Events are the truth: restarting rebuilds the same read models. Every read
//! model is served with the global sequence it reflects, and
//! [`Projections::wait_for`] gives HTTP handlers read-your-writes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared_domain::{Aggregate, EventEnvelope, QuerySession, SessionEvent, UserId};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::bus::{Audience, Bus, BusMessage};
use crate::error::{AppError, ErrorKind};
pub use crate::store::parse_store_timestamp;
use crate::store::Store;

/// How long a handler waits for the projections to reach its write.
const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(10);
/// Events fetched per page while catching up.
const CATCH_UP_PAGE: usize = 1000;

/// One session as the read model shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionView {
    pub id: Uuid,
    #[serde(flatten)]
    pub session: QuerySession,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A session's line in the session list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSummary {
    pub id: Uuid,
    pub title: Option<String>,
    pub lifecycle: shared_domain::Lifecycle,
    pub version: u64,
    pub dataset: Option<shared_domain::DatasetRef>,
    pub query_count: usize,
    pub owner: Option<UserId>,
    pub members: Vec<shared_domain::Member>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&SessionView> for SessionSummary {
    fn from(view: &SessionView) -> Self {
        SessionSummary {
            id: view.id,
            title: view.session.title.as_ref().map(|t| t.as_str().to_owned()),
            lifecycle: view.session.lifecycle,
            version: view.session.version,
            dataset: view.session.dataset.clone(),
            query_count: view.session.history.len(),
            owner: view.session.owner,
            members: view.session.members.clone(),
            created_at: view.created_at,
            updated_at: view.updated_at,
        }
    }
}

/// The in-memory read models and the global sequence they reflect.
#[derive(Debug, Default)]
pub struct ReadModel {
    pub sessions: HashMap<Uuid, SessionView>,
    pub global_sequence: u64,
}

impl ReadModel {
    /// Folds one decoded event in. Events at or below the reflected global
    /// sequence are ignored, so replays and the bus may overlap.
    pub fn apply(
        &mut self,
        global_sequence: u64,
        aggregate_id: Uuid,
        event: &SessionEvent,
        at: DateTime<Utc>,
    ) {
        if global_sequence <= self.global_sequence {
            return;
        }
        let view = self
            .sessions
            .entry(aggregate_id)
            .or_insert_with(|| SessionView {
                id: aggregate_id,
                session: QuerySession::default(),
                created_at: at,
                updated_at: at,
            });
        view.session.apply(event);
        view.updated_at = at;
        self.global_sequence = global_sequence;
    }

    /// Folds one stored event in; returns the user a `SessionShared` /
    /// `SessionUnshared` names (the event's [`Audience::member_changed`]).
    fn apply_envelope(&mut self, envelope: &EventEnvelope) -> Result<Option<UserId>, AppError> {
        if envelope.aggregate_type != QuerySession::TYPE {
            self.global_sequence = self.global_sequence.max(envelope.global_sequence);
            return Ok(None);
        }
        let event = envelope.decode::<QuerySession>().map_err(|e| {
            AppError::internal(format!(
                "event {} cannot be projected: {e}",
                envelope.global_sequence
            ))
        })?;
        self.apply(
            envelope.global_sequence,
            envelope.aggregate_id,
            &event,
            envelope.created_at,
        );
        Ok(event.member_changed())
    }

    /// Every user who may read session `id` now (none when there is none):
    /// its owner and members, as far as [`QuerySession::can_read`] admits them.
    pub fn readers(&self, id: Uuid) -> Vec<UserId> {
        let Some(view) = self.sessions.get(&id) else {
            return Vec::new();
        };
        let session = &view.session;
        session
            .owner
            .into_iter()
            .chain(session.members.iter().map(|member| member.user))
            .filter(|user| session.can_read(*user))
            .collect()
    }
}

/// Replays every stored event after `model.global_sequence` into `model`
/// from a SQLite connection (the store bench's rebuild); the server goes
/// through [`Store::fold_session_events`], which does the same on either
/// backend. Returns the number of events applied.
pub fn replay_into(conn: &rusqlite::Connection, model: &mut ReadModel) -> Result<u64, AppError> {
    let after = model.global_sequence;
    crate::store::fold_session_events(conn, after, model, apply_visited)
}

/// The [`crate::store::SessionVisitor`] that folds an event into a read model.
fn apply_visited(
    model: &mut ReadModel,
    global_sequence: u64,
    aggregate_id: Uuid,
    event: &SessionEvent,
    at: DateTime<Utc>,
) {
    model.apply(global_sequence, aggregate_id, event, at);
}

/// The projection manager; cheap to clone.
#[derive(Clone)]
pub struct Projections {
    inner: Arc<Inner>,
}

struct Inner {
    model: RwLock<ReadModel>,
    reflected: watch::Sender<u64>,
}

impl Projections {
    /// Subscribes to `bus`, rebuilds from `store`, then follows the bus in
    /// the background. Returns once the read models have caught up with
    /// everything stored when it was called.
    pub async fn start(store: Store, bus: &Bus) -> anyhow::Result<Projections> {
        let subscription = bus.subscribe();
        let started = std::time::Instant::now();
        let (model, applied) = store
            .fold_session_events(0, ReadModel::default(), apply_visited)
            .await
            .map_err(|e| anyhow::anyhow!("rebuilding projections: {e}"))?;
        tracing::info!(
            events = applied,
            sessions = model.sessions.len(),
            global_sequence = model.global_sequence,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "projections rebuilt"
        );
        let (reflected, _) = watch::channel(model.global_sequence);
        let projections = Projections {
            inner: Arc::new(Inner {
                model: RwLock::new(model),
                reflected,
            }),
        };
        tokio::spawn(projections.clone().follow(store, subscription));
        Ok(projections)
    }

    async fn follow(self, store: Store, mut subscription: broadcast::Receiver<BusMessage>) {
        loop {
            match subscription.recv().await {
                Ok(BusMessage::Event(event)) => {
                    // Decide the event's audience while the model is exactly
                    // at it, so that SSE streams need neither decode nor wait.
                    let result = self.write(|model| {
                        let member_changed = model.apply_envelope(&event.envelope)?;
                        Ok::<_, AppError>(Audience {
                            member_changed,
                            readers: model.readers(event.envelope.aggregate_id),
                        })
                    });
                    match result {
                        Ok(audience) => event.set_audience(audience),
                        Err(error) => error.log(),
                    }
                }
                Ok(BusMessage::Progress(_)) => {}
                Ok(BusMessage::CatchUp) => {
                    if let Err(error) = self.catch_up(&store).await {
                        error.log();
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "projections lagged behind the bus; catching up from the store"
                    );
                    if let Err(error) = self.catch_up(&store).await {
                        error.log();
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn catch_up(&self, store: &Store) -> Result<(), AppError> {
        loop {
            let after = self.global_sequence();
            let page = store.events_after(after, None, CATCH_UP_PAGE).await?;
            let done = page.len() < CATCH_UP_PAGE;
            self.write(|model| {
                page.iter()
                    .try_for_each(|envelope| model.apply_envelope(envelope).map(|_| ()))
            })?;
            if done {
                return Ok(());
            }
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut ReadModel) -> T) -> T {
        let mut model = self.inner.model.write().expect("read model lock");
        let result = f(&mut model);
        let reflected = model.global_sequence;
        drop(model);
        self.inner.reflected.send_if_modified(|current| {
            let changed = *current != reflected;
            *current = reflected;
            changed
        });
        result
    }

    /// Reads the models under the lock.
    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        f(&self.inner.model.read().expect("read model lock"))
    }

    /// The global sequence the read models reflect.
    pub fn global_sequence(&self) -> u64 {
        *self.inner.reflected.borrow()
    }

    /// Waits until the read models reflect `global_sequence`.
    pub async fn wait_for(&self, global_sequence: u64) -> Result<(), AppError> {
        let mut reflected = self.inner.reflected.subscribe();
        let reached = tokio::time::timeout(
            READ_YOUR_WRITES_TIMEOUT,
            reflected.wait_for(|current| *current >= global_sequence),
        )
        .await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AppError::new(
                ErrorKind::Unavailable,
                format!("the read models did not reach global sequence {global_sequence} in time"),
            )),
        }
    }

    /// The session list and the global sequence it reflects, newest first.
    pub fn sessions(&self) -> (Vec<SessionSummary>, u64) {
        self.read(|model| {
            let mut sessions: Vec<SessionSummary> =
                model.sessions.values().map(SessionSummary::from).collect();
            sessions.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
            (sessions, model.global_sequence)
        })
    }

    /// One session and the global sequence it reflects.
    pub fn session(&self, id: Uuid) -> (Option<SessionView>, u64) {
        self.read(|model| (model.sessions.get(&id).cloned(), model.global_sequence))
    }

    /// The sessions `user` may read, newest first, and the global sequence.
    pub fn sessions_readable_by(&self, user: UserId) -> (Vec<SessionSummary>, u64) {
        self.read(|model| {
            let mut sessions: Vec<SessionSummary> = model
                .sessions
                .values()
                .filter(|view| view.session.can_read(user))
                .map(SessionSummary::from)
                .collect();
            sessions.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
            (sessions, model.global_sequence)
        })
    }

    /// The audience of a stored event on per-user feeds, judged with the
    /// access its session had once the event was applied (waits for the
    /// projections to reach it).
    pub async fn audience_of(&self, envelope: &EventEnvelope) -> Result<Audience, AppError> {
        let member_changed = envelope
            .decode::<QuerySession>()
            .ok()
            .and_then(|event| event.member_changed());
        self.wait_for(envelope.global_sequence).await?;
        Ok(Audience {
            member_changed,
            readers: self.read(|model| model.readers(envelope.aggregate_id)),
        })
    }

    /// Whether `user` may read session `id` (false when there is none).
    pub fn can_read(&self, id: Uuid, user: UserId) -> bool {
        self.read(|model| {
            model
                .sessions
                .get(&id)
                .is_some_and(|view| view.session.can_read(user))
        })
    }

    /// The session that submitted `query_id`, if any.
    pub fn session_of_query(&self, query_id: shared_domain::QueryId) -> Option<Uuid> {
        self.read(|model| {
            model
                .sessions
                .iter()
                .find(|(_, view)| view.session.query(query_id).is_some())
                .map(|(id, _)| *id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_domain::{Role, SessionTitle, UserName};

    #[test]
    fn readers_are_the_owner_and_the_members_while_they_may_read() {
        let mut model = ReadModel::default();
        let session = Uuid::now_v7();
        let (owner, bob) = (UserId::OWNER, UserId(Uuid::now_v7()));
        assert!(model.readers(session).is_empty(), "no session, no readers");
        let at = Utc::now();
        let events = [
            SessionEvent::SessionCreated {
                title: SessionTitle::new("t").unwrap(),
                owner,
            },
            SessionEvent::SessionShared {
                user: bob,
                name: UserName::new("bob").unwrap(),
                role: Role::Viewer,
            },
            SessionEvent::SessionUnshared {
                user: bob,
                name: UserName::new("bob").unwrap(),
            },
        ];
        let mut seen = Vec::new();
        for (index, event) in events.iter().enumerate() {
            model.apply(index as u64 + 1, session, event, at);
            seen.push(model.readers(session));
        }
        assert_eq!(seen, vec![vec![owner], vec![owner, bob], vec![owner]]);
        let audience = Audience {
            member_changed: Some(bob),
            readers: vec![owner],
        };
        assert!(audience.admits(bob) && audience.admits(owner));
        assert!(!audience.admits(UserId(Uuid::now_v7())));
    }

    #[test]
    fn store_timestamps_parse_like_rfc3339_and_other_forms_are_left_to_chrono() {
        for at in [
            "2026-11-29T12:07:27.123456Z",
            "1999-12-31T23:59:59.999999Z",
            "2024-02-29T00:00:00.000000Z",
        ] {
            let general = DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(parse_store_timestamp(at), Some(general), "{at}");
        }
        let written = crate::store::format_timestamp(crate::store::now());
        assert_eq!(
            parse_store_timestamp(&written),
            Some(
                DateTime::parse_from_rfc3339(&written)
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        for other in [
            "2026-11-29T12:07:27Z",
            "2026-11-29T12:07:27.123456+00:00",
            "2026-02-30T12:07:27.123456Z",
            "2026-11-29T25:07:27.123456Z",
            "2026-11-29T12:07:27.12345xZ",
            "",
        ] {
            assert_eq!(parse_store_timestamp(other), None, "{other}");
        }
    }
}
