//! `QuerySession`: the reference analytics aggregate.
//!
//! A session has a title, optionally an attached dataset, and the history of
//! every query submitted in it with its execution state. At most one query
//! is active (submitted or running) at a time.

mod chart;
mod command;
mod event;

pub use chart::{ChartAggregate, ChartKind, ChartSettings, MAX_BINS};
pub use command::SessionCommand;
pub use event::SessionEvent;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::access::{AccessContext, Actor, Member, Role, UserId, UserName};
use crate::aggregate::Aggregate;
use crate::upcast::Upcaster;
use crate::values::{
    Column, DatasetRef, Engine, ErrorId, QueryId, SessionTitle, SqlQuery, ValueError,
};

/// Why a `QuerySession` refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SessionError {
    #[error("the session does not exist yet; create it first")]
    NotCreated,
    #[error("the session already exists")]
    AlreadyCreated,
    #[error("the session is closed")]
    Closed,
    #[error("query {active} is still active; wait for it or cancel it first")]
    QueryAlreadyActive { active: QueryId },
    #[error("query id {0} was already used in this session")]
    DuplicateQueryId(QueryId),
    #[error("query {0} is not the active query")]
    QueryNotActive(QueryId),
    #[error("query {0} has already started")]
    QueryAlreadyStarted(QueryId),
    #[error("query {0} has not started yet")]
    QueryNotStarted(QueryId),
    #[error("a {dataset_kind} dataset lives in the browser; run the query on the local engine")]
    EngineNotAllowed { dataset_kind: &'static str },
    /// The actor may not read the session: as far as it knows, there is none.
    #[error("the session does not exist or is not shared with you")]
    NotFound,
    #[error("a {role} of this session may not {command}; ask its owner")]
    Forbidden { role: Role, command: &'static str },
    #[error("there is no user named {0:?}")]
    UnknownUser(UserName),
    #[error("the owner already has every right on the session")]
    SharedWithOwner,
    #[error("a session is shared as viewer or editor, not as owner")]
    OwnerRoleNotShareable,
    #[error("the session is not shared with {0:?}")]
    NotAMember(UserName),
    /// A free-text field over its size limit (checked when deciding, never
    /// when stored events are read).
    #[error("{0}")]
    Invalid(ValueError),
    #[error("query {0} is not in this session")]
    UnknownQuery(QueryId),
    #[error("query {0} has no result to chart (it did not complete)")]
    QueryNotCompleted(QueryId),
    #[error("the chart cannot be drawn: {0}")]
    InvalidChart(String),
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    #[default]
    NotCreated,
    Open,
    Closed,
}

/// The execution state of one query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum QueryState {
    Submitted,
    Running,
    /// Where it ran is the record's `engine`.
    Completed {
        row_count: u64,
        columns: Vec<Column>,
        elapsed_ms: u64,
        /// What the datasets looked like when it ran (server queries).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
    },
    Failed {
        error_id: ErrorId,
        message: String,
    },
    Cancelled,
}

impl QueryState {
    /// Submitted or running: the query still holds the session's one slot.
    pub fn is_active(&self) -> bool {
        matches!(self, QueryState::Submitted | QueryState::Running)
    }
}

/// One entry of a session's query history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRecord {
    pub query_id: QueryId,
    pub sql: SqlQuery,
    pub engine: Engine,
    #[serde(flatten)]
    pub state: QueryState,
    /// How its result is charted (`ChartConfigured`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSettings>,
}

/// The state of a query session, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QuerySession {
    pub version: u64,
    pub lifecycle: Lifecycle,
    pub title: Option<SessionTitle>,
    pub dataset: Option<DatasetRef>,
    /// The most recently submitted query, whatever its state.
    pub current_query: Option<QueryId>,
    /// Every query ever submitted, oldest first.
    pub history: Vec<QueryRecord>,
    /// The user who created the session.
    #[serde(default)]
    pub owner: Option<UserId>,
    /// The users it is shared with, in the order they were added.
    #[serde(default)]
    pub members: Vec<Member>,
}

impl QuerySession {
    /// What `user` may do with this session, if anything.
    pub fn role_of(&self, user: UserId) -> Option<Role> {
        if self.lifecycle == Lifecycle::NotCreated {
            return None;
        }
        if self.owner == Some(user) {
            return Some(Role::Owner);
        }
        self.members.iter().find(|m| m.user == user).map(|m| m.role)
    }

