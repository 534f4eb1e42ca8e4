//! The command pipeline: load -> decide -> persist with the expected version
//! -> publish -> react. It owns the event store's single writer.
//!
//! Every command, from HTTP or from the server's own query executor, goes
//! through one writer thread. It takes whatever commands are queued (up to
//! [`MAX_GROUP`]) and handles them one after the other inside one group
//! transaction of its [`WriteBackend`] (SQLite or PostgreSQL; group commit): for each, it checks `processed_commands`
//! (idempotency, before anything else), loads the aggregate (from its cache,
//! which only this thread mutates, or from the store with upcasting), refuses
//! executor-only commands from HTTP (403), compares `expected_version` with
//! the current version (409), asks the dataset catalog (422), decides with
//! the pure `QuerySession::handle` (422) and appends the events and the
//! processed-command record under a savepoint. After the one COMMIT it
//! publishes the events on the bus in global-sequence order, hands them to
//! the reactors and answers every caller. Throughput therefore grows with
//! the number of concurrent issuers, and no answer is sent before its
//! transaction is committed (see [`crate::store`] for why that survives
//! kill -9).
//!
//! # Interface for other server modules (the query executor)
//!
//! - Issue a command as the executor:
//!   `pipeline.execute(envelope, Origin::Executor).await` with a
//!   `CommandEnvelope<SessionCommand>`; it returns [`CommandOutcome`], the
//!   very type the HTTP handlers use (`Ok(CommandAccepted { aggregate_id,
//!   version, events, .. })`, or an [`AppError`] whose `kind` is `Conflict`
//!   with `current_version`, `Unprocessable`, …). `Origin::Http` refuses
//!   executor-only commands (`QuerySession::is_executor_only`) with 403.
//!   [`Pipeline::execute_with`] takes a full [`CommandContext`] (correlation
//!   and causation ids).
//! - React to committed events: implement [`Reactor`] and register it with
//!   [`Pipeline::add_reactor`] before serving. `react` is called on a tokio
//!   task, once per accepted command with that command's stored events
//!   (global sequences assigned), after the commit and after the bus
//!   publish, never for resends. It must not block: spawn the work.
//! - Progress frames: `bus.publish_progress(ProgressFrame { session_id,
//!   query_id, percent, elapsed_ms })` on [`crate::bus::Bus`] (also reachable
//!   as `AppState::bus()`); SSE streams send them as `event: progress`.
//! - Validate server dataset names before deciding: implement
//!   [`DatasetCatalog`] and install it with [`Pipeline::set_catalog`]. An
//!   `AttachDataset` of a `server` dataset whose name `exists` denies is
//!   refused with 422 and nothing is stored. `exists` runs on the writer
//!   thread: it must be a quick in-memory lookup.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::Value;
use shared_domain::decision::{authorize, decide, DecisionContext, Issuer, Refusal};
use shared_domain::sync::base::check_base;
use shared_domain::{
    Actor, Aggregate, CommandEnvelope, DatasetName, Engine, EventEnvelope, EventMetadata,
    QuerySession, SessionCommand, SessionEvent, UserDirectory,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::bus::{Bus, StoredEvent};
use crate::error::{AppError, ErrorKind};
use crate::store::{self, AppendError, NewClaim, NewCommand, StoreError, WriteBackend, WriteTx};

/// Commit latency buckets, in seconds: a durable commit is about 1 ms on
/// this class of disk, a slow one tens of milliseconds.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
];
/// The most commands committed in one transaction.
pub const MAX_GROUP: usize = 256;
/// How long the writer waits at most for a group to grow to the size of the
/// previous one (the issuers it just answered are likely to send again), by
/// durability: with `full` every commit costs an fsync, so waiting a little
/// to share it pays; with `normal` a commit is cheap.
const GROUP_WAIT_FULL: std::time::Duration = std::time::Duration::from_micros(400);
const GROUP_WAIT_NORMAL: std::time::Duration = std::time::Duration::from_micros(50);
/// How often the writer looks at the queue while it waits.
const GROUP_POLL: std::time::Duration = std::time::Duration::from_micros(20);
/// How many commands may wait for the writer before callers wait to enqueue.
const QUEUE_CAPACITY: usize = 8192;
/// The writer's aggregate cache is dropped when it grows past this.
const CACHE_CAPACITY: usize = 100_000;
/// The `client_id` recorded on events the query executor causes.
pub const EXECUTOR_CLIENT_ID: &str = "server:query-executor";

