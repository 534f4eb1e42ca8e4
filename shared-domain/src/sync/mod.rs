//! The sync core: a replica of the authority's event log plus an outbox of
//! commands the authority has not confirmed yet. Pure state transitions, no
//! I/O, so the browser runs it and native tests simulate it.
//!
//! The shell (the browser app) feeds it what happened on the wire:
//! - the user acts: [`Replica::submit`] decides on the optimistic view; a
//!   locally invalid command never enters the outbox;
//! - an event arrives on the SSE feed: [`Replica::receive`] with
//!   [`Source::Feed`]; one that answers a pending command removes it;
//! - the authority answers a command: 200 -> [`Replica::accepted`],
//!   409 -> fetch the missing events, [`Replica::receive`] them with
//!   [`Source::Fetch`], then [`Replica::rebase`]; 400/422 -> [`Replica::rejected`].
//!
//! Why a resend is always safe: a command keeps its `command_id` across
//! rebases, and the authority answers a known `command_id` with its original
//! result. A send with expected version `v` is either stored at `v` or never,
//! because versions only grow; so once the confirmed log holds other events
//! at `v`, the command was not applied and may be re-decided. This assumes
//! one request in flight per outbox: the shell sends the next batch only
//! after the previous one was answered or is known lost.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::envelope::{CommandEnvelope, EventEnvelope};
use crate::upcast::UpcastError;

#[cfg(test)]
mod simulation;

/// A command the authority has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCommand<C> {
    /// Kept across rebases: it makes every resend idempotent.
    pub command_id: Uuid,
    pub aggregate_id: Uuid,
    /// The version this command was (last) decided on.
    pub expected_version: u64,
    pub command: C,
}

impl<C: Clone> PendingCommand<C> {
    /// The envelope to send for `A`.
    pub fn envelope<A: Aggregate<Command = C>>(&self) -> CommandEnvelope<C> {
        CommandEnvelope {
            command_id: self.command_id,
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: self.aggregate_id,
            expected_version: self.expected_version,
            command: self.command.clone(),
        }
    }
}

/// A pending command that left the outbox without being applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection<C> {
    pub pending: PendingCommand<C>,
    /// Why, in words for the user.
    pub reason: String,
}

/// Where a received event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The SSE feed, in global order: advances the resume cursor.
    Feed,
    /// A command response or a per-aggregate fetch: out of global order, so
    /// it must not move the feed cursor (events of other aggregates before
    /// it may not have arrived yet).
    Fetch,
}

/// What [`Replica::receive`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Applied to the confirmed state.
    Applied,
    /// Already known: ignored.
    Duplicate,
    /// Events are missing before this one: fetch the aggregate's events
    /// after `have_version`, then receive them with [`Source::Fetch`].
    Gap {
        aggregate_id: Uuid,
        have_version: u64,
    },
}

/// A failure of the sync core itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncError {
    #[error("event {global_sequence} is of aggregate type {found:?}, not {expected:?}")]
    WrongAggregateType {
        global_sequence: u64,
        found: String,
        expected: &'static str,
    },
    /// The event is newer than this app knows: "reload to update".
    #[error("cannot read event {global_sequence}: {source}; reload to update the app")]
    Undecodable {
        global_sequence: u64,
        #[source]
        source: UpcastError,
    },
}

/// One replica of the authority's state for aggregates of type `A`.
#[derive(Debug, Clone)]
pub struct Replica<A: Aggregate> {
    confirmed: BTreeMap<Uuid, A>,
    last_global_sequence: u64,
    outbox: VecDeque<PendingCommand<A::Command>>,
}

impl<A: Aggregate> Default for Replica<A> {
    fn default() -> Self {
        Self {
            confirmed: BTreeMap::new(),
            last_global_sequence: 0,
            outbox: VecDeque::new(),
        }
    }
}

impl<A: Aggregate> Replica<A> {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a replica from what the shell persisted.
    pub fn restore(
        confirmed: impl IntoIterator<Item = (Uuid, A)>,
        last_global_sequence: u64,
        outbox: impl IntoIterator<Item = PendingCommand<A::Command>>,
    ) -> Self {
        Self {
            confirmed: confirmed.into_iter().collect(),
            last_global_sequence,
            outbox: outbox.into_iter().collect(),
        }
    }

