//! The query service: runs server queries after their `QuerySubmitted` is
//! stored (spawn-after-persist), on a bounded pool of blocking threads (one
//! sandboxed DuckDB connection per slot, waiting queries served in order),
//! and reports every outcome as a command through the same pipeline as
//! clients (`StartQuery`, `CompleteQuery`, `FailQuery`, origin Executor).
//! It also serves results from a byte-bounded cache, recomputing evicted
//! ones from the query text. It runs the queries this node claimed (the
//! claim is stored with the submission), renews their leases, and fails the
//! queries whose node stopped renewing (see [`super::claims`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::datatypes::SchemaRef;
use moka::future::Cache;
use shared_domain::{
    Column, CommandEnvelope, Engine, ErrorId, EventEnvelope, QueryId, QueryRecord, QuerySession,
    QueryState, SessionCommand, SessionEvent,
};
use uuid::Uuid;

use super::catalog::Catalog;
use super::claims;
use super::duck::{Database, RawConnection, RunControl, RunError};
use super::faults::CommandFaults;
use super::result_store::ResultStore;
use super::results::{SharedResult, StoredResult};
use super::retry;
use super::slots::{JobControl, Limit, SlotError, SlotSnapshot, Slots};
use super::{demo, sandbox, QuerySettings};
use crate::bus::{Bus, BusMessage, ProgressFrame};
use crate::error::{AppError, ErrorKind};
use crate::pipeline::{CommandAccepted, DatasetCatalog, Origin, Pipeline, QueryClaims, Reactor};
use crate::projections::Projections;
use crate::store::{ExpiredClaim, Store};

pub use super::claims::{INTERRUPTED_BY_RESTART, LEASE_EXPIRED};

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

/// A successful run: the columns, the kept rows and how many there were.
pub struct Execution {
    pub columns: Vec<Column>,
    pub result: StoredResult,
    /// The catalog's fingerprint when the query ran.
    pub fingerprint: String,
    /// From the start of execution (after `StartQuery`) to the last row.
    pub elapsed_ms: u64,
}

/// Checks, progress and row keeping for one run on the blocking thread.
struct Collector<'a> {
    control: &'a JobControl,
    deadline: Instant,
    timeout: Duration,
    started: Instant,
    progress: Option<(&'a Bus, Uuid, QueryId)>,
    /// What DuckDB last said about the query's progress.
    duck: LastProgress,
    max_rows: u64,
    max_bytes: u64,
    kept: Vec<RecordBatch>,
    kept_rows: u64,
    kept_bytes: u64,
    total_rows: u64,
    schema: Option<SchemaRef>,
    /// Why the collector stopped the query itself (the result-size guard).
    refused: Option<String>,
}

/// DuckDB's last estimate of a running query, kept across the samples that
/// have none (DuckDB reports nothing once the last rows are being fetched).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct LastProgress {
    percent: Option<f64>,
    /// (rows read, rows in all) of the query's scans, when DuckDB counts them.
    rows: Option<(u64, u64)>,
}

impl LastProgress {
    fn update(self, progress: super::duck::Progress) -> Self {
        match progress.percent {
            Some(percent) => Self {
                percent: Some(percent.clamp(0.0, 100.0)),
                rows: (progress.total_rows > 0)
                    .then_some((progress.rows_processed, progress.total_rows))
                    .or(self.rows),
            },
            None => self,
        }
    }

    /// The frame for clients: DuckDB's figures where it has them; elapsed
    /// time and the rows returned so far always, so a query without an
    /// estimate still shows that it moves.
    fn frame(
        self,
        session_id: Uuid,
        query_id: QueryId,
        elapsed: Duration,
        rows_returned: u64,
    ) -> ProgressFrame {
        ProgressFrame {
            rows_read: self.rows.map(|(read, _)| read),
            rows_total: self.rows.map(|(_, total)| total),
            rows_returned: Some(rows_returned),
            ..ProgressFrame::new(
                session_id,
                query_id,
                self.percent,
                elapsed.as_millis() as u64,
            )
        }
    }
}

/// The result-size guard never refuses batches below this size.
const MIN_BATCH_GUARD: u64 = 16 * 1024 * 1024;

impl RunControl for Collector<'_> {
    fn check(&mut self) -> Result<(), String> {
        if self.control.is_cancelled() {
            return Err("cancelled".into());
        }
        if self.control.is_timed_out() || Instant::now() >= self.deadline {
            return Err(format!("timeout after {:?}", self.timeout));
        }
        Ok(())
    }

    fn progress(&mut self, progress: super::duck::Progress) {
        self.duck = self.duck.update(progress);
        if let Some((bus, session_id, query_id)) = self.progress {
            bus.publish_progress(self.duck.frame(
                session_id,
                query_id,
                self.started.elapsed(),
                self.total_rows,
            ));
        }
    }

    fn schema(&mut self, schema: &SchemaRef) {
        self.schema = Some(schema.clone());
    }

    fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
        // A guard beyond DuckDB's buffer manager (which does not count the
        // rows it hands out): one batch larger than a whole kept result
        // fails the query before anything keeps or copies it.
        let bytes = batch.get_array_memory_size() as u64;
        let limit = self.max_bytes.max(MIN_BATCH_GUARD);
        if bytes > limit {
            let message = format!(
                "the query produced {} MiB of rows in one batch, more than the server's limit of {} MiB: select fewer or smaller columns",
                bytes >> 20,
                limit >> 20
            );
            self.refused = Some(message.clone());
            return Err(message);
        }
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