    /// Whether `user` may read this session (its events, results, downloads).
    pub fn can_read(&self, user: UserId) -> bool {
        self.role_of(user).is_some()
    }

    /// The least role that may issue `command` on an existing session.
    pub fn required_role(command: &SessionCommand) -> Role {
        use SessionCommand as C;
        match command {
            C::CloseSession {} | C::ShareSession { .. } | C::UnshareSession { .. } => Role::Owner,
            C::CreateSession { .. }
            | C::RenameSession { .. }
            | C::AttachDataset { .. }
            | C::SubmitQuery { .. }
            | C::StartQuery { .. }
            | C::CompleteQuery { .. }
            | C::FailQuery { .. }
            | C::CancelQuery { .. }
            | C::ConfigureChart { .. } => Role::Editor,
        }
    }

    /// Whether `user` may issue `command` now (for hiding controls).
    pub fn allows(&self, user: UserId, command: &SessionCommand) -> bool {
        self.role_of(user)
            .is_some_and(|role| role >= Self::required_role(command))
    }

    /// Decides `command` for the actor in `context`: the access rules of
    /// [`crate::access`] first, then the session's own rules. The server
    /// and the browser both call this; [`Aggregate::handle`] is the same
    /// decision for the system actor.
    pub fn decide(
        &self,
        context: &AccessContext<'_>,
        command: &SessionCommand,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        let creator = self.authorize(context.actor, command)?;
        self.decide_allowed(creator, context, command)
    }

    /// The access rules alone: whether `actor` may issue `command` here, and
    /// who would own a session it creates. A user who may not read the
    /// session, or asks for anything but creation on one that does not
    /// exist, gets [`SessionError::NotFound`]: the two look the same.
    pub fn authorize(
        &self,
        actor: Actor,
        command: &SessionCommand,
    ) -> Result<UserId, SessionError> {
        let user = match actor {
            Actor::System => return Ok(UserId::OWNER),
            Actor::User(user) => user,
        };
        if self.lifecycle == Lifecycle::NotCreated {
            return match command {
                SessionCommand::CreateSession { .. } => Ok(user),
                _ => Err(SessionError::NotFound),
            };
        }
        let role = self.role_of(user).ok_or(SessionError::NotFound)?;
        if role < Self::required_role(command) {
            return Err(SessionError::Forbidden {
                role,
                command: command.verb(),
            });
        }
        Ok(user)
    }

    /// The query that is submitted or running, if any.
    pub fn active_query(&self) -> Option<&QueryRecord> {
        self.history.iter().rev().find(|q| q.state.is_active())
    }

    /// A query of this session by id.
    pub fn query(&self, query_id: QueryId) -> Option<&QueryRecord> {
        self.history.iter().find(|q| q.query_id == query_id)
    }

    fn query_mut(&mut self, query_id: QueryId) -> Option<&mut QueryRecord> {
        self.history.iter_mut().find(|q| q.query_id == query_id)
    }

    /// Whether only the server's query executor may issue `command`: starting,
    /// completing or failing a query that runs on the server engine. Clients
    /// must not forge a server result.
    pub fn is_executor_only(&self, command: &SessionCommand) -> bool {
        let query_id = match command {
            SessionCommand::StartQuery { query_id }
            | SessionCommand::CompleteQuery { query_id, .. }
            | SessionCommand::FailQuery { query_id, .. } => *query_id,
            _ => return false,
        };
        self.query(query_id)
            .is_some_and(|q| q.engine == Engine::Server)
    }

    /// The active query, if it is `query_id`.
    fn require_active(&self, query_id: QueryId) -> Result<&QueryRecord, SessionError> {
        self.active_query()
            .filter(|q| q.query_id == query_id)
            .ok_or(SessionError::QueryNotActive(query_id))
    }

    fn require_open(&self) -> Result<(), SessionError> {
        match self.lifecycle {
            Lifecycle::NotCreated => Err(SessionError::NotCreated),
            Lifecycle::Open => Ok(()),
            Lifecycle::Closed => Err(SessionError::Closed),
        }
    }
}

impl Aggregate for QuerySession {
    const TYPE: &'static str = "QuerySession";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;

