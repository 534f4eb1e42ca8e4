//! The rules of a query session, as specifications.

use uuid::Uuid;

use super::*;
use crate::testing::given;
use crate::values::{DatasetName, DatasetUrl, LocalFileName};

use SessionCommand as C;
use SessionEvent as E;

fn title(s: &str) -> SessionTitle {
    SessionTitle::new(s).unwrap()
}
fn sql(s: &str) -> SqlQuery {
    SqlQuery::new(s).unwrap()
}
fn qid(n: u128) -> QueryId {
    QueryId(Uuid::from_u128(n))
}
fn created() -> SessionEvent {
    E::SessionCreated {
        title: title("Revenue"),
        owner: UserId::OWNER,
    }
}
fn submitted(n: u128, engine: Engine) -> SessionEvent {
    E::QuerySubmitted {
        query_id: qid(n),
        sql: sql("SELECT 42"),
        engine,
    }
}
fn submit(n: u128, engine: Engine) -> SessionCommand {
    C::SubmitQuery {
        query_id: qid(n),
        sql: sql("SELECT 42"),
        engine,
    }
}
fn local_dataset() -> DatasetRef {
    DatasetRef::Local {
        name: LocalFileName::new("trips.csv").unwrap(),
        size_bytes: 1024,
    }
}
fn server_dataset() -> DatasetRef {
    DatasetRef::Server {
        name: DatasetName::new("demo").unwrap(),
    }
}
fn columns() -> Vec<Column> {
    vec![Column::new("answer", "INTEGER")]
}
fn complete(n: u128) -> SessionCommand {
    C::CompleteQuery {
        query_id: qid(n),
        row_count: 1,
        columns: columns(),
        elapsed_ms: 7,
        fingerprint: None,
    }
}
fn error_id() -> ErrorId {
    ErrorId(Uuid::from_u128(99))
}

#[test]
fn a_session_is_created_once() {
    let state = given::<QuerySession>([])
        .when(C::CreateSession {
            title: title("Revenue"),
        })
        .then_expect_events([created()]);
    assert_eq!(state.lifecycle, Lifecycle::Open);
    assert_eq!(state.version(), 1);

    given::<QuerySession>([created()])
        .when(C::CreateSession { title: title("x") })
        .then_expect_error(SessionError::AlreadyCreated);
}

#[test]
fn nothing_happens_before_creation() {
    for command in [
        C::RenameSession { title: title("x") },
        C::AttachDataset {
            dataset: server_dataset(),
        },
        submit(1, Engine::Server),
        C::StartQuery { query_id: qid(1) },
        complete(1),
        C::CancelQuery { query_id: qid(1) },
        C::CloseSession {},
    ] {
        given::<QuerySession>([])
            .when(command)
            .then_expect_error(SessionError::NotCreated);
    }
}

#[test]
fn nothing_happens_after_closing() {
    for command in [
        C::RenameSession { title: title("x") },
        C::AttachDataset {
            dataset: server_dataset(),
        },
        submit(1, Engine::Server),
        C::CloseSession {},
    ] {
        given::<QuerySession>([created(), E::SessionClosed {}])
            .when(command)
            .then_expect_error(SessionError::Closed);
    }
    given::<QuerySession>([created(), E::SessionClosed {}])
        .when(C::CreateSession { title: title("x") })
        .then_expect_error(SessionError::AlreadyCreated);
}

#[test]
fn renaming_and_attaching() {
    let state = given::<QuerySession>([created()])
        .when(C::RenameSession { title: title("Q3") })
        .then_expect_events([E::SessionRenamed { title: title("Q3") }]);
    assert_eq!(state.title, Some(title("Q3")));

    let state = given::<QuerySession>([created()])
        .when(C::AttachDataset {
            dataset: server_dataset(),
        })
        .then_expect_events([E::DatasetAttached {
            dataset: server_dataset(),
        }]);
    assert_eq!(state.dataset, Some(server_dataset()));
}

#[test]
fn a_query_without_dataset_may_run() {
    let state = given::<QuerySession>([created()])
        .when(submit(1, Engine::Server))
        .then_expect_events([submitted(1, Engine::Server)]);
    assert_eq!(state.current_query, Some(qid(1)));
    assert_eq!(state.active_query().unwrap().state, QueryState::Submitted);
}