/// The query service (one per server).
pub struct QueryService {
    settings: QuerySettings,
    catalog: Arc<Catalog>,
    slots: Slots,
    cache: Cache<QueryId, SharedResult>,
    results: Arc<ResultStore>,
    /// Results whose recompute failed lately: answered from here instead of
    /// running the failing query again on every request.
    failed_results: Cache<QueryId, Problem>,
    active: Mutex<HashMap<QueryId, Arc<JobControl>>>,
    /// Queries whose outcome this process is issuing or has issued: a result
    /// request that finds one still active in the read model waits for it.
    finishing: Mutex<std::collections::HashSet<QueryId>>,
    pipeline: Pipeline,
    projections: Projections,
    bus: Bus,
    store: Store,
    /// This node in query claims: random per start.
    node_id: Uuid,
    /// The queries this node holds claims on and has not finished: their
    /// leases are renewed until their outcome is recorded.
    claimed: Mutex<HashSet<QueryId>>,
    /// Server queries this node took to run (each claimed by it).
    runs: AtomicU64,
    faults: CommandFaults,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    recomputes: AtomicU64,
}

/// Figures of the result cache and store.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Results run again from their SQL (evicted, data unchanged).
    pub recomputes: u64,
    pub cache_bytes: u64,
    pub store_bytes: u64,
    pub store_results: u64,
}

/// Lets the pipeline ask the catalog about `AttachDataset`.
struct CatalogHook(Arc<Catalog>);

impl DatasetCatalog for CatalogHook {
    fn exists(&self, name: &shared_domain::DatasetName) -> bool {
        self.0.knows(name.as_str())
    }

    fn learn(&self, name: &shared_domain::DatasetName) {
        if let Err(error) = self.0.refresh() {
            tracing::warn!(dataset = %name, %error, "refreshing the dataset catalog failed");
        }
    }
}

/// Starts executions and cancellations from committed events.
struct ExecutorReactor(Arc<QueryService>);

