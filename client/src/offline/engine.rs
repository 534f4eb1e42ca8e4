//! The sync engine: the imperative shell around the pure
//! [`shared_domain::sync::Replica`]. It persists every change in IndexedDB
//! before it matters, follows the server's SSE feed, sends the outbox in
//! batches (one sender per browser, elected with the Web Locks API), rebases
//! after conflicts, and reports every rejection with an error id.
//!
//! There is one engine per page ([`install`] / [`engine`]). The UI reads
//! through its accessors, which track one revision signal bumped on every
//! change, so views re-render when the replica moves.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{select, Either};
use leptos::prelude::*;
use serde::Deserialize;
use shared_domain::decision;
use shared_domain::sync::answers::{batch_verdict, BatchVerdict};
use shared_domain::sync::context::replica_context;
use shared_domain::sync::identity::{
    check_store, same_store, take_answer, ResetReason, StoreCheck, TakeAnswer, Witness,
};
use shared_domain::sync::orphans::{settle_local_runs, LocalRun, Orphan};
use shared_domain::sync::shell::{after_catch_up, on_answer, AnswerEffect, CommandAnswer};
use shared_domain::sync::{PendingCommand, Received, Rejection, Replica, Source};
use shared_domain::{
    Aggregate, CommandEnvelope, ErrorId, EventEnvelope, QueryId, QuerySession, SessionCommand,
    SessionEvent, UserId,
};
use uuid::Uuid;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

use super::local_runs::{self, RunLock};
use super::net::{self, Answer, BatchFailure, Fetched};
use super::owner::LocalNames;
use super::storage::{FeedPosition, LocalStore, RunChange, StorageError, Write};
use crate::ids::{random_uuid, time_ordered_uuid};

/// What the connection indicator shows. It is derived from facts (is the
/// feed open, how many commands wait), never set optimistically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// The feed has not opened or failed yet.
    Connecting,
    /// The feed is open and nothing waits to be sent.
    Online,
    /// The feed is open and `pending` commands wait for the server.
    Syncing { pending: usize },
    /// The server cannot be reached; `pending` commands wait.
    Offline { pending: usize },
}

/// Where a problem came from: decides whether a later success clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The user's input or action was refused here, before sending.
    Input,
    /// The server refused a change, or a change was rebased away.
    Rejected,
    /// Local storage or the wire failed.
    System,
}

impl ProblemKind {
    pub fn label(self) -> &'static str {
        match self {
            ProblemKind::Input => "Not done",
            ProblemKind::Rejected => "Rejected by the server",
            ProblemKind::System => "Problem",
        }
    }
}

/// A failure shown to the user, with the id an operator finds in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub error_id: String,
    pub kind: ProblemKind,
    pub message: String,
}

/// The latest progress frame of a running server query.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Progress {
    pub query_id: QueryId,
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Rows the scans have read so far, and will read in all (DuckDB's
    /// counts, when it keeps them).
    #[serde(default)]
    pub rows_read: Option<u64>,
    #[serde(default)]
    pub rows_total: Option<u64>,
    /// Result rows produced so far.
    #[serde(default)]
    pub rows_returned: Option<u64>,
}

/// The feed's first frame: the store, and whether what the page holds is confirmed.
#[derive(Deserialize)]
struct Hello {
    store_id: Uuid,
    status: String,
    #[serde(default)]
    message: Option<String>,
}

/// What a tab posts on the BroadcastChannel after a reset.
const RESET_MESSAGE: &str = "reset";

/// A rejection as one tab tells the others over the BroadcastChannel.
#[derive(Deserialize)]
struct SharedRejection {
    error_id: String,
    message: String,
}

struct EngineState {
    /// Whose data this is, and the names of its database, channel and lock.
    names: LocalNames,
    replica: Replica<QuerySession>,
    store: Option<Rc<LocalStore>>,
    /// command id -> outbox order (first submission time), kept across rebases.
    orders: HashMap<Uuid, f64>,
    /// The highest order given here: orders strictly increase, so commands
    /// of the same millisecond keep the order they were made in.
    last_order: f64,
    /// The server store the confirmed state came from.
    store_id: Option<Uuid>,
    /// The most commands one batch may carry (halved by a batch-level 413).
    batch_limit: usize,
    /// Sessions being caught up right now (one fetch each at a time).
    catching_up: HashSet<Uuid>,
    /// A retry of the gap ledger's catch-ups is scheduled.
    gap_retry_scheduled: bool,
    /// Commands submitted here whose rows are not in IndexedDB yet.
    unwritten: HashSet<Uuid>,
    feed_open: bool,
    feed_failed: bool,
    /// The server answered 401 for this page's user (revoked, cookie gone).
    signed_out: bool,
    /// A loop is asking `/api/health` whether the server is back.
    probing: bool,
    /// The browser's answer to `navigator.storage.persist()`.
    persistent: Option<bool>,
    problems: Vec<Problem>,
    /// Set when local data or a server event is newer than this app.
    fatal: Option<String>,
    progress: HashMap<QueryId, Progress>,
    is_sender: bool,
    flushing: bool,
    attempt: u32,
    /// Wakes a flush loop sleeping in its backoff (the feed reopened).
    wake: Option<oneshot::Sender<()>>,
    feed: Option<web_sys::EventSource>,
    channel: Option<web_sys::BroadcastChannel>,
    /// The Web Locks of the local queries this page runs.
    run_locks: HashMap<QueryId, Option<RunLock>>,
    /// Orphaned local runs are being settled now.
    settling: bool,
    /// Whether a later look for orphans is scheduled (a run of another tab
    /// is remembered: it becomes an orphan once that tab is gone).
    orphan_recheck: bool,
    /// Feed events handled and the time spent on them, since the outbox was
    /// last empty (marked then, for the bench).
    feed_events: u32,
    feed_ms: f64,
    /// What waits for the page's one IndexedDB writer ([`SyncEngine::queue_write`]),
    /// and what it is writing now.
    queued: Write,
    writing: Option<Write>,
    /// Tell the other tabs once the queued rows are stored.
    tell_after_write: bool,
    /// A re-render is scheduled ([`SyncEngine::changed_soon`]).
    render_scheduled: bool,
    /// The server's dataset names, once the page loaded them.
    catalog: Option<BTreeSet<String>>,
}

/// Cheap to clone; lives for the page.
#[derive(Clone)]
pub struct SyncEngine {
    state: Rc<RefCell<EngineState>>,
    revision: RwSignal<u64>,
}

/// How long the start waits for IndexedDB before going on in memory.
const OPEN_TIMEOUT_MS: u32 = 3_000;
/// How often an offline page asks whether the server is back: well within
/// the 250 ms in which a page should notice it.
const PROBE_MS: u32 = 150;
/// How often a signed-out page asks again whether someone signed in.
const SIGNED_OUT_PROBE_MS: u32 = 2_000;
/// The first wait before a failed catch-up is tried again (then doubling).
const GAP_RETRY_MS: u32 = 500;
/// How often to look again for orphans while another tab runs a local query.
const ORPHAN_RECHECK_MS: u32 = 1_000;
/// At most this long between a feed event or an answer and its render.
const RENDER_COALESCE_MS: u32 = 16;

thread_local! {
    static ENGINE: OnceCell<SyncEngine> = const { OnceCell::new() };
}

