//! Time travel over a session's event log: the session as it was at any
//! earlier version (folded by the same [`QuerySession::apply`] every replica
//! and the server use), and the differences between two versions. Pure: the
//! browser hands in the events it holds, so this works offline.

use chrono::{DateTime, Utc};

use crate::aggregate::Aggregate;
use crate::envelope::EventEnvelope;
use crate::session::{Lifecycle, QuerySession, QueryState};
use crate::upcast::UpcastError;
use crate::values::{DatasetRef, Engine, QueryId};

/// One session's events, in aggregate order, decoded once.
#[derive(Debug, Clone)]
pub struct Timeline {
    events: Vec<(u64, DateTime<Utc>, crate::session::SessionEvent)>,
}

impl Timeline {
    /// The timeline of session `aggregate_id` from `envelopes` (any order,
    /// other sessions' events ignored; duplicates kept once). Old payload
    /// versions are upcast; an undecodable event is an error, never skipped.
    pub fn new(aggregate_id: uuid::Uuid, envelopes: &[EventEnvelope]) -> Result<Self, UpcastError> {
        let mut mine: Vec<&EventEnvelope> = envelopes
            .iter()
            .filter(|e| e.aggregate_id == aggregate_id)
            .collect();
        mine.sort_by_key(|e| e.aggregate_sequence);
        mine.dedup_by_key(|e| e.aggregate_sequence);
        let events = mine
            .into_iter()
            // A gap would fold a state that never was: stop before it.
            .enumerate()
            .take_while(|(i, e)| e.aggregate_sequence == *i as u64 + 1)
            .map(|(_, e)| {
                Ok((
                    e.aggregate_sequence,
                    e.created_at,
                    e.decode::<QuerySession>()?,
                ))
            })
            .collect::<Result<_, UpcastError>>()?;
        Ok(Self { events })
    }

    /// The newest version (the number of events).
    pub fn latest(&self) -> u64 {
        self.events.len() as u64
    }

    /// When version `version` was recorded (None for 0 or beyond the end).
    pub fn recorded_at(&self, version: u64) -> Option<DateTime<Utc>> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.events.get(index).map(|(_, at, _)| *at)
    }

    /// The event type that made version `version`.
    pub fn event_type(&self, version: u64) -> Option<&'static str> {
        use crate::aggregate::DomainEvent;
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.events.get(index).map(|(_, _, e)| e.event_type())
    }

    /// The session as it was at `version` (clamped to the newest).
    pub fn at(&self, version: u64) -> QuerySession {
        let mut session = QuerySession::default();
        for (_, _, event) in self.events.iter().take(version as usize) {
            session.apply(event);
        }
        session
    }
}

/// What changed from one version of a session to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Title {
        from: Option<String>,
        to: Option<String>,
    },
    Dataset {
        from: Option<String>,
        to: Option<String>,
    },
    Lifecycle {
        from: Lifecycle,
        to: Lifecycle,
    },
    QueryAdded {
        query_id: QueryId,
        sql: String,
        engine: Engine,
        outcome: String,
    },
    QueryOutcome {
        query_id: QueryId,
        sql: String,
        from: String,
        to: String,
    },
}

/// A dataset as one line of text.
pub fn dataset_label(dataset: &DatasetRef) -> String {
    match dataset {
        DatasetRef::Server { name } => format!("server: {}", name.as_str()),
        DatasetRef::Url { url } => format!("url: {}", url.as_str()),
        DatasetRef::Local { name, .. } => format!("local: {}", name.as_str()),
    }
}

/// A query's state as one line of text.
pub fn outcome_label(state: &QueryState) -> String {
    match state {
        QueryState::Submitted => "submitted".to_owned(),
        QueryState::Running => "running".to_owned(),
        QueryState::Completed {
            row_count,
            elapsed_ms,
            ..
        } => format!("completed: {row_count} rows in {elapsed_ms} ms"),
        QueryState::Failed { message, .. } => format!("failed: {message}"),
        QueryState::Cancelled => "cancelled".to_owned(),
    }
}

