//! The sync core: a replica of the authority's event log plus an outbox of
//! commands the authority has not confirmed yet. Pure state transitions, no
//! I/O, so the browser runs it and native tests simulate it. The protocol
//! and the reasoning behind it are in `docs/SYNC.md`.
//!
//! The shell (the browser app) feeds it what happened on the wire:
//! - the user acts: [`Replica::submit`] decides on the optimistic view; a
//!   locally invalid command never enters the outbox. The pending command
//!   remembers its exact base: the version *and* the command that produced
//!   the event at that version;
//! - an event arrives on the SSE feed: [`Replica::receive`] with
//!   [`Source::Feed`]; one that answers a pending command removes it; one
//!   that leaves a gap goes into the gap ledger ([`Replica::gaps`]) and holds
//!   the resume cursor back until a fetch fills it;
//! - the authority answers a command, classified by [`answers`]: 200 ->
//!   [`Replica::accepted`], 409 -> [`Replica::conflict`] (fetch, receive with
//!   [`Source::Fetch`], then [`Replica::rebase`]), a refusal ->
//!   [`Replica::rejected`]. A refusal or a conflict counts only if the
//!   pending command still has the version and base it was sent with;
//!   otherwise the answer is about a decision the replica has since replaced.
//!
//! Why a resend is always safe: a command keeps its `command_id` across
//! rebases, and the authority answers a known `command_id` with its original
//! result. The authority appends a command only on the exact base it was
//! decided on ([`base::check_base`]); a replica's next command names the
//! previous one as its base, so a replica's commands on one aggregate are
//! applied in the order they were made even when requests are reordered or
//! a request given up on arrives late.

pub mod answers;
pub mod base;
pub mod context;
pub mod identity;
mod mutants;
pub mod orphans;
pub mod shell;

use mutants::{active, Mutant};

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::envelope::{CommandEnvelope, EventEnvelope};
use crate::upcast::UpcastError;

pub use identity::Witness;

#[cfg(test)]
mod multi_user;
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
    /// The previous pending command of the same aggregate, or, if there is
    /// none, the command that produced the last confirmed event. When the
    /// previous pending command produced the event at `expected_version` on
    /// the view, the authority appends this one right after it. When it
    /// produced none there (it changes nothing, or it no longer decides on
    /// the view after a foreign event or a reset), no head of the authority
    /// matches: this command conflicts until the previous one is settled
    /// (applied or rejected) and a rebase re-decided this one after it. So a
    /// command never lands before an earlier one of the same replica, which
    /// a later rebase would then apply after it.
    /// `None` at version 0 with nothing pending, and in rows stored before
    /// bases existed (they get one at the next rebase; until then the
    /// authority checks the number only).
    #[serde(default)]
    pub base_command: Option<Uuid>,
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
            base_command: self.base_command,
            command: self.command.clone(),
        }
    }

    /// Whether this pending command is still the decision `sent` carried:
    /// same version, same base. An answer to an older decision is stale.
    pub fn is_decision_of<D>(&self, sent: &CommandEnvelope<D>) -> bool {
        self.command_id == sent.command_id
            && self.expected_version == sent.expected_version
            && self.base_command == sent.base_command
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
    /// This replica holds another event at this position: the authority is
    /// not the history it confirmed (a restored store that grew again).
    /// Reset ([`Replica::reset`]).
    Diverged,
    /// Events are missing before this one: fetch the aggregate's events
    /// after `have_version`, then receive them with [`Source::Fetch`]. The
    /// aggregate is in the gap ledger until they arrive.
    Gap {
        aggregate_id: Uuid,
        have_version: u64,
    },
}

/// What the shell does about a 409 ([`Replica::conflict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictStep {
    /// Fetch the aggregate's events after `have_version` (from one earlier:
    /// see [`Replica::fetch_from`]), receive them with [`Source::Fetch`],
    /// then [`Replica::rebase`] it.
    CatchUp {
        aggregate_id: Uuid,
        have_version: u64,
    },
    /// The answer is about a decision the replica has replaced: ignore it.
    Stale,
    /// The authority is behind what this replica holds as confirmed: its
    /// store was restored or recreated. Reset ([`Replica::reset`]).
    Reset,
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

/// An aggregate whose feed event could not be applied yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The global sequence of the first feed event not applied: the resume
    /// cursor stays below it.
    pub global_sequence: u64,
    /// The aggregate sequence that event has: the gap is filled once the
    /// confirmed version reaches it.
    pub aggregate_sequence: u64,
}

/// One replica of the authority's state for aggregates of type `A`.
#[derive(Debug, Clone)]
pub struct Replica<A: Aggregate> {
    confirmed: BTreeMap<Uuid, A>,
    /// The command that produced each aggregate's last confirmed event.
    heads: BTreeMap<Uuid, Uuid>,
    /// The highest global sequence received from the feed.
    feed_high: u64,
    /// Aggregates with feed events not applied yet (the gap ledger).
    gaps: BTreeMap<Uuid, Gap>,
    witness: Option<Witness>,
    outbox: VecDeque<PendingCommand<A::Command>>,
}

