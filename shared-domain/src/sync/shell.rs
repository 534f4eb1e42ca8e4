//! The first part of the shell as a pure input → effects machine: what one
//! per-command answer of a batch does to the replica, and what the shell
//! must do next, in order. The browser's `settle`
//! (`client/src/offline/engine.rs`) and the simulation's both run this, so
//! the simulation exercises the browser's answer path itself, not a copy.
//!
//! Still sequenced in each shell (the next steps): the batch-level checks
//! before the answers (store id, witness), the feed, the flush loop with
//! its backoff, catch-ups of the gap ledger, resets, tabs.

use uuid::Uuid;

use super::identity::ResetReason;
use super::{ConflictStep, Received, Rejection, Replica, SyncError};
use crate::aggregate::Aggregate;
use crate::envelope::{CommandEnvelope, EventEnvelope};

/// One command's answer inside a batch, as the shell read it (the table in
/// [`super::answers`] maps statuses to these).
#[derive(Debug, Clone, PartialEq)]
pub enum CommandAnswer {
    /// 200, with the events the command produced (none if it changed nothing).
    Accepted { events: Vec<EventEnvelope> },
    /// 409, with the head the server had.
    Conflict {
        current_version: Option<u64>,
        current_command: Option<Uuid>,
    },
    /// A refusal of the command itself, in words for the user.
    Rejected { reason: String },
    /// Keep the command and send it again later (401, 408, 429, 5xx, …).
    Retry,
}

/// What the shell does after an answer, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerEffect<C> {
    /// Store these confirmed events (without the feed position: answers
    /// are not the feed).
    StoreEvents(Vec<EventEnvelope>),
    /// Fetch the aggregate's missing events (from [`Replica::fetch_from`])
    /// and receive them; then, if it succeeded, run [`after_catch_up`]
    /// with `rebase`. If it failed, the command stays pending: send again.
    CatchUp { aggregate_id: Uuid, rebase: bool },
    /// Tell the user, once (the first carries the answer's error id).
    Report(Vec<Rejection<C>>),
    /// The server lost events this replica holds: reset, and drop the
    /// batch's remaining answers (decided against what the reset drops).
    Reset(ResetReason),
    /// The answer is about a decision the replica has since replaced.
    Ignored,
    /// The command stays pending; send it again later.
    Retry,
}

/// Applies `answer` to `sent` on the replica and says what to do next.
pub fn on_answer<A: Aggregate>(
    replica: &mut Replica<A>,
    sent: &CommandEnvelope<A::Command>,
    answer: CommandAnswer,
) -> Result<Vec<AnswerEffect<A::Command>>, SyncError> {
    Ok(match answer {
        CommandAnswer::Accepted { events } => {
            let outcomes = replica.accepted(sent, &events)?;
            if outcomes.contains(&Received::Diverged) {
                return Ok(vec![AnswerEffect::Reset(ResetReason::WitnessDiffers)]);
            }
            let mut effects = vec![AnswerEffect::StoreEvents(events)];
            if outcomes.iter().any(|o| matches!(o, Received::Gap { .. })) {
                // The command stays until the fetch brings what is missing.
                effects.push(AnswerEffect::CatchUp {
                    aggregate_id: sent.aggregate_id,
                    rebase: false,
                });
            }
            effects
        }
        CommandAnswer::Conflict {
            current_version,
            current_command,
        } => match replica.conflict(sent, current_version, current_command) {
            ConflictStep::CatchUp { aggregate_id, .. } => vec![AnswerEffect::CatchUp {
                aggregate_id,
                rebase: true,
            }],
            ConflictStep::Stale => vec![AnswerEffect::Ignored],
            ConflictStep::Reset => vec![AnswerEffect::Reset(ResetReason::WitnessMissing)],
        },
        CommandAnswer::Rejected { reason } => {
            let rejections = replica.rejected(sent, reason);
            if rejections.is_empty() {
                vec![AnswerEffect::Ignored]
            } else {
                vec![AnswerEffect::Report(rejections)]
            }
        }
        CommandAnswer::Retry => vec![AnswerEffect::Retry],
    })
}