#[test]
fn one_query_at_a_time() {
    given::<QuerySession>([created(), submitted(1, Engine::Server)])
        .when(submit(2, Engine::Server))
        .then_expect_error(SessionError::QueryAlreadyActive { active: qid(1) });
    given::<QuerySession>([
        created(),
        submitted(1, Engine::Server),
        E::QueryStarted { query_id: qid(1) },
    ])
    .when(submit(2, Engine::Local))
    .then_expect_error(SessionError::QueryAlreadyActive { active: qid(1) });
}

#[test]
fn query_ids_are_not_reused() {
    given::<QuerySession>([
        created(),
        submitted(1, Engine::Server),
        E::QueryCancelled { query_id: qid(1) },
    ])
    .when(submit(1, Engine::Server))
    .then_expect_error(SessionError::DuplicateQueryId(qid(1)));
}

#[test]
fn browser_datasets_run_locally() {
    let url = DatasetRef::Url {
        url: DatasetUrl::new("https://example.org/t.csv").unwrap(),
    };
    given::<QuerySession>([
        created(),
        E::DatasetAttached {
            dataset: local_dataset(),
        },
    ])
    .when(submit(1, Engine::Server))
    .then_expect_error(SessionError::EngineNotAllowed {
        dataset_kind: "browser-local",
    });
    given::<QuerySession>([
        created(),
        E::DatasetAttached {
            dataset: url.clone(),
        },
    ])
    .when(submit(1, Engine::Server))
    .then_expect_error(SessionError::EngineNotAllowed {
        dataset_kind: "URL",
    });
    given::<QuerySession>([created(), E::DatasetAttached { dataset: url }])
        .when(submit(1, Engine::Local))
        .then_expect_events([submitted(1, Engine::Local)]);
    // A server dataset may be queried by either engine (taken offline into the browser).
    given::<QuerySession>([
        created(),
        E::DatasetAttached {
            dataset: server_dataset(),
        },
    ])
    .when(submit(1, Engine::Local))
    .then_expect_events([submitted(1, Engine::Local)]);
}

#[test]
fn a_query_starts_once_then_completes_once() {
    let history = [created(), submitted(1, Engine::Server)];
    given::<QuerySession>(history.clone())
        .when(C::StartQuery { query_id: qid(1) })
        .then_expect_events([E::QueryStarted { query_id: qid(1) }]);

    let running = [
        created(),
        submitted(1, Engine::Server),
        E::QueryStarted { query_id: qid(1) },
    ];
    given::<QuerySession>(running.clone())
        .when(C::StartQuery { query_id: qid(1) })
        .then_expect_error(SessionError::QueryAlreadyStarted(qid(1)));

    given::<QuerySession>(history)
        .when(complete(1))
        .then_expect_error(SessionError::QueryNotStarted(qid(1)));

    let state = given::<QuerySession>(running.clone())
        .when(complete(1))
        .then_expect_events([E::QueryCompleted {
            query_id: qid(1),
            row_count: 1,
            columns: columns(),
            elapsed_ms: 7,
            fingerprint: None,
        }]);
    assert_eq!(
        state.query(qid(1)).unwrap().state,
        QueryState::Completed {
            row_count: 1,
            columns: columns(),
            elapsed_ms: 7,
            fingerprint: None,
        }
    );
    assert!(state.active_query().is_none());

    let mut done = running.to_vec();
    done.push(E::QueryCompleted {
        query_id: qid(1),
        row_count: 1,
        columns: columns(),
        elapsed_ms: 7,
        fingerprint: None,
    });
    for command in [
        complete(1),
        C::StartQuery { query_id: qid(1) },
        C::CancelQuery { query_id: qid(1) },
        C::FailQuery {
            query_id: qid(1),
            error_id: error_id(),
            message: "late".into(),
        },
    ] {
        given::<QuerySession>(done.clone())
            .when(command)
            .then_expect_error(SessionError::QueryNotActive(qid(1)));
    }
}