impl<A: Aggregate> Default for Replica<A> {
    fn default() -> Self {
        Self {
            confirmed: BTreeMap::new(),
            heads: BTreeMap::new(),
            feed_high: 0,
            gaps: BTreeMap::new(),
            witness: None,
            outbox: VecDeque::new(),
        }
    }
}

impl<A: Aggregate> Replica<A> {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// A replica with nothing confirmed whose feed resumes after
    /// `last_global_sequence` (a fresh tab bootstrapping from a read model).
    /// `witness` is the event at that sequence: the feed's hello proves
    /// with it that the store still has the history the cursor skips.
    pub fn starting_at(last_global_sequence: u64, witness: Option<Witness>) -> Self {
        Self {
            feed_high: last_global_sequence,
            witness,
            ..Self::default()
        }
    }

    /// Sets what the shell persisted besides the confirmed events (which it
    /// restores with [`Replica::receive`] and [`Source::Fetch`] first): the
    /// feed cursor, the gap ledger and the witness.
    pub fn resume(
        &mut self,
        last_global_sequence: u64,
        gaps: impl IntoIterator<Item = (Uuid, Gap)>,
        witness: Option<Witness>,
    ) {
        self.feed_high = last_global_sequence;
        self.gaps = gaps.into_iter().collect();
        self.gaps.retain(|id, gap| {
            self.confirmed.get(id).map_or(0, A::version) < gap.aggregate_sequence
        });
        if witness.map(|w| w.global_sequence) > self.witness.map(|w| w.global_sequence) {
            self.witness = witness;
        }
    }

    /// Replaces the outbox (restored from storage, or merged with what other
    /// tabs stored), in the order the commands were made. Rows without a
    /// base, written before bases existed, get one if their version is the
    /// one a rebase would give them.
    pub fn replace_outbox(&mut self, outbox: impl IntoIterator<Item = PendingCommand<A::Command>>) {
        self.outbox = outbox.into_iter().collect();
        let ids: Vec<Uuid> = self.aggregate_ids();
        for aggregate_id in ids {
            self.assign_missing_bases(aggregate_id);
        }
    }

    fn assign_missing_bases(&mut self, aggregate_id: Uuid) {
        let mut state = self.confirmed(aggregate_id).cloned().unwrap_or_default();
        let mut base = self.heads.get(&aggregate_id).copied();
        for pending in self
            .outbox
            .iter_mut()
            .filter(|p| p.aggregate_id == aggregate_id)
        {
            if pending.base_command.is_none() && pending.expected_version == state.version() {
                pending.base_command = base;
            }
            if let Ok((next, _)) = state.execute(&pending.command) {
                state = next;
            }
            base = Some(pending.command_id);
        }
    }

    /// The feed's resume cursor: the highest global sequence received from
    /// the feed, but never past a feed event that could not be applied yet.
    pub fn last_global_sequence(&self) -> u64 {
        self.gaps
            .values()
            .map(|gap| gap.global_sequence - 1)
            .fold(self.feed_high, u64::min)
    }

    /// The gap ledger: aggregates to catch up, with the version held now.
    pub fn gaps(&self) -> Vec<(Uuid, Gap)> {
        self.gaps.iter().map(|(id, gap)| (*id, *gap)).collect()
    }

    /// The witness: the highest-sequenced event held, from any source.
    pub fn witness(&self) -> Option<Witness> {
        self.witness
    }

    /// After a complete fetch of `aggregate_id`'s events (received with
    /// [`Source::Fetch`]): whether the ledger still waits for one of them.
    /// The feed delivered that event, and the authority's log no longer has
    /// it: the store lost events (restored from an older backup). Reset.
    pub fn gap_lost(&self, aggregate_id: Uuid) -> bool {
        self.gaps.contains_key(&aggregate_id)
    }

    /// Commands not yet confirmed, in the order they must be sent.
    pub fn outbox(&self) -> &VecDeque<PendingCommand<A::Command>> {
        &self.outbox
    }

    /// The authority's state of one aggregate as far as this replica knows.
    pub fn confirmed(&self, aggregate_id: Uuid) -> Option<&A> {
        self.confirmed.get(&aggregate_id)
    }

    /// The command that produced the last confirmed event of `aggregate_id`.
    pub fn head(&self, aggregate_id: Uuid) -> Option<Uuid> {
        self.heads.get(&aggregate_id).copied()
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
        self.view_and_base(aggregate_id).0
    }