    /// Decides as the system actor: no access rules (see [`QuerySession::decide`]).
    fn handle(&self, command: &SessionCommand) -> Result<Vec<SessionEvent>, SessionError> {
        self.decide(&AccessContext::system(), command)
    }

    fn apply(&mut self, event: &SessionEvent) {
        self.evolve(event)
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn upcaster() -> Upcaster {
        SessionEvent::upcaster()
    }
}

impl QuerySession {
    /// The session's own rules, once access is granted. `creator` owns a
    /// session this command creates.
    fn decide_allowed(
        &self,
        creator: UserId,
        context: &AccessContext<'_>,
        command: &SessionCommand,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        use SessionCommand as C;
        use SessionEvent as E;

        match command {
            C::CreateSession { title } | C::RenameSession { title } => {
                title.check_length().map_err(SessionError::Invalid)?
            }
            C::SubmitQuery { sql, .. } => sql.check_length().map_err(SessionError::Invalid)?,
            _ => {}
        }
        if let C::CreateSession { title } = command {
            return match self.lifecycle {
                Lifecycle::NotCreated => Ok(vec![E::SessionCreated {
                    title: title.clone(),
                    owner: creator,
                }]),
                _ => Err(SessionError::AlreadyCreated),
            };
        }
        self.require_open()?;

        match command {
            C::ShareSession { user, role } => {
                if *role == Role::Owner {
                    return Err(SessionError::OwnerRoleNotShareable);
                }
                let id = context
                    .users
                    .user_id(user)
                    .ok_or_else(|| SessionError::UnknownUser(user.clone()))?;
                if self.owner == Some(id) {
                    return Err(SessionError::SharedWithOwner);
                }
                if self.members.iter().any(|m| m.user == id && m.role == *role) {
                    // Already so: nothing happens, and a resend is harmless.
                    return Ok(vec![]);
                }
                Ok(vec![E::SessionShared {
                    user: id,
                    name: user.clone(),
                    role: *role,
                }])
            }
            C::UnshareSession { user } => {
                let events: Vec<SessionEvent> = self
                    .members
                    .iter()
                    .filter(|m| m.name == *user)
                    .map(|m| E::SessionUnshared {
                        user: m.user,
                        name: m.name.clone(),
                    })
                    .collect();
                if events.is_empty() {
                    return Err(SessionError::NotAMember(user.clone()));
                }
                Ok(events)
            }
            C::CreateSession { .. } => unreachable!("handled above"),
            C::RenameSession { title } => Ok(vec![E::SessionRenamed {
                title: title.clone(),
            }]),
            C::AttachDataset { dataset } => Ok(vec![E::DatasetAttached {
                dataset: dataset.clone(),
            }]),
            C::SubmitQuery {
                query_id,
                sql,
                engine,
            } => {
                if let Some(active) = self.active_query() {
                    return Err(SessionError::QueryAlreadyActive {
                        active: active.query_id,
                    });
                }
                if self.query(*query_id).is_some() {
                    return Err(SessionError::DuplicateQueryId(*query_id));
                }
                if let Some(dataset) = &self.dataset {
                    if !dataset.allows(*engine) {
                        return Err(SessionError::EngineNotAllowed {
                            dataset_kind: match dataset {
                                DatasetRef::Url { .. } => "URL",
                                _ => "browser-local",
                            },
                        });
                    }
                }
                Ok(vec![E::QuerySubmitted {
                    query_id: *query_id,
                    sql: sql.clone(),
                    engine: *engine,
                }])
            }
            C::StartQuery { query_id } => {
                let query = self.require_active(*query_id)?;
                if query.state != QueryState::Submitted {
                    return Err(SessionError::QueryAlreadyStarted(*query_id));
                }
                Ok(vec![E::QueryStarted {
                    query_id: *query_id,
                }])
            }
            C::CompleteQuery {
                query_id,
                row_count,
                columns,
                elapsed_ms,
                fingerprint,
            } => {
                let query = self.require_active(*query_id)?;
                if query.state != QueryState::Running {
                    return Err(SessionError::QueryNotStarted(*query_id));
                }
                Ok(vec![E::QueryCompleted {
                    query_id: *query_id,
                    row_count: *row_count,
                    columns: columns.clone(),
                    elapsed_ms: *elapsed_ms,
                    fingerprint: fingerprint.clone(),
                }])
            }
            C::FailQuery {
                query_id,
                error_id,
                message,
            } => {
                // A query may fail before it starts (refused by the sandbox,
                // interrupted by a restart while still queued).
                self.require_active(*query_id)?;
                Ok(vec![E::QueryFailed {
                    query_id: *query_id,
                    error_id: *error_id,
                    message: message.clone(),
                }])
            }
            C::CancelQuery { query_id } => {
                self.require_active(*query_id)?;
                Ok(vec![E::QueryCancelled {
                    query_id: *query_id,
                }])
            }
            C::ConfigureChart { query_id, chart } => {
                let query = self
                    .query(*query_id)
                    .ok_or(SessionError::UnknownQuery(*query_id))?;
                let QueryState::Completed { columns, .. } = &query.state else {
                    return Err(SessionError::QueryNotCompleted(*query_id));
                };
                if let Some(problem) = chart.problem(columns) {
                    return Err(SessionError::InvalidChart(problem));
                }
                if query.chart.as_ref() == Some(chart) {
                    // Saving the same settings again changes nothing.
                    return Ok(Vec::new());
                }
                Ok(vec![E::ChartConfigured {
                    query_id: *query_id,
                    chart: chart.clone(),
                }])
            }
            C::CloseSession {} => {
                // Closing never leaves a query dangling: the active one is cancelled first.
                let mut events: Vec<SessionEvent> = self
                    .active_query()
                    .map(|q| E::QueryCancelled {
                        query_id: q.query_id,
                    })
                    .into_iter()
                    .collect();
                events.push(E::SessionClosed {});
                Ok(events)
            }
        }
    }

