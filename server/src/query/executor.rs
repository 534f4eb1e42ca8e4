//! The query service: runs server queries after their `QuerySubmitted` is
//! stored (spawn-after-persist), on a bounded pool of blocking threads (one
//! sandboxed DuckDB connection per slot, waiting queries served in order),
//! and reports every outcome as a command through the same pipeline as
//! clients (`StartQuery`, `CompleteQuery`, `FailQuery`, origin Executor).
//! It also serves results from a byte-bounded cache, recomputing evicted
//! ones from the query text, and fails queries a crash left behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::datatypes::SchemaRef;
use moka::future::Cache;
use shared_domain::{
    Column, CommandEnvelope, Engine, ErrorId, EventEnvelope, QueryId, QueryRecord, QuerySession,
    QueryState, SessionCommand, SessionEvent,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::catalog::Catalog;
use super::duck::{Database, Interrupter, RawConnection, RunControl, RunError};
use super::results::{SharedResult, StoredResult};
use super::{demo, sandbox, QuerySettings};
use crate::bus::{Bus, ProgressFrame};
use crate::error::{AppError, ErrorKind};
use crate::pipeline::{CommandAccepted, DatasetCatalog, Origin, Pipeline, Reactor};
use crate::projections::Projections;

/// The message of queries a crash or restart left unfinished.
pub const INTERRUPTED_BY_RESTART: &str = "interrupted by server restart";

/// How a query's execution ended, short of success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// Refused by the sandbox or rejected by DuckDB before running.
    Refused(String),
    /// DuckDB failed while running it.
    Failed(String),
    /// Cancelled by a `CancelQuery` (or the session closing).
    Cancelled,
    /// Stopped by the per-query timeout.
    TimedOut(Duration),
    /// Not started: the `StartQuery` command was refused.
    NotStarted,
}

impl ExecError {
    /// The message a user sees in `QueryFailed`.
    pub fn message(&self) -> String {
        match self {
            ExecError::Refused(m) | ExecError::Failed(m) => m.clone(),
            ExecError::Cancelled => "the query was cancelled".into(),
            ExecError::TimedOut(limit) => format!(
                "the query ran longer than the server's limit of {} and was stopped",
                humanize(*limit)
            ),
            ExecError::NotStarted => "the query could not be started".into(),
        }
    }
}

fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Cancellation and timeout state of one query, shared by the async side
/// (which cancels and interrupts) and the blocking side (which checks).
#[derive(Default)]
pub struct QueryControl {
    cancelled: AtomicBool,
    timed_out: AtomicBool,
    wake: Notify,
    interrupter: Mutex<Option<Arc<Interrupter>>>,
}

impl QueryControl {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        self.wake.notify_one();
        if let Some(interrupter) = &*self.interrupter.lock().expect("interrupter") {
            interrupter.interrupt();
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// A successful run: the columns, the kept rows and how many there were.
pub struct Execution {
    pub columns: Vec<Column>,
    pub result: StoredResult,
    /// From the start of execution (after `StartQuery`) to the last row.
    pub elapsed_ms: u64,
}

/// Checks, progress and row keeping for one run on the blocking thread.
struct Collector<'a> {
    control: &'a QueryControl,
    deadline: Instant,
    timeout: Duration,
    started: Instant,
    progress: Option<(&'a Bus, Uuid, QueryId)>,
    last_percent: f64,
    max_rows: u64,
    max_bytes: u64,
    kept: Vec<RecordBatch>,
    kept_rows: u64,
    kept_bytes: u64,
    total_rows: u64,
    schema: Option<SchemaRef>,
}

impl RunControl for Collector<'_> {
    fn check(&mut self) -> Result<(), String> {
        if self.control.is_cancelled() {
            return Err("cancelled".into());
        }
        if Instant::now() >= self.deadline {
            self.control.timed_out.store(true, Ordering::SeqCst);
            return Err(format!("timeout after {:?}", self.timeout));
        }
        Ok(())
    }

    fn progress(&mut self, percent: Option<f64>) {
        if let Some(percent) = percent {
            self.last_percent = percent.clamp(0.0, 100.0);
        }
        if let Some((bus, session_id, query_id)) = self.progress {
            bus.publish_progress(ProgressFrame {
                session_id,
                query_id,
                percent: self.last_percent,
                elapsed_ms: self.started.elapsed().as_millis() as u64,
            });
        }
    }

    fn schema(&mut self, schema: &SchemaRef) {
        self.schema = Some(schema.clone());
    }

    fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
        let rows = batch.num_rows() as u64;
        self.total_rows += rows;
        if self.kept_rows < self.max_rows && self.kept_bytes < self.max_bytes {
            let take = rows.min(self.max_rows - self.kept_rows);
            let batch = batch.slice(0, take as usize);
            self.kept_bytes += batch.get_array_memory_size() as u64;
            self.kept_rows += take;
            self.kept.push(batch);
        }
        Ok(())
    }
}