/// Who issues a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// A client over HTTP: executor-only commands are refused (403).
    #[default]
    Http,
    /// The server's own query executor.
    Executor,
}

/// Where a command comes from, recorded in its events' metadata.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    pub origin: Origin,
    /// The signed-in user who sent it (from the credentials, never from the
    /// envelope); `None` for the executor.
    pub user: Option<crate::accounts::User>,
    pub client_id: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

impl CommandContext {
    /// Who issued the command, as `processed_commands.actor` records it.
    /// The actor the domain's access rules see: the signed-in user, or the
    /// system (the executor, and in-process callers without a user).
    pub fn domain_actor(&self) -> Actor {
        match (&self.origin, &self.user) {
            (Origin::Http, Some(user)) => Actor::User(shared_domain::UserId(user.id)),
            _ => Actor::System,
        }
    }

    pub fn actor(&self) -> Option<String> {
        match (&self.origin, &self.user) {
            (Origin::Executor, _) => Some(crate::accounts::EXECUTOR_ACTOR.to_owned()),
            (Origin::Http, Some(user)) => Some(user.id.to_string()),
            (Origin::Http, None) => None,
        }
    }

    /// The context of the server's query executor.
    pub fn executor() -> Self {
        Self {
            origin: Origin::Executor,
            client_id: Some(EXECUTOR_CLIENT_ID.to_owned()),
            ..Self::default()
        }
    }
}

impl From<Origin> for CommandContext {
    fn from(origin: Origin) -> Self {
        match origin {
            Origin::Http => Self::default(),
            Origin::Executor => Self::executor(),
        }
    }
}

/// An accepted command: the `POST /api/commands` 200 body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandAccepted {
    pub aggregate_id: Uuid,
    /// The aggregate's version after this command.
    pub version: u64,
    /// The events this command appended (the original ones for a resend).
    pub events: Vec<EventEnvelope>,
    /// Whether this answers a resend (nothing was appended this time).
    #[serde(skip)]
    pub duplicate: bool,
}

impl CommandAccepted {
    /// The global sequence of the last event, if the command produced any.
    pub fn last_global_sequence(&self) -> Option<u64> {
        self.events.last().map(|e| e.global_sequence)
    }
}

/// What every command yields, from HTTP or from the executor.
pub type CommandOutcome = Result<CommandAccepted, AppError>;

/// Background work started by committed events (DuckDB execution, …).
pub trait Reactor: Send + Sync + 'static {
    /// Called once per accepted command with its stored events, after the
    /// commit and the bus publish, on a tokio task. Must not block.
    fn react(&self, events: &[EventEnvelope]);
}

/// The server's dataset catalog, consulted before `AttachDataset` is decided.
pub trait DatasetCatalog: Send + Sync + 'static {
    /// Whether a server dataset of this name is known. Called on the writer
    /// thread inside the write transaction: answer from memory, never read
    /// the disk (every command of the group would wait for it).
    fn exists(&self, name: &DatasetName) -> bool;

    /// Brings the catalog up to date when it does not know `name` yet (a
    /// file dropped into the datasets directory since the last scan).
    /// Called on a blocking thread before the command is queued: may read
    /// the disk.
    fn learn(&self, _name: &DatasetName) {}
}

/// Parses a wire envelope into a session command (400 when it is not one).
pub fn parse_command(
    envelope: &CommandEnvelope<Value>,
) -> Result<CommandEnvelope<SessionCommand>, AppError> {
    if envelope.aggregate_type != QuerySession::TYPE {
        return Err(AppError::bad_request(format!(
            "unknown aggregate type {:?}; the only one is {:?}",
            envelope.aggregate_type,
            QuerySession::TYPE
        )));
    }
    envelope
        .parse::<QuerySession>()
        .map_err(|e| AppError::bad_request(format!("invalid command: {e}")))
}

/// The handle every caller uses; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    requests: mpsc::Sender<WriteRequest>,
    /// Kept to see whether the reactor dispatcher still runs (health).
    committed: mpsc::UnboundedSender<Vec<EventEnvelope>>,
    shared: Arc<Shared>,
}