    /// The view and the base a command decided on it gets: the last pending
    /// command of the aggregate, else the last confirmed one.
    fn view_and_base(&self, aggregate_id: Uuid) -> (A, Option<Uuid>) {
        let mut state = self
            .confirmed
            .get(&aggregate_id)
            .cloned()
            .unwrap_or_default();
        let mut base = self.heads.get(&aggregate_id).copied();
        for pending in self.pending_for(aggregate_id) {
            if let Ok((next, _)) = state.execute(&pending.command) {
                state = next;
            }
            // Even one that changed nothing or no longer decides on the view:
            // the authority must not append the next command before this one
            // is settled (see `PendingCommand::base_command`).
            base = Some(pending.command_id);
        }
        (state, base)
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
        self.submit_decided(command_id, aggregate_id, command, A::handle)
    }

    /// [`Replica::submit`] with the shell's own decision on the view, for
    /// facts the aggregate alone lacks (the browser's
    /// `decision::decide` with the context it knows: the signed-in user,
    /// the query ids of its other sessions, the catalog it loaded).
    pub fn submit_decided<E>(
        &mut self,
        command_id: Uuid,
        aggregate_id: Uuid,
        command: A::Command,
        decide: impl FnOnce(&A, &A::Command) -> Result<Vec<A::Event>, E>,
    ) -> Result<Vec<A::Event>, E> {
        let (view, base) = self.view_and_base(aggregate_id);
        let events = decide(&view, &command)?;
        self.outbox.push_back(PendingCommand {
            command_id,
            aggregate_id,
            expected_version: view.version(),
            base_command: base,
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
        let aggregate_id = envelope.aggregate_id;
        let have_version = self.confirmed.get(&aggregate_id).map_or(0, A::version);
        let outcome = if envelope.aggregate_sequence == have_version
            && self.heads.get(&aggregate_id) != Some(&envelope.metadata.command_id)
        {
            Received::Diverged
        } else if envelope.aggregate_sequence <= have_version {
            Received::Duplicate
        } else if envelope.aggregate_sequence > have_version + 1 {
            if source == Source::Feed && !active(Mutant::GapSkipped) {
                // Recorded before the cursor moves past it: the cursor stays
                // below the first feed event of the aggregate not applied.
                self.gaps.entry(aggregate_id).or_insert(Gap {
                    global_sequence: envelope.global_sequence,
                    aggregate_sequence: envelope.aggregate_sequence,
                });
            }
            Received::Gap {
                aggregate_id,
                have_version,
            }
        } else {
            let event = envelope
                .decode::<A>()
                .map_err(|source| SyncError::Undecodable {
                    global_sequence: envelope.global_sequence,
                    source,
                })?;
            let state = self.confirmed.entry(aggregate_id).or_default();
            let finished = self
                .outbox
                .iter()
                .find(|p| p.command_id == envelope.metadata.command_id)
                .is_some_and(|pending| is_last_event_of(state, &pending.command));
            state.apply(&event);
            let version = state.version();
            self.heads
                .insert(aggregate_id, envelope.metadata.command_id);
            if self
                .gaps
                .get(&aggregate_id)
                .is_some_and(|gap| version >= gap.aggregate_sequence)
            {
                self.gaps.remove(&aggregate_id);
            }
            // The authority applied this command: it is no longer pending
            // once its last event is in. A cut between two events of one
            // command (`CloseSession` with an active query) keeps it, so the
            // view still shows it; its resend is answered with both events.
            if finished || active(Mutant::FirstEventFinishes) {
                self.outbox
                    .retain(|p| p.command_id != envelope.metadata.command_id);
            }
            Received::Applied
        };
        if outcome == Received::Applied {
            let held = Witness::of(envelope);
            if self
                .witness
                .is_none_or(|w| w.global_sequence < held.global_sequence)
            {
                self.witness = Some(held);
            }
        }
        if source == Source::Feed || active(Mutant::FetchMovesCursor) {
            self.feed_high = self.feed_high.max(envelope.global_sequence);
        }
        Ok(outcome)
    }

    /// The authority accepted `sent` (200) with `events` (possibly none, for
    /// a command that changed nothing). An acceptance is never stale: a
    /// command id is applied at most once, so its events are the truth
    /// whatever base it was sent with. The command leaves the outbox unless
    /// the events leave a gap (then it stays, and the view keeps showing it,
    /// until the fetch that fills the gap brings its events).
    pub fn accepted<C>(
        &mut self,
        sent: &CommandEnvelope<C>,
        events: &[EventEnvelope],
    ) -> Result<Vec<Received>, SyncError> {
        let outcomes = events
            .iter()
            .map(|event| self.receive(event, Source::Fetch))
            .collect::<Result<Vec<_>, _>>()?;
        if !outcomes.iter().any(|o| matches!(o, Received::Gap { .. })) {
            self.outbox.retain(|p| p.command_id != sent.command_id);
        }
        Ok(outcomes)
    }

    /// The authority refused `sent` (400, 403, 404, 413, 422): if the pending
    /// command is still that decision, it leaves the outbox and the commands
    /// after it on the same aggregate are re-decided. A refusal of a decision
    /// the replica has replaced (rebased since) is ignored: empty result.
    pub fn rejected<C>(
        &mut self,
        sent: &CommandEnvelope<C>,
        reason: impl Into<String>,
    ) -> Vec<Rejection<A::Command>> {
        let Some(index) = self.outbox.iter().position(|p| {
            p.is_decision_of(sent)
                || active(Mutant::StaleRefusalAccepted) && p.command_id == sent.command_id
        }) else {
            return Vec::new();
        };
        if active(Mutant::RejectionReportedTwice) {
            let pending = self.outbox[index].clone();
            return vec![Rejection {
                pending,
                reason: reason.into(),
            }];
        }
        let pending = self.outbox.remove(index).expect("index is in range");
        let aggregate_id = pending.aggregate_id;
        let mut rejections = vec![Rejection {
            pending,
            reason: reason.into(),
        }];
        rejections.extend(self.rebase(aggregate_id));
        rejections
    }

    /// The authority answered 409 to `sent`, at `current_version` whose
    /// last event `current_command` produced (if it said). A version below
    /// what this replica holds confirmed, or the same version from another
    /// command, means the authority lost events: reset. Otherwise catch up
    /// and rebase, unless the pending command was rebased since it was sent.
    pub fn conflict<C>(
        &self,
        sent: &CommandEnvelope<C>,
        current_version: Option<u64>,
        current_command: Option<Uuid>,
    ) -> ConflictStep {
        let have_version = self.confirmed.get(&sent.aggregate_id).map_or(0, A::version);
        let other_head = current_command.is_some()
            && current_command != self.heads.get(&sent.aggregate_id).copied();
        if current_version.is_some_and(|current| {
            current < have_version || current == have_version && have_version > 0 && other_head
        }) {
            return ConflictStep::Reset;
        }
        if !self.outbox.iter().any(|p| p.is_decision_of(sent)) {
            return ConflictStep::Stale;
        }
        ConflictStep::CatchUp {
            aggregate_id: sent.aggregate_id,
            have_version,
        }
    }

    /// The `after_version` to fetch `aggregate_id`'s missing events with:
    /// one before the version held, so the first event fetched is the last
    /// one held and proves the histories agree (else [`Received::Diverged`]).
    pub fn fetch_from(&self, aggregate_id: Uuid) -> u64 {
        self.confirmed
            .get(&aggregate_id)
            .map_or(0, A::version)
            .saturating_sub(1)
    }

    /// Re-decides every pending command of `aggregate_id` on the confirmed
    /// state, in order (after a 409, once the missing events were received).
    /// Still-valid commands get a new expected version and base; the others
    /// leave the outbox and are returned, to be reported to the user.
    pub fn rebase(&mut self, aggregate_id: Uuid) -> Vec<Rejection<A::Command>> {
        let mut state = self
            .confirmed
            .get(&aggregate_id)
            .cloned()
            .unwrap_or_default();
        let mut base = self.heads.get(&aggregate_id).copied();
        let mut rejections = Vec::new();
        self.outbox.retain_mut(|pending| {
            if pending.aggregate_id != aggregate_id {
                return true;
            }
            match state.execute(&pending.command) {
                Ok((next, _)) => {
                    pending.expected_version = state.version();
                    pending.base_command = base;
                    // The next command waits for this one, even if it
                    // changes nothing (`PendingCommand::base_command`).
                    base = Some(pending.command_id);
                    state = next;
                    true
                }
                Err(error) => {
                    // The rejection names the base it was refused on.
                    let mut refused = pending.clone();
                    refused.expected_version = state.version();
                    refused.base_command = base;
                    rejections.push(Rejection {
                        pending: refused,
                        reason: error.to_string(),
                    });
                    false
                }
            }
        });
        rejections
    }

    /// The authority is not the one this replica's confirmed state came from
    /// (another store, or a restored one that lost events): forget everything
    /// confirmed, the cursor, the gaps and the witness, and keep the pending
    /// commands. The shell then reads the feed from the start; each pending
    /// command is rebased when the authority answers it with a conflict, or
    /// is applied if the authority holds exactly its base.
    pub fn reset(&mut self) {
        self.confirmed.clear();
        self.heads.clear();
        self.feed_high = 0;
        self.gaps.clear();
        self.witness = None;
    }
}

/// Whether the event about to be applied on `state` is the last one
/// `command` produces. The events of one command are appended together, so
/// deciding the command again on the state before one of its events says
/// how many are still to come: on its first event that is exactly the
/// state the authority decided on. A command that no longer decides here
/// counts as finished (the authority's later events tell the rest). Getting
/// this wrong the other way only costs a resend, which the authority
/// answers with the command's original events.
fn is_last_event_of<A: Aggregate>(state: &A, command: &A::Command) -> bool {
    state
        .handle(command)
        .map_or(true, |events| events.len() <= 1)
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
            8,
            "the cursor stays below the event not applied"
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
        let sent = replica.outbox()[0].envelope::<QuerySession>();
        assert_eq!(sent.command_id, create);
        let rejected = replica.rejected(&sent, "forbidden");
        assert_eq!(rejected.len(), 2);
        assert_eq!(
            rejected[1].reason,
            "the session does not exist yet; create it first"
        );
    }

    fn rename(t: &str) -> SessionCommand {
        SessionCommand::RenameSession { title: title(t) }
    }

    /// A replica holding session 1 confirmed at version 1 (created by command 2).
    fn confirmed_session() -> (Replica<QuerySession>, Uuid) {
        let mut replica = Replica::<QuerySession>::new();
        let session = Uuid::from_u128(1);
        let created = SessionEvent::SessionCreated {
            title: title("a"),
            owner: crate::access::UserId::OWNER,
        };
        replica
            .receive(
                &envelope(1, session, 1, Uuid::from_u128(2), &created),
                Source::Feed,
            )
            .unwrap();
        (replica, session)
    }

    /// `CloseSession` with an active query is two events. The feed is cut
    /// after the first: the command stays pending (the view still shows
    /// the session closed) until the second arrives, and its resend,
    /// answered with both, applies nothing twice.
    #[test]
    fn a_command_leaves_the_outbox_with_its_last_event() {
        let (mut replica, session) = confirmed_session();
        let query_id = crate::values::QueryId(Uuid::from_u128(0x51));
        let submitted = SessionEvent::QuerySubmitted {
            query_id,
            sql: crate::values::SqlQuery::new("SELECT 1").unwrap(),
            engine: crate::values::Engine::Local,
        };
        replica
            .receive(
                &envelope(2, session, 2, Uuid::from_u128(3), &submitted),
                Source::Feed,
            )
            .unwrap();
        let close = Uuid::from_u128(10);
        let events = replica
            .submit(close, session, SessionCommand::CloseSession {})
            .unwrap();
        assert_eq!(events.len(), 2, "cancel the active query, then close");
        let sent = replica.outbox()[0].envelope::<QuerySession>();
        let cancelled = envelope(
            3,
            session,
            3,
            close,
            &SessionEvent::QueryCancelled { query_id },
        );
        let closed = envelope(4, session, 4, close, &SessionEvent::SessionClosed {});

        replica.receive(&cancelled, Source::Feed).unwrap();
        assert!(replica.has_pending(session), "half of the answer is in");
        assert_eq!(
            replica.view(session).lifecycle,
            crate::session::Lifecycle::Closed,
            "the view still shows the close"
        );
        assert_eq!(replica.last_global_sequence(), 3);

        // The resend after the cut is answered with both events.
        let outcomes = replica
            .accepted(&sent, &[cancelled.clone(), closed.clone()])
            .unwrap();
        assert_eq!(outcomes, vec![Received::Duplicate, Received::Applied]);
        assert!(!replica.has_pending(session));
        assert_eq!(replica.confirmed(session).unwrap().version(), 4);

        // The feed's second event, later, changes nothing.
        assert_eq!(
            replica.receive(&closed, Source::Feed).unwrap(),
            Received::Duplicate
        );

        // A replica rebuilt between the two events (its row kept) finishes
        // the command with the second one.
        let (mut rebuilt, _) = confirmed_session();
        for event in [
            envelope(2, session, 2, Uuid::from_u128(3), &submitted),
            cancelled,
        ] {
            rebuilt.receive(&event, Source::Fetch).unwrap();
        }
        rebuilt.replace_outbox([replica_row(&sent)]);
        assert!(rebuilt.has_pending(session));
        rebuilt.receive(&closed, Source::Feed).unwrap();
        assert!(!rebuilt.has_pending(session));
    }

    fn replica_row(sent: &CommandEnvelope<SessionCommand>) -> PendingCommand<SessionCommand> {
        PendingCommand {
            command_id: sent.command_id,
            aggregate_id: sent.aggregate_id,
            expected_version: sent.expected_version,
            base_command: sent.base_command,
            command: sent.command.clone(),
        }
    }

    #[test]
    fn a_pending_command_names_its_exact_base() {
        let (replica, session, create) = created_then_renamed_offline();
        assert_eq!(
            replica.outbox()[0].base_command,
            None,
            "absent at version 0"
        );
        assert_eq!(replica.outbox()[1].base_command, Some(create));
        let sent = replica.outbox()[1].envelope::<QuerySession>();
        assert_eq!(sent.base_command, Some(create));

        let (mut replica, session2) = confirmed_session();
        replica
            .submit(Uuid::from_u128(10), session2, rename("b"))
            .unwrap();
        assert_eq!(replica.head(session2), Some(Uuid::from_u128(2)));
        assert_eq!(replica.outbox()[0].base_command, Some(Uuid::from_u128(2)));

        // A foreign event moves the head; the rebase takes the new base.
        let foreign = SessionEvent::SessionRenamed { title: title("z") };
        replica
            .receive(
                &envelope(2, session2, 2, Uuid::from_u128(99), &foreign),
                Source::Fetch,
            )
            .unwrap();
        assert!(replica.rebase(session2).is_empty());
        assert_eq!(replica.outbox()[0].expected_version, 2);
        assert_eq!(replica.outbox()[0].base_command, Some(Uuid::from_u128(99)));
        let _ = session;
    }

    /// Issue 9, first edge: a refusal decided on a base the replica has since
    /// replaced must not reject the rebased command.
    #[test]
    fn a_stale_refusal_is_ignored_after_a_rebase() {
        let (mut replica, session) = confirmed_session();
        replica
            .submit(Uuid::from_u128(10), session, rename("b"))
            .unwrap();
        replica
            .submit(Uuid::from_u128(11), session, rename("c"))
            .unwrap();
        let sent: Vec<_> = replica
            .outbox()
            .iter()
            .map(|p| p.envelope::<QuerySession>())
            .collect();

        // The first conflicts: another replica renamed first.
        assert_eq!(
            replica.conflict(&sent[0], Some(2), Some(Uuid::from_u128(99))),
            ConflictStep::CatchUp {
                aggregate_id: session,
                have_version: 1
            }
        );
        let foreign = SessionEvent::SessionRenamed { title: title("z") };
        replica
            .receive(
                &envelope(2, session, 2, Uuid::from_u128(99), &foreign),
                Source::Fetch,
            )
            .unwrap();
        assert!(replica.rebase(session).is_empty());

        // The second's answer was decided on the old base: stale.
        assert!(replica.rejected(&sent[1], "stale refusal").is_empty());
        assert_eq!(
            replica.conflict(&sent[1], Some(2), Some(Uuid::from_u128(99))),
            ConflictStep::Stale
        );
        assert_eq!(replica.outbox().len(), 2);

        // The same refusal of the current decision counts.
        let current = replica.outbox()[1].envelope::<QuerySession>();
        assert_eq!(current.expected_version, 3);
        let rejected = replica.rejected(&current, "refused");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].pending.command_id, Uuid::from_u128(11));
        assert_eq!(replica.outbox().len(), 1);
    }

    #[test]
    fn a_conflict_below_the_confirmed_version_means_reset() {
        let (mut replica, session) = confirmed_session();
        replica
            .submit(Uuid::from_u128(10), session, rename("b"))
            .unwrap();
        let sent = replica.outbox()[0].envelope::<QuerySession>();
        assert_eq!(replica.conflict(&sent, Some(0), None), ConflictStep::Reset);
        assert_eq!(
            replica.conflict(&sent, Some(1), Some(Uuid::from_u128(77))),
            ConflictStep::Reset,
            "same length, another history"
        );
        assert_eq!(
            replica.conflict(&sent, None, None),
            ConflictStep::CatchUp {
                aggregate_id: session,
                have_version: 1
            }
        );
        assert_eq!(
            replica.conflict(&sent, Some(1), Some(Uuid::from_u128(2))),
            ConflictStep::CatchUp {
                aggregate_id: session,
                have_version: 1
            },
            "same version, another base"
        );

        replica.reset();
        assert!(replica.confirmed(session).is_none());
        assert_eq!(replica.head(session), None);
        assert_eq!(replica.last_global_sequence(), 0);
        assert_eq!(replica.witness(), None);
        assert_eq!(replica.outbox().len(), 1, "pending work survives a reset");
    }

    #[test]
    fn an_acceptance_with_a_gap_keeps_the_command_until_its_events_arrive() {
        let (mut replica, session) = confirmed_session();
        let cmd = Uuid::from_u128(10);
        replica.submit(cmd, session, rename("b")).unwrap();
        let sent = replica.outbox()[0].envelope::<QuerySession>();
        // The authority applied it at version 3: version 2 is missing here.
        let renamed = SessionEvent::SessionRenamed { title: title("b") };
        let outcomes = replica
            .accepted(&sent, &[envelope(4, session, 3, cmd, &renamed)])
            .unwrap();
        assert_eq!(
            outcomes,
            vec![Received::Gap {
                aggregate_id: session,
                have_version: 1
            }]
        );
        assert!(replica.has_pending(session), "the view keeps the rename");
        assert_eq!(replica.view(session).title, Some(title("b")));
        assert!(replica.gaps().is_empty(), "answers are not the feed");

        let foreign = SessionEvent::SessionRenamed { title: title("z") };
        replica
            .receive(
                &envelope(3, session, 2, Uuid::from_u128(99), &foreign),
                Source::Fetch,
            )
            .unwrap();
        replica
            .receive(&envelope(4, session, 3, cmd, &renamed), Source::Fetch)
            .unwrap();
        assert!(!replica.has_pending(session));
        assert_eq!(replica.confirmed(session).unwrap().title, Some(title("b")));

        // Without a gap, an acceptance drops the command at once.
        replica
            .submit(Uuid::from_u128(12), session, rename("c"))
            .unwrap();
        let sent = replica.outbox()[0].envelope::<QuerySession>();
        let renamed = SessionEvent::SessionRenamed { title: title("c") };
        let outcomes = replica
            .accepted(
                &sent,
                &[envelope(5, session, 4, Uuid::from_u128(12), &renamed)],
            )
            .unwrap();
        assert_eq!(outcomes, vec![Received::Applied]);
        assert!(replica.outbox().is_empty());
        // A command that changed nothing is dropped too.
        replica
            .submit(Uuid::from_u128(13), session, rename("d"))
            .unwrap();
        let sent = replica.outbox()[0].envelope::<QuerySession>();
        assert_eq!(replica.accepted(&sent, &[]).unwrap(), vec![]);
        assert!(replica.outbox().is_empty());
    }

    #[test]
    fn the_cursor_never_passes_a_feed_event_not_applied() {
        let (mut replica, session) = confirmed_session();
        let other = Uuid::from_u128(5);
        let renamed = SessionEvent::SessionRenamed { title: title("b") };
        // Session 1's event 3 arrives at global 10; its event 2 was missed.
        assert!(matches!(
            replica
                .receive(
                    &envelope(10, session, 3, Uuid::from_u128(30), &renamed),
                    Source::Feed
                )
                .unwrap(),
            Received::Gap { .. }
        ));
        // Another session's event after it does not move the cursor past 9.
        let created = SessionEvent::SessionCreated {
            title: title("o"),
            owner: crate::access::UserId::OWNER,
        };
        replica
            .receive(
                &envelope(11, other, 1, Uuid::from_u128(31), &created),
                Source::Feed,
            )
            .unwrap();
        assert_eq!(replica.last_global_sequence(), 9);
        assert_eq!(
            replica.gaps(),
            vec![(
                session,
                Gap {
                    global_sequence: 10,
                    aggregate_sequence: 3
                }
            )]
        );

        // Restored from storage, the ledger still holds the cursor back.
        let mut restored = Replica::<QuerySession>::new();
        restored
            .receive(
                &envelope(
                    1,
                    session,
                    1,
                    Uuid::from_u128(2),
                    &SessionEvent::SessionCreated {
                        title: title("a"),
                        owner: crate::access::UserId::OWNER,
                    },
                ),
                Source::Fetch,
            )
            .unwrap();
        restored.resume(11, replica.gaps(), replica.witness());
        assert_eq!(restored.last_global_sequence(), 9);

        // The fetch fills the gap: the cursor moves to what the feed delivered.
        replica
            .receive(
                &envelope(8, session, 2, Uuid::from_u128(29), &renamed),
                Source::Fetch,
            )
            .unwrap();
        assert_eq!(replica.last_global_sequence(), 9, "one event still missing");
        replica
            .receive(
                &envelope(10, session, 3, Uuid::from_u128(30), &renamed),
                Source::Fetch,
            )
            .unwrap();
        assert!(replica.gaps().is_empty());
        assert_eq!(replica.last_global_sequence(), 11);

        // A ledger entry already filled is dropped on resume.
        restored.resume(
            11,
            [(
                session,
                Gap {
                    global_sequence: 10,
                    aggregate_sequence: 1,
                },
            )],
            None,
        );
        assert!(restored.gaps().is_empty());
        assert_eq!(restored.last_global_sequence(), 11);
    }

    #[test]
    fn the_witness_is_the_highest_event_held_from_any_source() {
        let (mut replica, session) = confirmed_session();
        assert_eq!(
            replica.witness(),
            Some(Witness {
                global_sequence: 1,
                event_id: Uuid::from_u128(1001)
            })
        );
        let renamed = SessionEvent::SessionRenamed { title: title("b") };
        replica
            .receive(
                &envelope(7, session, 2, Uuid::from_u128(3), &renamed),
                Source::Fetch,
            )
            .unwrap();
        assert_eq!(replica.witness().unwrap().global_sequence, 7);
        // A lower event of another aggregate does not lower it.
        let other = Uuid::from_u128(5);
        let created = SessionEvent::SessionCreated {
            title: title("o"),
            owner: crate::access::UserId::OWNER,
        };
        replica
            .receive(
                &envelope(4, other, 1, Uuid::from_u128(4), &created),
                Source::Feed,
            )
            .unwrap();
        assert_eq!(replica.witness().unwrap().global_sequence, 7);
        assert_eq!(replica.last_global_sequence(), 4);
        // Duplicates and gaps are not held.
        replica
            .receive(
                &envelope(9, other, 3, Uuid::from_u128(6), &renamed),
                Source::Fetch,
            )
            .unwrap();
        assert_eq!(replica.witness().unwrap().global_sequence, 7);
        // A resumed witness never lowers the one rebuilt from events.
        replica.resume(
            4,
            [],
            Some(Witness {
                global_sequence: 2,
                event_id: Uuid::nil(),
            }),
        );
        assert_eq!(replica.witness().unwrap().global_sequence, 7);
        // Nor replaces it at the same sequence: the event held is the truth.
        let held = replica.witness();
        replica.resume(
            4,
            [],
            Some(Witness {
                global_sequence: 7,
                event_id: Uuid::nil(),
            }),
        );
        assert_eq!(replica.witness(), held);
        replica.resume(
            4,
            [],
            Some(Witness {
                global_sequence: 8,
                event_id: Uuid::nil(),
            }),
        );
        assert_eq!(replica.witness().unwrap().global_sequence, 8);
    }

    #[test]
    fn stored_rows_without_a_base_get_one() {
        let (mut source, session) = confirmed_session();
        source
            .submit(Uuid::from_u128(10), session, rename("b"))
            .unwrap();
        source
            .submit(Uuid::from_u128(11), session, rename("c"))
            .unwrap();
        let mut old_rows: Vec<PendingCommand<SessionCommand>> =
            source.outbox().iter().cloned().collect();
        for row in &mut old_rows {
            row.base_command = None;
        }
        // A row of an older build, as JSON without the field.
        let json = serde_json::to_value(&old_rows[0]).unwrap();
        let mut json = json.as_object().unwrap().clone();
        json.remove("base_command");
        let parsed: PendingCommand<SessionCommand> =
            serde_json::from_value(serde_json::Value::Object(json)).unwrap();
        assert_eq!(parsed, old_rows[0]);

        let (mut replica, _) = confirmed_session();
        let mut stale = old_rows[1].clone();
        stale.expected_version = 7;
        let stale_id = Uuid::from_u128(12);
        stale.command_id = stale_id;
        replica.replace_outbox(old_rows.into_iter().chain([stale]));
        let bases: Vec<_> = replica.outbox().iter().map(|p| p.base_command).collect();
        assert_eq!(
            bases,
            vec![Some(Uuid::from_u128(2)), Some(Uuid::from_u128(10)), None],
            "a row whose version does not fit keeps no base until its rebase"
        );
    }

    #[test]
    fn starting_at_a_cursor_holds_nothing_but_its_witness() {
        let witness = Witness {
            global_sequence: 42,
            event_id: Uuid::from_u128(4200),
        };
        let replica = Replica::<QuerySession>::starting_at(42, Some(witness));
        assert_eq!(replica.last_global_sequence(), 42);
        assert_eq!(replica.witness(), Some(witness));
        assert!(replica.aggregate_ids().is_empty());
        assert!(replica.confirmed_all().next().is_none());
    }

    /// A feed event leaves a gap; the fetch that should fill it does not
    /// have it: the store lost it.
    #[test]
    fn a_gap_a_complete_fetch_cannot_fill_means_the_store_lost_events() {
        let mut replica = Replica::<QuerySession>::starting_at(2, None);
        let session = Uuid::from_u128(1);
        let closed = SessionEvent::SessionClosed {};
        let gap = replica
            .receive(
                &envelope(3, session, 2, Uuid::from_u128(20), &closed),
                Source::Feed,
            )
            .unwrap();
        assert!(matches!(gap, Received::Gap { .. }));
        // The fetch brings only the first event: the second is gone.
        let created = SessionEvent::SessionCreated {
            title: title("a"),
            owner: crate::access::UserId::OWNER,
        };
        replica
            .receive(
                &envelope(1, session, 1, Uuid::from_u128(10), &created),
                Source::Fetch,
            )
            .unwrap();
        assert!(replica.gap_lost(session));
        // Had it brought both, nothing would be lost.
        replica
            .receive(
                &envelope(3, session, 2, Uuid::from_u128(20), &closed),
                Source::Fetch,
            )
            .unwrap();
        assert!(!replica.gap_lost(session));
        assert!(!replica.gap_lost(Uuid::from_u128(2)));
    }

    #[test]
    fn another_event_at_a_held_position_means_the_histories_diverged() {
        let (mut replica, session) = confirmed_session();
        assert_eq!(replica.fetch_from(session), 0);
        let renamed = SessionEvent::SessionRenamed { title: title("b") };
        replica
            .receive(
                &envelope(3, session, 2, Uuid::from_u128(3), &renamed),
                Source::Fetch,
            )
            .unwrap();
        assert_eq!(replica.fetch_from(session), 1, "one event of overlap");
        assert_eq!(replica.fetch_from(Uuid::from_u128(42)), 0);
        // The overlap from the same history is a duplicate ...
        assert_eq!(
            replica
                .receive(
                    &envelope(3, session, 2, Uuid::from_u128(3), &renamed),
                    Source::Fetch
                )
                .unwrap(),
            Received::Duplicate
        );
        // ... from another history, a divergence; nothing changes.
        assert_eq!(
            replica
                .receive(
                    &envelope(3, session, 2, Uuid::from_u128(4), &renamed),
                    Source::Fetch
                )
                .unwrap(),
            Received::Diverged
        );
        assert_eq!(replica.head(session), Some(Uuid::from_u128(3)));
        assert_eq!(replica.confirmed(session).unwrap().version(), 2);
    }
}
