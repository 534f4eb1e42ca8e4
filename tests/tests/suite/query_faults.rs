//! Every server query the executor accepted ends in `QueryCompleted`,
//! `QueryFailed` or `QueryCancelled`, even when the event store refuses the
//! executor's commands at the worst moments: fault injection on the real
//! pipeline, SQLite and DuckDB (in-process server, real HTTP).

use std::time::{Duration, Instant};

use shared_domain::SessionCommand;

use crate::query::{record, session_on, start, submit, wait_for_state, Fixture};

/// Waits until the injector has refused at least `count` commands.
async fn refused_at_least(fx: &Fixture, count: u64) {
    let faults = fx.running.state.query().faults();
    let deadline = Instant::now() + Duration::from_secs(30);
    while faults.refused() < count {
        assert!(
            Instant::now() < deadline,
            "only {} refused",
            faults.refused()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_outcome_the_store_refuses_is_retried_until_it_is_recorded() {
    let fx = start(|_| {}).await;
    let faults = fx.running.state.query().faults();
    faults.fail_when(|command| matches!(command, SessionCommand::CompleteQuery { .. }));
    let (session, _) = session_on(&fx.api, "sales").await;
    let query_id = submit(&fx.api, session, "SELECT count(*) AS n FROM sales").await;
    refused_at_least(&fx, 3).await;
    // The store still fails: the query is not finished, and not forgotten.
    assert_eq!(record(&fx.api, session, query_id).await["state"], "running");
    faults.clear();
    let done = wait_for_state(&fx.api, session, query_id, &["completed", "failed"]).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["row_count"], 1, "{done}");

    // A failure's outcome too.
    faults.fail_when(|command| matches!(command, SessionCommand::FailQuery { .. }));
    let refused = faults.refused();
    let failing = submit(&fx.api, session, "SELECT * FROM no_such_table").await;
    refused_at_least(&fx, refused + 3).await;
    faults.clear();
    let done = wait_for_state(&fx.api, session, failing, &["completed", "failed"]).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["message"].as_str().unwrap().contains("no_such_table"),
        "{done}"
    );
}

#[tokio::test]
async fn a_query_that_cannot_be_started_fails_instead_of_waiting_forever() {
    let fx = start(|config| config.query_timeout = Duration::from_secs(1)).await;
    let faults = fx.running.state.query().faults();
    faults.fail_when(|command| matches!(command, SessionCommand::StartQuery { .. }));
    let (session, _) = session_on(&fx.api, "sales").await;
    let query_id = submit(&fx.api, session, "SELECT 1 AS one").await;
    let done = wait_for_state(&fx.api, session, query_id, &["completed", "failed"]).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains("could not be started"),
        "{done}"
    );
    assert!(faults.refused() >= 2, "StartQuery was retried");

    // A store that recovers in time: the query starts and completes.
    faults.clear();
    let refused = faults.refused();
    faults.fail_when(|command| matches!(command, SessionCommand::StartQuery { .. }));
    let query_id = submit(&fx.api, session, "SELECT 2 AS two").await;
    refused_at_least(&fx, refused + 2).await;
    faults.clear();
    let done = wait_for_state(&fx.api, session, query_id, &["completed", "failed"]).await;
    assert_eq!(done["state"], "completed", "{done}");
}