/// Makes `engine` the page's engine (once, at start-up).
pub fn install(engine: SyncEngine) {
    ENGINE.with(|cell| {
        let _ = cell.set(engine);
    });
}

/// The page's engine. Views call this inside their closures, which keeps the
/// closures `Send` (the engine itself is single-threaded, like the page).
pub fn engine() -> SyncEngine {
    ENGINE.with(|cell| {
        cell.get()
            .cloned()
            .expect("the sync engine is installed at start-up")
    })
}

impl SyncEngine {
    /// Opens local storage, restores the replica, and starts the feed and the sender.
    pub async fn start(names: LocalNames) -> Self {
        let database = names.database.clone();
        let engine = SyncEngine {
            state: Rc::new(RefCell::new(EngineState {
                names,
                replica: Replica::new(),
                store: None,
                orders: HashMap::new(),
                last_order: 0.0,
                store_id: None,
                batch_limit: net::MAX_BATCH_COMMANDS,
                catching_up: HashSet::new(),
                gap_retry_scheduled: false,
                unwritten: HashSet::new(),
                feed_open: false,
                feed_failed: false,
                signed_out: false,
                probing: false,
                persistent: None,
                problems: Vec::new(),
                fatal: None,
                progress: HashMap::new(),
                is_sender: false,
                flushing: false,
                attempt: 0,
                wake: None,
                feed: None,
                channel: None,
                run_locks: HashMap::new(),
                settling: false,
                orphan_recheck: false,
                feed_events: 0,
                feed_ms: 0.0,
                queued: Write::default(),
                writing: None,
                tell_after_write: false,
                render_scheduled: false,
                catalog: None,
            })),
            revision: RwSignal::new(0),
        };
        // The open can wait indefinitely (seen in headless Chromium when the
        // previous page was left while it was creating the database): after
        // a while, go on in memory and say so, rather than never render.
        let opened = select(
            Box::pin(LocalStore::open(&database)),
            gloo_timers::future::TimeoutFuture::new(OPEN_TIMEOUT_MS),
        )
        .await;
        let opened = match opened {
            Either::Left((opened, _)) => opened,
            Either::Right(_) => Err(StorageError::IndexedDb(
                "local storage is busy (another Sextant page is holding it); changes are kept \
                 in memory only until you reload"
                    .into(),
            )),
        };
        match opened {
            Ok(store) => {
                let store = Rc::new(store);
                engine.state.borrow_mut().store = Some(store.clone());
                if let Err(error) = engine.restore(&store).await {
                    engine.storage_failed(error);
                }
            }
            Err(error) => engine.storage_failed(error),
        }
        engine.request_persistent_storage();
        engine.listen_to_other_tabs();
        if engine.local_user().is_some() {
            engine.start_feed();
        } else {
            // `/api/me` did not answer in time: ask again before the feed
            // fills this (the owner's) data, and move to the user's own
            // data if the signed-in user is someone else.
            let engine = engine.clone();
            spawn_local(async move {
                if engine.check_signed_in_user().await {
                    engine.start_feed();
                } else {
                    engine.watch_for_server();
                }
            });
        }
        engine.become_sender_when_elected();
        engine.changed();
        // Local queries whose tab closed before they ended.
        let settling = engine.clone();
        spawn_local(async move { settling.settle_orphans().await });
        engine
    }

    /// Remembers the names in the server's catalog (the dataset panel
    /// loaded them): an `AttachDataset` of another name is refused here as
    /// the server would refuse it.
    pub fn know_catalog(&self, names: impl IntoIterator<Item = String>) {
        self.state.borrow_mut().catalog = Some(names.into_iter().collect());
    }

    /// The user whose local data this page holds (`None`: never known).
    pub fn local_user(&self) -> Option<Uuid> {
        self.state.borrow().names.user
    }

    /// The IndexedDB database of that user.
    pub fn database_name(&self) -> String {
        self.state.borrow().names.database.clone()
    }

    /// The optimistic view of one session.
    pub fn view(&self, session_id: Uuid) -> QuerySession {
        self.revision.track();
        self.state.borrow().replica.view(session_id)
    }

    /// Every known session (confirmed or pending) with its optimistic view.
    pub fn sessions(&self) -> Vec<(Uuid, QuerySession)> {
        self.revision.track();
        let state = self.state.borrow();
        state
            .replica
            .aggregate_ids()
            .into_iter()
            .map(|id| (id, state.replica.view(id)))
            .filter(|(_, view)| view.version() > 0)
            .collect()
    }

    /// Whether the server has confirmed any event of this session (until
    /// then its view is this browser's own optimistic decision).
    pub fn is_confirmed(&self, session_id: Uuid) -> bool {
        self.revision.track();
        self.state
            .borrow()
            .replica
            .confirmed(session_id)
            .is_some_and(|session| session.version() > 0)
    }

    /// Whether the session has changes the server has not confirmed.
    pub fn has_pending(&self, session_id: Uuid) -> bool {
        self.revision.track();
        self.state.borrow().replica.has_pending(session_id)
    }

    /// Commands waiting for the server.
    pub fn pending_count(&self) -> usize {
        self.revision.track();
        self.state.borrow().replica.outbox().len()
    }

    pub fn connection(&self) -> Connection {
        self.revision.track();
        let state = self.state.borrow();
        let pending = state.replica.outbox().len();
        if state.feed_open {
            if pending == 0 {
                Connection::Online
            } else {
                Connection::Syncing { pending }
            }
        } else if state.feed_failed {
            Connection::Offline { pending }
        } else {
            Connection::Connecting
        }
    }

    pub fn problems(&self) -> Vec<Problem> {
        self.revision.track();
        self.state.borrow().problems.clone()
    }

    pub fn fatal(&self) -> Option<String> {
        self.revision.track();
        self.state.borrow().fatal.clone()
    }

    pub fn progress(&self, query_id: QueryId) -> Option<Progress> {
        self.revision.track();
        self.state.borrow().progress.get(&query_id).copied()
    }

    pub fn dismiss_problem(&self, error_id: &str) {
        self.state
            .borrow_mut()
            .problems
            .retain(|p| p.error_id != error_id);
        self.changed();
    }

    /// Reports a refusal decided here (invalid input, domain refusal).
    pub fn report_input(&self, message: impl Into<String>) {
        self.report(Problem {
            error_id: random_uuid().to_string(),
            kind: ProblemKind::Input,
            message: message.into(),
        });
    }

    /// Decides `command` on the optimistic view, stores it durably in the
    /// outbox and schedules sending. A locally invalid command is reported
    /// here (with an error id) and never sent.
    pub fn submit(&self, session_id: Uuid, command: SessionCommand) -> Option<Vec<SessionEvent>> {
        self.submit_with(session_id, command, None)
    }

    /// Submits `SubmitQuery` of a query this page runs locally: the run is
    /// stored with the command (in one transaction) and this page holds its
    /// Web Lock until [`SyncEngine::submit_local_outcome`] or
    /// [`SyncEngine::local_run_ended`], so if the tab closes first, the next
    /// page ends the query (`shared_domain::sync::orphans`).
    pub fn submit_local_query(
        &self,
        session_id: Uuid,
        query_id: QueryId,
        command: SessionCommand,
    ) -> Option<Vec<SessionEvent>> {
        let lock = local_runs::hold(&local_runs::lock_name(
            &self.state.borrow().names.sender_lock,
            query_id,
        ));
        self.state.borrow_mut().run_locks.insert(query_id, lock);
        let run = LocalRun {
            aggregate_id: session_id,
            query_id,
            outcome: None,
        };
        let submitted = self.submit_with(session_id, command, Some(RunChange::Remember(run)));
        if submitted.is_none() {
            self.state.borrow_mut().run_locks.remove(&query_id);
        }
        submitted
    }

