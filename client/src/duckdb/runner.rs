//! Local queries in the session's life: after `SubmitQuery` with the Local
//! engine is accepted, this issues `StartQuery`, runs the SQL in
//! duckdb-wasm, keeps the rows in this tab, and issues `CompleteQuery`
//! (row count, columns, elapsed ms) or `FailQuery` (DuckDB's message and an
//! error id, also written to the console) through the sync engine, so the
//! history reaches the server and other tabs while the data does not.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{DatasetRef, ErrorId, QueryId, SessionCommand};
use uuid::Uuid;

use super::engine::{LocalDb, LocalError, LocalResult};
use super::local_data;
use crate::api::{ApiError, ResultPage};
use crate::grid::{self, GridView};
use crate::ids::random_uuid;
use crate::offline::engine::engine;

thread_local! {
    /// Results of local queries run in this tab (rows never leave it).
    static RESULTS: RefCell<HashMap<QueryId, Rc<LocalResult>>> = RefCell::new(HashMap::new());
    /// Local queries this tab is running (starting the engine, loading
    /// data, waiting for the connection, or in duckdb-wasm).
    static ACTIVE: RefCell<HashSet<QueryId>> = RefCell::new(HashSet::new());
    /// Those of them the user cancelled.
    static CANCELLED: RefCell<HashSet<QueryId>> = RefCell::new(HashSet::new());
    /// The one inside duckdb-wasm right now, which `LocalDb::cancel` interrupts.
    static IN_ENGINE: RefCell<Option<QueryId>> = const { RefCell::new(None) };
}

/// Runs local query `query_id` of `session_id`, submitted with
/// `SyncEngine::submit_local_query` (which remembers the run until its
/// outcome is stored, so a closed tab's query is ended by the next page).
pub fn start(session_id: Uuid, query_id: QueryId, sql: String) {
    spawn_local(async move {
        if engine()
            .submit(session_id, SessionCommand::StartQuery { query_id })
            .is_none()
        {
            // Refused (cancelled meanwhile, session closed): nothing to run.
            engine().local_run_ended(query_id);
            return;
        }
        ACTIVE.with(|a| a.borrow_mut().insert(query_id));
        let url = match engine().view_untracked(session_id).dataset {
            Some(DatasetRef::Url { url }) => Some(url.as_str().to_owned()),
            _ => None,
        };
        let outcome = run(query_id, &sql, url.as_deref()).await;
        ACTIVE.with(|a| a.borrow_mut().remove(&query_id));
        CANCELLED.with(|c| c.borrow_mut().remove(&query_id));
        match outcome {
            Ok(result) => {
                let command = SessionCommand::CompleteQuery {
                    query_id,
                    row_count: result.total_rows,
                    columns: result.columns.clone(),
                    elapsed_ms: result.elapsed_ms,
                    fingerprint: None,
                };
                // The rows must be here before the view learns of completion.
                RESULTS.with(|r| r.borrow_mut().insert(query_id, Rc::new(result)));
                engine().submit_local_outcome(session_id, query_id, command);
            }
            // The user's CancelQuery is already recorded.
            Err(LocalError::Cancelled) => engine().local_run_ended(query_id),
            Err(error) => {
                let error_id = random_uuid();
                let message = error.to_string();
                web_sys::console::error_1(
                    &format!(
                        "sextant local query {query_id} failed, error id {error_id}: {message}"
                    )
                    .into(),
                );
                engine().submit_local_outcome(
                    session_id,
                    query_id,
                    SessionCommand::FailQuery {
                        query_id,
                        error_id: ErrorId(error_id),
                        message,
                    },
                );
            }
        }
    });
}

fn cancelled(query_id: QueryId) -> bool {
    CANCELLED.with(|c| c.borrow().contains(&query_id))
}