/// One query slot: a permit of the FIFO semaphore and its connection.
struct Slot {
    _permit: OwnedSemaphorePermit,
    connection: Option<RawConnection>,
    pool: Arc<Mutex<Vec<RawConnection>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.lock().expect("pool").push(connection);
        }
    }
}

/// The query service (one per server).
pub struct QueryService {
    settings: QuerySettings,
    database: Arc<Database>,
    catalog: Arc<Catalog>,
    slots: Arc<Semaphore>,
    pool: Arc<Mutex<Vec<RawConnection>>>,
    cache: Cache<QueryId, SharedResult>,
    active: Mutex<HashMap<QueryId, Arc<QueryControl>>>,
    /// Queries whose outcome this process is issuing or has issued: a result
    /// request that finds one still active in the read model waits for it.
    finishing: Mutex<std::collections::HashSet<QueryId>>,
    pipeline: Pipeline,
    projections: Projections,
    bus: Bus,
}

/// Lets the pipeline ask the catalog about `AttachDataset`.
struct CatalogHook(Arc<Catalog>);

impl DatasetCatalog for CatalogHook {
    fn exists(&self, name: &shared_domain::DatasetName) -> bool {
        self.0.exists(name.as_str())
    }
}

/// Starts executions and cancellations from committed events.
struct ExecutorReactor(Arc<QueryService>);

impl Reactor for ExecutorReactor {
    fn react(&self, events: &[EventEnvelope]) {
        for envelope in events {
            let Ok(event) = envelope.decode::<QuerySession>() else {
                continue;
            };
            match event {
                SessionEvent::QuerySubmitted {
                    query_id,
                    sql,
                    engine: Engine::Server,
                } => {
                    let service = self.0.clone();
                    let session_id = envelope.aggregate_id;
                    tokio::spawn(async move {
                        service
                            .run_submitted(session_id, query_id, sql.as_str().to_owned())
                            .await
                    });
                }
                SessionEvent::QueryCancelled { query_id } => self.0.cancel(query_id),
                _ => {}
            }
        }
    }
}

