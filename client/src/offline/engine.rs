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
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{select, Either};
use leptos::prelude::*;
use serde::Deserialize;
use shared_domain::sync::{PendingCommand, Received, Rejection, Replica, Source};
use shared_domain::{
    Aggregate, CommandEnvelope, EventEnvelope, QueryId, QuerySession, SessionCommand, SessionEvent,
};
use uuid::Uuid;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

use super::net::{self, Answer, NetError};
use super::storage::{LocalStore, StorageError};
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
}

/// A rejection as one tab tells the others over the BroadcastChannel.
#[derive(Deserialize)]
struct SharedRejection {
    error_id: String,
    message: String,
}

struct EngineState {
    replica: Replica<QuerySession>,
    store: Option<Rc<LocalStore>>,
    /// command id -> outbox order (first submission time), kept across rebases.
    orders: HashMap<Uuid, f64>,
    /// Commands submitted here whose rows are not in IndexedDB yet.
    unwritten: HashSet<Uuid>,
    feed_open: bool,
    feed_failed: bool,
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
}

/// Cheap to clone; lives for the page.
#[derive(Clone)]
pub struct SyncEngine {
    state: Rc<RefCell<EngineState>>,
    revision: RwSignal<u64>,
}

pub const DB_NAME: &str = "sextant";
const SENDER_LOCK: &str = "sextant-outbox-sender";
const CHANNEL: &str = "sextant-outbox";
/// How long the start waits for IndexedDB before going on in memory.
const OPEN_TIMEOUT_MS: u32 = 3_000;
/// How often an offline page asks whether the server is back.
const PROBE_MS: u32 = 1_000;

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
    pub async fn start() -> Self {
        let engine = SyncEngine {
            state: Rc::new(RefCell::new(EngineState {
                replica: Replica::new(),
                store: None,
                orders: HashMap::new(),
                unwritten: HashSet::new(),
                feed_open: false,
                feed_failed: false,
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
            })),
            revision: RwSignal::new(0),
        };
        // The open can wait indefinitely (seen in headless Chromium when the
        // previous page was left while it was creating the database): after
        // a while, go on in memory and say so, rather than never render.
        let opened = select(
            Box::pin(LocalStore::open(DB_NAME)),
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
        engine.start_feed();
        engine.become_sender_when_elected();
        engine.changed();
        engine
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
        if let Some(fatal) = self.state.borrow().fatal.clone() {
            self.report_input(format!("{} was not done: {fatal}", command.name()));
            return None;
        }
        let command_id = time_ordered_uuid();
        let order = js_sys::Date::now();
        let name = command.name();
        let decided = {
            let mut state = self.state.borrow_mut();
            let decided = state.replica.submit(command_id, session_id, command);
            if decided.is_ok() {
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
                (events, pending, state.store.clone())
            })
        };
        let (events, pending, store) = match decided {
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
                if let Err(error) = store.put_pending(&[(order, pending)]).await {
                    engine.storage_failed(error);
                }
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
        let deleted = LocalStore::destroy(DB_NAME);
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
        let mut state = self.state.borrow_mut();
        state.orders = snapshot
            .outbox
            .iter()
            .map(|(order, p)| (p.command_id, *order))
            .collect();
        state.replica = Replica::restore(
            rebuilt
                .confirmed_all()
                .map(|(id, aggregate)| (*id, aggregate.clone())),
            snapshot.last_global_sequence,
            snapshot.outbox.into_iter().map(|(_, p)| p),
        );
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
                    let confirmed: Vec<(Uuid, QuerySession)> = state
                        .replica
                        .confirmed_all()
                        .map(|(id, a)| (*id, a.clone()))
                        .collect();
                    let cursor = state.replica.last_global_sequence();
                    for (order, pending) in &snapshot.outbox {
                        state.orders.insert(pending.command_id, *order);
                    }
                    let stored: Vec<(f64, PendingCommand<SessionCommand>)> = snapshot.outbox;
                    let outbox = merge_outboxes(
                        stored,
                        state.replica.outbox().iter().cloned().collect(),
                        &state.orders,
                        &state.unwritten,
                    );
                    state.replica = Replica::restore(confirmed, cursor, outbox);
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
        let Ok(channel) = web_sys::BroadcastChannel::new(CHANNEL) else {
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
                let _ = request.call2(&locks, &JsValue::from_str(SENDER_LOCK), granted.as_ref());
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

    /// While the feed is down, asks `/api/health` every second; as soon as
    /// the server answers, opens a new feed at once (rather than waiting for
    /// the browser's own reconnection delay, or forever if it gave up), which
    /// also wakes the sender.
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
                gloo_timers::future::TimeoutFuture::new(PROBE_MS).await;
                if engine.state.borrow().feed_open {
                    break;
                }
                if net::server_is_up().await {
                    engine.start_feed();
                    break;
                }
            }
            engine.state.borrow_mut().probing = false;
        });
    }

    /// Opens the SSE feed after the stored cursor. The browser reconnects by
    /// itself with `Last-Event-ID`; [`SyncEngine::watch_for_server`] covers
    /// the time it waits or gives up.
    fn start_feed(&self) {
        let cursor = self.state.borrow().replica.last_global_sequence();
        let Ok(feed) = web_sys::EventSource::new(&format!("/api/events?after={cursor}")) else {
            return;
        };
        let engine = self.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || {
            engine.set_feed(true);
            let engine = engine.clone();
            spawn_local(async move { engine.flush().await });
        });
        feed.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        on_open.forget();

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
            engine.set_feed(false);
            engine.watch_for_server();
        });
        feed.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();

        if let Some(old) = self.state.borrow_mut().feed.replace(feed) {
            old.close();
        }
    }

    fn on_feed_event(&self, data: &str) {
        let envelope: EventEnvelope = match serde_json::from_str(data) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.set_fatal(format!(
                    "cannot read an event from the server ({error}); reload to update the app"
                ));
                return;
            }
        };
        let outcome = self
            .state
            .borrow_mut()
            .replica
            .receive(&envelope, Source::Feed);
        match outcome {
            Ok(Received::Applied) | Ok(Received::Duplicate) => {
                let cursor = self.state.borrow().replica.last_global_sequence();
                self.persist_events(vec![envelope], Some(cursor));
                self.changed();
            }
            Ok(Received::Gap { aggregate_id, .. }) => {
                let engine = self.clone();
                spawn_local(async move {
                    let _ = engine.catch_up(aggregate_id).await;
                });
            }
            // An event this app cannot read: stop and ask for a reload.
            Err(error) => self.set_fatal(error.to_string()),
        }
    }

    fn persist_events(&self, events: Vec<EventEnvelope>, cursor: Option<u64>) {
        let Some(store) = self.state.borrow().store.clone() else {
            return;
        };
        if events.is_empty() && cursor.is_none() {
            return;
        }
        let engine = self.clone();
        spawn_local(async move {
            if let Err(error) = store.add_events(&events, cursor).await {
                engine.storage_failed(error);
            }
        });
    }

    /// Fetches the events of one session the replica is missing.
    async fn catch_up(&self, aggregate_id: Uuid) -> Result<(), NetError> {
        let have = self
            .state
            .borrow()
            .replica
            .confirmed(aggregate_id)
            .map_or(0, Aggregate::version);
        let events = net::fetch_events(aggregate_id, have).await?;
        let mut applied = Vec::new();
        for event in events {
            let outcome = self
                .state
                .borrow_mut()
                .replica
                .receive(&event, Source::Fetch);
            match outcome {
                Ok(Received::Applied) => applied.push(event),
                Ok(_) => {}
                Err(error) => {
                    self.set_fatal(error.to_string());
                    break;
                }
            }
        }
        self.persist_events(applied, None);
        self.changed();
        Ok(())
    }

    /// Sends the outbox until it is empty or the server is unreachable; while
    /// unreachable it retries with backoff, and goes at once when the feed
    /// reopens.
    pub async fn flush(&self) {
        {
            let mut state = self.state.borrow_mut();
            if state.flushing || !state.is_sender || state.fatal.is_some() {
                return;
            }
            state.flushing = true;
        }
        loop {
            let envelopes: Vec<CommandEnvelope<SessionCommand>> = self
                .state
                .borrow()
                .replica
                .outbox()
                .iter()
                .map(|p| p.envelope::<QuerySession>())
                .collect();
            if envelopes.is_empty() || self.state.borrow().fatal.is_some() {
                break;
            }
            let batch =
                net::split_batches(&envelopes, net::MAX_BATCH_BYTES, net::MAX_BATCH_COMMANDS)
                    .into_iter()
                    .next()
                    .expect("outbox is not empty");
            let before = self.outbox_versions();
            let retry = match net::post_batch(&batch).await {
                Ok(answers) => self.settle(&batch, answers).await,
                Err(NetError::Unreachable(message)) => {
                    web_sys::console::info_1(
                        &format!("sync: server unreachable: {message}").into(),
                    );
                    true
                }
                Err(NetError::Server(message)) => {
                    web_sys::console::warn_1(&format!("sync: {message}").into());
                    true
                }
            };
            self.persist_outbox_changes(before).await;
            if retry {
                self.back_off().await;
            } else {
                self.state.borrow_mut().attempt = 0;
            }
        }
        self.state.borrow_mut().flushing = false;
        self.changed();
    }

    /// Sleeps for the next backoff step, or less if the feed reopens.
    async fn back_off(&self) {
        let (wake, woken) = oneshot::channel();
        let delay = {
            let mut state = self.state.borrow_mut();
            state.attempt += 1;
            state.wake = Some(wake);
            net::backoff_ms(state.attempt)
        };
        let timer = gloo_timers::future::TimeoutFuture::new(delay);
        match select(timer, woken).await {
            Either::Left(_) => {}
            Either::Right(_) => web_sys::console::info_1(&"sync: the server is back".into()),
        }
        self.state.borrow_mut().wake = None;
    }

    /// Applies the answers to one batch; true when the rest must wait (5xx).
    async fn settle(
        &self,
        batch: &[CommandEnvelope<SessionCommand>],
        answers: Vec<Answer>,
    ) -> bool {
        let mut retry = false;
        for (envelope, answer) in batch.iter().zip(answers) {
            match answer {
                Answer::Accepted { events } => {
                    let outcome = self
                        .state
                        .borrow_mut()
                        .replica
                        .accepted(envelope.command_id, &events);
                    match outcome {
                        Ok(outcomes) => {
                            self.persist_events(events, None);
                            if outcomes.iter().any(|o| matches!(o, Received::Gap { .. })) {
                                let _ = self.catch_up(envelope.aggregate_id).await;
                                let mut state = self.state.borrow_mut();
                                state.replica.accepted(envelope.command_id, &[]).ok();
                            }
                        }
                        Err(error) => {
                            self.set_fatal(error.to_string());
                            return true;
                        }
                    }
                }
                Answer::Conflict { error_id, .. } => {
                    // Still pending? (An earlier answer in this batch may have rebased it away.)
                    if !self.is_pending(envelope.command_id) {
                        continue;
                    }
                    if self.catch_up(envelope.aggregate_id).await.is_err() {
                        return true;
                    }
                    let rejections = self
                        .state
                        .borrow_mut()
                        .replica
                        .rebase(envelope.aggregate_id);
                    self.report_rejections(rejections, error_id);
                }
                Answer::Rejected {
                    status,
                    detail,
                    error_id,
                } => {
                    let rejections = self
                        .state
                        .borrow_mut()
                        .replica
                        .rejected(envelope.command_id, format!("{detail} (HTTP {status})"));
                    self.report_rejections(rejections, error_id);
                }
                Answer::Retry => retry = true,
            }
        }
        self.changed();
        retry
    }

    fn is_pending(&self, command_id: Uuid) -> bool {
        self.state
            .borrow()
            .replica
            .outbox()
            .iter()
            .any(|p| p.command_id == command_id)
    }

    fn outbox_versions(&self) -> HashMap<Uuid, u64> {
        self.state
            .borrow()
            .replica
            .outbox()
            .iter()
            .map(|p| (p.command_id, p.expected_version))
            .collect()
    }

    /// Writes what settling changed: removed rows and rebased versions.
    async fn persist_outbox_changes(&self, before: HashMap<Uuid, u64>) {
        let (store, removed, rebased) = {
            let state = self.state.borrow();
            let Some(store) = state.store.clone() else {
                return;
            };
            let outbox = state.replica.outbox();
            let removed: Vec<Uuid> = before
                .keys()
                .filter(|id| !outbox.iter().any(|p| p.command_id == **id))
                .copied()
                .collect();
            let rebased: Vec<_> = outbox
                .iter()
                .filter(|p| {
                    before
                        .get(&p.command_id)
                        .is_some_and(|v| *v != p.expected_version)
                })
                .map(|p| {
                    (
                        state.orders.get(&p.command_id).copied().unwrap_or(0.0),
                        p.clone(),
                    )
                })
                .collect();
            (store, removed, rebased)
        };
        let result = match store.remove_pending(&removed).await {
            Ok(()) => store.put_pending(&rebased).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            self.storage_failed(error);
        }
        if !removed.is_empty() || !rebased.is_empty() {
            let mut state = self.state.borrow_mut();
            for id in &removed {
                state.orders.remove(id);
            }
            drop(state);
            self.tell_other_tabs();
        }
    }
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
