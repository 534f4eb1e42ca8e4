//! The events of a `QuerySession` and their schema versions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chart::ChartSettings;
use crate::access::{Role, UserId, UserName};
use crate::aggregate::DomainEvent;
use crate::upcast::{UpcastError, Upcaster};
use crate::values::{Column, DatasetRef, Engine, ErrorId, QueryId, SessionTitle, SqlQuery};

/// Something that happened to a query session. Internally tagged JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SessionEvent {
    /// Version 2 added `owner`; version 1 payloads (stored before accounts
    /// existed) are upcast to [`UserId::OWNER`], the first admin.
    SessionCreated {
        title: SessionTitle,
        owner: UserId,
    },
    /// The session was shared with a user (or that user's role changed).
    SessionShared {
        user: UserId,
        name: UserName,
        role: Role,
    },
    /// A user's access was taken away.
    SessionUnshared {
        user: UserId,
        name: UserName,
    },
    SessionRenamed {
        title: SessionTitle,
    },
    DatasetAttached {
        dataset: DatasetRef,
    },
    /// Version 2 added `engine`; version 1 payloads are upcast to `"server"`,
    /// the only engine that existed then.
    QuerySubmitted {
        query_id: QueryId,
        sql: SqlQuery,
        engine: Engine,
    },
    QueryStarted {
        query_id: QueryId,
    },
    /// Version 2 added `fingerprint`; version 1 payloads are upcast with
    /// none (their results are recomputed as before).
    QueryCompleted {
        query_id: QueryId,
        row_count: u64,
        columns: Vec<Column>,
        elapsed_ms: u64,
        /// What the query's datasets looked like when it ran (server
        /// queries; see the server's `query::catalog::fingerprint`): an
        /// evicted result is recomputed only while it still matches.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
    },
    QueryFailed {
        query_id: QueryId,
        error_id: ErrorId,
        message: String,
    },
    QueryCancelled {
        query_id: QueryId,
    },
    SessionClosed {},
    /// Version 1. A later version changes `ChartSettings` only with an
    /// upcaster step from 1 (see `upcaster`).
    ChartConfigured {
        query_id: QueryId,
        chart: ChartSettings,
    },
}

/// Every event type with its current schema version.
const CURRENT_VERSIONS: &[(&str, u32)] = &[
    ("SessionCreated", 2),
    ("SessionRenamed", 1),
    ("DatasetAttached", 1),
    ("QuerySubmitted", 2),
    ("QueryStarted", 1),
    ("QueryCompleted", 2),
    ("QueryFailed", 1),
    ("QueryCancelled", 1),
    ("SessionClosed", 1),
    ("SessionShared", 1),
    ("SessionUnshared", 1),
    ("ChartConfigured", 1),
];

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SessionEvent::SessionCreated { .. } => "SessionCreated",
            SessionEvent::SessionRenamed { .. } => "SessionRenamed",
            SessionEvent::DatasetAttached { .. } => "DatasetAttached",
            SessionEvent::QuerySubmitted { .. } => "QuerySubmitted",
            SessionEvent::QueryStarted { .. } => "QueryStarted",
            SessionEvent::QueryCompleted { .. } => "QueryCompleted",
            SessionEvent::QueryFailed { .. } => "QueryFailed",
            SessionEvent::QueryCancelled { .. } => "QueryCancelled",
            SessionEvent::SessionClosed {} => "SessionClosed",
            SessionEvent::SessionShared { .. } => "SessionShared",
            SessionEvent::SessionUnshared { .. } => "SessionUnshared",
            SessionEvent::ChartConfigured { .. } => "ChartConfigured",
        }
    }

    fn current_version(event_type: &str) -> Option<u32> {
        CURRENT_VERSIONS
            .iter()
            .find(|(name, _)| *name == event_type)
            .map(|(_, version)| *version)
    }
}

impl SessionEvent {
    /// The query this event is about, if any.
    pub fn query_id(&self) -> Option<QueryId> {
        match self {
            SessionEvent::QuerySubmitted { query_id, .. }
            | SessionEvent::QueryStarted { query_id }
            | SessionEvent::QueryCompleted { query_id, .. }
            | SessionEvent::QueryFailed { query_id, .. }
            | SessionEvent::QueryCancelled { query_id }
            | SessionEvent::ChartConfigured { query_id, .. } => Some(*query_id),
            _ => None,
        }
    }

    /// The upcaster chain that brings every stored `QuerySession` payload to
    /// the current version.
    pub fn upcaster() -> Upcaster {
        Upcaster::new()
            .step("QuerySubmitted", 1, query_submitted_v1_to_v2)
            .step("SessionCreated", 1, session_created_v1_to_v2)
            .step("QueryCompleted", 1, query_completed_v1_to_v2)
    }

    /// The user this event grants or takes access, if any.
    pub fn member_changed(&self) -> Option<UserId> {
        match self {
            SessionEvent::SessionShared { user, .. }
            | SessionEvent::SessionUnshared { user, .. } => Some(*user),
            _ => None,
        }
    }
}

/// v1 `QueryCompleted` had no `fingerprint`: nothing is known of the data it read.
fn query_completed_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let object = payload.as_object_mut().ok_or_else(|| {
        UpcastError::Malformed("QueryCompleted v1 payload is not an object".into())
    })?;
    object.insert("fingerprint".into(), Value::Null);
    Ok(payload)
}

/// v1 `QuerySubmitted` had no `engine`: every query then ran on the server.
fn query_submitted_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let object = payload.as_object_mut().ok_or_else(|| {
        UpcastError::Malformed("QuerySubmitted v1 payload is not an object".into())
    })?;
    object
        .entry("engine")
        .or_insert_with(|| Value::String("server".into()));
    Ok(payload)
}

/// v1 `SessionCreated` had no `owner`: sessions stored before accounts
/// existed belong to the first admin, `owner`.
fn session_created_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let object = payload.as_object_mut().ok_or_else(|| {
        UpcastError::Malformed("SessionCreated v1 payload is not an object".into())
    })?;
    object
        .entry("owner")
        .or_insert_with(|| Value::String(UserId::OWNER.0.to_string()));
    Ok(payload)
}