struct Shared {
    bus: Bus,
    /// Transactions committed and commands handled by the writer.
    groups: AtomicU64,
    commands: AtomicU64,
    /// Seconds from a group's BEGIN to its COMMIT returning (fsync included).
    commit_latency: prometheus::Histogram,
    catalog: RwLock<Option<Arc<dyn DatasetCatalog>>>,
    accounts: RwLock<Option<crate::accounts::Accounts>>,
    reactors: RwLock<Vec<Arc<dyn Reactor>>>,
    /// Fault injection (tests): the writer panics on its next command.
    kill_writer: AtomicBool,
    /// When set (PostgreSQL), committed events reach the bus through the
    /// node's fan-out follower, which this wakes after each commit, instead
    /// of being published here: one publisher keeps the bus in global order
    /// when other nodes append too (see [`crate::fanout`]).
    fanout: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    /// Who claims the server queries this node accepts (set by the query
    /// executor): the claim is written with the `QuerySubmitted`.
    claims: std::sync::OnceLock<QueryClaims>,
}

/// The node that runs the server queries submitted through this pipeline,
/// and the lease its claims start with (see [`crate::query::claims`]).
#[derive(Debug, Clone, Copy)]
pub struct QueryClaims {
    pub node_id: Uuid,
    pub lease: std::time::Duration,
}

struct WriteRequest {
    envelope: CommandEnvelope<SessionCommand>,
    context: CommandContext,
    reply: oneshot::Sender<CommandOutcome>,
}