#[test]
fn a_completed_session_round_trips_through_json() {
    // Regression: the completed state once repeated the record's `engine`,
    // which flattened into a JSON object with a duplicate key.
    let state = QuerySession::from_events(&[
        created(),
        submitted(1, Engine::Local),
        E::QueryStarted { query_id: qid(1) },
        E::QueryCompleted {
            query_id: qid(1),
            row_count: 1,
            columns: columns(),
            elapsed_ms: 7,
            fingerprint: None,
        },
    ]);
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["history"][0]["engine"], "local");
    assert_eq!(json["history"][0]["state"], "completed");
    assert_eq!(serde_json::from_value::<QuerySession>(json).unwrap(), state);
}

#[test]
fn only_the_active_query_changes_state() {
    given::<QuerySession>([created(), submitted(1, Engine::Server)])
        .when(C::StartQuery { query_id: qid(2) })
        .then_expect_error(SessionError::QueryNotActive(qid(2)));
    given::<QuerySession>([created()])
        .when(C::CancelQuery { query_id: qid(1) })
        .then_expect_error(SessionError::QueryNotActive(qid(1)));
}

#[test]
fn failure_keeps_prior_history() {
    let state = given::<QuerySession>([
        created(),
        submitted(1, Engine::Server),
        E::QueryStarted { query_id: qid(1) },
        E::QueryCompleted {
            query_id: qid(1),
            row_count: 1,
            columns: columns(),
            elapsed_ms: 7,
            fingerprint: None,
        },
        submitted(2, Engine::Server),
    ])
    .when(C::FailQuery {
        query_id: qid(2),
        error_id: error_id(),
        message: "Catalog Error: Table with name nope does not exist!".into(),
    })
    .then_expect_events([E::QueryFailed {
        query_id: qid(2),
        error_id: error_id(),
        message: "Catalog Error: Table with name nope does not exist!".into(),
    }]);
    assert_eq!(state.history.len(), 2);
    assert!(matches!(
        state.history[0].state,
        QueryState::Completed { .. }
    ));
    assert!(matches!(state.history[1].state, QueryState::Failed { .. }));
}

#[test]
fn any_client_may_cancel_the_active_query() {
    given::<QuerySession>([
        created(),
        submitted(1, Engine::Local),
        E::QueryStarted { query_id: qid(1) },
    ])
    .when(C::CancelQuery { query_id: qid(1) })
    .then_expect_events([E::QueryCancelled { query_id: qid(1) }]);
}

#[test]
fn closing_cancels_the_active_query() {
    let state = given::<QuerySession>([created(), submitted(1, Engine::Server)])
        .when(C::CloseSession {})
        .then_expect_events([E::QueryCancelled { query_id: qid(1) }, E::SessionClosed {}]);
    assert_eq!(state.lifecycle, Lifecycle::Closed);
    assert_eq!(state.version(), 4);
}

#[test]
fn server_results_are_executor_only() {
    let state = QuerySession::from_events(&[
        created(),
        submitted(1, Engine::Server),
        E::QueryCancelled { query_id: qid(1) },
        submitted(2, Engine::Local),
    ]);
    assert!(state.is_executor_only(&C::StartQuery { query_id: qid(1) }));
    assert!(state.is_executor_only(&complete(1)));
    assert!(!state.is_executor_only(&C::StartQuery { query_id: qid(2) }));
    assert!(!state.is_executor_only(&C::CancelQuery { query_id: qid(1) }));
    assert!(!state.is_executor_only(&complete(3)));
}