    /// The global sequence of the last event received from the feed: resume the feed after it.
    pub fn last_global_sequence(&self) -> u64 {
        self.last_global_sequence
    }

    /// Commands not yet confirmed, in the order they must be sent.
    pub fn outbox(&self) -> &VecDeque<PendingCommand<A::Command>> {
        &self.outbox
    }

    /// The authority's state of one aggregate as far as this replica knows.
    pub fn confirmed(&self, aggregate_id: Uuid) -> Option<&A> {
        self.confirmed.get(&aggregate_id)
    }

    /// Every aggregate this replica has confirmed events of.
    pub fn confirmed_all(&self) -> impl Iterator<Item = (&Uuid, &A)> {
        self.confirmed.iter()
    }

    /// Ids of every aggregate known confirmed or pending.
    pub fn aggregate_ids(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.confirmed.keys().copied().collect();
        for pending in &self.outbox {
            if !ids.contains(&pending.aggregate_id) {
                ids.push(pending.aggregate_id);
            }
        }
        ids
    }

    /// The optimistic view: confirmed state with the pending commands
    /// re-decided and applied on top. A pending command that no longer
    /// decides (the confirmed state moved) is skipped here; the authority's
    /// answer will reject or rebase it.
    pub fn view(&self, aggregate_id: Uuid) -> A {
        let mut state = self
            .confirmed
            .get(&aggregate_id)
            .cloned()
            .unwrap_or_default();
        for pending in self.pending_for(aggregate_id) {
            if let Ok((next, _)) = state.execute(&pending.command) {
                state = next;
            }
        }
        state
    }

    /// Whether `aggregate_id` has commands waiting for the authority.
    pub fn has_pending(&self, aggregate_id: Uuid) -> bool {
        self.pending_for(aggregate_id).next().is_some()
    }

    fn pending_for(&self, aggregate_id: Uuid) -> impl Iterator<Item = &PendingCommand<A::Command>> {
        self.outbox
            .iter()
            .filter(move |p| p.aggregate_id == aggregate_id)
    }

    /// Decides `command` on the optimistic view. On success the command joins
    /// the outbox and its events are returned for the UI; a locally invalid
    /// command is refused and never sent.
    pub fn submit(
        &mut self,
        command_id: Uuid,
        aggregate_id: Uuid,
        command: A::Command,
    ) -> Result<Vec<A::Event>, A::Error> {
        let view = self.view(aggregate_id);
        let events = view.handle(&command)?;
        self.outbox.push_back(PendingCommand {
            command_id,
            aggregate_id,
            expected_version: view.version(),
            command,
        });
        Ok(events)
    }

    /// Folds one event of the authority into the confirmed state.
    pub fn receive(
        &mut self,
        envelope: &EventEnvelope,
        source: Source,
    ) -> Result<Received, SyncError> {
        if envelope.aggregate_type != A::TYPE {
            return Err(SyncError::WrongAggregateType {
                global_sequence: envelope.global_sequence,
                found: envelope.aggregate_type.clone(),
                expected: A::TYPE,
            });
        }
        let have_version = self
            .confirmed
            .get(&envelope.aggregate_id)
            .map_or(0, A::version);
        let outcome = if envelope.aggregate_sequence <= have_version {
            Received::Duplicate
        } else if envelope.aggregate_sequence > have_version + 1 {
            Received::Gap {
                aggregate_id: envelope.aggregate_id,
                have_version,
            }
        } else {
            let event = envelope
                .decode::<A>()
                .map_err(|source| SyncError::Undecodable {
                    global_sequence: envelope.global_sequence,
                    source,
                })?;
            self.confirmed
                .entry(envelope.aggregate_id)
                .or_default()
                .apply(&event);
            // The authority applied this command: it is no longer pending.
            self.outbox
                .retain(|p| p.command_id != envelope.metadata.command_id);
            Received::Applied
        };
        if source == Source::Feed && !matches!(outcome, Received::Gap { .. }) {
            self.last_global_sequence = self.last_global_sequence.max(envelope.global_sequence);
        }
        Ok(outcome)
    }

