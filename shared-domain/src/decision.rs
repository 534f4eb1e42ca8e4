//! The decision context: what a `QuerySession` decision needs beyond the
//! session itself, so that the server's pipeline, the browser and the sync
//! simulation refuse exactly the same commands.
//!
//! The session alone cannot know whether a server dataset exists, whether
//! another session already used a query id, or who issues the command. The
//! shell gathers those facts ([`DecisionContext::needs`] says which) and
//! passes them in; [`authorize`] and [`decide`] are pure. A fact the shell
//! cannot know (the browser offline has no catalog) is `None`: not checked
//! here, the authority checks it. The actor comes from verified credentials
//! (the server) or the signed-in user (the browser), never from an envelope.

use uuid::Uuid;

use crate::access::{AccessContext, Actor, UserId, UserName};
use crate::session::{QuerySession, SessionCommand, SessionError, SessionEvent};
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionContext {
    pub issuer: Issuer,
    /// Who the command is decided for: its access rights.
    pub actor: Actor,
    /// The session the command is for.
    pub aggregate_id: Uuid,
    /// For an `AttachDataset` of a server dataset: whether the catalog has
    /// it (`None`: unknown here, left to the authority).
    pub server_dataset_exists: Option<bool>,
    /// For a `SubmitQuery`: the session that already used its query id, if
    /// one did (as far as the caller knows).
    pub query_id_owner: Option<Uuid>,
    /// For a `ShareSession`: the active user its name denotes (`None`: no
    /// such user).
    pub share_target: Option<UserId>,
}

/// Which facts a command needs gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs<'a> {
    pub server_dataset: Option<&'a DatasetName>,
    pub query_id: Option<QueryId>,
    pub share_target: Option<&'a UserName>,
}

impl DecisionContext {
    /// A context with no facts gathered yet.
    pub fn new(issuer: Issuer, actor: Actor, aggregate_id: Uuid) -> Self {
        DecisionContext {
            issuer,
            actor,
            aggregate_id,
            server_dataset_exists: None,
            query_id_owner: None,
            share_target: None,
        }
    }

    /// The server's query executor deciding on `aggregate_id`.
    pub fn executor(aggregate_id: Uuid) -> Self {
        Self::new(Issuer::Executor, Actor::System, aggregate_id)
    }

    /// The facts `command` needs: look them up, then fill the context.
    pub fn needs(command: &SessionCommand) -> Needs<'_> {
        match command {
            SessionCommand::AttachDataset {
                dataset: DatasetRef::Server { name },
            } => Needs {
                server_dataset: Some(name),
                ..Needs::default()
            },
            SessionCommand::SubmitQuery { query_id, .. } => Needs {
                query_id: Some(*query_id),
                ..Needs::default()
            },
            SessionCommand::ShareSession { user, .. } => Needs {
                share_target: Some(user),
                ..Needs::default()
            },
            _ => Needs::default(),
        }
    }
}

/// Why a command was refused, by kind: the server answers 404 when the actor
/// may not see the session, 403 when it may not issue the command, 400 for
/// an over-long text and 422 for the others.
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
        matches!(
            self,
            Refusal::ExecutorOnly(_) | Refusal::Domain(SessionError::Forbidden { .. })
        )
    }

    /// Whether the actor may not see the session at all (404: the same
    /// answer as for a session that does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Refusal::Domain(SessionError::NotFound))
    }

    /// Whether the command itself is malformed (400), whatever the state.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Refusal::Domain(SessionError::Invalid(_)))
    }
}

/// Whether the issuer may send `command` to `session` at all, whatever its
/// version: checked before the version, so a forged command is 403 (and a
/// session the actor may not read 404) even on a stale base, and the
/// version of a session one may not read never leaks.
pub fn authorize(
    session: &QuerySession,
    command: &SessionCommand,
    context: &DecisionContext,
) -> Result<(), Refusal> {
    session.authorize(context.actor, command)?;
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
    // The shell looked up the one name this command needs (`share_target`).
    let directory = |_: &UserName| context.share_target;
    let access = AccessContext {
        actor: context.actor,
        users: &directory,
    };
    Ok(session.decide(&access, command)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregate;
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
        DecisionContext::new(issuer, Actor::System, SESSION)
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
    fn a_share_needs_the_user_it_names_and_refusals_say_their_kind() {
        use crate::values::SessionTitle;
        let bob = UserName::new("bob").unwrap();
        let share = SessionCommand::ShareSession {
            user: bob.clone(),
            role: crate::access::Role::Viewer,
        };
        assert_eq!(DecisionContext::needs(&share).share_target, Some(&bob));
        let invalid = Refusal::Domain(SessionError::Invalid(
            crate::values::ValueError::TitleTooLong(SessionTitle::MAX_CHARS + 1),
        ));
        assert!(invalid.is_invalid() && !invalid.is_forbidden() && !invalid.is_not_found());
        let missing = Refusal::Domain(SessionError::NotFound);
        assert!(missing.is_not_found() && !missing.is_invalid());
        assert!(!Refusal::ExecutorOnly("StartQuery").is_invalid());
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
