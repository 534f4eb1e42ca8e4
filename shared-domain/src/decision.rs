//! The decision context: what a `QuerySession` decision needs beyond the
//! session itself, so that the server's pipeline, the browser and the sync
//! simulation refuse exactly the same commands.
//!
//! The session alone cannot know whether a server dataset exists, whether
//! another session already used a query id, or who issues the command. The
//! shell gathers those facts ([`DecisionContext::needs`] says which) and
//! passes them in; [`authorize`] and [`decide`] are pure. A fact the shell
//! cannot know (the browser offline has no catalog) is `None`: not checked
//! here, the authority checks it. The accounts work adds the actor here.

use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::session::{QuerySession, SessionCommand, SessionEvent};
use crate::values::{DatasetName, DatasetRef, QueryId};

/// Who issues a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Issuer {
    /// A client (browser, API user): may not forge server-engine results.
    #[default]
    Client,
    /// The server's own query executor.
    Executor,
}

/// The facts a decision needs besides the session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecisionContext {
    pub issuer: Issuer,
    /// The session the command is for.
    pub aggregate_id: Uuid,
    /// For an `AttachDataset` of a server dataset: whether the catalog has
    /// it (`None`: unknown here, left to the authority).
    pub server_dataset_exists: Option<bool>,
    /// For a `SubmitQuery`: the session that already used its query id, if
    /// one did (as far as the caller knows).
    pub query_id_owner: Option<Uuid>,
}

/// Which facts a command needs gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs<'a> {
    pub server_dataset: Option<&'a DatasetName>,
    pub query_id: Option<QueryId>,
}

impl DecisionContext {
    /// The facts `command` needs: look them up, then fill the context.
    pub fn needs(command: &SessionCommand) -> Needs<'_> {
        match command {
            SessionCommand::AttachDataset {
                dataset: DatasetRef::Server { name },
            } => Needs {
                server_dataset: Some(name),
                query_id: None,
            },
            SessionCommand::SubmitQuery { query_id, .. } => Needs {
                server_dataset: None,
                query_id: Some(*query_id),
            },
            _ => Needs::default(),
        }
    }
}

/// Why a command was refused, by kind: the server answers 403 for
/// `Forbidden` and 422 for the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{0} for a query on the server engine may only be issued by the server's query executor"
    )]
    ExecutorOnly(&'static str),
    #[error("the server has no dataset named {0:?}")]
    UnknownDataset(String),
    #[error("query id {0} is already used by another session; use a new id")]
    QueryIdTaken(QueryId),
    #[error(transparent)]
    Domain(#[from] crate::session::SessionError),
}

impl Refusal {
    /// Whether the issuer may never send this (403), rather than the state
    /// refusing it (422).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Refusal::ExecutorOnly(_))
    }
}

/// Whether the issuer may send `command` to `session` at all, whatever its
/// version: checked before the version, so a forged command is 403 even on
/// a stale base.
pub fn authorize(
    session: &QuerySession,
    command: &SessionCommand,
    context: &DecisionContext,
) -> Result<(), Refusal> {
    if context.issuer == Issuer::Client && session.is_executor_only(command) {
        return Err(Refusal::ExecutorOnly(command.name()));
    }
    Ok(())
}

