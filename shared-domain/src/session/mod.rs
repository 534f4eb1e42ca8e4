//! `QuerySession`: the reference analytics aggregate.
//!
//! A session has a title, optionally an attached dataset, and the history of
//! every query submitted in it with its execution state. At most one query
//! is active (submitted or running) at a time.

mod command;
mod event;

pub use command::SessionCommand;
pub use event::SessionEvent;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregate::Aggregate;
use crate::upcast::Upcaster;
use crate::values::{Column, DatasetRef, Engine, ErrorId, QueryId, SessionTitle, SqlQuery};

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
}

impl QuerySession {
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

    fn handle(&self, command: &SessionCommand) -> Result<Vec<SessionEvent>, SessionError> {
        use SessionCommand as C;
        use SessionEvent as E;

        if let C::CreateSession { title } = command {
            return match self.lifecycle {
                Lifecycle::NotCreated => Ok(vec![E::SessionCreated {
                    title: title.clone(),
                }]),
                _ => Err(SessionError::AlreadyCreated),
            };
        }
        self.require_open()?;

        match command {
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

    fn apply(&mut self, event: &SessionEvent) {
        use SessionEvent as E;
        self.version += 1;
        match event {
            E::SessionCreated { title } => {
                self.lifecycle = Lifecycle::Open;
                self.title = Some(title.clone());
            }
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
        }
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn upcaster() -> Upcaster {
        SessionEvent::upcaster()
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
pub(crate) mod tests;