    /// Submits the outcome (`CompleteQuery`, `FailQuery`) of a local query
    /// this page ran, forgetting its run with it. If the outcome cannot be
    /// submitted now (its query is not active on the view, e.g. its start is
    /// pending across a reset), the run keeps it, to be submitted once it
    /// can. Releases the run's lock once stored.
    pub fn submit_local_outcome(
        &self,
        session_id: Uuid,
        query_id: QueryId,
        command: SessionCommand,
    ) {
        let submitted = self.submit_with(
            session_id,
            command.clone(),
            Some(RunChange::Forget(query_id)),
        );
        if submitted.is_none() {
            let kept = LocalRun {
                aggregate_id: session_id,
                query_id,
                outcome: Some(command),
            };
            self.change_run(RunChange::Remember(kept));
        }
    }

    /// A local query this page started will not run (cancelled, or its
    /// start was refused): forget its run and release its lock.
    pub fn local_run_ended(&self, query_id: QueryId) {
        self.change_run(RunChange::Forget(query_id));
    }

    /// Stores `change`, then releases the run's lock (never before: a page
    /// that sees the lock gone must see the stored run as it is now).
    fn change_run(&self, change: RunChange) {
        let query_id = match &change {
            RunChange::Remember(run) => run.query_id,
            RunChange::Forget(query_id) => *query_id,
        };
        let store = self.state.borrow().store.clone();
        let engine = self.clone();
        spawn_local(async move {
            if let Some(store) = store {
                if let Err(error) = store.change_run(&change).await {
                    engine.storage_failed(error);
                }
            }
            engine.state.borrow_mut().run_locks.remove(&query_id);
            engine.settle_orphans().await;
        });
    }

    /// Settles the stored local runs no live tab runs (no one holds their
    /// lock): submits the kept outcome or fails the query once it is active
    /// on the view, forgets the others (`settle_local_runs`). Runs at the
    /// start, when the feed opens, after a flush and after a run of this
    /// page ends.
    async fn settle_orphans(&self) {
        let store = {
            let mut state = self.state.borrow_mut();
            if state.settling || state.fatal.is_some() {
                return;
            }
            let Some(store) = state.store.clone() else {
                return;
            };
            state.settling = true;
            store
        };
        self.settle_orphans_in(&store).await;
        self.state.borrow_mut().settling = false;
    }

    async fn settle_orphans_in(&self, store: &LocalStore) {
        let runs = match store.local_runs().await {
            Ok(runs) if runs.is_empty() => return,
            Ok(runs) => runs,
            Err(error) => return self.storage_failed(error),
        };
        // Without Web Locks a run of another tab looks like an orphan: leave them.
        let Some(held) = local_runs::held_locks().await else {
            return;
        };
        let orphans = {
            let state = self.state.borrow();
            let mut running = local_runs::running(&state.names.sender_lock, &held);
            // A run another tab holds now: look again later, since a closed
            // tab's locks go only once the browser has torn it down, which
            // may be after every other moment this page looks.
            if runs.iter().any(|run| {
                running.contains(&run.query_id) && !state.run_locks.contains_key(&run.query_id)
            }) {
                self.recheck_orphans_later();
            }
            running.extend(state.run_locks.keys().copied());
            settle_local_runs(&state.replica, &runs, &running, || ErrorId(random_uuid()))
        };
        for orphan in orphans {
            match orphan {
                Orphan::Submit {
                    aggregate_id,
                    command,
                } => {
                    let Some(query_id) = command.query_id() else {
                        continue;
                    };
                    let forget = Some(RunChange::Forget(query_id));
                    if self.submit_with(aggregate_id, command, forget).is_none() {
                        // Refused here (reported once): do not try again.
                        let _ = store.change_run(&RunChange::Forget(query_id)).await;
                    }
                }
                Orphan::Forget(query_id) => {
                    if let Err(error) = store.change_run(&RunChange::Forget(query_id)).await {
                        self.storage_failed(error);
                    }
                }
            }
        }
    }