impl QueryService {
    /// Opens the sandbox and the catalog, writes the demo dataset when the
    /// catalog is empty, hooks into the pipeline and fails the queries a
    /// previous run left unfinished. Done before the server reports ready.
    pub async fn start(
        settings: QuerySettings,
        pipeline: Pipeline,
        projections: Projections,
        bus: Bus,
    ) -> anyhow::Result<Arc<Self>> {
        let opened = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || open_blocking(&settings)).await??
        };
        let (database, connections, catalog) = opened;
        let slots = settings.slots.max(1);
        let cache = Cache::builder()
            .max_capacity(settings.cache_bytes)
            .weigher(|_key: &QueryId, value: &SharedResult| value.weight())
            .time_to_idle(settings.cache_ttl)
            .build();
        let service = Arc::new(Self {
            database,
            catalog: catalog.clone(),
            slots: Arc::new(Semaphore::new(slots)),
            pool: Arc::new(Mutex::new(connections)),
            cache,
            active: Mutex::new(HashMap::new()),
            finishing: Mutex::new(std::collections::HashSet::new()),
            pipeline: pipeline.clone(),
            projections,
            bus,
            settings,
        });
        pipeline.set_catalog(Arc::new(CatalogHook(catalog)));
        pipeline.add_reactor(Arc::new(ExecutorReactor(service.clone())));
        service.recover().await;
        Ok(service)
    }

    /// The settings in force.
    pub fn settings(&self) -> &QuerySettings {
        &self.settings
    }

    /// The dataset catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Fails every server query left submitted or running by a previous run.
    async fn recover(&self) {
        let stranded: Vec<(Uuid, QueryId)> = self.projections.read(|model| {
            model
                .sessions
                .iter()
                .flat_map(|(id, view)| {
                    view.session
                        .history
                        .iter()
                        .filter(|q| q.engine == Engine::Server && q.state.is_active())
                        .map(move |q| (*id, q.query_id))
                })
                .collect()
        });
        for (session_id, query_id) in stranded {
            let error_id = ErrorId(Uuid::new_v4());
            tracing::warn!(%query_id, %session_id, %error_id, "failing a query left unfinished: {INTERRUPTED_BY_RESTART}");
            let command = SessionCommand::FailQuery {
                query_id,
                error_id,
                message: INTERRUPTED_BY_RESTART.into(),
            };
            if let Err(error) = self.issue(session_id, command).await {
                tracing::error!(%query_id, error = %error, "could not fail an interrupted query");
            }
        }
    }

    /// Issues a command as the executor, following the session's version.
    async fn issue(
        &self,
        session_id: Uuid,
        command: SessionCommand,
    ) -> Result<CommandAccepted, AppError> {
        let mut expected = self
            .projections
            .session(session_id)
            .0
            .map(|view| view.session.version)
            .unwrap_or(0);
        let command_id = Uuid::new_v4();
        let mut attempts = 0;
        loop {
            let envelope = CommandEnvelope {
                command_id,
                aggregate_type: "QuerySession".into(),
                aggregate_id: session_id,
                expected_version: expected,
                base_command: None,
                command: command.clone(),
            };
            match self.pipeline.execute(envelope, Origin::Executor).await {
                Err(error) if error.kind == ErrorKind::Conflict && attempts < 20 => {
                    attempts += 1;
                    match error
                        .extensions
                        .get("current_version")
                        .and_then(|v| v.as_u64())
                    {
                        Some(current) => expected = current,
                        None => return Err(error),
                    }
                }
                outcome => return outcome,
            }
        }
    }

    fn cancel(&self, query_id: QueryId) {
        if let Some(control) = self.active.lock().expect("active").get(&query_id) {
            tracing::info!(%query_id, "cancelling query");
            control.cancel();
        }
    }

    async fn acquire(&self) -> Slot {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slot semaphore is never closed");
        let connection = self.pool.lock().expect("pool").pop();
        // A connection lost to a panic is replaced (without progress tracking,
        // which can no longer be turned on once the configuration is locked).
        let connection = connection.or_else(|| self.database.connect().ok());
        Slot {
            _permit: permit,
            connection,
            pool: self.pool.clone(),
        }
    }

    /// Runs `sql` on a slot with the sandbox, the timeout and `control`.
    /// `on_start` is called (on the blocking thread) once the statement passed
    /// the sandbox; returning false aborts. Progress goes to the bus when
    /// `progress` names the session.
    async fn execute(
        self: &Arc<Self>,
        sql: String,
        control: Arc<QueryControl>,
        progress: Option<(Uuid, QueryId)>,
        on_start: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<Execution, ExecError> {
        let mut slot = self.acquire().await;
        if control.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        let Some(mut connection) = slot.connection.take() else {
            return Err(ExecError::Failed(
                "no DuckDB connection is available".into(),
            ));
        };
        *control.interrupter.lock().expect("interrupter") = Some(connection.interrupter());
        let deadline = Instant::now() + self.settings.timeout;
        let watchdog = {
            let control = control.clone();
            let interrupter = connection.interrupter();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                control.timed_out.store(true, Ordering::SeqCst);
                interrupter.interrupt();
            })
        };
        let service = self.clone();
        let blocking_control = control.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = service.execute_blocking(
                &mut connection,
                &sql,
                &blocking_control,
                deadline,
                progress,
                on_start,
            );
            (connection, outcome)
        })
        .await;
        watchdog.abort();
        *control.interrupter.lock().expect("interrupter") = None;
        match joined {
            Ok((connection, outcome)) => {
                slot.connection = Some(connection);
                outcome
            }
            Err(panic) => Err(ExecError::Failed(format!(
                "the query thread failed: {panic}"
            ))),
        }
    }

    fn execute_blocking(
        &self,
        connection: &mut RawConnection,
        sql: &str,
        control: &QueryControl,
        deadline: Instant,
        progress: Option<(Uuid, QueryId)>,
        on_start: impl FnOnce() -> bool,
    ) -> Result<Execution, ExecError> {
        if let Err(error) = self.catalog.refresh() {
            tracing::warn!(error = %error, "could not rescan the datasets directory");
        }
        let prepared = connection
            .prepare_single(sql, sandbox::allows)
            .map_err(|e| ExecError::Refused(sandbox::refusal_message(&e)))?;
        let columns: Vec<Column> = prepared
            .columns()
            .into_iter()
            .map(|c| Column::new(c.name, c.type_name))
            .collect();
        if !on_start() {
            return Err(ExecError::NotStarted);
        }
        let mut collector = Collector {
            control,
            deadline,
            timeout: self.settings.timeout,
            started: Instant::now(),
            progress: progress.map(|(session, query)| (&self.bus, session, query)),
            last_percent: 0.0,
            max_rows: self.settings.max_result_rows,
            max_bytes: self.settings.max_result_bytes,
            kept: Vec::new(),
            kept_rows: 0,
            kept_bytes: 0,
            total_rows: 0,
            schema: None,
        };
        let outcome = prepared.run(&mut collector);
        let stop_reason = || {
            if control.is_cancelled() {
                ExecError::Cancelled
            } else if control.timed_out.load(Ordering::SeqCst) {
                ExecError::TimedOut(self.settings.timeout)
            } else {
                ExecError::Failed("the query was interrupted".into())
            }
        };
        let schema = match outcome {
            Ok(schema) => schema,
            Err(RunError::Stopped(_)) => return Err(stop_reason()),
            Err(RunError::Duck(error)) => {
                // An interrupt surfaces as a DuckDB error: report why it came.
                if control.is_cancelled() || control.timed_out.load(Ordering::SeqCst) {
                    return Err(stop_reason());
                }
                return Err(ExecError::Failed(error.0));
            }
        };
        let result = StoredResult::new(
            columns.clone(),
            collector.schema.unwrap_or(schema),
            &collector.kept,
            collector.total_rows,
        )
        .map_err(ExecError::Failed)?;
        Ok(Execution {
            columns,
            result,
            elapsed_ms: collector.started.elapsed().as_millis() as u64,
        })
    }

    /// The life of one submitted server query, from queue to outcome.
    async fn run_submitted(self: Arc<Self>, session_id: Uuid, query_id: QueryId, sql: String) {
        let control = Arc::new(QueryControl::default());
        {
            let mut active = self.active.lock().expect("active");
            if active.contains_key(&query_id) {
                return;
            }
            active.insert(query_id, control.clone());
        }
        // A query id reused across sessions never gets here: the pipeline
        // refuses its SubmitQuery (results are looked up by id alone).
        let handle = tokio::runtime::Handle::current();
        let starter = self.clone();
        let on_start = move || {
            handle
                .block_on(starter.issue(session_id, SessionCommand::StartQuery { query_id }))
                .is_ok()
        };
        let outcome = self
            .execute(sql, control.clone(), Some((session_id, query_id)), on_start)
            .await;
        self.active.lock().expect("active").remove(&query_id);
        let command = match outcome {
            Ok(Execution {
                columns,
                result,
                elapsed_ms,
            }) => {
                let row_count = result.total_rows;
                self.cache.insert(query_id, Arc::new(result)).await;
                SessionCommand::CompleteQuery {
                    query_id,
                    row_count,
                    columns,
                    elapsed_ms,
                }
            }
            Err(ExecError::Cancelled) | Err(ExecError::NotStarted) => return,
            Err(error) => {
                let error_id = ErrorId(Uuid::new_v4());
                let message = error.message();
                tracing::warn!(%query_id, %session_id, %error_id, reason = %message, "server query failed");
                SessionCommand::FailQuery {
                    query_id,
                    error_id,
                    message,
                }
            }
        };
        // Clients may see the outcome on SSE before the read model has it.
        self.finishing.lock().expect("finishing").insert(query_id);
        match self.issue(session_id, command).await {
            Ok(accepted) => {
                tracing::info!(%query_id, version = accepted.version, "server query finished");
            }
            // A cancel or close that raced with the end of the query.
            Err(error) => tracing::info!(%query_id, error = %error, "query outcome not recorded"),
        }
    }

    /// Finds a query by id: its session and record.
    fn find(&self, query_id: QueryId) -> Option<(Uuid, QueryRecord)> {
        self.projections.read(|model| {
            model
                .sessions
                .iter()
                .find_map(|(id, view)| view.session.query(query_id).map(|q| (*id, q.clone())))
        })
    }

    /// The result of a completed server query: from the cache, or recomputed
    /// from its text (once, however many requests ask at the same time).
    pub async fn result(self: &Arc<Self>, query_id: QueryId) -> Result<SharedResult, AppError> {
        let record = self.completed_record(query_id).await?;
        let service = self.clone();
        let sql = record.sql.as_str().to_owned();
        self.cache
            .try_get_with(query_id, async move {
                tracing::info!(%query_id, "recomputing an evicted result from its query");
                service
                    .execute(sql, Arc::new(QueryControl::default()), None, || true)
                    .await
                    .map(|execution| Arc::new(execution.result))
            })
            .await
            .map_err(|error: Arc<ExecError>| {
                AppError::internal(format!(
                    "recomputing the result failed: {}",
                    error.message()
                ))
            })
    }

    /// The record of a completed server query, or the problem to answer.
    pub(crate) async fn completed_record(
        &self,
        query_id: QueryId,
    ) -> Result<QueryRecord, AppError> {
        let mut found = self.find(query_id);
        let finishing = self
            .finishing
            .lock()
            .expect("finishing")
            .contains(&query_id);
        // The outcome may be stored but not yet in the read model: wait for it.
        if finishing {
            let deadline = Instant::now() + Duration::from_secs(5);
            while found.as_ref().is_some_and(|(_, r)| r.state.is_active())
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
                found = self.find(query_id);
            }
        }
        let Some((_, record)) = found else {
            return Err(AppError::not_found(format!("no query with id {query_id}")));
        };
        let state = match &record.state {
            QueryState::Completed { .. } if record.engine == Engine::Server => return Ok(record),
            QueryState::Completed { .. } => {
                return Err(AppError::new(
                    ErrorKind::Conflict,
                    format!("query {query_id} ran in the browser; its result is not on the server"),
                )
                .with("state", "completed")
                .with("engine", "local"))
            }
            QueryState::Submitted => "submitted",
            QueryState::Running => "running",
            QueryState::Failed { .. } => "failed",
            QueryState::Cancelled => "cancelled",
        };
        Err(AppError::new(
            ErrorKind::Conflict,
            format!("query {query_id} is {state}; its result is served once it has completed"),
        )
        .with("state", state))
    }

    /// Drops every cached result (tests and operators: forces recomputation).
    pub async fn evict_results(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks().await;
    }

    /// Rows a slot would keep for a result.
    pub fn max_result_rows(&self) -> u64 {
        self.settings.max_result_rows
    }

    /// Runs `work` with a query slot's sandboxed connection on a blocking
    /// thread, then returns the connection to the pool (dataset downloads
    /// stream through this; see [`super::download`]).
    pub async fn on_slot<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut RawConnection) -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let mut slot = self.acquire().await;
        let Some(mut connection) = slot.connection.take() else {
            return Err(AppError::internal("no DuckDB connection is available"));
        };
        let (connection, value) = tokio::task::spawn_blocking(move || {
            let value = work(&mut connection);
            (connection, value)
        })
        .await
        .map_err(AppError::internal)?;
        slot.connection = Some(connection);
        Ok(value)
    }

    /// Writes the whole result of a completed server query to a file in the
    /// work directory, re-running its SQL in the sandbox on a slot and
    /// writing with the trusted instance. The caller streams and deletes it.
    pub async fn export(
        self: &Arc<Self>,
        query_id: QueryId,
        format: super::export::ExportFormat,
    ) -> Result<std::path::PathBuf, AppError> {
        let record = self.completed_record(query_id).await?;
        let mut slot = self.acquire().await;
        let Some(mut connection) = slot.connection.take() else {
            return Err(AppError::internal("no DuckDB connection is available"));
        };
        let dir = self.settings.work_dir.join("exports");
        std::fs::create_dir_all(&dir).map_err(AppError::internal)?;
        let target = dir.join(format!("{}.{}", Uuid::new_v4(), format.extension()));
        let deadline = Instant::now() + self.settings.timeout;
        let interrupter = connection.interrupter();
        let watchdog = tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            interrupter.interrupt();
        });
        let sql = record.sql.as_str().to_owned();
        let path = target.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = super::export::write_blocking(&mut connection, &sql, format, &path);
            (connection, outcome)
        })
        .await;
        watchdog.abort();
        let (connection, outcome) = joined.map_err(AppError::internal)?;
        slot.connection = Some(connection);
        match outcome {
            Ok(()) => Ok(target),
            Err(message) => {
                let _ = std::fs::remove_file(&target);
                Err(AppError::internal(format!(
                    "exporting the result failed: {message}"
                )))
            }
        }
    }
}