impl Pipeline {
    /// Starts the writer thread on `writer` and the reactor dispatcher (on
    /// the current tokio runtime).
    pub fn start(writer: impl WriteBackend, bus: Bus) -> Pipeline {
        let shared = Arc::new(Shared {
            bus,
            groups: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            commit_latency: prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "sextant_commit_seconds",
                    "Time from a group's BEGIN to its COMMIT (decisions and fsync included).",
                )
                .buckets(COMMIT_BUCKETS.to_vec()),
            )
            .expect("valid histogram"),
            catalog: RwLock::new(None),
            accounts: RwLock::new(None),
            reactors: RwLock::new(Vec::new()),
            kill_writer: AtomicBool::new(false),
            fanout: std::sync::OnceLock::new(),
            claims: std::sync::OnceLock::new(),
        });
        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let (committed_tx, mut committed_rx) = mpsc::unbounded_channel::<Vec<EventEnvelope>>();
        let writer = Writer {
            conn: Box::new(writer),
            cache: HashMap::new(),
            shared: shared.clone(),
            committed: committed_tx.clone(),
        };
        std::thread::Builder::new()
            .name("event-store-writer".into())
            .spawn(move || {
                // A dead writer is not restarted (its transaction and cache
                // are in an unknown state): its queue closes, commands get
                // 503 and `/api/health` reports it until the server restarts.
                let ran = std::panic::catch_unwind(AssertUnwindSafe(|| writer.run(queue)));
                if let Err(panic) = ran {
                    tracing::error!(
                        panic = panic_message(&panic),
                        "the event store writer died; commands are refused until the server restarts"
                    );
                }
            })
            .expect("spawning the event store writer");
        let dispatch = shared.clone();
        tokio::spawn(async move {
            while let Some(events) = committed_rx.recv().await {
                let reactors = dispatch.reactors.read().expect("reactors lock").clone();
                for reactor in reactors {
                    // A reactor that panics stops the dispatcher (health then
                    // reports the executor dead; a restart fails the queries
                    // it left behind) instead of reacting on unknown state.
                    if let Err(panic) =
                        std::panic::catch_unwind(AssertUnwindSafe(|| reactor.react(&events)))
                    {
                        tracing::error!(
                            panic = panic_message(&panic),
                            "a reactor panicked; server queries stop running until the server restarts"
                        );
                        return;
                    }
                }
            }
        });
        Pipeline {
            requests,
            committed: committed_tx,
            shared,
        }
    }

    /// The bus this pipeline publishes to.
    pub fn bus(&self) -> &Bus {
        &self.shared.bus
    }

    /// (transactions committed, commands handled) so far: their ratio is the
    /// mean group-commit size.
    /// The commit latency histogram (the metrics registry renders it).
    pub fn commit_latency(&self) -> prometheus::Histogram {
        self.shared.commit_latency.clone()
    }

    pub fn stats(&self) -> (u64, u64) {
        (
            self.shared.groups.load(Ordering::Relaxed),
            self.shared.commands.load(Ordering::Relaxed),
        )
    }

    /// Commands waiting for the writer (metrics).
    pub fn queue_depth(&self) -> usize {
        self.requests.max_capacity() - self.requests.capacity()
    }

    /// Whether the writer thread is still taking commands (health).
    pub fn writer_alive(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Whether the dispatcher that hands committed events to the reactors
    /// (the query executor) still runs (health).
    pub fn reactors_alive(&self) -> bool {
        !self.committed.is_closed()
    }

    /// Fault injection for tests: the writer thread panics when it takes
    /// its next command (which is answered 500, every later one 503).
    pub fn inject_writer_death(&self) {
        self.shared.kill_writer.store(true, Ordering::SeqCst);
    }

    /// Registers background work triggered by committed events.
    pub fn add_reactor(&self, reactor: Arc<dyn Reactor>) {
        self.shared
            .reactors
            .write()
            .expect("reactors lock")
            .push(reactor);
    }

    /// Committed events reach the bus through a fan-out follower woken by
    /// `wake`, not from here (PostgreSQL, where other nodes append too).
    /// Set before serving.
    pub fn publish_through(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.shared.fanout.set(wake);
    }

    /// Claims every server query this pipeline accepts for `claims.node_id`
    /// in the transaction that stores its `QuerySubmitted`. Set before serving.
    pub fn claim_queries_for(&self, claims: QueryClaims) {
        let _ = self.shared.claims.set(claims);
    }

    /// Installs the catalog that validates server dataset names.
    pub fn set_catalog(&self, catalog: Arc<dyn DatasetCatalog>) {
        *self.shared.catalog.write().expect("catalog lock") = Some(catalog);
    }

    /// Installs the user directory `ShareSession` resolves names with.
    pub fn set_accounts(&self, accounts: crate::accounts::Accounts) {
        *self.shared.accounts.write().expect("accounts lock") = Some(accounts);
    }

    /// Handles one command from `origin`.
    pub async fn execute(
        &self,
        envelope: CommandEnvelope<SessionCommand>,
        origin: Origin,
    ) -> CommandOutcome {
        self.execute_with(envelope, origin.into()).await
    }

    /// Handles one command with its full context.
    pub async fn execute_with(
        &self,
        envelope: CommandEnvelope<SessionCommand>,
        context: CommandContext,
    ) -> CommandOutcome {
        let pending = self.enqueue(envelope, context).await?;
        receive(pending).await
    }

    /// Parses and handles one wire command.
    pub async fn execute_json(
        &self,
        envelope: &CommandEnvelope<Value>,
        context: CommandContext,
    ) -> CommandOutcome {
        let envelope = parse_command(envelope)?;
        self.execute_with(envelope, context).await
    }

    /// Handles wire commands in order, each exactly as if sent alone. They are
    /// all queued before the first answer is awaited, so they usually share
    /// one transaction; a later command sees the effects of earlier ones.
    pub async fn execute_batch(
        &self,
        envelopes: &[CommandEnvelope<Value>],
        context: CommandContext,
    ) -> Vec<CommandOutcome> {
        let mut pending = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let queued = match parse_command(envelope) {
                Ok(envelope) => self.enqueue(envelope, context.clone()).await,
                Err(error) => Err(error),
            };
            pending.push(queued);
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for queued in pending {
            outcomes.push(match queued {
                Ok(rx) => receive(rx).await,
                Err(error) => Err(error),
            });
        }
        outcomes
    }

    /// Lets the catalog read the disk for a dataset it does not know yet,
    /// here, before the writer decides with what the catalog has in memory.
    async fn learn_dataset(&self, command: &SessionCommand) {
        let Some(name) = DecisionContext::needs(command).server_dataset else {
            return;
        };
        let catalog = self.shared.catalog.read().expect("catalog lock").clone();
        let Some(catalog) = catalog else {
            return;
        };
        if catalog.exists(name) {
            return;
        }
        let name = name.clone();
        let _ = tokio::task::spawn_blocking(move || catalog.learn(&name)).await;
    }

    async fn enqueue(
        &self,
        envelope: CommandEnvelope<SessionCommand>,
        context: CommandContext,
    ) -> Result<oneshot::Receiver<CommandOutcome>, AppError> {
        if envelope.aggregate_type != QuerySession::TYPE {
            return Err(AppError::bad_request(format!(
                "unknown aggregate type {:?}",
                envelope.aggregate_type
            )));
        }
        self.learn_dataset(&envelope.command).await;
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(WriteRequest {
                envelope,
                context,
                reply,
            })
            .await
            .map_err(|_| AppError::new(ErrorKind::Unavailable, "the event store writer stopped"))?;
        Ok(rx)
    }
}