    /// Looks for orphans again in [`ORPHAN_RECHECK_MS`] (once, however often
    /// it is asked meanwhile).
    fn recheck_orphans_later(&self) {
        if std::mem::replace(&mut self.state.borrow_mut().orphan_recheck, true) {
            return;
        }
        let engine = self.clone();
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(ORPHAN_RECHECK_MS).await;
            engine.state.borrow_mut().orphan_recheck = false;
            engine.settle_orphans().await;
        });
    }

    /// [`SyncEngine::submit`], storing `run` with the command.
    fn submit_with(
        &self,
        session_id: Uuid,
        command: SessionCommand,
        run: Option<RunChange>,
    ) -> Option<Vec<SessionEvent>> {
        if let Some(fatal) = self.state.borrow().fatal.clone() {
            self.report_input(format!("{} was not done: {fatal}", command.name()));
            return None;
        }
        let name = command.name();
        let user = self.local_user().map(UserId);
        let command_id = time_ordered_uuid();
        let decided = {
            let mut state = self.state.borrow_mut();
            let order = js_sys::Date::now().max(state.last_order + 0.01);
            // The server's rule with what this page knows (the signed-in
            // user on confirmed sessions, its other sessions' query ids, the
            // catalog it loaded: `shared_domain::sync::context`); the
            // server decides again with everything.
            let context = replica_context(
                &state.replica,
                user,
                session_id,
                &command,
                state.catalog.as_ref(),
            );
            let decided =
                state
                    .replica
                    .submit_decided(command_id, session_id, command, |view, command| {
                        decision::decide(view, command, &context)
                    });
            if decided.is_ok() {
                state.last_order = order;
                state.orders.insert(command_id, order);
                state.unwritten.insert(command_id);
                // A success supersedes the refusals of earlier attempts.
                state.problems.retain(|p| p.kind != ProblemKind::Input);
            }
            decided.map(|events| {
                let pending = state
                    .replica
                    .outbox()
                    .iter()
                    .find(|p| p.command_id == command_id)
                    .cloned()
                    .expect("just submitted");
                (events, pending, state.store.clone(), order)
            })
        };
        let (events, pending, store, order) = match decided {
            Ok(decided) => decided,
            Err(error) => {
                self.report_input(format!("{name} refused: {error}"));
                return None;
            }
        };
        self.changed();
        let engine = self.clone();
        spawn_local(async move {
            if let Some(store) = store {
                if let Err(error) = store
                    .put_pending_with_run(&[(order, pending)], run.as_ref())
                    .await
                {
                    engine.storage_failed(error);
                }
            }
            if let Some(RunChange::Forget(query_id)) = run {
                // The outcome is stored: the run's lock may go.
                engine.state.borrow_mut().run_locks.remove(&query_id);
            }
            engine.state.borrow_mut().unwritten.remove(&command_id);
            engine.tell_other_tabs();
            engine.flush().await;
        });
        Some(events)
    }

    /// Deletes every local row and reloads the page. Other tabs of the app
    /// keep the database open and so delay the deletion; after a few seconds
    /// the page reloads anyway (the deletion completes when they close).
    pub async fn clear_local_data(&self) {
        if let Some(feed) = self.state.borrow_mut().feed.take() {
            feed.close();
        }
        let store = self.state.borrow_mut().store.take();
        // Tasks still writing hold the other references: their connection
        // closes when they end.
        if let Some(Ok(store)) = store.map(Rc::try_unwrap) {
            store.close();
        }
        let database = self.state.borrow().names.database.clone();
        let deleted = LocalStore::destroy(&database);
        let timeout = gloo_timers::future::TimeoutFuture::new(3_000);
        if let Either::Left((Err(error), _)) = select(Box::pin(deleted), timeout).await {
            web_sys::console::warn_1(&format!("clearing local data: {error}").into());
        }
        if let Some(window) = web_sys::window() {
            let _ = window.location().reload();
        }
    }

    fn changed(&self) {
        self.revision.update(|r| *r += 1);
    }

    /// [`SyncEngine::changed`] within [`RENDER_COALESCE_MS`]: a resync
    /// brings a feed event per command, and re-rendering after each one
    /// (every view re-decides the pending commands) cost more than the
    /// events themselves. The user's own actions still render at once.
    fn changed_soon(&self) {
        if std::mem::replace(&mut self.state.borrow_mut().render_scheduled, true) {
            return;
        }
        let engine = self.clone();
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(RENDER_COALESCE_MS).await;
            engine.state.borrow_mut().render_scheduled = false;
            engine.changed();
        });
    }

    /// Hands `write` to the page's one IndexedDB writer. Writes queued
    /// while one is being stored go out together in the next transaction,
    /// in the order queued (a resync's answers and feed events take a few
    /// transactions, not one or two per command). `tell` tells the other
    /// tabs once stored (they reload the outbox rows).
    fn queue_write(&self, write: Write, tell: bool) {
        let mut state = self.state.borrow_mut();
        if state.store.is_none() {
            return;
        }
        state.queued.merge(write);
        state.tell_after_write |= tell;
        if state.writing.is_some() || state.queued.is_empty() && !state.tell_after_write {
            return;
        }
        state.writing = Some(Write::default());
        drop(state);
        let engine = self.clone();
        spawn_local(async move { engine.write_queued().await });
    }

    async fn write_queued(&self) {
        loop {
            let (store, write, tell) = {
                let mut state = self.state.borrow_mut();
                let write = std::mem::take(&mut state.queued);
                let tell = std::mem::take(&mut state.tell_after_write);
                let store = state.store.clone();
                if write.is_empty() && !tell || store.is_none() {
                    state.writing = None;
                    return;
                }
                state.writing = Some(write.clone());
                (store.expect("checked"), write, tell)
            };
            // The transaction is created here, before anything else runs:
            // later writes (and a reset's) are ordered after it.
            if let Err(error) = store.write(&write).await {
                self.storage_failed(error);
            }
            mark("sextant-sync-written");
            if tell {
                self.tell_other_tabs();
            }
        }
    }

    /// Outbox rows as stored, with the writes not stored yet applied (a
    /// row deleted or rebased here must not come back from the database).
    fn with_unstored(
        &self,
        mut rows: Vec<(f64, PendingCommand<SessionCommand>)>,
    ) -> Vec<(f64, PendingCommand<SessionCommand>)> {
        let state = self.state.borrow();
        for write in state.writing.iter().chain([&state.queued]) {
            rows.retain(|(_, p)| !write.finished.contains(&p.command_id));
            for (order, put) in &write.put {
                match rows
                    .iter_mut()
                    .find(|(_, p)| p.command_id == put.command_id)
                {
                    Some(row) => *row = (*order, put.clone()),
                    None => rows.push((*order, put.clone())),
                }
            }
        }
        rows
    }

    fn report(&self, problem: Problem) {
        web_sys::console::warn_1(
            &format!("sextant error {}: {}", problem.error_id, problem.message).into(),
        );
        self.state.borrow_mut().problems.push(problem);
        self.changed();
    }

    fn report_rejections(
        &self,
        rejections: Vec<Rejection<SessionCommand>>,
        error_id: Option<String>,
    ) {
        for (index, rejection) in rejections.into_iter().enumerate() {
            // The first carries the server's id (its log line); the ones rebased
            // away after it get their own, logged here.
            let error_id = match (&error_id, index) {
                (Some(id), 0) => id.clone(),
                _ => random_uuid().to_string(),
            };
            let message = format!(
                "{} was rejected: {}",
                describe(&rejection.pending.command),
                rejection.reason
            );
            if let Some(channel) = &self.state.borrow().channel {
                let shared = serde_json::json!({ "error_id": error_id, "message": message });
                let _ = channel.post_message(&JsValue::from_str(&shared.to_string()));
            }
            self.report(Problem {
                error_id,
                kind: ProblemKind::Rejected,
                message,
            });
        }
    }

    fn storage_failed(&self, error: StorageError) {
        if error == StorageError::NewerFormat {
            self.state.borrow_mut().fatal = Some(error.to_string());
        }
        self.report(Problem {
            error_id: random_uuid().to_string(),
            kind: ProblemKind::System,
            message: error.to_string(),
        });
    }

    fn set_fatal(&self, message: String) {
        self.state.borrow_mut().fatal = Some(message.clone());
        self.report(Problem {
            error_id: random_uuid().to_string(),
            kind: ProblemKind::System,
            message,
        });
    }

    async fn restore(&self, store: &LocalStore) -> Result<(), StorageError> {
        let snapshot = store.load().await?;
        let mut rebuilt = Replica::<QuerySession>::new();
        for event in &snapshot.events {
            if let Err(error) = rebuilt.receive(event, Source::Fetch) {
                self.state.borrow_mut().fatal = Some(error.to_string());
                return Err(StorageError::NewerFormat);
            }
        }
        // The witness is the highest event stored: rebuilt with the events.
        rebuilt.resume(snapshot.last_global_sequence, snapshot.gaps, None);
        let mut state = self.state.borrow_mut();
        state.orders = snapshot
            .outbox
            .iter()
            .map(|(order, p)| (p.command_id, *order))
            .collect();
        state.last_order = state.orders.values().copied().fold(0.0, f64::max);
        state.store_id = snapshot.store_id;
        // Rows stored before exact bases get theirs here.
        rebuilt.replace_outbox(snapshot.outbox.into_iter().map(|(_, p)| p));
        state.replica = rebuilt;
        Ok(())
    }

    /// Another tab changed the outbox: reload it from IndexedDB, keeping our
    /// own commands whose rows may still be on their way to the database.
    async fn reload_outbox(&self) {
        let Some(store) = self.state.borrow().store.clone() else {
            return;
        };
        match store.load().await {
            Ok(snapshot) => {
                {
                    let mut state = self.state.borrow_mut();
                    for (order, pending) in &snapshot.outbox {
                        state.orders.insert(pending.command_id, *order);
                        state.last_order = state.last_order.max(*order);
                    }
                    drop(state);
                    let stored = self.with_unstored(snapshot.outbox);
                    let mut state = self.state.borrow_mut();
                    let outbox = merge_outboxes(
                        stored,
                        state.replica.outbox().iter().cloned().collect(),
                        &state.orders,
                        &state.unwritten,
                    );
                    state.replica.replace_outbox(outbox);
                }
                self.changed();
            }
            Err(error) => self.storage_failed(error),
        }
    }

    fn tell_other_tabs(&self) {
        if let Some(channel) = &self.state.borrow().channel {
            let _ = channel.post_message(&JsValue::from_str("outbox"));
        }
    }

    fn listen_to_other_tabs(&self) {
        let name = self.state.borrow().names.channel.clone();
        let Ok(channel) = web_sys::BroadcastChannel::new(&name) else {
            return;
        };
        let engine = self.clone();
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                // A rejection the sending tab reported: every tab shows it, with
                // the same error id.
                if let Some(Ok(rejected)) = event
                    .data()
                    .as_string()
                    .map(|data| serde_json::from_str::<SharedRejection>(&data))
                {
                    engine.state.borrow_mut().problems.push(Problem {
                        error_id: rejected.error_id,
                        kind: ProblemKind::Rejected,
                        message: rejected.message,
                    });
                    engine.changed();
                    return;
                }
                if event.data().as_string().as_deref() == Some(RESET_MESSAGE) {
                    // Another tab found the server's store replaced or
                    // restored: drop ours too and read the feed again.
                    engine.state.borrow_mut().replica.reset();
                    engine.report_reset("the server's data was restored or replaced");
                    engine.start_feed();
                    return;
                }
                let engine = engine.clone();
                spawn_local(async move {
                    engine.reload_outbox().await;
                    engine.flush().await;
                });
            },
        );
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
        self.state.borrow_mut().channel = Some(channel);
    }

    /// Holds the Web Lock for the page's lifetime once granted: exactly one
    /// tab sends the shared outbox. Without Web Locks every tab sends, which
    /// is still safe (command ids make resends idempotent).
    fn become_sender_when_elected(&self) {
        let engine = self.clone();
        let granted = Closure::<dyn FnMut(JsValue) -> js_sys::Promise>::new(move |_lock| {
            engine.state.borrow_mut().is_sender = true;
            let engine = engine.clone();
            spawn_local(async move { engine.flush().await });
            // Never resolves: the lock is released when the tab goes away.
            js_sys::Promise::new(&mut |_, _| {})
        });
        let locks = web_sys::window()
            .map(|w| w.navigator())
            .and_then(|n| js_sys::Reflect::get(&n, &JsValue::from_str("locks")).ok())
            .filter(|locks| !locks.is_undefined());
        let request = locks.as_ref().and_then(|locks| {
            js_sys::Reflect::get(locks, &JsValue::from_str("request"))
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        });
        match (locks, request) {
            (Some(locks), Some(request)) => {
                let lock = self.state.borrow().names.sender_lock.clone();
                let _ = request.call2(&locks, &JsValue::from_str(&lock), granted.as_ref());
                granted.forget();
            }
            _ => {
                self.state.borrow_mut().is_sender = true;
            }
        }
    }

    fn set_feed(&self, open: bool) {
        {
            let mut state = self.state.borrow_mut();
            state.feed_open = open;
            state.feed_failed = !open;
            if open {
                // The server is back: a sender sleeping in its backoff goes now.
                state.attempt = 0;
                if let Some(wake) = state.wake.take() {
                    let _ = wake.send(());
                }
            }
        }
        self.changed();
    }

    /// While the feed is down, asks `/api/health` every [`PROBE_MS`]; as
    /// soon as the server answers, opens a new feed (which also wakes the
    /// sender). The page drives reconnects itself: the browser's own
    /// `EventSource` reconnect would send only a number, not the store id
    /// and witness the server judges a resume by.
    fn watch_for_server(&self) {
        {
            let mut state = self.state.borrow_mut();
            if state.probing {
                return;
            }
            state.probing = true;
        }
        let engine = self.clone();
        spawn_local(async move {
            loop {
                if engine.state.borrow().feed_open {
                    break;
                }
                if let Some(announced) = net::server_is_up().await {
                    if !engine.check_signed_in_user().await {
                        // Signed out: the feed would only answer 401.
                        gloo_timers::future::TimeoutFuture::new(SIGNED_OUT_PROBE_MS).await;
                        continue;
                    }
                    mark("sextant-sync-server-up");
                    let held = engine.state.borrow().store_id;
                    if !same_store(held, announced) {
                        engine.reset(announced, "the server's data store was replaced");
                    }
                    engine.start_feed();
                    break;
                }
                gloo_timers::future::TimeoutFuture::new(PROBE_MS).await;
            }
            engine.state.borrow_mut().probing = false;
        });
    }

    /// Whether the user whose data this page holds is signed in (or the
    /// server cannot say). When another user signed in (in another tab),
    /// the page reloads to open that user's data: this user's pending
    /// commands stay stored under this user and are never sent as the other.
    async fn check_signed_in_user(&self) -> bool {
        let local = self.local_user();
        let answer = super::owner::signed_in_user().await;
        if let Ok(user) = answer {
            let signed_out = user.is_none();
            if self.state.borrow().signed_out != signed_out {
                self.state.borrow_mut().signed_out = signed_out;
                self.changed();
            }
        }
        match answer {
            // Another user, or a user whose data this page (started before
            // `/api/me` answered) keeps under the owner's names.
            Ok(Some(user))
                if local != Some(user) && !(local.is_none() && user == UserId::OWNER.0) =>
            {
                super::owner::remember(user);
                if let Some(window) = web_sys::window() {
                    let _ = window.location().reload();
                }
                false
            }
            Ok(Some(_)) | Err(()) => true,
            Ok(None) => false,
        }
    }

    /// Whether the server said this page's user is signed out (its pending
    /// work is kept and goes out once signed in again).
    pub fn signed_out(&self) -> bool {
        self.revision.track();
        self.state.borrow().signed_out
    }

    /// Opens the SSE feed after the cursor, naming the store and the witness
    /// this replica holds; the server's first frame (`hello`) confirms them
    /// or says reset.
    fn start_feed(&self) {
        let url = {
            let state = self.state.borrow();
            let mut url = format!(
                "/api/events?hello=1&after={}",
                state.replica.last_global_sequence()
            );
            if let Some(store_id) = state.store_id {
                url.push_str(&format!("&store={store_id}"));
            }
            if let Some(witness) = state.replica.witness() {
                url.push_str(&format!(
                    "&witness_sequence={}&witness_id={}",
                    witness.global_sequence, witness.event_id
                ));
            }
            if let Some(user) = state.names.user {
                url.push_str(&format!("&as_user={user}"));
            }
            url
        };
        let Ok(feed) = web_sys::EventSource::new(&url) else {
            return;
        };
        let engine = self.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || {
            mark("sextant-sync-feed-open");
            engine.set_feed(true);
            engine.retry_gaps();
            let engine = engine.clone();
            spawn_local(async move {
                engine.flush().await;
                engine.settle_orphans().await;
            });
        });
        feed.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        on_open.forget();

        let engine = self.clone();
        let on_hello = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                if let Some(hello) = event
                    .data()
                    .as_string()
                    .and_then(|data| serde_json::from_str::<Hello>(&data).ok())
                {
                    engine.on_hello(hello);
                }
            },
        );
        let _ = feed.add_event_listener_with_callback("hello", on_hello.as_ref().unchecked_ref());
        on_hello.forget();

        let engine = self.clone();
        let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                if let Some(data) = event.data().as_string() {
                    engine.on_feed_event(&data);
                }
            },
        );
        feed.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();

        let engine = self.clone();
        let on_progress = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                if let Some(progress) = event
                    .data()
                    .as_string()
                    .and_then(|data| serde_json::from_str::<Progress>(&data).ok())
                {
                    engine
                        .state
                        .borrow_mut()
                        .progress
                        .insert(progress.query_id, progress);
                    engine.changed();
                }
            },
        );
        let _ =
            feed.add_event_listener_with_callback("progress", on_progress.as_ref().unchecked_ref());
        on_progress.forget();

        let engine = self.clone();
        let on_error = Closure::<dyn FnMut()>::new(move || {
            // Close it: the browser's reconnect would resume without the witness.
            if let Some(feed) = engine.state.borrow_mut().feed.take() {
                feed.close();
            }
            engine.set_feed(false);
            engine.watch_for_server();
        });
        feed.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();

        if let Some(old) = self.state.borrow_mut().feed.replace(feed) {
            old.close();
        }
    }

    /// The feed's first frame.
    fn on_hello(&self, hello: Hello) {
        if hello.status == "reset" {
            // The server streams its whole log after this frame.
            self.reset_confirmed(
                Some(hello.store_id),
                hello
                    .message
                    .as_deref()
                    .unwrap_or("the server's data was restored from an older state"),
            );
            return;
        }
        let known = self.state.borrow().store_id == Some(hello.store_id);
        if !known {
            self.hold_store_id(hello.store_id);
        }
    }

    /// Remembers (and stores) the id of the store this replica's confirmed
    /// state comes from.
    fn hold_store_id(&self, store_id: Uuid) {
        self.state.borrow_mut().store_id = Some(store_id);
        if let Some(store) = self.state.borrow().store.clone() {
            let engine = self.clone();
            spawn_local(async move {
                if let Err(error) = store.put_store_id(store_id).await {
                    engine.storage_failed(error);
                }
            });
        }
    }

    /// Whether to take the events of an answer (or a fetch) that the store
    /// `announced` gave to a request naming the witness `sent`, judged
    /// `judged` (docs/SYNC.md): another store resets; a replica without a
    /// store id adopts this one; a store that lacks the witness resets; a
    /// witness that moved while the request was on the wire (the feed)
    /// means ask again. False unless the events may be taken now.
    fn may_take(
        &self,
        announced: Option<Uuid>,
        sent: Option<Witness>,
        judged: Option<Result<(), ResetReason>>,
    ) -> bool {
        let held = self.state.borrow().store_id;
        match check_store(held, announced) {
            StoreCheck::Reset => {
                self.reset(announced, ResetReason::OtherStore.describe());
                return false;
            }
            StoreCheck::Hold(Some(store_id)) if held.is_none() => self.hold_store_id(store_id),
            StoreCheck::Hold(_) => {}
        }
        let now = self.state.borrow().replica.witness();
        match take_answer(sent, now, judged) {
            TakeAnswer::Take => true,
            TakeAnswer::Retry => false,
            TakeAnswer::Reset(reason) => {
                self.reset(None, reason.describe());
                false
            }
        }
    }

    /// The server is not the store this replica's confirmed state came from,
    /// found by an answer or a fetch: reset, then read the feed from the start.
    fn reset(&self, store_id: Option<Uuid>, why: &str) {
        let store_id = store_id.or(self.state.borrow().store_id);
        self.reset_confirmed(store_id, why);
        self.start_feed();
    }

    /// Drops confirmed state here and in IndexedDB, keeps pending commands
    /// (each is rebased when the server answers it), tells the other tabs
    /// and the user, in one line.
    fn reset_confirmed(&self, store_id: Option<Uuid>, why: &str) {
        {
            let mut state = self.state.borrow_mut();
            state.replica.reset();
            state.store_id = store_id;
            state.progress.clear();
            // Events and positions of the old store not stored yet never
            // are (what is being written now is ordered before the reset).
            state.queued.events.clear();
            state.queued.position = None;
        }
        if let Some(store) = self.state.borrow().store.clone() {
            let engine = self.clone();
            spawn_local(async move {
                if let Err(error) = store.reset_confirmed(store_id).await {
                    engine.storage_failed(error);
                }
            });
        }
        if let Some(channel) = &self.state.borrow().channel {
            let _ = channel.post_message(&JsValue::from_str(RESET_MESSAGE));
        }
        self.report_reset(why);
    }

    fn report_reset(&self, why: &str) {
        self.report(Problem {
            error_id: random_uuid().to_string(),
            kind: ProblemKind::System,
            message: format!(
                "Showing the server's data again: {why}. Changes not yet sent are kept."
            ),
        });
    }

    fn on_feed_event(&self, data: &str) {
        let started = now_ms();
        self.handle_feed_event(data);
        let mut state = self.state.borrow_mut();
        state.feed_events += 1;
        state.feed_ms += now_ms() - started;
    }

    fn handle_feed_event(&self, data: &str) {
        let envelope: EventEnvelope = match serde_json::from_str(data) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.set_fatal(format!(
                    "cannot read an event from the server ({error}); reload to update the app"
                ));
                return;
            }
        };
        let command_id = envelope.metadata.command_id;
        let (outcome, finished) = {
            let mut state = self.state.borrow_mut();
            let is_pending = |state: &EngineState| {
                state
                    .replica
                    .outbox()
                    .iter()
                    .any(|p| p.command_id == command_id)
            };
            let was_pending = is_pending(&state);
            let outcome = state.replica.receive(&envelope, Source::Feed);
            // A command leaves the outbox with its last event (two for
            // `CloseSession` with an active query), and its row with it.
            let finished = was_pending && !is_pending(&state);
            if finished {
                state.orders.remove(&command_id);
            }
            (outcome, finished)
        };
        match outcome {
            Ok(Received::Applied) => {
                let finished = if finished {
                    vec![command_id]
                } else {
                    Vec::new()
                };
                self.persist_events_finishing(vec![envelope], true, finished);
                self.changed_soon();
            }
            Ok(Received::Duplicate) => self.persist_events(Vec::new(), true),
            Ok(Received::Diverged) => {
                self.reset(None, "the server's data was restored from an older state")
            }
            Ok(Received::Gap { aggregate_id, .. }) => {
                // The ledger (with the cursor it holds back) is stored first.
                self.persist_events(Vec::new(), true);
                let engine = self.clone();
                spawn_local(async move { engine.catch_up_or_retry(aggregate_id).await });
            }
            // An event this app cannot read: stop and ask for a reload.
            Err(error) => self.set_fatal(error.to_string()),
        }
    }

    /// Stores confirmed events and, with `position`, the feed position
    /// (cursor and gap ledger) as the replica has it now.
    fn persist_events(&self, events: Vec<EventEnvelope>, position: bool) {
        self.persist_events_finishing(events, position, Vec::new());
    }

    /// [`SyncEngine::persist_events`], removing the outbox rows of the
    /// commands they `finished` in the same transaction.
    fn persist_events_finishing(
        &self,
        events: Vec<EventEnvelope>,
        position: bool,
        finished: Vec<Uuid>,
    ) {
        let position = {
            let state = self.state.borrow();
            position.then(|| FeedPosition {
                cursor: state.replica.last_global_sequence(),
                gaps: state.replica.gaps(),
            })
        };
        self.queue_write(
            Write {
                events,
                position,
                finished,
                put: Vec::new(),
            },
            false,
        );
    }

    /// Catches up every session in the gap ledger (after a failed fetch, or
    /// when the feed reopens).
    fn retry_gaps(&self) {
        let gaps = self.state.borrow().replica.gaps();
        for (aggregate_id, _) in gaps {
            let engine = self.clone();
            spawn_local(async move { engine.catch_up_or_retry(aggregate_id).await });
        }
    }

    async fn catch_up_or_retry(&self, aggregate_id: Uuid) {
        if self.catch_up(aggregate_id).await.is_ok() {
            return;
        }
        if std::mem::replace(&mut self.state.borrow_mut().gap_retry_scheduled, true) {
            return;
        }
        let engine = self.clone();
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(GAP_RETRY_MS).await;
            engine.state.borrow_mut().gap_retry_scheduled = false;
            if engine.state.borrow().feed_open {
                engine.retry_gaps();
            }
        });
    }

    /// Fetches the events of one session the replica is missing. Err when
    /// the fetch failed (the gap stays in the ledger).
    async fn catch_up(&self, aggregate_id: Uuid) -> Result<(), ()> {
        if !self.state.borrow_mut().catching_up.insert(aggregate_id) {
            return Ok(());
        }
        // From one event before what is held: the overlap proves the histories agree.
        let (from, sent_witness) = {
            let state = self.state.borrow();
            (
                state.replica.fetch_from(aggregate_id),
                state.replica.witness(),
            )
        };
        let user = self.local_user();
        let fetched = net::fetch_events(aggregate_id, from, sent_witness, user).await;
        self.state.borrow_mut().catching_up.remove(&aggregate_id);
        let Fetched {
            events,
            store_id: announced,
            judged,
        } = match fetched {
            Ok(fetched) => fetched,
            Err(error) => {
                web_sys::console::info_1(&format!("sync: catch-up failed: {error:?}").into());
                return Err(());
            }
        };
        if !self.may_take(announced, sent_witness, judged) {
            return Err(());
        }
        let mut applied = Vec::new();
        let mut complete = true;
        for event in events {
            let outcome = self
                .state
                .borrow_mut()
                .replica
                .receive(&event, Source::Fetch);
            match outcome {
                Ok(Received::Applied) => applied.push(event),
                Ok(Received::Diverged) => {
                    self.reset(None, "the server's data was restored from an older state");
                    return Err(());
                }
                Ok(_) => {}
                Err(error) => {
                    self.set_fatal(error.to_string());
                    complete = false;
                    break;
                }
            }
        }
        if complete && self.state.borrow().replica.gap_lost(aggregate_id) {
            // The feed delivered an event of it that the server no longer has.
            self.reset(None, ResetReason::WitnessMissing.describe());
            return Err(());
        }
        // Filling a gap may move the cursor: store it with the events.
        self.persist_events(applied, true);
        self.changed();
        Ok(())
    }

    /// Sends the outbox until it is empty or nothing more can be done now.
    /// Answers are handled by the table in `shared_domain::sync::answers`:
    /// a batch-level failure never rejects; 413 splits the batch, anything
    /// else backs off (exponential, with jitter, honouring `Retry-After`),
    /// and the backoff ends early when the feed reopens.
    pub async fn flush(&self) {
        {
            let mut state = self.state.borrow_mut();
            if state.flushing || !state.is_sender || state.fatal.is_some() {
                return;
            }
            state.flushing = true;
        }
        loop {
            let (envelopes, limit) = {
                let state = self.state.borrow();
                let envelopes: Vec<CommandEnvelope<SessionCommand>> = state
                    .replica
                    .outbox()
                    .iter()
                    .map(|p| p.envelope::<QuerySession>())
                    .collect();
                (envelopes, state.batch_limit)
            };
            if envelopes.is_empty() || self.state.borrow().fatal.is_some() {
                break;
            }
            let batch = net::split_batches(&envelopes, net::MAX_BATCH_BYTES, limit)
                .into_iter()
                .next()
                .expect("outbox is not empty");
            let before = self.outbox_decisions();
            let sent_witness = self.state.borrow().replica.witness();
            mark("sextant-sync-batch-sent");
            let wait = match net::post_batch(&batch, sent_witness, self.local_user()).await {
                Ok(answers) => {
                    mark("sextant-sync-batch-answered");
                    if !self.may_take(answers.store_id, sent_witness, answers.judged) {
                        // Reset, or the feed moved the witness meanwhile:
                        // the commands stay pending and are sent again.
                        None
                    } else {
                        let retry = self.settle(&batch, answers.answers).await;
                        // Nothing moved (a conflict that does not clear):
                        // wait rather than spin.
                        let stuck = self.outbox_decisions() == before;
                        (retry || stuck).then(|| self.backoff_delay(None, None))
                    }
                }
                Err(failure) => self.on_batch_failure(&batch, failure),
            };
            mark("sextant-sync-batch-settled");
            self.persist_outbox_changes(before);
            match wait {
                Some(delay_ms) => self.back_off(delay_ms).await,
                None => self.state.borrow_mut().attempt = 0,
            }
        }
        self.state.borrow_mut().flushing = false;
        self.changed();
        if self.state.borrow().replica.outbox().is_empty() {
            let (events, ms) = {
                let mut state = self.state.borrow_mut();
                let totals = (state.feed_events, state.feed_ms);
                state.feed_events = 0;
                state.feed_ms = 0.0;
                totals
            };
            mark(&format!(
                "sextant-sync-outbox-empty feed {events} events {ms:.0} ms"
            ));
        }
        // The view moved: a kept outcome may be submittable now.
        self.settle_orphans().await;
    }

    /// A batch failed as a whole: how long to wait (None: go on at once).
    fn on_batch_failure(
        &self,
        batch: &[CommandEnvelope<SessionCommand>],
        failure: BatchFailure,
    ) -> Option<u64> {
        web_sys::console::info_1(&format!("sync: {}", failure.message).into());
        if failure.status == Some(401) {
            // Signed out, or another user signed in: which one?
            let engine = self.clone();
            spawn_local(async move {
                engine.check_signed_in_user().await;
            });
        }
        let attempt = self.state.borrow().attempt;
        match batch_verdict(
            failure.status,
            batch.len(),
            attempt,
            failure.retry_after_ms,
            js_sys::Math::random(),
        ) {
            BatchVerdict::Split { commands } => {
                self.state.borrow_mut().batch_limit = commands.max(1);
                None
            }
            BatchVerdict::RejectSingle => {
                let rejections = self
                    .state
                    .borrow_mut()
                    .replica
                    .rejected(&batch[0], "it is larger than the server accepts (HTTP 413)");
                self.report_rejections(rejections, None);
                None
            }
            BatchVerdict::BackOff { delay_ms } => Some(delay_ms),
        }
    }

    fn backoff_delay(&self, status: Option<u16>, retry_after_ms: Option<u64>) -> u64 {
        let attempt = self.state.borrow().attempt;
        match batch_verdict(status, 1, attempt, retry_after_ms, js_sys::Math::random()) {
            BatchVerdict::BackOff { delay_ms } => delay_ms,
            _ => 0,
        }
    }

    /// Sleeps `delay_ms`, or less if the feed reopens.
    async fn back_off(&self, delay_ms: u64) {
        let (wake, woken) = oneshot::channel();
        {
            let mut state = self.state.borrow_mut();
            state.attempt += 1;
            state.wake = Some(wake);
        }
        let timer =
            gloo_timers::future::TimeoutFuture::new(delay_ms.min(u64::from(u32::MAX)) as u32);
        match select(timer, woken).await {
            Either::Left(_) => {}
            Either::Right(_) => web_sys::console::info_1(&"sync: the server is back".into()),
        }
        self.state.borrow_mut().wake = None;
    }

    /// Applies the answers to one batch; true when some must be sent again later.
    async fn settle(
        &self,
        batch: &[CommandEnvelope<SessionCommand>],
        answers: Vec<Answer>,
    ) -> bool {
        let mut retry = false;
        for (envelope, answer) in batch.iter().zip(answers) {
            // What the answer does and what follows is decided by the pure
            // `shell::on_answer`, which the simulation runs too; here each
            // effect is carried out.
            let (answer, error_id) = match answer {
                Answer::Accepted { events } => (CommandAnswer::Accepted { events }, None),
                Answer::Conflict {
                    current_version,
                    current_command,
                    error_id,
                } => (
                    CommandAnswer::Conflict {
                        current_version,
                        current_command,
                    },
                    error_id,
                ),
                Answer::Rejected {
                    status,
                    detail,
                    error_id,
                } => (
                    CommandAnswer::Rejected {
                        reason: format!("{detail} (HTTP {status})"),
                    },
                    error_id,
                ),
                Answer::Retry => (CommandAnswer::Retry, None),
            };
            let effects = on_answer(&mut self.state.borrow_mut().replica, envelope, answer);
            let mut effects: VecDeque<_> = match effects {
                Ok(effects) => effects.into(),
                Err(error) => {
                    self.set_fatal(error.to_string());
                    return true;
                }
            };
            while let Some(effect) = effects.pop_front() {
                match effect {
                    AnswerEffect::StoreEvents(events) => {
                        // Queued: the batch's answers go out in one transaction.
                        self.persist_events(events, false);
                    }
                    AnswerEffect::CatchUp {
                        aggregate_id,
                        rebase,
                    } => {
                        if self.catch_up(aggregate_id).await.is_err() {
                            // The command stays pending; its resend is
                            // answered again.
                            retry = true;
                            continue;
                        }
                        let replica = &mut self.state.borrow_mut().replica;
                        effects.extend(after_catch_up(replica, aggregate_id, rebase));
                    }
                    AnswerEffect::Report(rejections) => {
                        self.report_rejections(rejections, error_id.clone());
                    }
                    AnswerEffect::Reset(reason) => {
                        self.reset(None, reason.describe());
                        // The other answers were decided against what was dropped.
                        return false;
                    }
                    AnswerEffect::Ignored => {}
                    AnswerEffect::Retry => retry = true,
                }
            }
        }
        self.changed();
        retry
    }

    /// Each pending command's decision: (version, base).
    fn outbox_decisions(&self) -> HashMap<Uuid, (u64, Option<Uuid>)> {
        self.state
            .borrow()
            .replica
            .outbox()
            .iter()
            .map(|p| (p.command_id, (p.expected_version, p.base_command)))
            .collect()
    }

    /// Stores what settling changed: removed rows and rebased decisions,
    /// through the writer (with the batch's events), then tells the other
    /// tabs.
    fn persist_outbox_changes(&self, before: HashMap<Uuid, (u64, Option<Uuid>)>) {
        let (removed, rebased) = {
            let state = self.state.borrow();
            let outbox = state.replica.outbox();
            let now: HashMap<Uuid, &PendingCommand<SessionCommand>> =
                outbox.iter().map(|p| (p.command_id, p)).collect();
            let removed: Vec<Uuid> = before
                .keys()
                .filter(|id| !now.contains_key(id))
                .copied()
                .collect();
            let rebased: Vec<_> = outbox
                .iter()
                .filter(|p| {
                    before
                        .get(&p.command_id)
                        .is_some_and(|d| *d != (p.expected_version, p.base_command))
                })
                .map(|p| {
                    (
                        state.orders.get(&p.command_id).copied().unwrap_or(0.0),
                        p.clone(),
                    )
                })
                .collect();
            (removed, rebased)
        };
        if removed.is_empty() && rebased.is_empty() {
            return;
        }
        {
            let mut state = self.state.borrow_mut();
            for id in &removed {
                state.orders.remove(id);
            }
        }
        self.queue_write(
            Write {
                events: Vec::new(),
                position: None,
                finished: removed,
                put: rebased,
            },
            true,
        );
    }
}

