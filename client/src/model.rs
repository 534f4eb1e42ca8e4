//! The client's pure core: one query session as this browser knows it.
//!
//! `Workbench` runs commands through the shared `QuerySession` aggregate
//! (the very code the server runs) and keeps the events it decided, so the
//! UI shows state computed by the domain, not by the view. Nothing here
//! touches the DOM, the network, a clock or randomness: ids come in as
//! arguments, which keeps this module testable natively with `cargo test`.

use shared_domain::{
    Aggregate, CommandEnvelope, Engine, Lifecycle, QueryId, QuerySession, QueryState,
    SessionCommand, SessionEvent, SessionTitle, SqlQuery,
};
use uuid::Uuid;

use crate::errors::{ClientError, ErrorKind};

/// One event this browser decided, with its position in the session.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// The event's aggregate sequence: 1 for the first event of the session.
    pub sequence: u64,
    pub event: SessionEvent,
}

impl LoggedEvent {
    /// The event's JSON `type` tag (`"QuerySubmitted"`, …).
    pub fn event_type(&self) -> &'static str {
        use shared_domain::DomainEvent;
        self.event.event_type()
    }
}

/// A query session held in the browser, plus the events that built it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workbench {
    /// The aggregate id, chosen here so a session can be created offline.
    pub session_id: Uuid,
    /// The state folded by the shared aggregate.
    pub session: QuerySession,
    /// Every event applied to `session`, oldest first.
    pub log: Vec<LoggedEvent>,
}

impl Workbench {
    /// An empty session (version 0) with the given id; nothing is decided yet.
    pub fn new(session_id: Uuid) -> Self {
        Self {
            session_id,
            session: QuerySession::default(),
            log: Vec::new(),
        }
    }

    /// Creates a session titled `title` (trimmed and validated by the domain).
    pub fn create(
        session_id: Uuid,
        title: &str,
        command_id: Uuid,
    ) -> Result<(Self, CommandEnvelope<SessionCommand>), ClientError> {
        let title = SessionTitle::new(title).map_err(|e| ClientError::invalid(command_id, e))?;
        let mut workbench = Self::new(session_id);
        let envelope = workbench.execute(SessionCommand::CreateSession { title }, command_id)?;
        Ok((workbench, envelope))
    }

    /// Decides `command` with the aggregate; on success applies its events
    /// and returns the envelope to send to the server. On refusal nothing
    /// changes. `command_id` is the idempotency key (and the error id, should
    /// the command be refused, so the two can be matched in logs).
    pub fn execute(
        &mut self,
        command: SessionCommand,
        command_id: Uuid,
    ) -> Result<CommandEnvelope<SessionCommand>, ClientError> {
        let expected_version = self.session.version();
        let events = self
            .session
            .handle(&command)
            .map_err(|e| ClientError::new(command_id, ErrorKind::Refused, e.to_string()))?;
        for event in events {
            self.session.apply(&event);
            self.log.push(LoggedEvent {
                sequence: self.session.version(),
                event,
            });
        }
        Ok(CommandEnvelope {
            command_id,
            aggregate_type: QuerySession::TYPE.to_owned(),
            aggregate_id: self.session_id,
            expected_version,
            command,
        })
    }

    /// Submits `sql` to run on the browser's own engine.
    pub fn submit_local_query(
        &mut self,
        query_id: Uuid,
        sql: &str,
        command_id: Uuid,
    ) -> Result<CommandEnvelope<SessionCommand>, ClientError> {
        let sql = SqlQuery::new(sql).map_err(|e| ClientError::invalid(command_id, e))?;
        self.execute(
            SessionCommand::SubmitQuery {
                query_id: QueryId(query_id),
                sql,
                engine: Engine::Local,
            },
            command_id,
        )
    }

    /// The session's title, or an empty string before it is created.
    pub fn title(&self) -> &str {
        self.session
            .title
            .as_ref()
            .map(SessionTitle::as_str)
            .unwrap_or_default()
    }
}

/// The lowercase name of a query state, as shown in the UI and in `data-state`.
pub fn state_name(state: &QueryState) -> &'static str {
    match state {
        QueryState::Submitted => "submitted",
        QueryState::Running => "running",
        QueryState::Completed { .. } => "completed",
        QueryState::Failed { .. } => "failed",
        QueryState::Cancelled => "cancelled",
    }
}

/// The lowercase name of a session's lifecycle stage.
pub fn lifecycle_name(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::NotCreated => "not created",
        Lifecycle::Open => "open",
        Lifecycle::Closed => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn creating_a_session_runs_the_aggregate() {
        let (workbench, envelope) = Workbench::create(id(1), "  Revenue  ", id(2)).unwrap();
        assert_eq!(workbench.title(), "Revenue");
        assert_eq!(workbench.session.version(), 1);
        assert_eq!(workbench.session.lifecycle, Lifecycle::Open);
        assert_eq!(envelope.expected_version, 0);
        assert_eq!(envelope.aggregate_type, "QuerySession");
        assert_eq!(envelope.aggregate_id, id(1));
        assert_eq!(envelope.command_id, id(2));
        assert_eq!(workbench.log.len(), 1);
        assert_eq!(workbench.log[0].sequence, 1);
        assert_eq!(workbench.log[0].event_type(), "SessionCreated");
    }

    #[test]
    fn a_blank_title_is_an_invalid_input_error_with_an_id() {
        let err = Workbench::create(id(1), "   ", id(9)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert_eq!(err.error_id.0, id(9));
        assert_eq!(err.message, "session title must not be empty");
    }

    #[test]
    fn submitted_queries_enter_the_history_with_their_state() {
        let (mut workbench, _) = Workbench::create(id(1), "t", id(2)).unwrap();
        let envelope = workbench
            .submit_local_query(id(10), "SELECT 42", id(3))
            .unwrap();
        assert_eq!(envelope.expected_version, 1);
        assert_eq!(workbench.session.version(), 2);
        let record = &workbench.session.history[0];
        assert_eq!(record.sql.as_str(), "SELECT 42");
        assert_eq!(record.engine, Engine::Local);
        assert_eq!(record.state, QueryState::Submitted);
        assert_eq!(
            serde_json::to_value(&envelope.command).unwrap()["type"],
            "SubmitQuery"
        );
    }

    #[test]
    fn a_refused_command_changes_nothing() {
        let (mut workbench, _) = Workbench::create(id(1), "t", id(2)).unwrap();
        workbench
            .submit_local_query(id(10), "SELECT 1", id(3))
            .unwrap();
        let before = workbench.clone();
        let err = workbench
            .submit_local_query(id(11), "SELECT 2", id(4))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Refused);
        assert!(err.message.contains("still active"), "{}", err.message);
        assert_eq!(workbench, before);

        let err = workbench
            .submit_local_query(id(12), " ", id(5))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert_eq!(workbench, before);
    }
}