/// The text of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

async fn receive(rx: oneshot::Receiver<CommandOutcome>) -> CommandOutcome {
    rx.await.map_err(|_| {
        AppError::internal("the event store writer dropped a command without answering")
    })?
}

/// The single writer: owns the write connection and the aggregate cache.
struct Writer {
    conn: Box<dyn WriteBackend>,
    /// Committed aggregate states. With a sole writer (SQLite) the cache is
    /// always exactly what the store holds; when other nodes append too
    /// (PostgreSQL), a cached state is checked against the stored version
    /// inside the transaction before it is used.
    cache: HashMap<Uuid, QuerySession>,
    shared: Arc<Shared>,
    committed: mpsc::UnboundedSender<Vec<EventEnvelope>>,
}

/// What one command did inside a group, before the group commits.
enum Decided {
    Appended(CommandAccepted, SessionCommand),
    Duplicate(CommandAccepted),
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        // Waiting for more commands pays off when a commit costs an fsync.
        let durable = self.conn.durable_commits();
        let max_wait = match std::env::var("SEXTANT_GROUP_WAIT_US") {
            // For the store bench: compare with and without the wait.
            Ok(micros) => std::time::Duration::from_micros(micros.parse().unwrap_or(0)),
            Err(_) if durable => GROUP_WAIT_FULL,
            Err(_) => GROUP_WAIT_NORMAL,
        };
        let mut previous = 0;
        while let Some(first) = queue.blocking_recv() {
            if self.shared.kill_writer.load(Ordering::SeqCst) {
                panic!("injected fault: the event store writer was told to die");
            }
            let mut group = vec![first];
            let started = std::time::Instant::now();
            while group.len() < MAX_GROUP {
                if let Ok(request) = queue.try_recv() {
                    group.push(request);
                    continue;
                }
                if !keep_collecting(group.len(), previous, started.elapsed(), max_wait) {
                    break;
                }
                std::thread::sleep(GROUP_POLL);
            }
            previous = group.len();
            self.commit_group(group);
        }
        tracing::debug!("event store writer stopped");
    }

    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        let now = store::now();
        let timer = self.shared.commit_latency.start_timer();
        let mut staged: HashMap<Uuid, QuerySession> = HashMap::new();
        let mut decided: Vec<Result<Decided, AppError>> = Vec::with_capacity(group.len());
        let sole_writer = self.conn.sole_writer();
        let committed = match self.conn.begin() {
            Ok(mut tx) => {
                let mut failure = None;
                for request in &group {
                    let outcome = decide_one(
                        &mut *tx,
                        sole_writer,
                        &mut self.cache,
                        &mut staged,
                        &self.shared,
                        request,
                        now,
                    );
                    // A store error (full disk, I/O error, out of memory, a
                    // lost connection) may have rolled back the whole
                    // transaction; the
                    // rest of the group must not run in autocommit on state
                    // that is gone, so the group stops here.
                    if let Err(error) = &outcome {
                        if error.kind == ErrorKind::Unavailable || tx.is_rolled_back() {
                            failure = Some(error.detail.clone());
                            break;
                        }
                    }
                    if tx.is_rolled_back() {
                        failure = Some("the group transaction was rolled back".into());
                        break;
                    }
                    decided.push(outcome);
                }
                match failure {
                    // Dropping `tx` rolls back what is left of it.
                    Some(failure) => Err(failure),
                    None => tx.commit().map_err(|e| e.to_string()),
                }
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(failure) = committed {
            timer.stop_and_discard();
            self.fail_group(group, decided, &failure);
            return;
        }
        timer.observe_duration();
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        self.shared
            .commands
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        if self.cache.len() + staged.len() > CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.extend(staged);
        let fanout = self.shared.fanout.get();
        if let Some(wake) = fanout {
            wake.notify_one();
        }
        let has_reactors = !self
            .shared
            .reactors
            .read()
            .expect("reactors lock")
            .is_empty();
        for (request, outcome) in group.into_iter().zip(decided) {
            let outcome = match outcome {
                Ok(Decided::Appended(accepted, command)) => {
                    tracing::info!(
                        command_id = %request.envelope.command_id,
                        command = command.name(),
                        aggregate_type = QuerySession::TYPE,
                        aggregate_id = %accepted.aggregate_id,
                        version = accepted.version,
                        "command accepted"
                    );
                    if fanout.is_none() {
                        for event in &accepted.events {
                            self.shared
                                .bus
                                .publish_event(Arc::new(StoredEvent::new(event.clone())));
                        }
                    }
                    if has_reactors {
                        let _ = self.committed.send(accepted.events.clone());
                    }
                    Ok(accepted)
                }
                Ok(Decided::Duplicate(accepted)) => {
                    tracing::debug!(
                        command_id = %request.envelope.command_id,
                        "resent command answered from processed_commands"
                    );
                    Ok(accepted)
                }
                Err(refused) => Err(refused),
            };
            let _ = request.reply.send(outcome);
        }
    }
}

