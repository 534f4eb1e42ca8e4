//! Wire types shared by the server and the client: events as stored and
//! streamed, and commands as sent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::upcast::UpcastError;

/// Facts about why an event was appended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The command that produced this event (the idempotency key).
    pub command_id: Uuid,
    /// The id shared by everything one user action caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or command that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who sent the command: a browser replica id, `"server:query-executor"`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A stored event with everything needed to order, route and decode it.
///
/// ```
/// # use shared_domain::{EventEnvelope, QuerySession};
/// let json = r#"{
///   "global_sequence": 42,
///   "id": "0193a5c4-7d2e-7b1a-9f00-5c1d2e3f4a5b",
///   "aggregate_type": "QuerySession",
///   "aggregate_id": "6f1c2b9e-3d4a-4e5f-8a7b-9c0d1e2f3a4b",
///   "aggregate_sequence": 3,
///   "event_type": "QuerySubmitted",
///   "event_version": 2,
///   "payload": {
///     "type": "QuerySubmitted",
///     "query_id": "b7e4c1d2-1a2b-4c3d-9e8f-0a1b2c3d4e5f",
///     "sql": "SELECT category, sum(amount) FROM demo GROUP BY 1",
///     "engine": "server"
///   },
///   "metadata": { "command_id": "c0ffee00-1234-4abc-8def-0123456789ab" },
///   "created_at": "2026-11-23T18:30:00Z"
/// }"#;
/// let envelope: EventEnvelope = serde_json::from_str(json).unwrap();
/// let event = envelope.decode::<QuerySession>().unwrap();
/// assert_eq!(envelope.aggregate_sequence, 3);
/// # let _ = event;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Position in the store's total order; the SSE `id`. Assigned by the store.
    pub global_sequence: u64,
    /// The event's own id.
    pub id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// 1 for an aggregate's first event, then 2, 3, … without gaps.
    pub aggregate_sequence: u64,
    pub event_type: String,
    /// Schema version of `payload`, starting at 1.
    pub event_version: u32,
    /// The event's JSON, including its `type` tag.
    pub payload: Value,
    pub metadata: EventMetadata,
    /// When the authority stored the event (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
}

impl EventEnvelope {
    /// Wraps a freshly decided event. `global_sequence` is 0 until the store assigns one.
    pub fn new<A: Aggregate>(
        id: Uuid,
        aggregate_id: Uuid,
        aggregate_sequence: u64,
        event: &A::Event,
        metadata: EventMetadata,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            global_sequence: 0,
            id,
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id,
            aggregate_sequence,
            event_type: event.event_type().to_owned(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event).expect("domain events serialize to JSON"),
            metadata,
            created_at,
        }
    }

    /// Upcasts and deserializes the payload into `A`'s current event type.
    pub fn decode<A: Aggregate>(&self) -> Result<A::Event, UpcastError> {
        if self.aggregate_type != A::TYPE {
            return Err(UpcastError::Malformed(format!(
                "event of aggregate type {:?} decoded as {:?}",
                self.aggregate_type,
                A::TYPE
            )));
        }
        A::upcaster().decode(&self.event_type, self.event_version, self.payload.clone())
    }
}

/// A command as sent over the wire. `C` is the aggregate's command type once
/// parsed; on the way in it is raw JSON so the receiver can route by
/// `aggregate_type` first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope<C = Value> {
    /// The idempotency key: a resend with the same id is answered, not re-applied.
    pub command_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The aggregate version the sender decided on (0 for a new aggregate).
    pub expected_version: u64,
    /// The `command_id` that produced the aggregate's event at
    /// `expected_version`: with it the authority checks the exact base the
    /// sender decided on, not only its number (see `docs/SYNC.md`). Absent at
    /// version 0 and from senders that only check numbers (older clients, the
    /// server's executor). Like `expected_version`, it is not part of the
    /// idempotency fingerprint: a rebased resend gets its original answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_command: Option<Uuid>,
    /// The tagged command, `{"type": "CreateSession", "title": "…"}`.
    pub command: C,
}

impl<C: Serialize> CommandEnvelope<C> {
    /// The same envelope with its command as JSON.
    pub fn to_json(&self) -> CommandEnvelope<Value> {
        CommandEnvelope {
            command_id: self.command_id,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id,
            expected_version: self.expected_version,
            base_command: self.base_command,
            command: serde_json::to_value(&self.command).expect("commands serialize to JSON"),
        }
    }
}

impl CommandEnvelope<Value> {
    /// Parses the command as `A::Command`.
    pub fn parse<A: Aggregate>(&self) -> Result<CommandEnvelope<A::Command>, serde_json::Error> {
        Ok(CommandEnvelope {
            command_id: self.command_id,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id,
            expected_version: self.expected_version,
            base_command: self.base_command,
            command: serde_json::from_value(self.command.clone())?,
        })
    }
}