/// Opens the sandbox, the catalog and (if the catalog is empty) writes the demo.
fn open_blocking(
    settings: &QuerySettings,
) -> anyhow::Result<(Arc<Database>, Vec<RawConnection>, Arc<Catalog>)> {
    std::fs::create_dir_all(&settings.datasets_dir)?;
    let sandbox_settings = sandbox::SandboxSettings {
        catalog_dir: settings.datasets_dir.clone(),
        temp_dir: settings.work_dir.join("duckdb-tmp"),
        threads: settings.threads,
        memory_limit_bytes: settings.memory_limit_bytes,
    };
    let (database, connections) = sandbox::open(&sandbox_settings, settings.slots.max(1))
        .map_err(|e| anyhow::anyhow!("opening the sandboxed DuckDB: {e}"))?;
    let catalog = Arc::new(Catalog::open(
        settings.datasets_dir.clone(),
        database.clone(),
    )?);
    catalog.refresh().map_err(|e| anyhow::anyhow!("{e}"))?;
    if catalog.is_empty() {
        if let Some(rows) = settings.demo_rows {
            tracing::info!(rows, dir = %settings.datasets_dir.display(), "the dataset catalog is empty: generating the demo dataset");
            demo::write_trips(&settings.datasets_dir.join("demo.parquet"), rows)?;
            catalog.refresh().map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok((database, connections, catalog))
}