impl Writer {
    /// Answers a group whose transaction did not commit. Nothing of it is
    /// stored, so every command gets 503 with the group's error id (a
    /// resend is safe: its command id is not recorded), except resends
    /// answered from earlier commits. The cache is dropped (it is rebuilt
    /// from the store), and subscribers re-read the store past what they
    /// have, in case the failed commit left more there than it reported.
    fn fail_group(
        &mut self,
        group: Vec<WriteRequest>,
        decided: Vec<Result<Decided, AppError>>,
        failure: &str,
    ) {
        self.cache.clear();
        let error_id = shared_domain::ErrorId(Uuid::new_v4());
        tracing::error!(
            %error_id,
            commands = group.len(),
            %failure,
            "event store failure: the group commit was rolled back"
        );
        let mut decided = decided.into_iter();
        for request in group {
            let outcome = match decided.next() {
                Some(Ok(Decided::Duplicate(accepted))) => Ok(accepted),
                _ => {
                    let mut error = AppError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the event store failed ({failure}); nothing of this command was stored: send it again"
                        ),
                    );
                    error.id = error_id;
                    Err(error)
                }
            };
            let _ = request.reply.send(outcome);
        }
        self.shared.bus.publish_catch_up();
        if let Some(wake) = self.shared.fanout.get() {
            wake.notify_one();
        }
    }
}

/// Whether the writer should wait for more commands before committing a
/// group of `collected`: only while it is smaller than the previous group
/// (a sign of issuers about to send again) and for at most `max_wait`. A
/// lone issuer (previous group of one) never waits.
fn keep_collecting(
    collected: usize,
    previous: usize,
    waited: std::time::Duration,
    max_wait: std::time::Duration,
) -> bool {
    collected < previous && collected < MAX_GROUP && waited < max_wait
}