async fn run(query_id: QueryId, sql: &str, url: Option<&str>) -> Result<LocalResult, LocalError> {
    let db = LocalDb::shared().await?;
    // Only the stored files this statement names are read into duckdb-wasm.
    local_data::ensure_named(&db, sql).await?;
    if let Some(url) = url {
        local_data::ensure_url(&db, url).await?;
    }
    // One query at a time per connection: wait for the previous one (a
    // cancelled query takes a moment to unwind), unless cancelled meanwhile.
    while db.is_running() {
        if cancelled(query_id) {
            return Err(LocalError::Cancelled);
        }
        gloo_timers::future::TimeoutFuture::new(20).await;
    }
    if cancelled(query_id) {
        return Err(LocalError::Cancelled);
    }
    // No await between here and `query` marking the connection busy, so a
    // cancel from now on reaches this query and no other.
    IN_ENGINE.with(|e| *e.borrow_mut() = Some(query_id));
    let outcome = db.query(sql).await;
    IN_ENGINE.with(|e| *e.borrow_mut() = None);
    outcome
}

/// Cancels local query `query_id` if this tab runs it: before it reaches
/// duckdb-wasm it never starts; inside, it is interrupted.
pub fn cancel(query_id: QueryId) {
    if !ACTIVE.with(|a| a.borrow().contains(&query_id)) {
        return;
    }
    CANCELLED.with(|c| c.borrow_mut().insert(query_id));
    if IN_ENGINE.with(|e| *e.borrow()) != Some(query_id) {
        return;
    }
    spawn_local(async move {
        if let Ok(db) = LocalDb::shared().await {
            // Still the same query (it may have finished meanwhile).
            if IN_ENGINE.with(|e| *e.borrow()) == Some(query_id) {
                let _ = db.cancel().await;
            }
        }
    });
}

/// A page of a local result, shaped like the server's.
pub fn result_page(query_id: QueryId, offset: u64, limit: u64) -> Result<ResultPage, ApiError> {
    let Some(result) = RESULTS.with(|r| r.borrow().get(&query_id).cloned()) else {
        let error_id = random_uuid().to_string();
        let message = "the rows of a local query stay in the browser tab that ran it: \
                       run it again here to see them"
            .to_owned();
        web_sys::console::warn_1(&format!("sextant error {error_id}: {message}").into());
        return Err(ApiError { error_id, message });
    };
    Ok(page_of(&result, offset, limit))
}

thread_local! {
    /// The latest sorted or filtered view of a local result, computed in
    /// duckdb-wasm over all its rows (one at a time: scrolling reuses it).
    static VIEW: RefCell<Option<(QueryId, GridView, Rc<LocalResult>)>> = const { RefCell::new(None) };
}

/// Rows of `view` of local result `query_id` (its SQL `sql`): the query is
/// run again in duckdb-wasm, filtered and sorted over all its rows.
pub async fn view_page(
    query_id: QueryId,
    sql: &str,
    view: &GridView,
    offset: u64,
    limit: u64,
) -> Result<ResultPage, LocalError> {
    let cached = VIEW.with(|v| {
        v.borrow()
            .as_ref()
            .filter(|(q, w, _)| *q == query_id && w == view)
            .map(|(_, _, result)| result.clone())
    });
    let result = match cached {
        Some(result) => result,
        None => {
            let db = LocalDb::shared().await?;
            local_data::ensure_named(&db, sql).await?;
            let result = Rc::new(db.query(&grid::local_sql(sql, view)).await?);
            VIEW.with(|v| *v.borrow_mut() = Some((query_id, view.clone(), result.clone())));
            result
        }
    };
    Ok(page_of(&result, offset, limit))
}

/// The profile of `column` over `view` of the result of `sql`, in duckdb-wasm.
pub async fn profile(
    sql: &str,
    view: &GridView,
    column: &str,
) -> Result<crate::api::ColumnProfile, LocalError> {
    let db = LocalDb::shared().await?;
    local_data::ensure_named(&db, sql).await?;
    let result = db
        .query(&grid::local_profile_sql(sql, view, column))
        .await?;
    let row = result.rows.first().cloned().unwrap_or_default();
    let number = |i: usize| {
        row.get(i)
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0)
    };
    Ok(crate::api::ColumnProfile {
        column: column.to_owned(),
        data_type: None,
        rows: number(0),
        nulls: number(1),
        distinct: number(2),
        min: row.get(3).cloned().unwrap_or_default(),
        max: row.get(4).cloned().unwrap_or_default(),
    })
}