/// A `performance.mark` of the sync engine's phases (the browser bench
/// reads them to show where a resync's time goes; a mark costs about a
/// microsecond).
fn mark(name: &str) {
    if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
        let _ = performance.mark(name);
    }
}

/// Milliseconds since the page started (for the feed's total below).
fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// The outbox after another tab wrote to the database: every stored row, plus
/// our own commands whose rows are still being written (the database does
/// not know them yet, and they must not vanish); ordered by first submission.
fn merge_outboxes(
    stored: Vec<(f64, PendingCommand<SessionCommand>)>,
    ours: Vec<PendingCommand<SessionCommand>>,
    orders: &HashMap<Uuid, f64>,
    unwritten: &HashSet<Uuid>,
) -> Vec<PendingCommand<SessionCommand>> {
    let mut merged = stored;
    for pending in ours {
        if unwritten.contains(&pending.command_id)
            && !merged
                .iter()
                .any(|(_, p)| p.command_id == pending.command_id)
        {
            let order = orders.get(&pending.command_id).copied().unwrap_or(f64::MAX);
            merged.push((order, pending));
        }
    }
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    merged.into_iter().map(|(_, p)| p).collect()
}

/// A command as the user knows it: its name and what it carried.
fn describe(command: &SessionCommand) -> String {
    let short = |text: &str| {
        let mut short: String = text.chars().take(60).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        short
    };
    match command {
        SessionCommand::CreateSession { title } | SessionCommand::RenameSession { title } => {
            format!("{} (“{}”)", command.name(), short(title.as_str()))
        }
        SessionCommand::SubmitQuery { sql, .. } => {
            format!("{} (“{}”)", command.name(), short(sql.as_str()))
        }
        other => other.name().to_owned(),
    }
}

impl SyncEngine {
    /// Asks the browser not to evict our data under storage pressure, and
    /// keeps its answer for the footer.
    fn request_persistent_storage(&self) {
        let Some(window) = web_sys::window() else {
            return;
        };
        let Ok(promise) = window.navigator().storage().persist() else {
            return;
        };
        let engine = self.clone();
        spawn_local(async move {
            let granted = wasm_bindgen_futures::JsFuture::from(promise)
                .await
                .ok()
                .and_then(|answer| answer.as_bool());
            engine.state.borrow_mut().persistent = granted;
            engine.changed();
        });
    }

    /// Whether the browser granted persistent storage (None: not known yet).
    pub fn persistent(&self) -> Option<bool> {
        self.revision.track();
        self.state.borrow().persistent
    }
}