/// Decides `command` on `session` with the facts of `context`: the
/// authorization, the catalog, query-id uniqueness, then the session's own rules.
pub fn decide(
    session: &QuerySession,
    command: &SessionCommand,
    context: &DecisionContext,
) -> Result<Vec<SessionEvent>, Refusal> {
    authorize(session, command, context)?;
    if let SessionCommand::AttachDataset {
        dataset: DatasetRef::Server { name },
    } = command
    {
        if context.server_dataset_exists == Some(false) {
            return Err(Refusal::UnknownDataset(name.as_str().to_owned()));
        }
    }
    if let SessionCommand::SubmitQuery { query_id, .. } = command {
        if context
            .query_id_owner
            .is_some_and(|owner| owner != context.aggregate_id)
        {
            return Err(Refusal::QueryIdTaken(*query_id));
        }
    }
    Ok(session.handle(command)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionError;
    use crate::values::{Engine, SessionTitle, SqlQuery};

    const SESSION: Uuid = Uuid::from_u128(1);

    fn open_session() -> QuerySession {
        let create = SessionCommand::CreateSession {
            title: SessionTitle::new("s").unwrap(),
        };
        QuerySession::default().execute(&create).unwrap().0
    }

    fn context(issuer: Issuer) -> DecisionContext {
        DecisionContext {
            issuer,
            aggregate_id: SESSION,
            ..DecisionContext::default()
        }
    }

    fn submit(engine: Engine) -> SessionCommand {
        SessionCommand::SubmitQuery {
            query_id: QueryId(Uuid::from_u128(9)),
            sql: SqlQuery::new("SELECT 1").unwrap(),
            engine,
        }
    }

    #[test]
    fn only_the_executor_reports_server_queries() {
        let session = open_session().execute(&submit(Engine::Server)).unwrap().0;
        let start = SessionCommand::StartQuery {
            query_id: QueryId(Uuid::from_u128(9)),
        };
        let refused = decide(&session, &start, &context(Issuer::Client)).unwrap_err();
        assert_eq!(refused, Refusal::ExecutorOnly("StartQuery"));
        assert!(refused.is_forbidden());
        assert!(decide(&session, &start, &context(Issuer::Executor)).is_ok());

        let local = open_session().execute(&submit(Engine::Local)).unwrap().0;
        assert!(decide(&local, &start, &context(Issuer::Client)).is_ok());
    }

    #[test]
    fn unknown_server_datasets_are_refused_when_known_to_be_missing() {
        let session = open_session();
        let attach = SessionCommand::AttachDataset {
            dataset: DatasetRef::Server {
                name: DatasetName::new("nope").unwrap(),
            },
        };
        assert_eq!(
            DecisionContext::needs(&attach)
                .server_dataset
                .map(DatasetName::as_str),
            Some("nope")
        );
        let mut ctx = context(Issuer::Client);
        assert!(
            decide(&session, &attach, &ctx).is_ok(),
            "unknown here: not checked"
        );
        ctx.server_dataset_exists = Some(true);
        assert!(decide(&session, &attach, &ctx).is_ok());
        ctx.server_dataset_exists = Some(false);
        let refused = decide(&session, &attach, &ctx).unwrap_err();
        assert_eq!(refused, Refusal::UnknownDataset("nope".into()));
        assert!(!refused.is_forbidden());
    }

    #[test]
    fn a_query_id_belongs_to_one_session() {
        let session = open_session();
        let command = submit(Engine::Server);
        assert_eq!(
            DecisionContext::needs(&command).query_id,
            Some(QueryId(Uuid::from_u128(9)))
        );
        let mut ctx = context(Issuer::Client);
        ctx.query_id_owner = Some(SESSION);
        assert!(decide(&session, &command, &ctx).is_ok(), "its own id");
        ctx.query_id_owner = Some(Uuid::from_u128(2));
        assert_eq!(
            decide(&session, &command, &ctx).unwrap_err(),
            Refusal::QueryIdTaken(QueryId(Uuid::from_u128(9)))
        );
        assert_eq!(
            DecisionContext::needs(&SessionCommand::CloseSession {}),
            Needs::default()
        );
    }

    #[test]
    fn the_session_rules_come_last() {
        let refused = decide(
            &QuerySession::default(),
            &SessionCommand::CloseSession {},
            &context(Issuer::Client),
        )
        .unwrap_err();
        assert_eq!(refused, Refusal::Domain(SessionError::NotCreated));
        assert_eq!(refused.to_string(), SessionError::NotCreated.to_string());
    }
}
