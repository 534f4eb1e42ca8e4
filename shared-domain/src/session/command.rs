//! The commands a `QuerySession` accepts (its public wire format).

use serde::{Deserialize, Serialize};

use super::chart::ChartSettings;
use crate::access::{Role, UserName};
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
    /// Shares the session with a user as `viewer` or `editor` (again to
    /// change the role). Owner only.
    ShareSession {
        user: UserName,
        role: Role,
    },
    /// Takes a user's access away. Owner only.
    UnshareSession {
        user: UserName,
    },
    /// Saves how the result of a completed query is charted.
    ConfigureChart {
        query_id: QueryId,
        chart: ChartSettings,
    },
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
            SessionCommand::ShareSession { .. } => "ShareSession",
            SessionCommand::UnshareSession { .. } => "UnshareSession",
            SessionCommand::ConfigureChart { .. } => "ConfigureChart",
        }
    }

    /// What the command does, for refusal messages ("a viewer may not rename the session").
    pub fn verb(&self) -> &'static str {
        match self {
            SessionCommand::CreateSession { .. } => "create the session",
            SessionCommand::RenameSession { .. } => "rename the session",
            SessionCommand::AttachDataset { .. } => "attach a dataset",
            SessionCommand::SubmitQuery { .. } => "run queries",
            SessionCommand::StartQuery { .. }
            | SessionCommand::CompleteQuery { .. }
            | SessionCommand::FailQuery { .. } => "report query results",
            SessionCommand::CancelQuery { .. } => "cancel queries",
            SessionCommand::CloseSession {} => "close the session",
            SessionCommand::ShareSession { .. } => "share the session",
            SessionCommand::UnshareSession { .. } => "unshare the session",
            SessionCommand::ConfigureChart { .. } => "configure charts",
        }
    }

    /// The query this command is about, if any.
    pub fn query_id(&self) -> Option<QueryId> {
        match self {
            SessionCommand::SubmitQuery { query_id, .. }
            | SessionCommand::StartQuery { query_id }
            | SessionCommand::CompleteQuery { query_id, .. }
            | SessionCommand::FailQuery { query_id, .. }
            | SessionCommand::CancelQuery { query_id }
            | SessionCommand::ConfigureChart { query_id, .. } => Some(*query_id),
            _ => None,
        }
    }
}
