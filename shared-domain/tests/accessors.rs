//! The small accessors other crates rely on (the server's pipeline, the
//! browser's sync engine): query ids of commands and events, event versions,
//! the upcaster an aggregate carries, and the text of value objects. Each
//! assertion here was added for a mutant `cargo xtask mutants` found alive.

use serde_json::{json, Value};
use shared_domain::{
    Aggregate, DatasetName, DatasetUrl, DomainEvent, Engine, ErrorId, LocalFileName, QueryId,
    QuerySession, SessionCommand, SessionEvent, SessionTitle, SqlQuery, UpcastError, Upcaster,
};
use uuid::Uuid;

const QUERY: &str = "6f1c2b9e-3d4a-4e5f-8a7b-9c0d1e2f3a4b";

fn query_id() -> QueryId {
    QueryId(Uuid::parse_str(QUERY).unwrap())
}

fn command(value: Value) -> SessionCommand {
    serde_json::from_value(value).unwrap()
}

#[test]
fn commands_about_a_query_name_it_and_the_others_do_not() {
    let about_query = [
        json!({"type": "SubmitQuery", "query_id": QUERY, "sql": "SELECT 1", "engine": "server"}),
        json!({"type": "StartQuery", "query_id": QUERY}),
        json!({"type": "CompleteQuery", "query_id": QUERY, "row_count": 1, "columns": [], "elapsed_ms": 3}),
        json!({"type": "FailQuery", "query_id": QUERY, "error_id": QUERY, "message": "boom"}),
        json!({"type": "CancelQuery", "query_id": QUERY}),
    ];
    for value in about_query {
        assert_eq!(
            command(value.clone()).query_id(),
            Some(query_id()),
            "{value}"
        );
    }
    for value in [
        json!({"type": "CreateSession", "title": "t"}),
        json!({"type": "RenameSession", "title": "t"}),
        json!({"type": "AttachDataset", "dataset": {"kind": "server", "name": "demo"}}),
        json!({"type": "CloseSession"}),
    ] {
        assert_eq!(command(value.clone()).query_id(), None, "{value}");
    }
}

/// Runs `commands` from a new session and returns the events of the last one.
fn events_of(commands: &[Value]) -> Vec<SessionEvent> {
    let mut session = QuerySession::default();
    let mut last = Vec::new();
    for value in commands {
        last = session.handle(&command(value.clone())).unwrap();
        for event in &last {
            session.apply(event);
        }
    }
    last
}

#[test]
fn events_about_a_query_name_it_and_carry_their_current_version() {
    let create = json!({"type": "CreateSession", "title": "t"});
    let submit =
        json!({"type": "SubmitQuery", "query_id": QUERY, "sql": "SELECT 1", "engine": "local"});
    let start = json!({"type": "StartQuery", "query_id": QUERY});
    let submitted = events_of(&[create.clone(), submit.clone()]);
    assert_eq!(submitted[0].query_id(), Some(query_id()));
    // QuerySubmitted is at version 2 (v1 had no engine); a default of 1 would
    // store new payloads under the old schema.
    assert_eq!(submitted[0].event_version(), 2);
    assert_eq!(submitted[0].event_type(), "QuerySubmitted");
    let started = events_of(&[create.clone(), submit.clone(), start.clone()]);
    assert_eq!(started[0].query_id(), Some(query_id()));
    let cancelled = events_of(&[
        create.clone(),
        submit.clone(),
        json!({"type": "CancelQuery", "query_id": QUERY}),
    ]);
    assert_eq!(cancelled[0].query_id(), Some(query_id()));
    let created = events_of(std::slice::from_ref(&create));
    assert_eq!(created[0].query_id(), None);
    // SessionCreated v2 names its owner (v1 had none).
    assert_eq!(created[0].event_version(), 2);
}

#[test]
fn the_session_aggregate_carries_the_upcaster_of_its_events() {
    // A v1 QuerySubmitted (no engine) decodes only through the chain.
    let payload = json!({"type": "QuerySubmitted", "query_id": QUERY, "sql": "SELECT 1"});
    let event: SessionEvent = QuerySession::upcaster()
        .decode("QuerySubmitted", 1, payload.clone())
        .unwrap();
    assert_eq!(event.query_id(), Some(query_id()));
    assert!(matches!(
        event,
        SessionEvent::QuerySubmitted {
            engine: Engine::Server,
            ..
        }
    ));
    assert!(
        Upcaster::new()
            .decode::<SessionEvent>("QuerySubmitted", 1, payload)
            .is_err(),
        "an empty chain cannot read v1"
    );
}

#[test]
fn a_step_is_chosen_by_event_type_and_version_together() {
    // A decoy step for another type at the same version, registered first:
    // matching on either key alone would pick it.
    let chain = Upcaster::new()
        .step("SessionRenamed", 1, |_| {
            Err(UpcastError::Malformed("decoy step ran".into()))
        })
        .step("QuerySubmitted", 1, |mut payload| {
            payload["engine"] = json!("server");
            Ok(payload)
        });
    let payload = json!({"type": "QuerySubmitted", "query_id": QUERY, "sql": "SELECT 1"});
    let event: SessionEvent = chain.decode("QuerySubmitted", 1, payload).unwrap();
    assert_eq!(event.query_id(), Some(query_id()));
}

#[test]
fn value_objects_show_their_text() {
    let title = SessionTitle::new("Q3 revenue").unwrap();
    assert_eq!(title.as_str(), "Q3 revenue");
    assert_eq!(title.to_string(), "Q3 revenue");
    let sql = SqlQuery::new("SELECT 42").unwrap();
    assert_eq!(sql.as_str(), "SELECT 42");
    assert_eq!(sql.to_string(), "SELECT 42");
    let name = DatasetName::new("demo").unwrap();
    assert_eq!(name.as_str(), "demo");
    assert_eq!(name.to_string(), "demo");
    let file = LocalFileName::new("sales.csv").unwrap();
    assert_eq!(file.as_str(), "sales.csv");
    assert_eq!(file.to_string(), "sales.csv");
    let url = DatasetUrl::new("https://example.com/a.parquet").unwrap();
    assert_eq!(url.as_str(), "https://example.com/a.parquet");
    assert_eq!(url.to_string(), "https://example.com/a.parquet");
    assert_eq!(Engine::Local.to_string(), "local");
    assert_eq!(Engine::Server.to_string(), "server");
    assert_eq!(query_id().to_string(), QUERY);
    assert_eq!(ErrorId(query_id().0).to_string(), QUERY);
}