    fn evolve(&mut self, event: &SessionEvent) {
        use SessionEvent as E;
        self.version += 1;
        match event {
            E::SessionCreated { title, owner } => {
                self.lifecycle = Lifecycle::Open;
                self.title = Some(title.clone());
                self.owner = Some(*owner);
            }
            E::SessionShared { user, name, role } => {
                match self.members.iter_mut().find(|m| m.user == *user) {
                    Some(member) => member.role = *role,
                    None => self.members.push(Member {
                        user: *user,
                        name: name.clone(),
                        role: *role,
                    }),
                }
            }
            E::SessionUnshared { user, .. } => self.members.retain(|m| m.user != *user),
            E::SessionRenamed { title } => self.title = Some(title.clone()),
            E::DatasetAttached { dataset } => self.dataset = Some(dataset.clone()),
            E::QuerySubmitted {
                query_id,
                sql,
                engine,
            } => {
                self.current_query = Some(*query_id);
                self.history.push(QueryRecord {
                    query_id: *query_id,
                    sql: sql.clone(),
                    engine: *engine,
                    state: QueryState::Submitted,
                    chart: None,
                });
            }
            E::QueryStarted { query_id } => self.set_state(*query_id, |_| QueryState::Running),
            E::QueryCompleted {
                query_id,
                row_count,
                columns,
                elapsed_ms,
                fingerprint,
            } => self.set_state(*query_id, |_| QueryState::Completed {
                row_count: *row_count,
                columns: columns.clone(),
                elapsed_ms: *elapsed_ms,
                fingerprint: fingerprint.clone(),
            }),
            E::QueryFailed {
                query_id,
                error_id,
                message,
            } => self.set_state(*query_id, |_| QueryState::Failed {
                error_id: *error_id,
                message: message.clone(),
            }),
            E::QueryCancelled { query_id } => self.set_state(*query_id, |_| QueryState::Cancelled),
            E::SessionClosed {} => self.lifecycle = Lifecycle::Closed,
            E::ChartConfigured { query_id, chart } => {
                if let Some(record) = self.query_mut(*query_id) {
                    record.chart = Some(chart.clone());
                }
            }
        }
    }
}

impl QuerySession {
    // Events are facts: an event about an unknown query (impossible through
    // `handle`) changes nothing but the version rather than panicking.
    fn set_state(&mut self, query_id: QueryId, next: impl FnOnce(&QueryRecord) -> QueryState) {
        if let Some(query) = self.query_mut(query_id) {
            query.state = next(query);
        }
    }
}

#[cfg(test)]
mod access_tests;
#[cfg(test)]
pub(crate) mod tests;