/// After a successful [`AnswerEffect::CatchUp`]: rebase the aggregate's
/// pending commands on what was fetched if asked (a conflict), and report
/// those that no longer decide.
pub fn after_catch_up<A: Aggregate>(
    replica: &mut Replica<A>,
    aggregate_id: Uuid,
    rebase: bool,
) -> Vec<AnswerEffect<A::Command>> {
    if !rebase {
        return Vec::new();
    }
    let rejections = replica.rebase(aggregate_id);
    if rejections.is_empty() {
        Vec::new()
    } else {
        vec![AnswerEffect::Report(rejections)]
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::envelope::EventMetadata;
    use crate::session::{QuerySession, SessionCommand, SessionEvent};
    use crate::sync::Source;
    use crate::values::SessionTitle;

    fn title(s: &str) -> SessionTitle {
        SessionTitle::new(s).unwrap()
    }

    fn event(global: u64, seq: u64, command_id: Uuid, event: &SessionEvent) -> EventEnvelope {
        let mut e = EventEnvelope::new::<QuerySession>(
            Uuid::from_u128(1000 + u128::from(global)),
            SESSION,
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

    const SESSION: Uuid = Uuid::from_u128(1);

    fn created() -> EventEnvelope {
        event(
            1,
            1,
            Uuid::from_u128(2),
            &SessionEvent::SessionCreated {
                title: title("a"),
                owner: crate::access::UserId::OWNER,
            },
        )
    }

    fn renamed(global: u64, seq: u64, command: u128, to: &str) -> EventEnvelope {
        event(
            global,
            seq,
            Uuid::from_u128(command),
            &SessionEvent::SessionRenamed { title: title(to) },
        )
    }

    fn rename(to: &str) -> SessionCommand {
        SessionCommand::RenameSession { title: title(to) }
    }

    fn replica_renaming() -> (Replica<QuerySession>, CommandEnvelope<SessionCommand>) {
        let mut replica = Replica::new();
        replica.receive(&created(), Source::Feed).unwrap();
        replica
            .submit(Uuid::from_u128(10), SESSION, rename("b"))
            .unwrap();
        let sent = replica.outbox()[0].envelope::<QuerySession>();
        (replica, sent)
    }

    #[test]
    fn an_acceptance_stores_its_events_and_catches_up_a_gap() {
        let (mut replica, sent) = replica_renaming();
        let effects = on_answer(
            &mut replica,
            &sent,
            CommandAnswer::Accepted {
                events: vec![renamed(2, 2, 10, "b")],
            },
        )
        .unwrap();
        assert_eq!(
            effects,
            vec![AnswerEffect::StoreEvents(vec![renamed(2, 2, 10, "b")])]
        );
        assert!(replica.outbox().is_empty());

        let (mut replica, sent) = replica_renaming();
        let effects = on_answer(
            &mut replica,
            &sent,
            CommandAnswer::Accepted {
                events: vec![renamed(3, 3, 10, "b")],
            },
        )
        .unwrap();
        assert_eq!(
            effects[1],
            AnswerEffect::CatchUp {
                aggregate_id: SESSION,
                rebase: false
            }
        );
        assert!(after_catch_up(&mut replica, SESSION, false).is_empty());
    }

    #[test]
    fn a_conflict_catches_up_then_rebases_and_reports_what_no_longer_decides() {
        let (mut replica, sent) = replica_renaming();
        let conflict = CommandAnswer::Conflict {
            current_version: Some(2),
            current_command: Some(Uuid::from_u128(98)),
        };
        assert_eq!(
            on_answer(&mut replica, &sent, conflict.clone()).unwrap(),
            vec![AnswerEffect::CatchUp {
                aggregate_id: SESSION,
                rebase: true
            }]
        );
        // The fetch brings a close: the rename no longer decides.
        replica
            .receive(
                &event(2, 2, Uuid::from_u128(98), &SessionEvent::SessionClosed {}),
                Source::Fetch,
            )
            .unwrap();
        let effects = after_catch_up(&mut replica, SESSION, true);
        let [AnswerEffect::Report(rejections)] = effects.as_slice() else {
            panic!("{effects:?}");
        };
        assert_eq!(rejections[0].pending.command_id, Uuid::from_u128(10));
        // The same 409 again is about a decision no longer pending.
        assert_eq!(
            on_answer(&mut replica, &sent, conflict).unwrap(),
            vec![AnswerEffect::Ignored]
        );
    }

    #[test]
    fn a_refusal_reports_once_and_a_lost_history_resets() {
        let (mut replica, sent) = replica_renaming();
        let refused = CommandAnswer::Rejected {
            reason: "no".into(),
        };
        assert!(matches!(
            on_answer(&mut replica, &sent, refused.clone()).unwrap().as_slice(),
            [AnswerEffect::Report(r)] if r.len() == 1
        ));
        assert_eq!(
            on_answer(&mut replica, &sent, refused).unwrap(),
            vec![AnswerEffect::Ignored]
        );

        let (mut replica, sent) = replica_renaming();
        assert_eq!(
            on_answer(
                &mut replica,
                &sent,
                CommandAnswer::Conflict {
                    current_version: Some(0),
                    current_command: None
                }
            )
            .unwrap(),
            vec![AnswerEffect::Reset(ResetReason::WitnessMissing)]
        );
        // An acceptance whose first event is not the one held: diverged.
        let (mut replica, sent) = replica_renaming();
        let other_history = renamed(1, 1, 77, "x");
        assert_eq!(
            on_answer(
                &mut replica,
                &sent,
                CommandAnswer::Accepted {
                    events: vec![other_history]
                }
            )
            .unwrap(),
            vec![AnswerEffect::Reset(ResetReason::WitnessDiffers)]
        );
        let (mut replica, sent) = replica_renaming();
        assert_eq!(
            on_answer(&mut replica, &sent, CommandAnswer::Retry).unwrap(),
            vec![AnswerEffect::Retry]
        );
        assert_eq!(replica.outbox().len(), 1, "a retry keeps the command");
    }
}