/// Runs the chart aggregation `sql` (see `crate::chart::local_sql`) in duckdb-wasm.
pub async fn aggregate(sql: &str) -> Result<crate::api::Aggregated, LocalError> {
    let db = LocalDb::shared().await?;
    local_data::ensure_named(&db, sql).await?;
    let result = db.query(sql).await?;
    Ok(crate::api::Aggregated {
        columns: result.columns,
        rows: result.rows,
    })
}

fn page_of(result: &LocalResult, offset: u64, limit: u64) -> ResultPage {
    let kept = result.rows.len() as u64;
    let start = offset.min(kept) as usize;
    let end = (offset + limit).min(kept) as usize;
    ResultPage {
        columns: result.columns.clone(),
        rows: result.rows[start..end].to_vec(),
        total_rows: result.total_rows,
        offset,
        available_rows: Some(kept),
        truncated: kept < result.total_rows,
    }
}

/// The whole result of local query `sql` (all rows, run again in
/// duckdb-wasm) as Parquet file bytes, written by parquet-wasm.
pub async fn parquet(sql: &str) -> Result<js_sys::Uint8Array, LocalError> {
    let db = LocalDb::shared().await?;
    local_data::ensure_named(&db, sql).await?;
    db.export_parquet(sql).await
}

/// The rows of local result `query_id` kept in this tab (for exports).
pub fn kept_result(query_id: QueryId) -> Option<Rc<LocalResult>> {
    RESULTS.with(|r| r.borrow().get(&query_id).cloned())
}

/// The local engine's state, for the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineStatus {
    NotStarted,
    Starting,
    Ready {
        bundle: String,
        threads: u32,
        /// Why the threaded build did not start, when it was chosen.
        fallback: String,
        startup_ms: f64,
    },
    Failed(String),
}

impl EngineStatus {
    /// The status line under the local data panel.
    pub fn describe(&self) -> String {
        match self {
            EngineStatus::NotStarted => "Local engine: starts on first use".to_owned(),
            EngineStatus::Starting => "Local engine: starting…".to_owned(),
            EngineStatus::Ready {
                bundle,
                threads,
                fallback,
                startup_ms,
            } => {
                let threads = match threads {
                    1 => "1 thread".to_owned(),
                    n => format!("{n} threads"),
                };
                let mut line = format!(
                    "Local engine: ready (duckdb-wasm {bundle}, {threads}, started in {startup_ms:.0} ms)"
                );
                if !fallback.is_empty() {
                    line.push_str(&format!("; the threaded build failed: {fallback}"));
                }
                line
            }
            EngineStatus::Failed(message) => format!("Local engine failed: {message}"),
        }
    }
}

/// Starts duckdb-wasm now (e.g. when the user opens a file) and reports.
pub fn warm_up(status: RwSignal<EngineStatus>) {
    if matches!(status.get_untracked(), EngineStatus::Ready { .. }) {
        return;
    }
    status.set(EngineStatus::Starting);
    spawn_local(async move {
        status.set(match LocalDb::shared().await {
            Ok(db) => EngineStatus::Ready {
                bundle: db.bundle(),
                threads: db.threads(),
                fallback: db.fallback(),
                startup_ms: db.startup_ms(),
            },
            Err(error) => EngineStatus::Failed(error.to_string()),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::EngineStatus;

    fn ready(bundle: &str, threads: u32, fallback: &str) -> EngineStatus {
        EngineStatus::Ready {
            bundle: bundle.to_owned(),
            threads,
            fallback: fallback.to_owned(),
            startup_ms: 812.4,
        }
    }

    #[test]
    fn the_status_line_names_the_build_its_threads_and_why_threads_are_missing() {
        assert_eq!(
            ready("coi", 4, "").describe(),
            "Local engine: ready (duckdb-wasm coi, 4 threads, started in 812 ms)"
        );
        assert_eq!(
            ready("eh", 1, "").describe(),
            "Local engine: ready (duckdb-wasm eh, 1 thread, started in 812 ms)"
        );
        assert_eq!(
            ready("eh", 1, "the coi worker failed: it could not load").describe(),
            "Local engine: ready (duckdb-wasm eh, 1 thread, started in 812 ms); \
             the threaded build failed: the coi worker failed: it could not load"
        );
    }
}