/// Handles one command inside the group transaction `tx`.
fn decide_one(
    tx: &mut dyn WriteTx,
    sole_writer: bool,
    cache: &mut HashMap<Uuid, QuerySession>,
    staged: &mut HashMap<Uuid, QuerySession>,
    shared: &Shared,
    request: &WriteRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Decided, AppError> {
    let envelope = &request.envelope;
    let command_id = envelope.command_id;
    let aggregate_id = envelope.aggregate_id;
    // The idempotency fingerprint leaves out `expected_version` and
    // `base_command`: a client that rebased a pending command after a
    // conflict resends it, same command id, on a new base (docs/SYNC.md).
    let canonical = serde_json::to_string(&CommandEnvelope {
        expected_version: 0,
        base_command: None,
        ..envelope.clone()
    })
    .map_err(AppError::internal)?;

    // 1. Idempotency first: a resend gets the original answer, even if its
    //    expected version is stale by now.
    if let Some(processed) = tx.find_processed(command_id).map_err(store_error)? {
        // Another user replaying someone's command id learns nothing: not
        // the events, not even that the body matched.
        if processed.request != canonical
            || (processed.actor.is_some() && processed.actor != request.context.actor())
        {
            return Err(AppError::new(
                ErrorKind::Unprocessable,
                format!(
                    "command id {command_id} was already used for a different command; \
                     use a fresh command_id for a new command"
                ),
            ));
        }
        let events = match (
            processed.first_global_sequence,
            processed.last_global_sequence,
        ) {
            (Some(first), Some(last)) => tx.events_in_range(first, last).map_err(store_error)?,
            _ => Vec::new(),
        };
        return Ok(Decided::Duplicate(CommandAccepted {
            aggregate_id: processed.aggregate_id,
            version: processed.version,
            events,
            duplicate: true,
        }));
    }

    // 2. Load: this group's staged state, the cache, or the store. When
    //    other nodes append too, a cached state is used only while the
    //    store's version is still its version (this group holds the lock
    //    that keeps it so until commit).
    if !sole_writer && !staged.contains_key(&aggregate_id) {
        if let Some(cached) = cache.get(&aggregate_id) {
            let stored = tx
                .aggregate_version(QuerySession::TYPE, aggregate_id)
                .map_err(store_error)?;
            if stored != cached.version() {
                cache.remove(&aggregate_id);
            }
        }
    }
    let loaded;
    let session = match staged
        .get(&aggregate_id)
        .or_else(|| cache.get(&aggregate_id))
    {
        Some(session) => session,
        None => {
            loaded = load_session(tx, aggregate_id)?;
            &loaded
        }
    };

    // 3. Who may send this at all, before the version: a session the actor
    //    may not read is 404 (its version never leaks), too weak a role or
    //    a forged executor command 403, even on a stale base.
    let mut decision = DecisionContext::new(
        match request.context.origin {
            Origin::Http => Issuer::Client,
            Origin::Executor => Issuer::Executor,
        },
        request.context.domain_actor(),
        aggregate_id,
    );
    authorize(session, &envelope.command, &decision).map_err(|r| refused(r, aggregate_id))?;

    // 4. Optimistic concurrency on the exact base: the current version, and
    //    (when the sender names one) the command behind the last event.
    let head = shared_domain::sync::base::Head {
        version: session.version(),
        last_command: match envelope.base_command {
            Some(_) if session.version() > 0 => tx
                .last_command(QuerySession::TYPE, aggregate_id)
                .map_err(store_error)?,
            _ => None,
        },
    };
    if let Err(stale) = check_base(envelope.expected_version, envelope.base_command, head) {
        // The command behind the current head lets the client tell a newer
        // history from another one (a restored store): docs/SYNC.md.
        let current_command = match head.last_command {
            Some(command) => Some(command),
            None => tx
                .last_command(QuerySession::TYPE, aggregate_id)
                .map_err(store_error)?,
        };
        let mut error = conflict(envelope.expected_version, stale.current_version);
        if let Some(command) = current_command {
            error = error.with("current_command", command.to_string());
        }
        return Err(error);
    }

    // 5. The facts beyond this session (catalog, query ids of other
    //    sessions), then the decision, pure and shared with the browser.
    let needs = DecisionContext::needs(&envelope.command);
    if let Some(name) = needs.server_dataset {
        let catalog = shared.catalog.read().expect("catalog lock").clone();
        decision.server_dataset_exists = catalog.map(|catalog| catalog.exists(name));
    }
    if let Some(query_id) = needs.query_id {
        decision.query_id_owner = tx.session_of_query(query_id.0).map_err(store_error)?;
    }
    if let Some(name) = needs.share_target {
        let directory = shared
            .accounts
            .read()
            .expect("accounts lock")
            .as_ref()
            .map(|accounts| accounts.directory());
        decision.share_target = directory.and_then(|directory| directory.user_id(name));
    }

    // 6. Decide (pure, shared with the browser and the simulation).
    let decided =
        decide(session, &envelope.command, &decision).map_err(|r| refused(r, aggregate_id))?;

    // 7. Persist: the version checked against the store, the events and
    //    the processed-command record, all or nothing (a savepoint inside
    //    the group).
    let metadata = EventMetadata {
        command_id,
        correlation_id: request.context.correlation_id,
        causation_id: request.context.causation_id,
        client_id: request.context.client_id.clone(),
        user_agent: request.context.user_agent.clone(),
    };
    let mut next = session.clone();
    let envelopes = decided
        .iter()
        .enumerate()
        .map(|(index, event)| {
            EventEnvelope::new::<QuerySession>(
                Uuid::now_v7(),
                aggregate_id,
                session.version() + 1 + index as u64,
                event,
                metadata.clone(),
                now,
            )
        })
        .collect();
    let appended = store::append_command(
        tx,
        NewCommand {
            command_id,
            aggregate_type: QuerySession::TYPE,
            aggregate_id,
            expected_version: session.version(),
            events: envelopes,
            request: canonical,
            actor: request.context.actor(),
            at: now,
            claims: claims_of(&decided, aggregate_id, shared.claims.get()),
        },
    );
    let events = match appended {
        Ok(events) => events,
        Err(AppendError::Conflict { expected, current }) => {
            // The store holds a version the cached state did not: reload
            // it next time.
            cache.remove(&aggregate_id);
            staged.remove(&aggregate_id);
            return Err(conflict(expected, current));
        }
        Err(AppendError::Store(error)) => return Err(store_error(error)),
    };
    for event in &decided {
        next.apply(event);
    }

    let accepted = CommandAccepted {
        aggregate_id,
        version: next.version(),
        events,
        duplicate: false,
    };
    staged.insert(aggregate_id, next);
    Ok(Decided::Appended(accepted, envelope.command.clone()))
}

/// The claims of the server queries among `events` (none when no executor
/// claims queries on this node).
fn claims_of(
    events: &[SessionEvent],
    session_id: Uuid,
    claims: Option<&QueryClaims>,
) -> Vec<NewClaim> {
    let Some(claims) = claims else {
        return Vec::new();
    };
    events
        .iter()
        .filter_map(|event| match event {
            SessionEvent::QuerySubmitted {
                query_id,
                engine: Engine::Server,
                ..
            } => Some(NewClaim {
                query_id: query_id.0,
                session_id,
                node_id: claims.node_id,
                lease: claims.lease,
            }),
            _ => None,
        })
        .collect()
}

/// Rebuilds a session from its stored events inside the transaction.
fn load_session(tx: &mut dyn WriteTx, aggregate_id: Uuid) -> Result<QuerySession, AppError> {
    let envelopes = tx
        .aggregate_events(QuerySession::TYPE, aggregate_id, 0)
        .map_err(store_error)?;
    fold_session(aggregate_id, &envelopes)
}

/// Folds a session's stored events, upcasting old versions.
pub fn fold_session(
    aggregate_id: Uuid,
    envelopes: &[EventEnvelope],
) -> Result<QuerySession, AppError> {
    let mut session = QuerySession::default();
    for envelope in envelopes {
        let event = envelope.decode::<QuerySession>().map_err(|e| {
            AppError::internal(format!(
                "event {} of session {aggregate_id} cannot be read: {e}",
                envelope.global_sequence
            ))
        })?;
        session.apply(&event);
    }
    Ok(session)
}

fn conflict(expected: u64, current: u64) -> AppError {
    AppError::new(
        ErrorKind::Conflict,
        format!(
            "expected version {expected}, but the session is at version {current}; \
             fetch its new events and decide again"
        ),
    )
    .with("current_version", current)
}

/// A refusal as HTTP: unreadable (or absent) 404, too weak a role or a
/// forged executor command 403, an over-long text 400, anything else 422.
fn refused(refusal: Refusal, aggregate_id: Uuid) -> AppError {
    if refusal.is_not_found() {
        AppError::not_found(crate::error::not_readable(aggregate_id))
    } else if refusal.is_forbidden() {
        AppError::new(ErrorKind::Forbidden, refusal.to_string())
    } else if refusal.is_invalid() {
        AppError::bad_request(refusal.to_string())
    } else {
        AppError::new(ErrorKind::Unprocessable, refusal.to_string())
    }
}

/// A failing store is unavailable (503: try again), not a bug; the writer
/// stops the group on it (see `Writer::commit_group`).
fn store_error(error: StoreError) -> AppError {
    AppError::new(ErrorKind::Unavailable, format!("event store: {error}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_writer_waits_only_for_a_group_smaller_than_the_last_and_not_for_long() {
        let max = Duration::from_micros(400);
        let early = Duration::from_micros(10);
        assert!(keep_collecting(3, 64, early, max));
        assert!(!keep_collecting(64, 64, early, max), "as large as the last");
        assert!(!keep_collecting(3, 64, max, max), "waited long enough");
        assert!(
            !keep_collecting(1, 1, early, max),
            "a lone issuer never waits"
        );
        assert!(
            !keep_collecting(1, 0, early, max),
            "the first group never waits"
        );
    }
}