#[test]
fn wire_names_are_stable() {
    let command: SessionCommand = serde_json::from_str(
        r#"{"type":"SubmitQuery","query_id":"00000000-0000-0000-0000-000000000001","sql":"SELECT 42","engine":"local"}"#,
    )
    .unwrap();
    assert_eq!(
        command,
        submit(1, Engine::Local).clone_with_sql("SELECT 42")
    );
    assert_eq!(
        serde_json::to_value(C::CloseSession {}).unwrap(),
        serde_json::json!({"type": "CloseSession"})
    );
    assert_eq!(
        serde_json::to_value(E::QueryFailed {
            query_id: qid(1),
            error_id: error_id(),
            message: "m".into()
        })
        .unwrap(),
        serde_json::json!({"type": "QueryFailed", "query_id": qid(1), "error_id": error_id(), "message": "m"})
    );
    assert!(serde_json::from_str::<SessionCommand>(r#"{"type":"DropTable"}"#).is_err());
    assert!(
        serde_json::from_str::<SessionCommand>(r#"{"type":"CreateSession","title":"  "}"#).is_err()
    );
}

impl SessionCommand {
    fn clone_with_sql(&self, text: &str) -> Self {
        match self {
            C::SubmitQuery {
                query_id, engine, ..
            } => C::SubmitQuery {
                query_id: *query_id,
                sql: sql(text),
                engine: *engine,
            },
            other => other.clone(),
        }
    }
}

pub(crate) mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::aggregate::DomainEvent;

    fn arb_title() -> impl Strategy<Value = SessionTitle> {
        "[a-zA-Z0-9 ]{0,12}[a-z]".prop_map(|s| SessionTitle::new(s).unwrap())
    }

    fn arb_dataset() -> impl Strategy<Value = DatasetRef> {
        prop_oneof![
            Just(server_dataset()),
            Just(local_dataset()),
            Just(DatasetRef::Url {
                url: DatasetUrl::new("https://example.org/t.csv").unwrap()
            }),
        ]
    }

    fn arb_engine() -> impl Strategy<Value = Engine> {
        prop_oneof![Just(Engine::Local), Just(Engine::Server)]
    }

    /// Commands over a small pool of query ids, so that collisions,
    /// out-of-order lifecycles and double completions are common.
    pub(crate) fn arb_command() -> impl Strategy<Value = SessionCommand> {
        let q = (0u128..4).prop_map(qid);
        prop_oneof![
            arb_title().prop_map(|title| C::CreateSession { title }),
            arb_title().prop_map(|title| C::RenameSession { title }),
            arb_dataset().prop_map(|dataset| C::AttachDataset { dataset }),
            (q.clone(), arb_engine()).prop_map(|(query_id, engine)| C::SubmitQuery {
                query_id,
                sql: sql("SELECT 42"),
                engine
            }),
            q.clone().prop_map(|query_id| C::StartQuery { query_id }),
            (q.clone(), 0u64..1000, 0u64..1000).prop_map(|(query_id, row_count, elapsed_ms)| {
                C::CompleteQuery {
                    query_id,
                    row_count,
                    columns: columns(),
                    elapsed_ms,
                    fingerprint: None,
                }
            }),
            q.clone().prop_map(|query_id| C::FailQuery {
                query_id,
                error_id: error_id(),
                message: "boom".into()
            }),
            q.prop_map(|query_id| C::CancelQuery { query_id }),
            Just(C::CloseSession {}),
        ]
    }

    proptest! {
        #[test]
        fn replay_rebuilds_the_same_state(commands in prop::collection::vec(arb_command(), 0..40)) {
            let mut state = QuerySession::default();
            let mut log = Vec::new();
            for command in &commands {
                let before = state.clone();
                let outcome = state.handle(command);
                prop_assert_eq!(&state, &before, "handle must not mutate");
                if let Ok(events) = outcome {
                    for event in events {
                        state.apply(&event);
                        log.push(event);
                    }
                }
                prop_assert_eq!(state.version(), log.len() as u64);
                prop_assert!(state.history.iter().filter(|q| q.state.is_active()).count() <= 1);
            }
            prop_assert_eq!(QuerySession::from_events(&log), state);
        }

        #[test]
        fn commands_round_trip_through_json(command in arb_command()) {
            let json = serde_json::to_string(&command).unwrap();
            prop_assert_eq!(serde_json::from_str::<SessionCommand>(&json).unwrap(), command);
        }

        #[test]
        fn events_round_trip_through_json_and_upcaster(commands in prop::collection::vec(arb_command(), 0..30)) {
            let mut state = QuerySession::default();
            for command in &commands {
                if let Ok((next, events)) = state.execute(command) {
                    for event in events {
                        let payload = serde_json::to_value(&event).unwrap();
                        let decoded: SessionEvent = SessionEvent::upcaster()
                            .decode(event.event_type(), event.event_version(), payload)
                            .unwrap();
                        prop_assert_eq!(decoded, event);
                    }
                    state = next;
                }
            }
            let json = serde_json::to_string(&state).unwrap();
            prop_assert_eq!(serde_json::from_str::<QuerySession>(&json).unwrap(), state);
        }
    }
}
