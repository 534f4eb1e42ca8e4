//! Event schema evolution: upcasters turn stored payloads of older versions
//! into the current shape before they are deserialized and applied.
//!
//! Each step migrates one event type from version `n` to `n + 1`; the chain
//! applies steps until the payload reaches the version the code knows. A
//! payload *newer* than the code is refused: misreading a future event would
//! silently corrupt state, so the caller must report "reload to update".

use serde_json::Value;
use thiserror::Error;

use crate::aggregate::DomainEvent;

/// Why a stored event could not be turned into a current event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpcastError {
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    #[error("{event_type} version {version} is newer than this code knows (version {known}); update the app")]
    NewerThanKnown {
        event_type: String,
        version: u32,
        known: u32,
    },
    #[error("{event_type} version {version} has no upcaster to version {}", version + 1)]
    MissingStep { event_type: String, version: u32 },
    #[error("malformed event payload: {0}")]
    Malformed(String),
}

type Step = fn(Value) -> Result<Value, UpcastError>;

/// An ordered set of migration steps, keyed by event type and source version.
#[derive(Debug, Clone, Default)]
pub struct Upcaster {
    steps: Vec<(&'static str, u32, Step)>,
}

impl Upcaster {
    /// An upcaster with no steps: every event must already be current.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the step that migrates `event_type` from `from_version` to `from_version + 1`.
    pub fn step(mut self, event_type: &'static str, from_version: u32, step: Step) -> Self {
        self.steps.push((event_type, from_version, step));
        self
    }

    /// Brings `payload` of `event_type` at `version` up to `E`'s current
    /// version and deserializes it.
    pub fn decode<E: DomainEvent>(
        &self,
        event_type: &str,
        version: u32,
        mut payload: Value,
    ) -> Result<E, UpcastError> {
        let known = E::current_version(event_type)
            .ok_or_else(|| UpcastError::UnknownEventType(event_type.to_owned()))?;
        if version > known {
            return Err(UpcastError::NewerThanKnown {
                event_type: event_type.to_owned(),
                version,
                known,
            });
        }
        let mut current = version;
        while current < known {
            let step = self
                .steps
                .iter()
                .find(|(name, from, _)| *name == event_type && *from == current)
                .map(|(_, _, step)| *step)
                .ok_or_else(|| UpcastError::MissingStep {
                    event_type: event_type.to_owned(),
                    version: current,
                })?;
            payload = step(payload)?;
            current += 1;
        }
        // The payload carries its tag; make sure it names the stored type.
        if let Some(object) = payload.as_object_mut() {
            object.insert("type".into(), Value::String(event_type.to_owned()));
        }
        serde_json::from_value(payload).map_err(|e| UpcastError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::session::SessionEvent;
    use crate::values::Engine;

    /// A `QuerySubmitted` payload exactly as version 1 of the code stored it.
    const QUERY_SUBMITTED_V1: &str = include_str!("../tests/fixtures/query_submitted_v1.json");

    #[test]
    fn v1_query_submitted_becomes_a_server_query() {
        let payload: Value = serde_json::from_str(QUERY_SUBMITTED_V1).unwrap();
        let event: SessionEvent = SessionEvent::upcaster()
            .decode("QuerySubmitted", 1, payload)
            .unwrap();
        match event {
            SessionEvent::QuerySubmitted { engine, sql, .. } => {
                assert_eq!(engine, Engine::Server);
                assert_eq!(sql.as_str(), "SELECT count(*) FROM demo");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A `QueryCompleted` payload as version 1 stored it (no fingerprint).
    const QUERY_COMPLETED_V1: &str = include_str!("../tests/fixtures/query_completed_v1.json");

    #[test]
    fn v1_query_completed_has_no_fingerprint_and_v2_keeps_it() {
        let payload: Value = serde_json::from_str(QUERY_COMPLETED_V1).unwrap();
        let event: SessionEvent = SessionEvent::upcaster()
            .decode("QueryCompleted", 1, payload.clone())
            .unwrap();
        match event {
            SessionEvent::QueryCompleted {
                row_count,
                fingerprint,
                ..
            } => {
                assert_eq!(row_count, 3);
                assert_eq!(fingerprint, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut v2 = payload;
        v2["fingerprint"] = json!("catalog-v1:00ff");
        let event: SessionEvent = SessionEvent::upcaster()
            .decode("QueryCompleted", 2, v2)
            .unwrap();
        assert!(matches!(
            event,
            SessionEvent::QueryCompleted { fingerprint: Some(ref f), .. } if f == "catalog-v1:00ff"
        ));
    }

    #[test]
    fn current_payloads_pass_unchanged() {
        let event: SessionEvent = SessionEvent::upcaster()
            .decode(
                "SessionRenamed",
                1,
                json!({"type": "SessionRenamed", "title": "x"}),
            )
            .unwrap();
        assert_eq!(event.event_type(), "SessionRenamed");
    }

    #[test]
    fn newer_versions_are_refused_not_misread() {
        let err = SessionEvent::upcaster()
            .decode::<SessionEvent>(
                "QuerySubmitted",
                3,
                json!({"type": "QuerySubmitted", "query_id": "00000000-0000-0000-0000-000000000001", "sql": "select 1", "engine": "local"}),
            )
            .unwrap_err();
        assert_eq!(
            err,
            UpcastError::NewerThanKnown {
                event_type: "QuerySubmitted".into(),
                version: 3,
                known: 2
            }
        );
    }

    #[test]
    fn unknown_types_are_refused() {
        let err = SessionEvent::upcaster()
            .decode::<SessionEvent>("SessionExploded", 1, json!({}))
            .unwrap_err();
        assert_eq!(err, UpcastError::UnknownEventType("SessionExploded".into()));
    }
}