/// The differences from `old` to `new`: title, dataset, lifecycle, the
/// queries added and the outcomes that changed.
pub fn diff(old: &QuerySession, new: &QuerySession) -> Vec<Change> {
    let mut changes = Vec::new();
    let title = |s: &QuerySession| s.title.as_ref().map(|t| t.as_str().to_owned());
    if title(old) != title(new) {
        changes.push(Change::Title {
            from: title(old),
            to: title(new),
        });
    }
    let dataset = |s: &QuerySession| s.dataset.as_ref().map(dataset_label);
    if dataset(old) != dataset(new) {
        changes.push(Change::Dataset {
            from: dataset(old),
            to: dataset(new),
        });
    }
    if old.lifecycle != new.lifecycle {
        changes.push(Change::Lifecycle {
            from: old.lifecycle,
            to: new.lifecycle,
        });
    }
    for record in &new.history {
        match old.query(record.query_id) {
            None => changes.push(Change::QueryAdded {
                query_id: record.query_id,
                sql: record.sql.as_str().to_owned(),
                engine: record.engine,
                outcome: outcome_label(&record.state),
            }),
            Some(before) if before.state != record.state => changes.push(Change::QueryOutcome {
                query_id: record.query_id,
                sql: record.sql.as_str().to_owned(),
                from: outcome_label(&before.state),
                to: outcome_label(&record.state),
            }),
            Some(_) => {}
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EventMetadata;
    use crate::session::SessionEvent;
    use crate::values::{DatasetName, SessionTitle, SqlQuery};
    use chrono::TimeZone;
    use uuid::Uuid;

    fn envelope(aggregate_id: Uuid, sequence: u64, event: SessionEvent) -> EventEnvelope {
        EventEnvelope::new::<QuerySession>(
            Uuid::from_u128(sequence as u128),
            aggregate_id,
            sequence,
            &event,
            EventMetadata {
                command_id: Uuid::from_u128(1000 + sequence as u128),
                correlation_id: None,
                causation_id: None,
                client_id: None,
                user_agent: None,
            },
            Utc.timestamp_opt(1_700_000_000 + sequence as i64, 0)
                .unwrap(),
        )
    }

    fn title(text: &str) -> SessionTitle {
        SessionTitle::new(text).unwrap()
    }

    fn log(id: Uuid) -> Vec<EventEnvelope> {
        let query_id = QueryId(Uuid::from_u128(7));
        vec![
            envelope(
                id,
                1,
                SessionEvent::SessionCreated {
                    title: title("First"),
                    owner: crate::access::UserId::OWNER,
                },
            ),
            envelope(
                id,
                2,
                SessionEvent::SessionRenamed {
                    title: title("Second"),
                },
            ),
            envelope(
                id,
                3,
                SessionEvent::DatasetAttached {
                    dataset: DatasetRef::Server {
                        name: DatasetName::new("demo").unwrap(),
                    },
                },
            ),
            envelope(
                id,
                4,
                SessionEvent::QuerySubmitted {
                    query_id,
                    sql: SqlQuery::new("SELECT 1").unwrap(),
                    engine: Engine::Server,
                },
            ),
            envelope(
                id,
                5,
                SessionEvent::QueryFailed {
                    query_id,
                    error_id: crate::values::ErrorId(Uuid::from_u128(9)),
                    message: "boom".into(),
                },
            ),
            envelope(
                id,
                6,
                SessionEvent::SessionRenamed {
                    title: title("Third"),
                },
            ),
        ]
    }

    #[test]
    fn an_earlier_version_is_the_fold_of_its_prefix() {
        let id = Uuid::from_u128(42);
        let mut events = log(id);
        events.reverse();
        events.push(envelope(
            Uuid::from_u128(43),
            1,
            SessionEvent::SessionCreated {
                title: title("Other"),
                owner: crate::access::UserId::OWNER,
            },
        ));
        let timeline = Timeline::new(id, &events).unwrap();
        assert_eq!(timeline.latest(), 6);
        assert_eq!(timeline.at(2).title.unwrap().as_str(), "Second");
        assert_eq!(timeline.at(6).title.unwrap().as_str(), "Third");
        assert_eq!(timeline.at(0), QuerySession::default());
        assert_eq!(timeline.at(99).version, 6);
        assert_eq!(timeline.event_type(2), Some("SessionRenamed"));
        assert_eq!(
            timeline.recorded_at(1),
            Some(Utc.timestamp_opt(1_700_000_001, 0).unwrap())
        );
        assert_eq!(timeline.recorded_at(0), None);
    }

    #[test]
    fn a_gap_in_the_log_ends_the_timeline_before_it() {
        let id = Uuid::from_u128(42);
        let mut events = log(id);
        events.remove(2);
        assert_eq!(Timeline::new(id, &events).unwrap().latest(), 2);
    }

    #[test]
    fn the_diff_names_title_dataset_queries_and_outcomes() {
        let id = Uuid::from_u128(42);
        let timeline = Timeline::new(id, &log(id)).unwrap();
        let changes = diff(&timeline.at(2), &timeline.at(6));
        assert_eq!(
            changes,
            vec![
                Change::Title {
                    from: Some("Second".into()),
                    to: Some("Third".into())
                },
                Change::Dataset {
                    from: None,
                    to: Some("server: demo".into())
                },
                Change::QueryAdded {
                    query_id: QueryId(Uuid::from_u128(7)),
                    sql: "SELECT 1".into(),
                    engine: Engine::Server,
                    outcome: "failed: boom".into()
                },
            ]
        );
        let outcome = diff(&timeline.at(4), &timeline.at(5));
        assert!(matches!(
            &outcome[..],
            [Change::QueryOutcome { from, to, .. }] if from == "submitted" && to == "failed: boom"
        ));
        assert!(diff(&timeline.at(3), &timeline.at(3)).is_empty());
    }
}