    /// The authority accepted `command_id` (200) with `events` (possibly
    /// none, for a command that changed nothing). Gaps are reported so the
    /// shell can fetch what is missing.
    pub fn accepted(
        &mut self,
        command_id: Uuid,
        events: &[EventEnvelope],
    ) -> Result<Vec<Received>, SyncError> {
        let outcomes = events
            .iter()
            .map(|event| self.receive(event, Source::Fetch))
            .collect::<Result<Vec<_>, _>>()?;
        if !outcomes.iter().any(|o| matches!(o, Received::Gap { .. })) {
            self.outbox.retain(|p| p.command_id != command_id);
        }
        Ok(outcomes)
    }

    /// The authority refused `command_id` (400, 403, 422, …): it leaves the
    /// outbox, and the commands after it on the same aggregate are re-decided.
    pub fn rejected(
        &mut self,
        command_id: Uuid,
        reason: impl Into<String>,
    ) -> Vec<Rejection<A::Command>> {
        let Some(index) = self.outbox.iter().position(|p| p.command_id == command_id) else {
            return Vec::new();
        };
        let pending = self.outbox.remove(index).expect("index is in range");
        let aggregate_id = pending.aggregate_id;
        let mut rejections = vec![Rejection {
            pending,
            reason: reason.into(),
        }];
        rejections.extend(self.rebase(aggregate_id));
        rejections
    }

