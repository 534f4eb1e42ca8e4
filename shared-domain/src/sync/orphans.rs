//! Local queries whose tab went away. A local query runs in the tab that
//! submitted it (duckdb-wasm); if that tab closes or crashes before the
//! outcome is submitted, nothing else would ever end it, and a session
//! refuses new queries while one is active, on every device.
//!
//! So a browser remembers the local queries it runs ([`LocalRun`], stored
//! when the run starts, forgotten once its outcome is in the outbox), and
//! on its start and after every change [`settle_local_runs`] says what to
//! do with the runs no live tab runs any more: submit the outcome the tab
//! kept (it finished while its query was not active on the view, e.g. its
//! start was pending across a reset), or fail the query with a clear
//! message (its tab closed before it finished), once the query is active
//! on the view; forget it once its outcome is pending or it ended. Any
//! device may also cancel a local query (`CancelQuery` is not
//! executor-only).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Replica;
use crate::session::{QuerySession, SessionCommand};
use crate::values::{ErrorId, QueryId};

/// The message a failed orphan shows.
pub const ORPHAN_MESSAGE: &str =
    "the tab running this local query was closed before it finished; run it again";

/// A local query this browser runs (persisted while it runs, and after,
/// until its outcome is in the outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalRun {
    pub aggregate_id: Uuid,
    pub query_id: QueryId,
    /// The outcome (`CompleteQuery` or `FailQuery`) its tab made but could
    /// not submit: the query was not active on the view then.
    #[serde(default)]
    pub outcome: Option<SessionCommand>,
}

/// What to do about one remembered run no live tab runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Orphan {
    /// Submit this outcome for the aggregate (the kept one, or a
    /// `FailQuery`), then forget the run.
    Submit {
        aggregate_id: Uuid,
        command: SessionCommand,
    },
    /// Its outcome is pending, or the query ended or will never be active
    /// (cancelled or failed elsewhere, refused): forget the run.
    Forget(QueryId),
}

/// For each remembered `run` that no live tab runs (`running` holds the
/// query ids live tabs still run, e.g. their held Web Locks): once the
/// query is active on the view and its outcome is not in the outbox,
/// submit the kept outcome or a failure; forget runs whose outcome is
/// pending or whose query is neither active nor about to be (its
/// `SubmitQuery` or `StartQuery` pending); leave the others for later.
/// `error_id` gives each failure its id.
pub fn settle_local_runs(
    replica: &Replica<QuerySession>,
    runs: &[LocalRun],
    running: &[QueryId],
    mut error_id: impl FnMut() -> ErrorId,
) -> Vec<Orphan> {
    let mut orphans = Vec::new();
    for run in runs.iter().filter(|run| !running.contains(&run.query_id)) {
        let pending = |is: fn(&SessionCommand, QueryId) -> bool| {
            replica
                .outbox()
                .iter()
                .any(|p| p.aggregate_id == run.aggregate_id && is(&p.command, run.query_id))
        };
        let active = replica
            .view(run.aggregate_id)
            .active_query()
            .is_some_and(|q| q.query_id == run.query_id);
        if pending(ends) {
            orphans.push(Orphan::Forget(run.query_id));
        } else if active {
            let command = run
                .outcome
                .clone()
                .unwrap_or_else(|| SessionCommand::FailQuery {
                    query_id: run.query_id,
                    error_id: error_id(),
                    message: ORPHAN_MESSAGE.to_owned(),
                });
            orphans.push(Orphan::Submit {
                aggregate_id: run.aggregate_id,
                command,
            });
        } else if !pending(begins) {
            orphans.push(Orphan::Forget(run.query_id));
        }
    }
    orphans
}

/// Whether `command` ends the query `query_id`.
fn ends(command: &SessionCommand, query_id: QueryId) -> bool {
    match command {
        SessionCommand::CompleteQuery { query_id: id, .. }
        | SessionCommand::FailQuery { query_id: id, .. }
        | SessionCommand::CancelQuery { query_id: id } => *id == query_id,
        _ => false,
    }
}