impl Reactor for ExecutorReactor {
    fn react(&self, events: &[EventEnvelope]) {
        if self.0.faults.executor_dies() {
            panic!("injected fault: the query executor was told to die");
        }
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
        store: Store,
        pipeline: Pipeline,
        projections: Projections,
        bus: Bus,
    ) -> anyhow::Result<Arc<Self>> {
        let opened = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || open_blocking(&settings)).await??
        };
        let (database, connections, catalog, results) = opened;
        let cache = Cache::builder()
            .max_capacity(settings.cache_bytes)
            .weigher(|_key: &QueryId, value: &SharedResult| value.weight())
            .time_to_idle(settings.cache_ttl)
            .build();
        let service = Arc::new(Self {
            catalog: catalog.clone(),
            slots: Slots::new(database, connections),
            results,
            failed_results: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            cache,
            active: Mutex::new(HashMap::new()),
            finishing: Mutex::new(std::collections::HashSet::new()),
            pipeline: pipeline.clone(),
            projections,
            bus,
            store,
            node_id: Uuid::new_v4(),
            claimed: Mutex::new(HashSet::new()),
            runs: AtomicU64::new(0),
            settings,
            faults: CommandFaults::default(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            recomputes: AtomicU64::new(0),
        });
        pipeline.set_catalog(Arc::new(CatalogHook(catalog)));
        pipeline.claim_queries_for(QueryClaims {
            node_id: service.node_id,
            lease: service.settings.lease,
        });
        pipeline.add_reactor(Arc::new(ExecutorReactor(service.clone())));
        tracing::info!(node_id = %service.node_id, lease = ?service.settings.lease, "query executor started");
        service.recover().await;
        tokio::spawn(keep_claims(
            Arc::downgrade(&service),
            claims::renew_every(service.settings.lease),
        ));
        if matches!(service.store, Store::Postgres(_)) {
            // A cancel sent to another node reaches this one through the
            // fan-out, not through this node's pipeline.
            tokio::spawn(follow_cancels(
                Arc::downgrade(&service),
                service.bus.subscribe(),
            ));
        }
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

    /// What the query slots are doing (for metrics and tests).
    pub fn slots(&self) -> SlotSnapshot {
        self.slots.snapshot()
    }

    /// Whether the executor still receives committed events (health): it
    /// runs as the pipeline's reactor, so it dies with the dispatcher.
    pub fn is_alive(&self) -> bool {
        self.pipeline.reactors_alive()
    }

    /// The fault injector of the commands this service issues (tests).
    pub fn faults(&self) -> &CommandFaults {
        &self.faults
    }

    /// This node's id in query claims.
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// Server queries this node took to run so far (metrics, tests).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Start-up: gives queries stored before claims existed an expired
    /// claim, then ends the queries whose claims are over: expired ones,
    /// and on SQLite (one process owns the store) every claim of an
    /// earlier process.
    async fn recover(&self) {
        let unclaimed: Vec<(Uuid, Uuid)> = self.projections.read(|model| {
            model
                .sessions
                .iter()
                .flat_map(|(id, view)| {
                    view.session
                        .history
                        .iter()
                        .filter(|q| q.engine == Engine::Server && q.state.is_active())
                        .map(move |q| (q.query_id.0, *id))
                })
                .collect()
        });
        match self.store.adopt_unclaimed_queries(unclaimed).await {
            Ok(0) => {}
            Ok(adopted) => {
                tracing::info!(adopted, "queries stored without a claim get an expired one")
            }
            Err(error) => tracing::error!(%error, "could not give unclaimed queries a claim"),
        }
        self.sweep(matches!(self.store, Store::Sqlite(_))).await;
    }

    /// Takes over the claims that are over and fails their queries.
    async fn sweep(&self, at_start_up_of_sole_node: bool) {
        loop {
            let taken = self
                .store
                .take_expired_query_claims(
                    self.node_id,
                    self.settings.lease,
                    claims::SWEEP_LIMIT,
                    at_start_up_of_sole_node,
                )
                .await;
            let taken = match taken {
                Ok(taken) => taken,
                Err(error) => {
                    tracing::warn!(%error, "could not look for expired query claims");
                    return;
                }
            };
            for claim in &taken {
                self.end_expired(claim, claims::expiry_message(at_start_up_of_sole_node))
                    .await;
            }
            if taken.len() < claims::SWEEP_LIMIT {
                return;
            }
        }
    }

    /// Fails the query of a claim this node took over, then finishes the
    /// claim. When the store keeps failing, the claim is left to expire
    /// again and be taken over by the next sweep (of any node).
    async fn end_expired(&self, claim: &ExpiredClaim, message: &str) {
        let query_id = QueryId(claim.query_id);
        let session_id = claim.session_id;
        let error_id = ErrorId(Uuid::new_v4());
        tracing::warn!(%query_id, %session_id, %error_id, previous_node = %claim.node_id, "failing a query whose claim is over: {message}");
        let command = SessionCommand::FailQuery {
            query_id,
            error_id,
            message: message.into(),
        };
        let give_up = Instant::now() + claims::renew_every(self.settings.lease);
        match self
            .issue_until_recorded(session_id, command, Some(give_up))
            .await
        {
            Ok(_) => {}
            Err(error) if retry::is_transient(error.kind) => {
                tracing::error!(%query_id, error = %error, "could not fail a query whose claim is over; the next sweep tries again");
                return;
            }
            // It ended meanwhile (completed, cancelled, its session closed).
            Err(error) => {
                tracing::info!(%query_id, error = %error, "a query whose claim is over had already ended")
            }
        }
        if let Err(error) = self
            .store
            .finish_query_claim(self.node_id, claim.query_id)
            .await
        {
            tracing::warn!(%query_id, %error, "could not mark a query claim finished");
        }
    }

    /// Renews the leases of this node's claims; a run whose claim was taken
    /// over (its lease ran out, say while the database was unreachable) is
    /// stopped: the node that took it over records its end.
    async fn renew_claims(&self) {
        let claimed: Vec<Uuid> = self
            .claimed
            .lock()
            .expect("claimed")
            .iter()
            .map(|q| q.0)
            .collect();
        let held = self
            .store
            .renew_query_claims(self.node_id, claimed.clone(), self.settings.lease)
            .await;
        match held {
            Ok(held) => {
                for query_id in claims::lost(&claimed, &held) {
                    let query_id = QueryId(query_id);
                    if self.active.lock().expect("active").contains_key(&query_id) {
                        tracing::warn!(%query_id, "this node lost its claim on a running query (its lease ran out); stopping it");
                        self.cancel(query_id);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, claims = claimed.len(), "could not renew query claims; they expire if this lasts")
            }
        }
        // A cancel the bus did not bring (a lagging subscriber): the read
        // model shows the query ended, so its run stops here.
        let running: Vec<QueryId> = self
            .active
            .lock()
            .expect("active")
            .keys()
            .copied()
            .collect();
        for query_id in running {
            if self
                .find(query_id)
                .is_some_and(|(_, q)| !q.state.is_active())
            {
                self.cancel(query_id);
            }
        }
    }

    /// Issues a command as the executor, following the session's version
    /// through conflicts. `command_id` makes a retry of the same command idempotent.
    async fn issue(
        &self,
        session_id: Uuid,
        command_id: Uuid,
        command: SessionCommand,
    ) -> Result<CommandAccepted, AppError> {
        if self.faults.fails(&command) {
            return Err(AppError::internal(format!(
                "injected fault: the event store refused {}",
                command.name()
            )));
        }
        let mut expected = self
            .projections
            .session(session_id)
            .0
            .map(|view| view.session.version)
            .unwrap_or(0);
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

    /// Issues `command` until the store takes it or the domain refuses it,
    /// retrying with backoff while the store fails (or conflicts persist),
    /// and giving up only at `give_up` (None: never). Returns the last answer.
    async fn issue_until_recorded(
        &self,
        session_id: Uuid,
        command: SessionCommand,
        give_up: Option<Instant>,
    ) -> Result<CommandAccepted, AppError> {
        let command_id = Uuid::new_v4();
        let mut attempt = 0u32;
        loop {
            let answer = self.issue(session_id, command_id, command.clone()).await;
            match &answer {
                Err(error) if retry::is_transient(error.kind) => {
                    let delay = retry::backoff(attempt);
                    attempt += 1;
                    if give_up.is_some_and(|at| Instant::now() + delay >= at) {
                        return answer;
                    }
                    tracing::warn!(
                        command = command.name(),
                        attempt,
                        error = %error,
                        "the executor's command was not recorded; retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                }
                _ => return answer,
            }
        }
    }

    fn cancel(&self, query_id: QueryId) {
        if let Some(control) = self.active.lock().expect("active").get(&query_id) {
            tracing::info!(%query_id, "cancelling query");
            control.cancel();
        }
    }

    /// Runs `sql` on a slot with the sandbox, `deadline` (which the wait for
    /// the slot counts toward) and `control`. `on_start` is called (on the
    /// blocking thread) once the statement passed the sandbox; an error
    /// aborts. Progress goes to the bus when `progress` names the session.
    async fn execute(
        self: &Arc<Self>,
        sql: String,
        control: Arc<JobControl>,
        deadline: Instant,
        progress: Option<(Uuid, QueryId)>,
        on_start: impl FnOnce() -> Result<(), ExecError> + Send + 'static,
    ) -> Result<Execution, ExecError> {
        let service = self.clone();
        let ran = self
            .slots
            .run(
                control,
                Limit::Until(deadline),
                move |connection, control| {
                    service
                        .execute_blocking(connection, &sql, control, deadline, progress, on_start)
                },
            )
            .await;
        match ran {
            Ok(outcome) => outcome,
            Err(SlotError::Cancelled) => Err(ExecError::Cancelled),
            Err(SlotError::TimedOut) => Err(ExecError::TimedOut(self.settings.timeout)),
            Err(SlotError::Panicked(panic)) => Err(ExecError::Failed(format!(
                "the query thread failed: {panic}"
            ))),
            Err(SlotError::NoConnection) => Err(ExecError::Failed(
                "no DuckDB connection is available".into(),
            )),
        }
    }

    fn execute_blocking(
        &self,
        connection: &mut RawConnection,
        sql: &str,
        control: &JobControl,
        deadline: Instant,
        progress: Option<(Uuid, QueryId)>,
        on_start: impl FnOnce() -> Result<(), ExecError>,
    ) -> Result<Execution, ExecError> {
        if let Err(error) = self.catalog.refresh() {
            tracing::warn!(error = %error, "could not rescan the datasets directory");
        }
        let fingerprint = self.catalog.fingerprint();
        let prepared = sandbox::prepare(connection, sql).map_err(ExecError::Refused)?;
        let columns: Vec<Column> = prepared
            .columns()
            .into_iter()
            .map(|c| Column::new(c.name, c.type_name))
            .collect();
        on_start()?;
        let mut collector = Collector {
            control,
            deadline,
            timeout: self.settings.timeout,
            started: Instant::now(),
            progress: progress.map(|(session, query)| (&self.bus, session, query)),
            duck: LastProgress::default(),
            max_rows: self.settings.max_result_rows,
            max_bytes: self.settings.max_result_bytes,
            kept: Vec::new(),
            kept_rows: 0,
            kept_bytes: 0,
            total_rows: 0,
            schema: None,
            refused: None,
        };
        let outcome = prepared.run(&mut collector);
        let stop_reason = || {
            if control.is_cancelled() {
                ExecError::Cancelled
            } else if control.is_timed_out() || Instant::now() >= deadline {
                ExecError::TimedOut(self.settings.timeout)
            } else {
                ExecError::Failed("the query was interrupted".into())
            }
        };
        let schema = match outcome {
            Ok(schema) => schema,
            Err(RunError::Stopped(_)) if collector.refused.is_some() => {
                return Err(ExecError::Failed(collector.refused.unwrap_or_default()))
            }
            Err(RunError::Stopped(_)) => return Err(stop_reason()),
            Err(RunError::Duck(error)) => {
                // An interrupt surfaces as a DuckDB error: report why it came.
                if control.is_stopped() {
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
            fingerprint,
            elapsed_ms: collector.started.elapsed().as_millis() as u64,
        })
    }

    /// Records `StartQuery`, retrying while the store fails, until `deadline`.
    async fn start_query(
        &self,
        session_id: Uuid,
        query_id: QueryId,
        deadline: Instant,
    ) -> Result<(), ExecError> {
        let command = SessionCommand::StartQuery { query_id };
        match self
            .issue_until_recorded(session_id, command, Some(deadline))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if retry::is_transient(error.kind) => Err(ExecError::Failed(format!(
                "the query could not be started: the event store kept failing ({})",
                error.detail
            ))),
            // Refused by the domain: cancelled or closed meanwhile.
            Err(_) => Err(ExecError::NotStarted),
        }
    }

    /// The life of one submitted server query, from queue to outcome: every
    /// query accepted here ends in `QueryCompleted`, `QueryFailed` or
    /// `QueryCancelled`.
    async fn run_submitted(self: Arc<Self>, session_id: Uuid, query_id: QueryId, sql: String) {
        if !self.claimed.lock().expect("claimed").insert(query_id) {
            return;
        }
        // Run only what the database says this node holds (its pipeline
        // wrote the claim with the submission; this also starts its lease
        // afresh). Unreachable database: the claim is ours by construction,
        // so the query runs, and its lease decides if this lasts.
        match self
            .store
            .renew_query_claims(self.node_id, vec![query_id.0], self.settings.lease)
            .await
        {
            Ok(held) if held.is_empty() => {
                tracing::warn!(%query_id, node_id = %self.node_id, "not running a query this node holds no claim on");
                self.claimed.lock().expect("claimed").remove(&query_id);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%query_id, %error, "could not confirm the claim on a query; running it")
            }
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%query_id, %session_id, node_id = %self.node_id, "running a claimed server query");
        self.clone().run_claimed(session_id, query_id, sql).await;
        // The outcome is recorded (or the query ended otherwise): the claim
        // needs no more renewals.
        if let Err(error) = self
            .store
            .finish_query_claim(self.node_id, query_id.0)
            .await
        {
            tracing::warn!(%query_id, %error, "could not mark a query claim finished; it expires and is swept");
        }
        self.claimed.lock().expect("claimed").remove(&query_id);
    }

    /// [`QueryService::run_submitted`] once the claim is counted.
    async fn run_claimed(self: Arc<Self>, session_id: Uuid, query_id: QueryId, sql: String) {
        let control = JobControl::new();
        {
            let mut active = self.active.lock().expect("active");
            if active.contains_key(&query_id) {
                return;
            }
            active.insert(query_id, control.clone());
        }
        // The timeout counts from here: time waiting for a slot is included.
        let deadline = Instant::now() + self.settings.timeout;
        // A query id reused across sessions never gets here: the pipeline
        // refuses its SubmitQuery (results are looked up by id alone).
        let handle = tokio::runtime::Handle::current();
        let starter = self.clone();
        let on_start = move || handle.block_on(starter.start_query(session_id, query_id, deadline));
        let outcome = self
            .execute(
                sql,
                control.clone(),
                deadline,
                Some((session_id, query_id)),
                on_start,
            )
            .await;
        self.active.lock().expect("active").remove(&query_id);
        let mut to_persist = None;
        let command = match outcome {
            Ok(Execution {
                columns,
                result,
                fingerprint,
                elapsed_ms,
            }) => {
                let row_count = result.total_rows;
                let result = Arc::new(result);
                self.cache.insert(query_id, result.clone()).await;
                to_persist = Some(result);
                SessionCommand::CompleteQuery {
                    query_id,
                    row_count,
                    columns,
                    elapsed_ms,
                    fingerprint: Some(fingerprint),
                }
            }
            // Already ended by the `QueryCancelled` (or refused) that stopped it.
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
        // The result is written to disk while the outcome commits (both pay
        // an fsync); until then the cache serves it, and a crash in between
        // only means a recompute while the data is unchanged.
        let persisted = async {
            if let Some(result) = to_persist {
                self.persist(query_id, result).await;
            }
        };
        let (recorded, ()) = tokio::join!(
            self.issue_until_recorded(session_id, command, None),
            persisted
        );
        match recorded {
            Ok(accepted) => {
                tracing::info!(%query_id, version = accepted.version, "server query finished");
            }
            // A cancel or close that raced with the end of the query.
            Err(error) => tracing::info!(%query_id, error = %error, "query outcome not recorded"),
        }
    }

    /// Cache and result-store figures (metrics).
    pub fn result_stats(&self) -> ResultStats {
        ResultStats {
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
            recomputes: self.recomputes.load(Ordering::Relaxed),
            cache_bytes: self.cache.weighted_size(),
            store_bytes: self.results.usage().0,
            store_results: self.results.usage().1,
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

    /// Writes a completed result to the result store (logged, not fatal:
    /// the cache still serves it, and a recompute can bring it back).
    async fn persist(&self, query_id: QueryId, result: SharedResult) {
        let store = self.results.clone();
        let saved = tokio::task::spawn_blocking(move || store.save(query_id, &result.batch)).await;
        match saved {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                tracing::warn!(%query_id, "the result is larger than the whole result store budget; it is not kept on disk")
            }
            Ok(Err(error)) => tracing::warn!(%query_id, %error, "could not store the result"),
            Err(panic) => tracing::error!(%query_id, %panic, "storing the result panicked"),
        }
    }

    /// The result of a completed server query: from the cache, from the
    /// result store, or recomputed from its text while the datasets are as
    /// they were (once, however many requests ask at the same time).
    pub async fn result(self: &Arc<Self>, query_id: QueryId) -> Result<SharedResult, AppError> {
        let record = self.completed_record(query_id).await?;
        if let Some(result) = self.cache.get(&query_id).await {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(result);
        }
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        if let Some(problem) = self.failed_results.get(&query_id).await {
            return Err(problem.error());
        }
        let service = self.clone();
        let outcome = self
            .cache
            .try_get_with(
                query_id,
                async move { service.load_or_recompute(record).await },
            )
            .await;
        match outcome {
            Ok(result) => Ok(result),
            Err(problem) => {
                if problem.remember {
                    self.failed_results
                        .insert(query_id, (*problem).clone())
                        .await;
                }
                Err(problem.error())
            }
        }
    }

    /// Runs `work` over the kept rows of a completed result (its stored
    /// Parquet file) on a query slot (same deadline, cancellation and
    /// authorization as the result), with a connection of the trusted
    /// instance: for server-built SQL only (see [`super::structured`]).
    /// `work`'s errors are the request's fault (400).
    pub async fn over_result<T, F>(
        self: &Arc<Self>,
        query_id: QueryId,
        work: F,
    ) -> Result<(SharedResult, T), AppError>
    where
        T: Send + 'static,
        F: FnOnce(
                &mut RawConnection,
                &JobControl,
                &StoredResult,
                &std::path::Path,
            ) -> Result<T, String>
            + Send
            + 'static,
    {
        let deadline = Instant::now() + self.settings.timeout;
        let result = self.result(query_id).await?;
        if self.results.file(query_id).is_none() {
            // Cached but not on disk (a store write that failed): store it now.
            self.persist(query_id, result.clone()).await;
        }
        let Some(stored) = self.results.file(query_id) else {
            return Err(AppError::new(
                ErrorKind::Unavailable,
                "the result is not in the result store (larger than its budget, or the disk failed); sorting, filtering and aggregating need it there",
            ));
        };
        let rows = result.clone();
        let store = self.results.clone();
        let outcome = self
            .slots
            .run(
                JobControl::new(),
                Limit::Until(deadline),
                move |_, control| {
                    let mut trusted = store.connect().map_err(|e| e.0)?;
                    control.watch(trusted.interrupter());
                    work(&mut trusted, control, &rows, &stored)
                },
            )
            .await
            .map_err(|error| slot_problem(error, "the request", self.settings.timeout))?;
        outcome.map(|value| (result, value)).map_err(|message| {
            AppError::bad_request(format!(
                "the request could not run over the result: {message}"
            ))
        })
    }

    /// Reads a stored result, or recomputes it if the datasets it ran on
    /// are unchanged (and stores it again).
    async fn load_or_recompute(
        self: Arc<Self>,
        record: QueryRecord,
    ) -> Result<SharedResult, Problem> {
        let query_id = record.query_id;
        let QueryState::Completed {
            row_count,
            columns,
            fingerprint,
            ..
        } = record.state
        else {
            return Err(Problem::new(
                ErrorKind::Conflict,
                "the query has not completed",
            ));
        };
        let deadline = Instant::now() + self.settings.timeout;
        let store = self.results.clone();
        let loaded = self
            .slots
            .run(JobControl::new(), Limit::Until(deadline), move |_, _| {
                store.load(query_id)
            })
            .await
            .map_err(|error| Problem::from_slot(error, self.settings.timeout))?;
        match loaded {
            Some(Ok((schema, batches))) => {
                return StoredResult::new(columns, schema, &batches, row_count)
                    .map(Arc::new)
                    .map_err(|e| Problem::new(ErrorKind::Internal, e));
            }
            Some(Err(error)) => {
                tracing::warn!(%query_id, %error, "a stored result could not be read; recomputing it");
                self.results.remove(query_id);
            }
            None => {}
        }
        let catalog = self.catalog.clone();
        let current = tokio::task::spawn_blocking(move || {
            if let Err(error) = catalog.refresh() {
                tracing::warn!(error = %error, "could not rescan the datasets directory");
            }
            catalog.fingerprint()
        })
        .await
        .map_err(|e| Problem::new(ErrorKind::Internal, e.to_string()))?;
        if fingerprint.as_deref() != Some(current.as_str()) {
            return Err(Problem::expired());
        }
        tracing::info!(%query_id, "recomputing an evicted result: its datasets are unchanged");
        self.recomputes.fetch_add(1, Ordering::Relaxed);
        let execution = self
            .execute(
                record.sql.as_str().to_owned(),
                JobControl::new(),
                deadline,
                None,
                || Ok(()),
            )
            .await
            .map_err(|error| Problem {
                kind: ErrorKind::Internal,
                detail: format!("recomputing the result failed: {}", error.message()),
                remember: true,
            })?;
        // Same files, different answer (random(), now(), …): not the result
        // that was shown, so it is not served as if it were.
        if execution.result.total_rows != row_count || execution.columns != columns {
            return Err(Problem::expired());
        }
        let result = Arc::new(execution.result);
        self.persist(query_id, result.clone()).await;
        Ok(result)
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

    /// Drops a result from the cache and the result store (tests and
    /// operators: the next request recomputes it if its data is unchanged).
    pub async fn forget_result(&self, query_id: QueryId) {
        self.cache.invalidate(&query_id).await;
        self.failed_results.invalidate(&query_id).await;
        let store = self.results.clone();
        let _ = tokio::task::spawn_blocking(move || store.remove(query_id)).await;
    }

    /// Rows a slot would keep for a result.
    pub fn max_result_rows(&self) -> u64 {
        self.settings.max_result_rows
    }

    /// Streams dataset `name` as Arrow IPC into `sender` on a query slot.
    /// No overall deadline (a large dataset takes as long as the reader
    /// needs), but the wait for a slot is bounded by the query timeout and a
    /// reader that stops reading for `--query-stall-timeout` loses its slot.
    /// Returns whether the stream was complete.
    pub async fn download_dataset(
        &self,
        name: String,
        sender: tokio::sync::mpsc::Sender<super::download::Chunk>,
    ) -> Result<bool, AppError> {
        let stall = self.settings.stall_timeout;
        let limit = Limit::QueueUntil(Instant::now() + self.settings.timeout);
        let ran = self
            .slots
            .run(JobControl::new(), limit, move |connection, control| {
                super::download::stream_blocking(connection, &name, &sender, control, stall)
            })
            .await;
        ran.map_err(|error| slot_problem(error, "the download", self.settings.timeout))
    }

    /// Writes the whole result of a completed server query to a file in the
    /// work directory: from the result store when it holds every row, else
    /// by re-running its SQL in the sandbox while its datasets are unchanged
    /// (rows flow to the trusted instance that writes the file); otherwise
    /// the result has expired. The caller streams and deletes the file.
    /// Dropping the future (the client went away) stops the export.
    pub async fn export(
        self: &Arc<Self>,
        query_id: QueryId,
        format: super::export::ExportFormat,
    ) -> Result<std::path::PathBuf, AppError> {
        let deadline = Instant::now() + self.settings.timeout;
        let record = self.completed_record(query_id).await?;
        let QueryState::Completed {
            row_count,
            fingerprint,
            ..
        } = record.state.clone()
        else {
            return Err(AppError::internal("the query has not completed"));
        };
        let dir = self.settings.work_dir.join("exports");
        std::fs::create_dir_all(&dir).map_err(AppError::internal)?;
        let target = dir.join(format!("{}.{}", Uuid::new_v4(), format.extension()));
        let sql = record.sql.as_str().to_owned();
        let path = target.clone();
        let results = self.results.clone();
        let catalog = self.catalog.clone();
        let cap = self.settings.export_max_bytes;
        let outcome = self
            .slots
            .run(
                JobControl::new(),
                Limit::Until(deadline),
                move |connection, control| {
                    let written = super::export::within_size_cap(&path, cap, control, || {
                        export_blocking(
                            connection,
                            control,
                            &results,
                            &catalog,
                            query_id,
                            row_count,
                            fingerprint.as_deref(),
                            &sql,
                            format,
                            &path,
                        )
                    })
                    .unwrap_or_else(|written| {
                        Err(Problem::new(
                            ErrorKind::PayloadTooLarge,
                            format!(
                                "the export is larger than the server's limit of {} for downloads (it passed {}): select fewer rows or columns, or download Parquet, which is smaller than CSV",
                                super::export::human_bytes(cap),
                                super::export::human_bytes(written)
                            ),
                        ))
                    });
                    if written.is_err() {
                        let _ = std::fs::remove_file(&path);
                    }
                    written
                },
            )
            .await
            .map_err(|error| slot_problem(error, "the export", self.settings.timeout))?;
        outcome.map(|()| target).map_err(|problem| problem.error())
    }
}

/// Renews this node's claims and sweeps expired ones every `every`, for as
/// long as the service lives.
async fn keep_claims(service: Weak<QueryService>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.renew_claims().await;
        service.sweep(false).await;
    }
}

/// Stops this node's runs of queries cancelled through other nodes: their
/// `QueryCancelled` arrives on the bus by the fan-out.
async fn follow_cancels(
    service: Weak<QueryService>,
    mut messages: tokio::sync::broadcast::Receiver<BusMessage>,
) {
    loop {
        let event = match messages.recv().await {
            Ok(BusMessage::Event(event)) => event,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if event.envelope.event_type != "QueryCancelled" {
            continue;
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        if let Ok(SessionEvent::QueryCancelled { query_id }) =
            event.envelope.decode::<QuerySession>()
        {
            service.cancel(query_id);
        }
    }
}

/// The export's blocking work (see [`QueryService::export`]).
#[allow(clippy::too_many_arguments)]
fn export_blocking(
    connection: &mut RawConnection,
    control: &JobControl,
    results: &ResultStore,
    catalog: &Catalog,
    query_id: QueryId,
    row_count: u64,
    fingerprint: Option<&str>,
    sql: &str,
    format: super::export::ExportFormat,
    target: &std::path::Path,
) -> Result<(), Problem> {
    let failed = |message: String| {
        Problem::new(
            ErrorKind::Internal,
            format!("exporting the result failed: {message}"),
        )
    };
    if let Some(stored) = results.file(query_id) {
        let mut trusted = results.connect().map_err(|e| failed(e.0))?;
        control.watch(trusted.interrupter());
        if super::export::write_stored(&mut trusted, &stored, row_count, format, target)
            .map_err(failed)?
        {
            return Ok(());
        }
    }
    if let Err(error) = catalog.refresh() {
        tracing::warn!(error = %error, "could not rescan the datasets directory");
    }
    if fingerprint != Some(catalog.fingerprint().as_str()) {
        return Err(Problem::expired());
    }
    control.watch(connection.interrupter());
    super::export::write_blocking(connection, sql, format, target, control).map_err(failed)
}

/// Why a result cannot be served: cloneable, so that one answer serves
/// every request that waited for the same load (each gets its own error id).
#[derive(Debug, Clone)]
struct Problem {
    kind: ErrorKind,
    detail: String,
    /// Remembered for a while, so the failing work is not re-run on every request.
    remember: bool,
}

/// What an evicted result whose data changed answers.
pub const RESULT_EXPIRED: &str = "result expired: the data changed, run the query again";

impl Problem {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            remember: false,
        }
    }

    fn expired() -> Self {
        Self::new(ErrorKind::Gone, RESULT_EXPIRED)
    }

    fn from_slot(error: SlotError, timeout: Duration) -> Self {
        let error = slot_problem(error, "loading the result", timeout);
        Self::new(error.kind, error.detail)
    }

    fn error(&self) -> AppError {
        AppError::new(self.kind, self.detail.clone())
    }
}

/// The answer for work that did not get to run (or finish) on a slot.
fn slot_problem(error: SlotError, what: &str, timeout: Duration) -> AppError {
    match error {
        SlotError::TimedOut => AppError::new(
            ErrorKind::Unavailable,
            format!(
                "{what} waited and ran longer than the server's limit of {}; try again when fewer queries run",
                humanize(timeout)
            ),
        ),
        SlotError::Cancelled => AppError::new(ErrorKind::Unavailable, format!("{what} was cancelled")),
        SlotError::Panicked(panic) => AppError::internal(format!("{what} failed: {panic}")),
        SlotError::NoConnection => AppError::internal("no DuckDB connection is available"),
    }
}

/// Opens the sandbox, the catalog and (if the catalog is empty) writes the demo.
type Opened = (
    Arc<Database>,
    Vec<RawConnection>,
    Arc<Catalog>,
    Arc<ResultStore>,
);

fn open_blocking(settings: &QuerySettings) -> anyhow::Result<Opened> {
    std::fs::create_dir_all(&settings.datasets_dir)?;
    let results = open_result_store(settings)?;
    // Half-written exports and spill files of a previous run.
    let _ = std::fs::remove_dir_all(settings.work_dir.join("exports"));
    remove_spill_dirs(&settings.work_dir);
    let sandbox_settings = sandbox::SandboxSettings {
        catalog_dir: settings.datasets_dir.clone(),
        // DuckDB lets SQL read its temp directory: a fresh random name per
        // start keeps it unknown (see `sandbox`).
        temp_dir: settings
            .work_dir
            .join(format!("{SPILL_PREFIX}{}", Uuid::new_v4().simple())),
        threads: settings.threads,
        memory_limit_bytes: settings.memory_limit_bytes,
        spill_limit_bytes: settings.spill_limit_bytes,
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
    Ok((database, connections, catalog, results))
}

/// The spill directories' name prefix (a random suffix follows).
pub const SPILL_PREFIX: &str = "spill-";

/// Removes the spill directories of earlier runs (and the fixed-name one
/// older versions used).
fn remove_spill_dirs(work_dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(work_dir.join("duckdb-tmp"));
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPILL_PREFIX)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Opens the result store, refusing a directory user SQL could read.
fn open_result_store(settings: &QuerySettings) -> anyhow::Result<Arc<ResultStore>> {
    std::fs::create_dir_all(&settings.results_dir)?;
    std::fs::create_dir_all(&settings.work_dir)?;
    let results_dir = settings.results_dir.canonicalize()?;
    let readable = [
        settings.datasets_dir.canonicalize()?,
        settings.work_dir.canonicalize()?,
    ];
    if let Some(dir) = readable.iter().find(|dir| results_dir.starts_with(dir)) {
        anyhow::bail!(
            "the result store {} must not be inside {}, which queries can read",
            results_dir.display(),
            dir.display()
        );
    }
    Ok(Arc::new(ResultStore::open(
        results_dir,
        settings.result_store_bytes,
        settings.threads,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::duck::Progress;

    #[test]
    fn frames_keep_duckdbs_last_estimate_and_always_count_returned_rows() {
        let session = Uuid::new_v4();
        let query = QueryId(Uuid::new_v4());
        let elapsed = Duration::from_millis(1500);
        // No estimate yet: the percentage is unknown, rows returned still show.
        let none = LastProgress::default().update(Progress::default());
        let frame = none.frame(session, query, elapsed, 4096);
        assert_eq!(frame.percent, None);
        assert_eq!(frame.rows_read, None);
        assert_eq!(frame.rows_returned, Some(4096));
        assert_eq!(frame.elapsed_ms, 1500);
        // A scan DuckDB can measure: percentage and rows read.
        let scanning = none.update(Progress {
            percent: Some(25.0),
            rows_processed: 250,
            total_rows: 1000,
        });
        let frame = scanning.frame(session, query, elapsed, 0);
        assert_eq!(frame.percent, Some(25.0));
        assert_eq!((frame.rows_read, frame.rows_total), (Some(250), Some(1000)));
        // DuckDB stops reporting while the last rows are fetched: the last
        // figures stay instead of falling back to nothing.
        assert_eq!(scanning.update(Progress::default()), scanning);
        let over = scanning.update(Progress {
            percent: Some(140.0),
            rows_processed: 1,
            total_rows: 0,
        });
        assert_eq!(over.percent, Some(100.0));
        assert_eq!(over.rows, Some((250, 1000)));
    }
}
