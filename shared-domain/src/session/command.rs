//! The commands a `QuerySession` accepts (its public wire format).

use serde::{Deserialize, Serialize};

use crate::values::{Column, DatasetRef, Engine, ErrorId, QueryId, SessionTitle, SqlQuery};

/// A request to change a query session. Internally tagged JSON:
/// `{"type": "RenameSession", "title": "Q3 revenue"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum SessionCommand {
    CreateSession {
        title: SessionTitle,
    },
    RenameSession {
        title: SessionTitle,
    },
    AttachDataset {
        dataset: DatasetRef,
    },
    SubmitQuery {
        query_id: QueryId,
        sql: SqlQuery,
        engine: Engine,
    },
    StartQuery {
        query_id: QueryId,
    },
    CompleteQuery {
        query_id: QueryId,
        row_count: u64,
        columns: Vec<Column>,
        elapsed_ms: u64,
        /// Server queries: what their datasets looked like (None: unknown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
    },
    FailQuery {
        query_id: QueryId,
        error_id: ErrorId,
        message: String,
    },
    CancelQuery {
        query_id: QueryId,
    },
    CloseSession {},
}

impl SessionCommand {
    /// The command's JSON `type` tag.
    pub fn name(&self) -> &'static str {
        match self {
            SessionCommand::CreateSession { .. } => "CreateSession",
            SessionCommand::RenameSession { .. } => "RenameSession",
            SessionCommand::AttachDataset { .. } => "AttachDataset",
            SessionCommand::SubmitQuery { .. } => "SubmitQuery",
            SessionCommand::StartQuery { .. } => "StartQuery",
            SessionCommand::CompleteQuery { .. } => "CompleteQuery",
            SessionCommand::FailQuery { .. } => "FailQuery",
            SessionCommand::CancelQuery { .. } => "CancelQuery",
            SessionCommand::CloseSession {} => "CloseSession",
        }
    }

    /// The query this command is about, if any.
    pub fn query_id(&self) -> Option<QueryId> {
        match self {
            SessionCommand::SubmitQuery { query_id, .. }
            | SessionCommand::StartQuery { query_id }
            | SessionCommand::CompleteQuery { query_id, .. }
            | SessionCommand::FailQuery { query_id, .. }
            | SessionCommand::CancelQuery { query_id } => Some(*query_id),
            _ => None,
        }
    }
}