/// Whether `command` submits or starts the query `query_id`.
fn begins(command: &SessionCommand, query_id: QueryId) -> bool {
    match command {
        SessionCommand::SubmitQuery { query_id: id, .. }
        | SessionCommand::StartQuery { query_id: id } => *id == query_id,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{authorize, decide, DecisionContext};
    use crate::envelope::{EventEnvelope, EventMetadata};
    use crate::session::QueryState;
    use crate::session::SessionEvent;
    use crate::sync::Source;
    use crate::values::{Engine, SessionTitle, SqlQuery};

    const SESSION: Uuid = Uuid::from_u128(1);

    fn query(n: u128) -> QueryId {
        QueryId(Uuid::from_u128(0x100 + n))
    }

    /// A replica that created a session and started local query `n`
    /// (pending, as offline).
    fn running(n: u128) -> Replica<QuerySession> {
        let mut replica = Replica::new();
        let commands = [
            SessionCommand::CreateSession {
                title: SessionTitle::new("a").unwrap(),
            },
            SessionCommand::SubmitQuery {
                query_id: query(n),
                sql: SqlQuery::new("SELECT 1").unwrap(),
                engine: Engine::Local,
            },
            SessionCommand::StartQuery { query_id: query(n) },
        ];
        for (i, command) in commands.into_iter().enumerate() {
            replica
                .submit(Uuid::from_u128(10 + i as u128), SESSION, command)
                .unwrap();
        }
        replica
    }

    fn run(n: u128) -> LocalRun {
        LocalRun {
            aggregate_id: SESSION,
            query_id: query(n),
            outcome: None,
        }
    }

    fn complete(n: u128) -> SessionCommand {
        SessionCommand::CompleteQuery {
            query_id: query(n),
            row_count: 1,
            columns: Vec::new(),
            elapsed_ms: 1,
            fingerprint: None,
        }
    }

    fn error_ids() -> impl FnMut() -> ErrorId {
        let mut next = 0;
        move || {
            next += 1;
            ErrorId(Uuid::from_u128(0xE00 + next))
        }
    }

    #[test]
    fn a_local_query_no_tab_runs_is_failed_and_the_session_takes_new_ones() {
        let mut replica = running(1);
        let orphans = settle_local_runs(&replica, &[run(1)], &[], error_ids());
        let [Orphan::Submit {
            aggregate_id,
            command,
        }] = orphans.as_slice()
        else {
            panic!("{orphans:?}");
        };
        assert_eq!(*aggregate_id, SESSION);
        replica
            .submit(Uuid::from_u128(20), SESSION, command.clone())
            .unwrap();
        let view = replica.view(SESSION);
        assert!(matches!(
            &view.query(query(1)).unwrap().state,
            QueryState::Failed { message, .. } if message == ORPHAN_MESSAGE
        ));
        assert!(
            view.active_query().is_none(),
            "the session takes new queries"
        );
    }

    #[test]
    fn a_run_a_live_tab_holds_or_whose_outcome_is_pending_is_left_alone() {
        let replica = running(1);
        assert!(settle_local_runs(&replica, &[run(1)], &[query(1)], error_ids()).is_empty());

        let mut completed = running(1);
        completed
            .submit(Uuid::from_u128(20), SESSION, complete(1))
            .unwrap();
        assert_eq!(
            settle_local_runs(&completed, &[run(1)], &[], error_ids()),
            vec![Orphan::Forget(query(1))],
            "its outcome is in the outbox"
        );
    }

    #[test]
    fn a_run_that_ended_elsewhere_is_forgotten() {
        let mut replica = running(1);
        // Another device cancelled it: any device may.
        let view = replica.view(SESSION);
        let cancel = SessionCommand::CancelQuery { query_id: query(1) };
        let context = DecisionContext::new(
            crate::decision::Issuer::Client,
            crate::access::Actor::User(crate::access::UserId::OWNER),
            SESSION,
        );
        assert_eq!(authorize(&view, &cancel, &context), Ok(()));
        assert!(decide(&view, &cancel, &context).is_ok());
        replica
            .submit(Uuid::from_u128(20), SESSION, cancel)
            .unwrap();
        assert_eq!(
            settle_local_runs(&replica, &[run(1), run(2)], &[], error_ids()),
            vec![Orphan::Forget(query(1)), Orphan::Forget(query(2))],
            "cancelled, and one the session never had"
        );
    }

    /// The tab finished while its query's start was pending across a reset
    /// (the view did not have the session): the outcome it kept is
    /// submitted once the start can land, not a failure, and not dropped.
    #[test]
    fn an_outcome_kept_while_the_start_was_pending_is_submitted_once_it_is_active() {
        let created = EventEnvelope::new::<QuerySession>(
            Uuid::from_u128(900),
            SESSION,
            1,
            &SessionEvent::SessionCreated {
                title: SessionTitle::new("a").unwrap(),
                owner: crate::access::UserId::OWNER,
            },
            EventMetadata {
                command_id: Uuid::from_u128(10),
                ..Default::default()
            },
            chrono::DateTime::UNIX_EPOCH,
        );
        let mut replica = running(1);
        replica.receive(&created, Source::Feed).unwrap();
        // The store was replaced: the session is not on the view, the
        // query's submit and start are pending and skipped.
        replica.reset();
        assert!(replica.view(SESSION).active_query().is_none());
        let kept = LocalRun {
            outcome: Some(complete(1)),
            ..run(1)
        };
        assert!(
            settle_local_runs(&replica, std::slice::from_ref(&kept), &[], error_ids()).is_empty()
        );
        // The new store has the session again (its creator resent it).
        replica.receive(&created, Source::Feed).unwrap();
        assert_eq!(
            settle_local_runs(&replica, &[kept], &[], error_ids()),
            vec![Orphan::Submit {
                aggregate_id: SESSION,
                command: complete(1)
            }]
        );
    }
}
