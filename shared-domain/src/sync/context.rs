//! The decision context a replica can give the commands it decides on its
//! view, so the browser refuses at once what the server would refuse for a
//! reason the browser knows, with the server's own rule
//! ([`crate::decision::decide`]). The server stays the authority: a fact
//! the replica does not know is left `None` (not checked here), and every
//! command is decided again by the server.
//!
//! What a replica knows, and what it does not:
//! - the actor: the signed-in user, on a session whose owner the server
//!   confirmed. A session only this replica has (created offline, not
//!   confirmed yet) is decided as the system: its view's owner is not the
//!   server's word yet, and the server decides access on creation;
//! - executor-only commands: from the view (which engine a query runs on);
//! - query ids used by another session: among the sessions it holds
//!   (confirmed or pending). Sessions of other users it cannot read are
//!   unknown; the server checks them all;
//! - the catalog: when the page loaded it (`None` offline or before);
//! - a share's target user: never (the directory is the server's; sharing
//!   is sent at once and decided there).

use std::collections::BTreeSet;

use uuid::Uuid;

use super::Replica;
use crate::access::{Actor, UserId};
use crate::aggregate::Aggregate;
use crate::decision::{DecisionContext, Issuer};
use crate::session::{QuerySession, SessionCommand};

/// The context for `command` on `aggregate_id`, decided by `user` (if the
/// page knows who is signed in), with the server `catalog` names if loaded.
pub fn replica_context(
    replica: &Replica<QuerySession>,
    user: Option<UserId>,
    aggregate_id: Uuid,
    command: &SessionCommand,
    catalog: Option<&BTreeSet<String>>,
) -> DecisionContext {
    let confirmed = replica
        .confirmed(aggregate_id)
        .is_some_and(|session| session.version() > 0);
    let actor = match user {
        Some(user) if confirmed => Actor::User(user),
        _ => Actor::System,
    };
    let mut context = DecisionContext::new(Issuer::Client, actor, aggregate_id);
    let needs = DecisionContext::needs(command);
    if let (Some(name), Some(catalog)) = (needs.server_dataset, catalog) {
        context.server_dataset_exists = Some(catalog.contains(name.as_str()));
    }
    if let Some(query_id) = needs.query_id {
        context.query_id_owner = replica
            .aggregate_ids()
            .into_iter()
            .filter(|id| *id != aggregate_id)
            .find(|id| replica.view(*id).query(query_id).is_some());
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Role;
    use crate::access::UserName;
    use crate::decision::{decide, Refusal};
    use crate::envelope::{EventEnvelope, EventMetadata};
    use crate::session::{SessionError, SessionEvent};
    use crate::sync::Source;
    use crate::values::{DatasetName, DatasetRef, Engine, QueryId, SessionTitle, SqlQuery};

    const ALICE: UserId = UserId(Uuid::from_u128(0xA));
    const BOB: UserId = UserId(Uuid::from_u128(0xB));

    fn submit_query(n: u128) -> SessionCommand {
        SessionCommand::SubmitQuery {
            query_id: QueryId(Uuid::from_u128(n)),
            sql: SqlQuery::new("SELECT 1").unwrap(),
            engine: Engine::Local,
        }
    }

    fn create() -> SessionCommand {
        SessionCommand::CreateSession {
            title: SessionTitle::new("s").unwrap(),
        }
    }

    /// A session Alice owns, shared with Bob as `role`, as the server sent it.
    fn confirmed(replica: &mut Replica<QuerySession>, id: Uuid, role: Role) {
        let events = [
            SessionEvent::SessionCreated {
                title: SessionTitle::new("s").unwrap(),
                owner: ALICE,
            },
            SessionEvent::SessionShared {
                user: BOB,
                name: UserName::new("bob").unwrap(),
                role,
            },
        ];
        for (i, event) in events.iter().enumerate() {
            let mut envelope = EventEnvelope::new::<QuerySession>(
                Uuid::from_u128(id.as_u128() * 100 + i as u128),
                id,
                i as u64 + 1,
                event,
                EventMetadata {
                    command_id: Uuid::from_u128(id.as_u128() * 1000 + i as u128),
                    ..Default::default()
                },
                chrono::DateTime::UNIX_EPOCH,
            );
            envelope.global_sequence = id.as_u128() as u64 * 10 + i as u64;
            replica.receive(&envelope, Source::Feed).unwrap();
        }
    }

    /// Submits as the browser does: `decide` with the replica's context.
    fn submit_as(
        replica: &mut Replica<QuerySession>,
        user: UserId,
        id: Uuid,
        command: SessionCommand,
        catalog: Option<&BTreeSet<String>>,
    ) -> Result<Vec<SessionEvent>, Refusal> {
        let context = replica_context(replica, Some(user), id, &command, catalog);
        let command_id = Uuid::from_u128(0xC000 + replica.outbox().len() as u128);
        replica.submit_decided(command_id, id, command, |view, command| {
            decide(view, command, &context)
        })
    }

    #[test]
    fn a_query_id_another_session_of_the_replica_used_is_refused_here() {
        let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut replica = Replica::new();
        for id in [first, second] {
            submit_as(&mut replica, ALICE, id, create(), None).unwrap();
        }
        submit_as(&mut replica, ALICE, first, submit_query(7), None).unwrap();
        assert_eq!(
            submit_as(&mut replica, ALICE, second, submit_query(7), None),
            Err(Refusal::QueryIdTaken(QueryId(Uuid::from_u128(7))))
        );
        // The aggregate alone (what the browser used before) let it through,
        // and the server refused it later.
        assert!(replica
            .submit(Uuid::from_u128(99), second, submit_query(7))
            .is_ok());
    }

    #[test]
    fn access_is_decided_for_the_signed_in_user_on_confirmed_sessions_only() {
        let (shared, offline) = (Uuid::from_u128(3), Uuid::from_u128(4));
        let mut replica = Replica::new();
        confirmed(&mut replica, shared, Role::Viewer);
        let rename = SessionCommand::RenameSession {
            title: SessionTitle::new("b").unwrap(),
        };
        assert!(matches!(
            submit_as(&mut replica, BOB, shared, rename.clone(), None),
            Err(Refusal::Domain(SessionError::Forbidden { .. }))
        ));
        assert!(submit_as(&mut replica, ALICE, shared, rename.clone(), None).is_ok());
        // Created offline by Bob: not confirmed, so not refused here (its
        // view's owner is not the server's word yet).
        submit_as(&mut replica, BOB, offline, create(), None).unwrap();
        assert!(submit_as(&mut replica, BOB, offline, rename, None).is_ok());
    }

    #[test]
    fn a_dataset_is_checked_against_the_catalog_only_when_it_was_loaded() {
        let id = Uuid::from_u128(5);
        let mut replica = Replica::new();
        submit_as(&mut replica, ALICE, id, create(), None).unwrap();
        let attach = |name: &str| SessionCommand::AttachDataset {
            dataset: DatasetRef::Server {
                name: DatasetName::new(name).unwrap(),
            },
        };
        let catalog: BTreeSet<String> = ["sales".to_owned()].into();
        assert_eq!(
            submit_as(&mut replica, ALICE, id, attach("gone"), Some(&catalog)),
            Err(Refusal::UnknownDataset("gone".into()))
        );
        assert!(submit_as(&mut replica, ALICE, id, attach("sales"), Some(&catalog)).is_ok());
        assert!(
            submit_as(&mut replica, ALICE, id, attach("gone"), None).is_ok(),
            "no catalog loaded: left to the server"
        );
    }
}