    /// Re-decides every pending command of `aggregate_id` on the confirmed
    /// state, in order (after a 409, once the missing events were received).
    /// Still-valid commands get a new expected version; the others leave the
    /// outbox and are returned, to be reported to the user.
    pub fn rebase(&mut self, aggregate_id: Uuid) -> Vec<Rejection<A::Command>> {
        let mut state = self
            .confirmed
            .get(&aggregate_id)
            .cloned()
            .unwrap_or_default();
        let mut rejections = Vec::new();
        self.outbox.retain_mut(|pending| {
            if pending.aggregate_id != aggregate_id {
                return true;
            }
            match state.execute(&pending.command) {
                Ok((next, _)) => {
                    pending.expected_version = state.version();
                    state = next;
                    true
                }
                Err(error) => {
                    rejections.push(Rejection {
                        pending: pending.clone(),
                        reason: error.to_string(),
                    });
                    false
                }
            }
        });
        rejections
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::envelope::EventMetadata;
    use crate::session::{QuerySession, SessionCommand, SessionEvent};
    use crate::values::SessionTitle;

    fn title(s: &str) -> SessionTitle {
        SessionTitle::new(s).unwrap()
    }

    fn envelope(
        global: u64,
        aggregate_id: Uuid,
        seq: u64,
        command_id: Uuid,
        event: &SessionEvent,
    ) -> EventEnvelope {
        let mut e = EventEnvelope::new::<QuerySession>(
            Uuid::from_u128(global as u128 + 1000),
            aggregate_id,
            seq,
            event,
            EventMetadata {
                command_id,
                ..Default::default()
            },
            Utc.timestamp_opt(0, 0).unwrap(),
        );
        e.global_sequence = global;
        e
    }

    /// A replica that created session 1 (command 10) and renamed it to "b"
    /// (command 11), neither confirmed yet.
    fn created_then_renamed_offline() -> (Replica<QuerySession>, Uuid, Uuid) {
        let mut replica = Replica::<QuerySession>::new();
        let (session, create) = (Uuid::from_u128(1), Uuid::from_u128(10));
        let create_session = SessionCommand::CreateSession { title: title("a") };
        replica.submit(create, session, create_session).unwrap();
        let rename = SessionCommand::RenameSession { title: title("b") };
        replica
            .submit(Uuid::from_u128(11), session, rename)
            .unwrap();
        (replica, session, create)
    }

    #[test]
    fn submit_decides_on_the_optimistic_view() {
        let (mut replica, session, _) = created_then_renamed_offline();
        assert_eq!(replica.outbox()[0].expected_version, 0);
        assert_eq!(replica.outbox()[1].expected_version, 1);
        assert_eq!(replica.view(session).title, Some(title("b")));
        assert!(replica.confirmed(session).is_none());

        // Locally invalid: never enters the outbox.
        let err = replica
            .submit(
                Uuid::from_u128(12),
                session,
                SessionCommand::CreateSession { title: title("c") },
            )
            .unwrap_err();
        assert_eq!(err, crate::session::SessionError::AlreadyCreated);
        assert_eq!(replica.outbox().len(), 2);
    }

    #[test]
    fn feed_events_confirm_and_drop_pending_commands() {
        let mut replica = Replica::<QuerySession>::new();
        let session = Uuid::from_u128(1);
        let cmd = Uuid::from_u128(10);
        replica
            .submit(
                cmd,
                session,
                SessionCommand::CreateSession { title: title("a") },
            )
            .unwrap();
        let created = SessionEvent::SessionCreated {
            title: title("a"),
            owner: crate::UserId::OWNER,
        };
        let e1 = envelope(5, session, 1, cmd, &created);
        assert_eq!(
            replica.receive(&e1, Source::Feed).unwrap(),
            Received::Applied
        );
        assert!(replica.outbox().is_empty());
        assert_eq!(replica.last_global_sequence(), 5);
        assert_eq!(
            replica.receive(&e1, Source::Feed).unwrap(),
            Received::Duplicate
        );

        let gap = envelope(
            9,
            session,
            3,
            Uuid::from_u128(20),
            &SessionEvent::SessionClosed {},
        );
        assert_eq!(
            replica.receive(&gap, Source::Feed).unwrap(),
            Received::Gap {
                aggregate_id: session,
                have_version: 1
            }
        );
        assert_eq!(
            replica.last_global_sequence(),
            5,
            "a gap does not move the cursor"
        );
    }

    #[test]
    fn fetched_events_do_not_move_the_feed_cursor() {
        let mut replica = Replica::<QuerySession>::new();
        let session = Uuid::from_u128(1);
        let created = SessionEvent::SessionCreated {
            title: title("a"),
            owner: crate::UserId::OWNER,
        };
        replica
            .receive(
                &envelope(7, session, 1, Uuid::from_u128(3), &created),
                Source::Fetch,
            )
            .unwrap();
        assert_eq!(replica.last_global_sequence(), 0);
    }

    #[test]
    fn conflicts_rebase_or_reject_pending_commands() {
        let mut replica = Replica::<QuerySession>::new();
        let session = Uuid::from_u128(1);
        let created = SessionEvent::SessionCreated {
            title: title("a"),
            owner: crate::UserId::OWNER,
        };
        replica
            .receive(
                &envelope(1, session, 1, Uuid::from_u128(2), &created),
                Source::Feed,
            )
            .unwrap();
        let rename = Uuid::from_u128(10);
        let close = Uuid::from_u128(11);
        replica
            .submit(
                rename,
                session,
                SessionCommand::RenameSession { title: title("b") },
            )
            .unwrap();
        replica
            .submit(close, session, SessionCommand::CloseSession {})
            .unwrap();

        // Someone else renamed first: both of ours are still valid, one version later.
        let foreign = SessionEvent::SessionRenamed { title: title("z") };
        replica
            .receive(
                &envelope(2, session, 2, Uuid::from_u128(99), &foreign),
                Source::Fetch,
            )
            .unwrap();
        assert!(replica.rebase(session).is_empty());
        let versions: Vec<u64> = replica
            .outbox()
            .iter()
            .map(|p| p.expected_version)
            .collect();
        assert_eq!(versions, vec![2, 3]);

        // Someone else closed the session: both of ours are now invalid.
        replica
            .receive(
                &envelope(
                    3,
                    session,
                    3,
                    Uuid::from_u128(98),
                    &SessionEvent::SessionClosed {},
                ),
                Source::Fetch,
            )
            .unwrap();
        let rejected = replica.rebase(session);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].pending.command_id, rename);
        assert_eq!(rejected[0].reason, "the session is closed");
        assert!(replica.outbox().is_empty());
    }

    #[test]
    fn a_rejection_rebases_what_followed() {
        let (mut replica, _, create) = created_then_renamed_offline();
        // The authority refused the creation: the rename cannot stand either.
        let rejected = replica.rejected(create, "forbidden");
        assert_eq!(rejected.len(), 2);
        assert_eq!(
            rejected[1].reason,
            "the session does not exist yet; create it first"
        );
    }
}
