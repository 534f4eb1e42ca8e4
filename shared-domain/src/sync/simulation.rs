//! Deterministic simulation of the sync protocol. Several replicas, each
//! driven the way the browser drives its replica (the same pure core: the
//! replica, the answer table, the base check, the identity judge, the
//! decision context), talk to an in-memory authority that makes the server's
//! checks in the server's order. proptest generates the schedules and
//! shrinks a failure to a minimal one.
//!
//! Faults: requests delivered late, out of order and after the client gave
//! up on them (their answers lost or still delivered); crashes between any
//! two effects (the replica is rebuilt from what was persisted, as a reload
//! does); two tabs sharing one outbox; the server restored to an older
//! backup or recreated empty; failed and delayed catch-ups; per-command
//! 503s inside a batch; batch-level 413 (a body limit) and 429.
//!
//! Properties, checked after every step and at the end: each command is
//! applied once or reported rejected once (never both, never twice); a
//! replica's commands land in the order they were made, per aggregate; a
//! rejection is only reported when the authority's log refuses the command
//! (checked against a reference that re-decides it on the log prefix it was
//! decided on, which must have existed); everyone converges; the view is the
//! confirmed state with the pending commands re-decided on top; a reset
//! tells the user a replaced store was replaced; the feed cursor never
//! passed an event the replica did not apply.
//!
//! Run more schedules with `SEXTANT_SIM_SCHEDULES=10000 cargo test -p
//! shared-domain --release --lib the_simulation_reaches_every_path --
//! --nocapture` (10,000 take about 4 s in release).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use uuid::Uuid;

use super::answers::{batch_verdict, command_verdict, BatchVerdict, CommandVerdict};
use super::base::{check_base, Head};
use super::identity::{
    check_store, judge_resume, judge_witness, take_answer, ResetReason, ResumeRequest,
    ResumeVerdict, StoreCheck, StoreFacts, TakeAnswer,
};
use super::mutants::{self, Mutant};
use super::orphans::{settle_local_runs, LocalRun, Orphan};
use super::shell::{after_catch_up, on_answer, AnswerEffect, CommandAnswer};
use super::*;
use crate::access::{Actor, UserId};
use crate::decision::{authorize, decide, DecisionContext, Issuer};
use crate::envelope::EventMetadata;
use crate::session::tests::properties::arb_command;
use crate::session::{ChartAggregate, ChartKind, ChartSettings, QuerySession, SessionCommand};
use crate::values::{Column, DatasetRef, ErrorId, QueryId, SessionTitle};

const NODES: usize = 3;
const AGGREGATES: u128 = 2;

fn aggregate(n: u128) -> Uuid {
    Uuid::from_u128(0xA000 + n)
}

type Envelope = CommandEnvelope<SessionCommand>;

/// What the authority answers one command: an HTTP status and a body.
#[derive(Debug, Clone)]
enum Reply {
    Ok(Vec<EventEnvelope>),
    /// The current version and the command behind it.
    Conflict(u64, Option<Uuid>),
    Refused(u16, String),
    Unavailable,
}

impl Reply {
    fn status(&self) -> u16 {
        match self {
            Reply::Ok(_) => 200,
            Reply::Conflict(..) => 409,
            Reply::Refused(status, _) => *status,
            Reply::Unavailable => 503,
        }
    }
}

/// The server's rules, in memory: idempotency, authorization, exact base,
/// the decision context (catalog, query ids of other sessions), decision.
#[derive(Clone)]
struct Authority {
    store_id: Uuid,
    log: Vec<EventEnvelope>,
    states: BTreeMap<Uuid, QuerySession>,
    /// command id -> (aggregate, command, original events)
    processed: HashMap<Uuid, (Uuid, SessionCommand, Vec<EventEnvelope>)>,
    /// False for an older server that ignores `base_command`.
    exact_bases: bool,
    /// The logs of the stores this one replaced (restored or recreated):
    /// a replica may have decided on them before it noticed.
    past_logs: Vec<Vec<EventEnvelope>>,
    /// The decisions (command, version, base) this store and those it
    /// replaced refused: an access refusal depends on the state at that
    /// moment, which later commands of the same batch may change.
    refused: HashSet<(Uuid, u64, Option<Uuid>)>,
}

/// Server datasets the authority's catalog has (the replicas do not know).
const CATALOG: &[&str] = &["sales"];

impl Authority {
    fn new(store_id: Uuid) -> Self {
        Authority {
            store_id,
            log: Vec::new(),
            states: BTreeMap::new(),
            processed: HashMap::new(),
            exact_bases: true,
            past_logs: Vec::new(),
            refused: HashSet::new(),
        }
    }

    fn head(&self) -> u64 {
        self.log.last().map_or(0, |e| e.global_sequence)
    }

    fn context(&self, aggregate_id: Uuid, command: &SessionCommand) -> DecisionContext {
        Self::context_in(&self.log, aggregate_id, command)
    }

    /// The decision context a store with `log` gives.
    fn context_in(
        log: &[EventEnvelope],
        aggregate_id: Uuid,
        command: &SessionCommand,
    ) -> DecisionContext {
        let needs = DecisionContext::needs(command);
        DecisionContext {
            issuer: Issuer::Client,
            // One user, the owner of every session (the multi-user rules have their own specs).
            actor: Actor::User(UserId::OWNER),
            aggregate_id,
            share_target: None,
            server_dataset_exists: needs
                .server_dataset
                .map(|name| CATALOG.contains(&name.as_str())),
            query_id_owner: needs.query_id.and_then(|query_id| {
                log.iter().find_map(|e| {
                    (e.event_type == "QuerySubmitted"
                        && e.payload["query_id"] == serde_json::json!(query_id))
                    .then_some(e.aggregate_id)
                })
            }),
        }
    }

    fn handle(&mut self, envelope: &Envelope, next_event: &mut u128) -> Reply {
        if let Some((aggregate_id, command, events)) = self.processed.get(&envelope.command_id) {
            return if *aggregate_id == envelope.aggregate_id && *command == envelope.command {
                Reply::Ok(events.clone())
            } else {
                Reply::Refused(422, "command id reused with a different body".into())
            };
        }
        let state = self
            .states
            .get(&envelope.aggregate_id)
            .cloned()
            .unwrap_or_default();
        let context = self.context(envelope.aggregate_id, &envelope.command);
        let decision = (
            envelope.command_id,
            envelope.expected_version,
            envelope.base_command,
        );
        if let Err(refusal) = authorize(&state, &envelope.command, &context) {
            self.refused.insert(decision);
            return Reply::Refused(403, refusal.to_string());
        }
        let head = Head {
            version: state.version(),
            last_command: self
                .log
                .iter()
                .rev()
                .find(|e| e.aggregate_id == envelope.aggregate_id)
                .map(|e| e.metadata.command_id),
        };
        let base_command = envelope.base_command.filter(|_| self.exact_bases);
        if let Err(conflict) = check_base(envelope.expected_version, base_command, head) {
            let current_command = self
                .log
                .iter()
                .rev()
                .find(|e| e.aggregate_id == envelope.aggregate_id)
                .map(|e| e.metadata.command_id);
            return Reply::Conflict(conflict.current_version, current_command);
        }
        let events = match decide(&state, &envelope.command, &context) {
            Err(refusal) => {
                self.refused.insert(decision);
                return Reply::Refused(422, refusal.to_string());
            }
            Ok(events) => events,
        };
        let mut state = state;
        let mut stored = Vec::new();
        for event in events {
            *next_event += 1;
            let mut e = EventEnvelope::new::<QuerySession>(
                // Event ids are unique across every authority ever created,
                // so a restored store that grows again has other ids.
                Uuid::from_u128(*next_event),
                envelope.aggregate_id,
                state.version() + 1,
                &event,
                EventMetadata {
                    command_id: envelope.command_id,
                    ..Default::default()
                },
                Utc.timestamp_opt(0, 0).unwrap(),
            );
            // Global sequences need not be consecutive: leave holes.
            e.global_sequence = self.log.len() as u64 * 2 + 1;
            state.apply(&event);
            self.log.push(e.clone());
            stored.push(e);
        }
        self.states.insert(envelope.aggregate_id, state);
        self.processed.insert(
            envelope.command_id,
            (
                envelope.aggregate_id,
                envelope.command.clone(),
                stored.clone(),
            ),
        );
        Reply::Ok(stored)
    }

    fn event_id_at(&self, global_sequence: u64) -> Option<Uuid> {
        self.log
            .iter()
            .find(|e| e.global_sequence == global_sequence)
            .map(|e| e.id)
    }

    /// The server's judgement of the witness a request named.
    fn judge(&self, witness: Option<Witness>) -> Option<Result<(), ResetReason>> {
        witness.map(|w| judge_witness(w, self.event_id_at(w.global_sequence)))
    }

    fn events_after(&self, aggregate_id: Uuid, version: u64) -> Vec<EventEnvelope> {
        self.log
            .iter()
            .filter(|e| e.aggregate_id == aggregate_id && e.aggregate_sequence > version)
            .cloned()
            .collect()
    }

    /// The reference for "no spurious rejection". A rejection is justified
    /// if the authority refused exactly that decision (command, version,
    /// base; an access refusal depends on the state at that moment), if it
    /// refuses the command whatever its base (the executor-only rule), or
    /// if the command does not decide on the state
    /// it was refused on: a prefix of `version` events of the aggregate,
    /// ending with `base`, of a log that existed (this store's, or one it
    /// replaced: a replica may have decided on it before it noticed), or,
    /// for a rebase, such a prefix followed by `earlier`, the replica's
    /// pending commands before it (the rebase decides after them, as the
    /// authority will). A version no log had is not a refusal: nothing was
    /// decided on it. While an older server that checks numbers only
    /// answered, the length alone counts (it decided on whatever prefix had
    /// that length).
    fn justifies(
        &self,
        pending: &PendingCommand<SessionCommand>,
        earlier: &[PendingCommand<SessionCommand>],
        number_only: bool,
    ) -> bool {
        let (aggregate_id, command) = (pending.aggregate_id, &pending.command);
        // The authority refused exactly this decision.
        if self.refused.contains(&(
            pending.command_id,
            pending.expected_version,
            pending.base_command,
        )) {
            return true;
        }
        let now = self.states.get(&aggregate_id).cloned().unwrap_or_default();
        if authorize(&now, command, &self.context(aggregate_id, command)).is_err() {
            return true;
        }
        // The confirmed base the first of the chain was decided on.
        let (version, base) = earlier
            .first()
            .map_or((pending.expected_version, pending.base_command), |first| {
                (first.expected_version, first.base_command)
            });
        self.past_logs.iter().chain([&self.log]).any(|log| {
            let events: Vec<&EventEnvelope> = log
                .iter()
                .filter(|e| e.aggregate_id == aggregate_id)
                .collect();
            let Some(prefix) = events.get(..version as usize) else {
                return false;
            };
            let last = prefix.last().map(|e| e.metadata.command_id);
            if !(number_only || base.is_none() || last == base) {
                return false;
            }
            let mut state = QuerySession::default();
            for e in prefix {
                state.apply(&e.decode::<QuerySession>().unwrap());
            }
            for before in earlier {
                if let Ok((next, _)) = state.execute(&before.command) {
                    state = next;
                }
            }
            state.version() == pending.expected_version
                && decide(
                    &state,
                    command,
                    &Self::context_in(log, aggregate_id, command),
                )
                .is_err()
        })
    }
}

/// What a tab persisted (IndexedDB): confirmed events with the feed
/// position, the shared outbox, the store id.
#[derive(Clone, Default)]
struct Durable {
    events: BTreeMap<(Uuid, u64), EventEnvelope>,
    cursor: u64,
    gaps: Vec<(Uuid, Gap)>,
    /// Rebuilt from the events, except a rejoined replica's (it holds none).
    witness: Option<Witness>,
    /// The local queries this browser runs (stored while they run).
    runs: Vec<LocalRun>,
    outbox: Vec<PendingCommand<SessionCommand>>,
    store_id: Option<Uuid>,
}

/// A request on the wire.
struct InFlight {
    batch: Vec<Envelope>,
    /// The sender's witness when it sent the request.
    witness: Option<Witness>,
    /// The client stopped waiting: its answer, if any, is not read.
    abandoned: bool,
}

/// One browser: two tabs share its storage (the outbox) and each has its
/// own replica; tab 0 is the sender (it holds the Web Lock).
struct Node {
    tabs: [Replica<QuerySession>; 2],
    durable: Durable,
    store_id: Option<Uuid>,
    online: bool,
    /// The feed is connected and its hello frame was handled.
    connected: bool,
    batch_limit: usize,
    attempt: u32,
    in_flight: Vec<InFlight>,
    /// Commands made here, in order, and those reported rejected (by id, with count).
    submitted: Vec<(Uuid, Uuid)>,
    reported: HashMap<Uuid, usize>,

    /// The next catch-up fails.
    fetch_fails: bool,
    /// Started from the read model's cursor: it learns of older sessions
    /// only when the user opens them.
    rejoined: bool,
    /// The feed position it started from (the read model's cursor after a
    /// rejoin, 0 after a reset): it must apply every feed event after it.
    feed_start: u64,
    /// Local queries the sender tab runs now (lost when it crashes).
    running: Vec<LocalRun>,
    /// Every local query run here, for the property that each one ends,
    /// with the command that ended it, if one was made.
    started_runs: Vec<LocalRun>,
    outcomes: HashMap<QueryId, Uuid>,
}

impl Node {
    fn new() -> Self {
        Node {
            tabs: [Replica::new(), Replica::new()],
            durable: Durable::default(),
            store_id: None,
            online: true,
            connected: false,
            batch_limit: usize::MAX,
            attempt: 0,
            in_flight: Vec::new(),
            submitted: Vec::new(),
            reported: HashMap::new(),
            fetch_fails: false,
            rejoined: false,
            feed_start: 0,
            running: Vec::new(),
            started_runs: Vec::new(),
            outcomes: HashMap::new(),
        }
    }

    /// Persists the sender's state, as the shell does after each effect.
    fn persist(&mut self) {
        let replica = &self.tabs[0];
        self.durable.cursor = replica.last_global_sequence();
        self.durable.gaps = replica.gaps();
        self.durable.witness = replica.witness();
        self.durable.outbox = replica.outbox().iter().cloned().collect();
        self.durable.store_id = self.store_id;
    }

    /// Stores the events held now, with the store they came from.
    fn persist_events(&mut self, events: &[EventEnvelope]) {
        self.durable.store_id = self.store_id;
        for e in events {
            let held = self.tabs[0]
                .confirmed(e.aggregate_id)
                .is_some_and(|s| s.version() >= e.aggregate_sequence);
            if held {
                self.durable
                    .events
                    .insert((e.aggregate_id, e.aggregate_sequence), e.clone());
            }
        }
    }

    /// A reload: the sender tab's replica is rebuilt from storage.
    fn crash(&mut self) {
        let mut replica = Replica::new();
        for event in self.durable.events.values() {
            replica.receive(event, Source::Fetch).unwrap();
        }
        replica.resume(
            self.durable.cursor,
            self.durable.gaps.clone(),
            self.durable.witness,
        );
        replica.replace_outbox(self.durable.outbox.clone());
        self.tabs[0] = replica;
        self.store_id = self.durable.store_id;
        self.connected = false;
        for request in &mut self.in_flight {
            request.abandoned = true;
        }
        self.attempt = 0;
        // The tab's local queries died with it.
        self.running.clear();
    }

    /// The other tab follows its own feed (here: catches up with the
    /// sender's confirmed state) and reloads the shared outbox.
    fn sync_tabs(&mut self) {
        self.tabs[1] = self.tabs[0].clone();
        let outbox = self.durable.outbox.clone();
        self.tabs[1].replace_outbox(outbox);
    }

    /// The replica found the authority (store `store_id`) is not what its
    /// confirmed state came from, for `reason`, which the user is told.
    fn reset(&mut self, store_id: Uuid, reason: ResetReason, stats: &mut Stats) {
        stats.resets += 1;
        if self.store_id.is_some_and(|held| held != store_id) {
            assert_eq!(
                reason,
                ResetReason::OtherStore,
                "the user is told the store was restored; it was replaced"
            );
        }
        for tab in &mut self.tabs {
            tab.reset();
        }
        self.feed_start = 0;
        self.store_id = Some(store_id);
        self.durable.events.clear();
        self.persist();
        self.connected = false;
    }

    fn report(
        &mut self,
        rejections: Vec<Rejection<SessionCommand>>,
        authority: &Authority,
        number_only: bool,
    ) {
        for rejection in rejections {
            let pending = &rejection.pending;
            let count = self.reported.entry(pending.command_id).or_default();
            *count += 1;
            assert_eq!(
                *count, 1,
                "command {} reported rejected twice",
                pending.command_id
            );
            // A rebase decided it after the pending commands it names.
            let outbox = self.tabs[0].outbox();
            let earlier: Vec<PendingCommand<SessionCommand>> = match outbox
                .iter()
                .position(|p| Some(p.command_id) == pending.base_command)
            {
                Some(end) => outbox
                    .iter()
                    .take(end + 1)
                    .filter(|p| p.aggregate_id == pending.aggregate_id)
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            assert!(
                authority.justifies(pending, &earlier, number_only),
                "spurious rejection of {:?} at version {} on {:?}: {}",
                pending.command,
                pending.expected_version,
                pending.base_command,
                rejection.reason
            );
        }
    }

    /// GET the aggregate's events from one before what is held, and
    /// receive them. False when the fetch failed or the histories diverged
    /// (then the replica was reset).
    fn catch_up(&mut self, authority: &Authority, aggregate_id: Uuid, stats: &mut Stats) -> bool {
        if std::mem::take(&mut self.fetch_fails) || !self.online {
            return false;
        }
        match check_store(self.store_id, Some(authority.store_id)) {
            StoreCheck::Hold(store_id) => self.store_id = store_id,
            StoreCheck::Reset => {
                self.reset(authority.store_id, ResetReason::OtherStore, stats);
                return false;
            }
        }
        let witness = self.tabs[0].witness();
        if let TakeAnswer::Reset(reason) = take_answer(witness, witness, authority.judge(witness)) {
            self.reset(authority.store_id, reason, stats);
            return false;
        }
        let events = authority.events_after(aggregate_id, self.tabs[0].fetch_from(aggregate_id));
        for event in &events {
            if self.tabs[0].receive(event, Source::Fetch).unwrap() == Received::Diverged {
                self.reset(authority.store_id, ResetReason::WitnessDiffers, stats);
                return false;
            }
        }
        if self.tabs[0].gap_lost(aggregate_id) {
            self.reset(authority.store_id, ResetReason::WitnessMissing, stats);
            return false;
        }
        self.persist_events(&events);
        true
    }

    fn retry_gaps(&mut self, authority: &Authority, stats: &mut Stats) {
        for (aggregate_id, _) in self.tabs[0].gaps() {
            self.catch_up(authority, aggregate_id, stats);
        }
        self.persist();
    }
}

#[derive(Debug, Clone)]
enum Action {
    Submit {
        node: usize,
        tab: usize,
        aggregate: u128,
        command: SessionCommand,
    },
    /// A local query runs to its end while (perhaps) offline: submit,
    /// start, complete, each decided on the view (issue 9's first edge).
    LocalQuery {
        node: usize,
        aggregate: u128,
    },
    /// The sender tab's oldest local query ends (completes, or fails).
    FinishLocal {
        node: usize,
        fail: bool,
    },
    /// The sender puts its next batch on the wire.
    Send {
        node: usize,
    },
    /// One request reaches the authority; `answer` says whether its answer
    /// comes back, `fault` which failure the server adds.
    Deliver {
        node: usize,
        pick: usize,
        answer: bool,
        fault: Fault,
    },
    /// The client gives up waiting for its request.
    Abandon {
        node: usize,
    },
    Feed {
        node: usize,
        count: usize,
    },
    /// The feed drops and the page reconnects (hello: confirm or reset).
    Reconnect {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Toggle {
        node: usize,
    },
    FailNextFetch {
        node: usize,
    },
    /// The catch-ups of the gap ledger run (the browser's timer).
    CatchUp {
        node: usize,
    },
    /// The other tab reloads the shared outbox.
    SyncTabs {
        node: usize,
    },
    /// A fresh replica (cleared local data) starts at the read model's
    /// cursor instead of replaying the whole feed.
    Rejoin {
        node: usize,
    },
    /// The server is (or is no longer) an older version that ignores
    /// `base_command` and checks the number only, as before bases existed.
    ServerVersion {
        exact_bases: bool,
    },
    Backup,
    /// The server restarts on an older backup (same store id).
    Restore {
        pick: usize,
    },
    /// The server restarts on a new, empty store.
    Recreate,
    /// The server's body limit changes (in commands).
    BodyLimit {
        commands: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Every other command of the batch gets 503.
    Partial503,
    Batch429,
}

/// A chart of the `answer` column the generated queries complete with;
/// `second` picks the other of two settings.
fn chart(second: bool) -> ChartSettings {
    ChartSettings {
        kind: if second {
            ChartKind::Histogram
        } else {
            ChartKind::Bar
        },
        x: "answer".into(),
        aggregate: ChartAggregate::Count,
        y: None,
        color: None,
        bins: second.then_some(10),
    }
}

/// The session's commands, plus charts: saving the chart a query already
/// has is the one command that succeeds without events (a pending command
/// the view shows as changing nothing).
fn arb_sim_command() -> impl Strategy<Value = SessionCommand> {
    prop_oneof![
        10 => arb_command(),
        1 => (0u128..4, any::<bool>()).prop_map(|(n, second)| SessionCommand::ConfigureChart {
            query_id: QueryId(Uuid::from_u128(n)),
            chart: chart(second),
        }),
    ]
}

fn arb_action() -> impl Strategy<Value = Action> {
    let node = 0..NODES;
    let fault = prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::Partial503),
        1 => Just(Fault::Batch429),
    ];
    prop_oneof![
        32 => (node.clone(), 0..2usize, 0..AGGREGATES, arb_sim_command()).prop_map(
            |(node, tab, aggregate, command)| Action::Submit { node, tab, aggregate, command }
        ),
        6 => (node.clone(), 0..AGGREGATES)
            .prop_map(|(node, aggregate)| Action::LocalQuery { node, aggregate }),
        5 => (node.clone(), prop::bool::weighted(0.2))
            .prop_map(|(node, fail)| Action::FinishLocal { node, fail }),
        16 => node.clone().prop_map(|node| Action::Send { node }),
        16 => (node.clone(), 0..4usize, prop::bool::weighted(0.85), fault)
            .prop_map(|(node, pick, answer, fault)| Action::Deliver { node, pick, answer, fault }),
        4 => node.clone().prop_map(|node| Action::Abandon { node }),
        16 => (node.clone(), 1usize..6).prop_map(|(node, count)| Action::Feed { node, count }),
        6 => node.clone().prop_map(|node| Action::Reconnect { node }),
        3 => node.clone().prop_map(|node| Action::Crash { node }),
        4 => node.clone().prop_map(|node| Action::Toggle { node }),
        4 => node.clone().prop_map(|node| Action::FailNextFetch { node }),
        4 => node.clone().prop_map(|node| Action::CatchUp { node }),
        3 => node.clone().prop_map(|node| Action::SyncTabs { node }),
        4 => node.prop_map(|node| Action::Rejoin { node }),
        2 => prop::bool::weighted(0.5).prop_map(|exact_bases| Action::ServerVersion { exact_bases }),
        3 => Just(Action::Backup),
        2 => (0..3usize).prop_map(|pick| Action::Restore { pick }),
        1 => Just(Action::Recreate),
        3 => (1usize..4).prop_map(|commands| Action::BodyLimit { commands }),
    ]
}

/// How often each interesting path ran, to prove the simulation reaches them.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub conflicts: usize,
    pub stale_answers: usize,
    pub rejections: usize,
    pub gaps: usize,
    pub resets: usize,
    pub crashes: usize,
    pub late_requests: usize,
    pub splits: usize,
    pub backoffs: usize,
    pub restores: usize,
    /// Answers dropped because the feed moved the witness meanwhile.
    pub retried_answers: usize,
    /// Local runs settled after their tab: kept outcomes, or failures of
    /// queries whose tab crashed.
    pub orphans: usize,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.conflicts += other.conflicts;
        self.stale_answers += other.stale_answers;
        self.rejections += other.rejections;
        self.gaps += other.gaps;
        self.resets += other.resets;
        self.crashes += other.crashes;
        self.late_requests += other.late_requests;
        self.splits += other.splits;
        self.backoffs += other.backoffs;
        self.restores += other.restores;
        self.retried_answers += other.retried_answers;
        self.orphans += other.orphans;
    }
}

struct World {
    authority: Authority,
    backups: Vec<Authority>,
    nodes: Vec<Node>,
    next_command: u128,
    next_event: u128,
    next_store: u128,
    body_limit: usize,
    /// Commands whose events a restore or recreation removed from the log:
    /// confirmed work the server lost, shown as the server has it.
    lost: HashSet<Uuid>,
    /// An older server that checks numbers only answered at some point.
    number_only: bool,
    stats: Stats,
}

impl World {
    fn new() -> Self {
        World {
            authority: Authority::new(Uuid::from_u128(0x5_0000)),
            backups: Vec::new(),
            nodes: (0..NODES).map(|_| Node::new()).collect(),
            next_command: 1,
            next_event: 0,
            next_store: 0x5_0001,
            body_limit: usize::MAX,
            lost: HashSet::new(),
            number_only: false,
            stats: Stats::default(),
        }
    }

    fn step(&mut self, action: &Action) {
        match action {
            Action::Submit {
                node,
                tab,
                aggregate: n,
                command,
            } => {
                self.submit(*node, *tab, aggregate(*n), command.clone());
            }
            Action::LocalQuery { node, aggregate: n } => {
                // The tab submits and starts it, remembers the run, and
                // runs it until `FinishLocal` (or its crash).
                let query_id = QueryId(Uuid::from_u128(0xC000 + self.next_command));
                let submit = SessionCommand::SubmitQuery {
                    query_id,
                    sql: crate::values::SqlQuery::new("SELECT 1").unwrap(),
                    engine: crate::values::Engine::Local,
                };
                if self.submit(*node, 0, aggregate(*n), submit).is_some() {
                    let run = LocalRun {
                        aggregate_id: aggregate(*n),
                        query_id,
                        outcome: None,
                    };
                    let node_state = &mut self.nodes[*node];
                    node_state.running.push(run.clone());
                    node_state.started_runs.push(run.clone());
                    node_state.durable.runs.push(run);
                    let start = SessionCommand::StartQuery { query_id };
                    self.submit(*node, 0, aggregate(*n), start);
                }
            }
            Action::FinishLocal { node, fail } => self.finish_local(*node, *fail),
            Action::Send { node } => self.send(*node),
            Action::Deliver {
                node,
                pick,
                answer,
                fault,
            } => self.deliver(*node, *pick, *answer, *fault),
            Action::Abandon { node } => {
                for request in &mut self.nodes[*node].in_flight {
                    request.abandoned = true;
                }
            }
            Action::Feed { node, count } => self.feed(*node, *count),
            Action::Reconnect { node } => {
                self.nodes[*node].connected = false;
                self.connect(*node);
            }
            Action::Crash { node } => {
                self.stats.crashes += 1;
                self.nodes[*node].crash();
            }
            Action::Toggle { node } => {
                let node = &mut self.nodes[*node];
                node.online = !node.online;
                if !node.online {
                    node.connected = false;
                }
            }
            Action::FailNextFetch { node } => self.nodes[*node].fetch_fails = true,
            Action::CatchUp { node } => {
                let node = &mut self.nodes[*node];
                if node.online {
                    node.retry_gaps(&self.authority, &mut self.stats);
                }
            }
            Action::SyncTabs { node } => self.nodes[*node].sync_tabs(),
            Action::Rejoin { node } => {
                let head = self.authority.head();
                let store_id = self.authority.store_id;
                let node = &mut self.nodes[*node];
                // (Clearing local data while a local query runs would leave
                // it to another device to cancel: not simulated.)
                if node.tabs[0].outbox().is_empty()
                    && node.in_flight.is_empty()
                    && node.durable.runs.is_empty()
                {
                    // The read model says which event its cursor is at.
                    let witness = self.authority.log.last().map(Witness::of);
                    node.tabs = [
                        Replica::starting_at(head, witness),
                        Replica::starting_at(head, witness),
                    ];
                    node.store_id = Some(store_id);
                    node.rejoined = true;
                    node.feed_start = head;
                    node.durable = Durable::default();
                    node.persist();
                }
            }
            Action::ServerVersion { exact_bases } => {
                self.authority.exact_bases = *exact_bases;
                self.number_only |= !exact_bases;
            }
            Action::Backup => {
                self.backups.push(self.authority.clone());
                if self.backups.len() > 3 {
                    self.backups.remove(0);
                }
            }
            Action::Restore { pick } => {
                if let Some(backup) = self.backups.get(*pick).cloned() {
                    self.restart(backup);
                }
            }
            Action::Recreate => {
                let store = Authority::new(Uuid::from_u128(self.next_store));
                self.next_store += 1;
                self.restart(store);
            }
            Action::BodyLimit { commands } => self.body_limit = *commands,
        }
        // The browser settles its local runs on start and after each change.
        for index in 0..NODES {
            self.settle_runs(index);
        }
        self.check_invariants();
    }

    /// The server restarts on `store`: every feed drops; what the old log
    /// had and the new one lacks is lost.
    fn restart(&mut self, mut store: Authority) {
        self.stats.restores += 1;
        store.past_logs = std::mem::take(&mut self.authority.past_logs);
        store.past_logs.push(self.authority.log.clone());
        store.refused = std::mem::take(&mut self.authority.refused);
        let kept: HashSet<Uuid> = store.processed.keys().copied().collect();
        self.lost.extend(
            self.authority
                .processed
                .keys()
                .filter(|id| !kept.contains(id))
                .copied(),
        );
        self.authority = store;
        for node in &mut self.nodes {
            // Connections die with the process: nothing in flight arrives.
            node.connected = false;
            node.in_flight.clear();
        }
    }

    /// The sender tab's oldest local query ends: its outcome is submitted
    /// and the run forgotten with it.
    fn finish_local(&mut self, index: usize, fail: bool) {
        let node = &mut self.nodes[index];
        if node.running.is_empty() {
            return;
        }
        let run = node.running.remove(0);
        let query_id = run.query_id;
        let outcome = if fail {
            SessionCommand::FailQuery {
                query_id,
                error_id: ErrorId(Uuid::from_u128(0xEE00 + self.next_command)),
                message: "boom".into(),
            }
        } else {
            SessionCommand::CompleteQuery {
                query_id,
                row_count: 1,
                columns: Vec::new(),
                elapsed_ms: 1,
                fingerprint: None,
            }
        };
        let made = self.submit(index, 0, run.aggregate_id, outcome.clone());
        let node = &mut self.nodes[index];
        match made {
            Some(id) => {
                node.outcomes.insert(query_id, id);
                node.durable.runs.retain(|r| r.query_id != query_id);
            }
            // Not active on the view now (its start pending across a reset,
            // say): the run keeps the outcome for `settle_runs`.
            None => {
                for kept in node.durable.runs.iter_mut() {
                    if kept.query_id == query_id {
                        kept.outcome = Some(outcome.clone());
                    }
                }
            }
        }
    }

    /// The runs no live tab runs: submit the outcome a tab kept, or fail a
    /// query whose tab crashed, once it is active on the view; forget the
    /// ended ones.
    fn settle_runs(&mut self, index: usize) {
        let mut next = self.next_command;
        let orphans = {
            let node = &self.nodes[index];
            let running: Vec<QueryId> = node.running.iter().map(|r| r.query_id).collect();
            settle_local_runs(&node.tabs[0], &node.durable.runs, &running, || {
                next += 1;
                ErrorId(Uuid::from_u128(0xEF00 + next))
            })
        };
        for orphan in orphans {
            let query_id = match orphan {
                Orphan::Submit {
                    aggregate_id,
                    command,
                } => {
                    let query_id = match &command {
                        SessionCommand::CompleteQuery { query_id, .. }
                        | SessionCommand::FailQuery { query_id, .. } => *query_id,
                        other => unreachable!("not an outcome: {other:?}"),
                    };
                    self.stats.orphans += 1;
                    let made = self.submit(index, 0, aggregate_id, command);
                    let node = &mut self.nodes[index];
                    node.outcomes.extend(made.map(|id| (query_id, id)));
                    query_id
                }
                Orphan::Forget(query_id) => query_id,
            };
            let node = &mut self.nodes[index];
            node.durable.runs.retain(|r| r.query_id != query_id);
        }
    }

    /// Decides `command` in a tab; the command id if it entered the outbox.
    fn submit(
        &mut self,
        index: usize,
        tab: usize,
        aggregate_id: Uuid,
        command: SessionCommand,
    ) -> Option<Uuid> {
        let command_id = Uuid::from_u128(self.next_command);
        self.next_command += 1;
        let node = &mut self.nodes[index];
        // A tab submits on its own view of the shared outbox, then writes its row.
        if tab == 1 {
            node.sync_tabs();
        }
        let replica = &mut node.tabs[tab];
        let before = replica.view(aggregate_id);
        match replica.submit(command_id, aggregate_id, command) {
            Ok(events) => {
                let mut expected = before;
                for event in &events {
                    expected.apply(event);
                }
                assert_eq!(
                    replica.view(aggregate_id),
                    expected,
                    "view = old view + events"
                );
                let pending = replica.outbox().back().unwrap().clone();
                node.submitted.push((command_id, aggregate_id));
                if tab == 0 {
                    node.persist();
                } else {
                    // The row lands in storage; the sender reloads the outbox.
                    node.durable.outbox.push(pending);
                    let outbox = node.durable.outbox.clone();
                    node.tabs[0].replace_outbox(outbox);
                    node.persist();
                }
                Some(command_id)
            }
            Err(_) => {
                assert!(!replica.outbox().iter().any(|p| p.command_id == command_id));
                None
            }
        }
    }

    /// The browser's feed connection: the hello frame judges what it holds.
    fn connect(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if !node.online || node.connected {
            return;
        }
        let replica = &node.tabs[0];
        let witness = replica.witness();
        let request = ResumeRequest {
            store_id: node.store_id,
            after: replica.last_global_sequence(),
            witness,
        };
        let facts = StoreFacts {
            store_id: self.authority.store_id,
            head: self.authority.head(),
            event_at_witness: witness.and_then(|w| {
                self.authority
                    .log
                    .iter()
                    .find(|e| e.global_sequence == w.global_sequence)
                    .map(|e| e.id)
            }),
        };
        match judge_resume(request, facts) {
            ResumeVerdict::Confirm => {}
            ResumeVerdict::Reset(reason) => {
                node.reset(self.authority.store_id, reason, &mut self.stats)
            }
        }
        node.store_id = Some(self.authority.store_id);
        node.connected = true;
        node.attempt = 0;
        node.persist();
        node.retry_gaps(&self.authority, &mut self.stats);
    }

    fn feed(&mut self, index: usize, count: usize) {
        self.connect(index);
        let node = &mut self.nodes[index];
        if !node.connected {
            return;
        }
        // SSE resumes after the replica's cursor and delivers in global order.
        let cursor = node.tabs[0].last_global_sequence();
        let events: Vec<EventEnvelope> = self
            .authority
            .log
            .iter()
            .filter(|e| e.global_sequence > cursor)
            .take(count)
            .cloned()
            .collect();
        for event in events {
            let outcome = node.tabs[0].receive(&event, Source::Feed).unwrap();
            if outcome == Received::Diverged {
                node.reset(
                    self.authority.store_id,
                    ResetReason::WitnessDiffers,
                    &mut self.stats,
                );
                return;
            }
            node.persist_events(std::slice::from_ref(&event));
            node.persist();
            // The browser fetches the missing events asynchronously: the
            // catch-up runs later (`Action::CatchUp`, or on reconnect), after
            // more feed events or a crash perhaps; the ledger remembers it.
            if let Received::Gap { .. } = outcome {
                self.stats.gaps += 1;
            }
        }
    }

    /// The sender posts its next batch; like the browser, whether or not
    /// its feed is connected.
    fn send(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if !node.online || node.in_flight.iter().any(|r| !r.abandoned) {
            return;
        }
        let batch: Vec<Envelope> = node.tabs[0]
            .outbox()
            .iter()
            .take(node.batch_limit)
            .map(|p| p.envelope::<QuerySession>())
            .collect();
        if !batch.is_empty() {
            node.in_flight.push(InFlight {
                batch,
                witness: node.tabs[0].witness(),
                abandoned: false,
            });
        }
    }

    fn deliver(&mut self, index: usize, pick: usize, answer: bool, fault: Fault) {
        let node = &mut self.nodes[index];
        if node.in_flight.is_empty() {
            return;
        }
        let request = node.in_flight.remove(pick % node.in_flight.len());
        if request.abandoned {
            self.stats.late_requests += 1;
        }
        let (batch, witness) = (request.batch, request.witness);
        let judged = self.authority.judge(witness);
        // The whole request refused: body limit, or a proxy's 429.
        let batch_status = if batch.len() > self.body_limit {
            Some(413)
        } else if let Fault::Batch429 = fault {
            Some(429)
        } else {
            None
        };
        let replies: Option<Vec<Reply>> = match batch_status {
            Some(_) => None,
            None => Some(
                batch
                    .iter()
                    .enumerate()
                    .map(|(i, envelope)| match fault {
                        Fault::Partial503 if i % 2 == 1 => Reply::Unavailable,
                        _ => self.authority.handle(envelope, &mut self.next_event),
                    })
                    .collect(),
            ),
        };
        // The answer to a request the client gave up on may still come back:
        // it is read like any other (the replica judges whether it is stale).
        let node = &mut self.nodes[index];
        if !answer || !node.online {
            return;
        }
        match replies {
            None => self.batch_failed(index, &batch, batch_status),
            Some(replies) => self.settle(index, &batch, witness, judged, replies),
        }
        let node = &mut self.nodes[index];
        node.persist();
        node.sync_tabs();
    }

    fn batch_failed(&mut self, index: usize, batch: &[Envelope], status: Option<u16>) {
        let node = &mut self.nodes[index];
        match batch_verdict(status, batch.len(), node.attempt, None, 0.5) {
            BatchVerdict::Split { commands } => {
                self.stats.splits += 1;
                node.batch_limit = commands;
            }
            BatchVerdict::RejectSingle => {
                let rejections = node.tabs[0].rejected(&batch[0], "too large");
                self.stats.rejections += rejections.len();
                node.report(rejections, &self.authority, self.number_only);
            }
            BatchVerdict::BackOff { .. } => {
                self.stats.backoffs += 1;
                node.attempt += 1;
            }
            BatchVerdict::RejectAll => {
                for envelope in batch {
                    let rejections = node.tabs[0].rejected(envelope, "batch refused");
                    node.report(rejections, &self.authority, self.number_only);
                }
            }
        }
    }

    /// The browser's `settle`: each answer by the table.
    fn settle(
        &mut self,
        index: usize,
        batch: &[Envelope],
        sent_witness: Option<Witness>,
        judged: Option<Result<(), ResetReason>>,
        replies: Vec<Reply>,
    ) {
        let node = &mut self.nodes[index];
        match check_store(node.store_id, Some(self.authority.store_id)) {
            StoreCheck::Hold(store_id) => node.store_id = store_id,
            StoreCheck::Reset => {
                node.reset(
                    self.authority.store_id,
                    ResetReason::OtherStore,
                    &mut self.stats,
                );
                return;
            }
        }
        match take_answer(sent_witness, node.tabs[0].witness(), judged) {
            TakeAnswer::Take => {}
            TakeAnswer::Retry => {
                self.stats.retried_answers += 1;
                return;
            }
            TakeAnswer::Reset(reason) => {
                node.reset(self.authority.store_id, reason, &mut self.stats);
                return;
            }
        }
        for (envelope, reply) in batch.iter().zip(replies) {
            // The browser's answer path itself (`shell::on_answer`).
            let answer = match (command_verdict(reply.status()), reply) {
                (CommandVerdict::Accepted, Reply::Ok(events)) => CommandAnswer::Accepted { events },
                (CommandVerdict::CatchUp, Reply::Conflict(current, command)) => {
                    self.stats.conflicts += 1;
                    CommandAnswer::Conflict {
                        current_version: Some(current),
                        current_command: command,
                    }
                }
                (CommandVerdict::Reject, Reply::Refused(_, reason)) => {
                    CommandAnswer::Rejected { reason }
                }
                (CommandVerdict::Retry, _) => CommandAnswer::Retry,
                (verdict, reply) => panic!("{verdict:?} for {reply:?}"),
            };
            let mut effects: VecDeque<_> = on_answer(&mut node.tabs[0], envelope, answer)
                .unwrap()
                .into();
            while let Some(effect) = effects.pop_front() {
                match effect {
                    AnswerEffect::StoreEvents(events) => node.persist_events(&events),
                    AnswerEffect::CatchUp {
                        aggregate_id,
                        rebase,
                    } => {
                        if node.catch_up(&self.authority, aggregate_id, &mut self.stats) {
                            effects.extend(after_catch_up(&mut node.tabs[0], aggregate_id, rebase));
                        }
                    }
                    AnswerEffect::Report(rejections) => {
                        self.stats.rejections += rejections.len();
                        node.report(rejections, &self.authority, self.number_only);
                    }
                    AnswerEffect::Reset(reason) => {
                        node.reset(self.authority.store_id, reason, &mut self.stats);
                        return;
                    }
                    AnswerEffect::Ignored => self.stats.stale_answers += 1,
                    AnswerEffect::Retry => {}
                }
            }
        }
        node.attempt = 0;
    }

    /// After every step: no command is in the log twice, or in the log and
    /// reported rejected; the view is confirmed + pending re-decided.
    fn check_invariants(&self) {
        let mut per_command: HashMap<Uuid, Vec<u64>> = HashMap::new();
        for event in &self.authority.log {
            per_command
                .entry(event.metadata.command_id)
                .or_default()
                .push(event.aggregate_sequence);
        }
        for sequences in per_command.values() {
            assert!(
                sequences.windows(2).all(|w| w[1] == w[0] + 1),
                "a command was applied twice: {sequences:?}"
            );
        }
        for node in &self.nodes {
            for (command_id, count) in &node.reported {
                assert!(*count <= 1);
                assert!(
                    !self.authority.processed.contains_key(command_id),
                    "command {command_id} applied and reported rejected"
                );
            }
            // A command of this node whose events a replica holds only in
            // part is still pending there (a `CloseSession` cut after its
            // first event), so the view keeps showing it whole.
            let by_position: HashMap<(Uuid, u64), Uuid> = self
                .authority
                .log
                .iter()
                .map(|e| {
                    (
                        (e.aggregate_id, e.aggregate_sequence),
                        e.metadata.command_id,
                    )
                })
                .collect();
            for replica in &node.tabs {
                for (command_id, aggregate_id) in &node.submitted {
                    let Some(version) = replica.confirmed(*aggregate_id).map(|s| s.version())
                    else {
                        continue;
                    };
                    let partly_held = replica.head(*aggregate_id) == Some(*command_id)
                        && by_position.get(&(*aggregate_id, version)) == Some(command_id)
                        && by_position.get(&(*aggregate_id, version + 1)) == Some(command_id);
                    assert!(
                        !partly_held
                            || replica.outbox().iter().any(|p| p.command_id == *command_id),
                        "command {command_id} left the outbox with part of its events"
                    );
                }
            }
            for replica in &node.tabs {
                for aggregate_id in replica.aggregate_ids() {
                    let mut expected = replica.confirmed(aggregate_id).cloned().unwrap_or_default();
                    for pending in replica
                        .outbox()
                        .iter()
                        .filter(|p| p.aggregate_id == aggregate_id)
                    {
                        if let Ok((next, _)) = expected.execute(&pending.command) {
                            expected = next;
                        }
                    }
                    assert_eq!(replica.view(aggregate_id), expected);
                }
            }
        }
    }

    /// The network heals: everyone is online and talks until quiet.
    fn heal(&mut self) {
        self.body_limit = usize::MAX;
        // The tabs still running local queries finish them.
        for index in 0..NODES {
            while !self.nodes[index].running.is_empty() {
                self.finish_local(index, false);
            }
        }
        for node in &mut self.nodes {
            node.online = true;
            node.fetch_fails = false;
            for request in &mut node.in_flight {
                request.abandoned = true;
            }
        }
        for _ in 0..200 {
            for index in 0..NODES {
                // Late requests land (their answers are not read).
                while !self.nodes[index].in_flight.is_empty() {
                    self.deliver(index, 0, false, Fault::None);
                }
                self.send(index);
                self.deliver(index, 0, true, Fault::None);
                self.feed(index, usize::MAX);
                self.nodes[index].retry_gaps(&self.authority, &mut self.stats);
                self.settle_runs(index);
            }
            if self.nodes.iter().all(|n| {
                n.tabs[0].outbox().is_empty() && n.in_flight.is_empty() && n.durable.runs.is_empty()
            }) {
                break;
            }
        }
        for index in 0..NODES {
            self.feed(index, usize::MAX);
            let node = &mut self.nodes[index];
            node.retry_gaps(&self.authority, &mut self.stats);
            // The feed cursor never passed an event the replica did not apply.
            let replica = &node.tabs[0];
            let cursor = replica.last_global_sequence();
            for event in self
                .authority
                .log
                .iter()
                .filter(|e| e.global_sequence > node.feed_start && e.global_sequence <= cursor)
            {
                assert!(
                    replica
                        .confirmed(event.aggregate_id)
                        .map_or(0, |s| s.version())
                        >= event.aggregate_sequence,
                    "node {index}: its cursor {cursor} passed event {} it did not apply",
                    event.global_sequence
                );
            }
            // The user opens every session the server lists: a rejoined
            // replica fetches those it has not seen on its feed.
            let ids: Vec<Uuid> = self.authority.states.keys().copied().collect();
            let rejoined = node.rejoined;
            for aggregate_id in ids.into_iter().filter(|_| rejoined) {
                node.catch_up(&self.authority, aggregate_id, &mut self.stats);
            }
            node.sync_tabs();
        }
        self.check_invariants();
    }

    fn check_converged(&self) {
        for (index, node) in self.nodes.iter().enumerate() {
            // Every local query run here ended (its tab finished it, or the
            // browser failed it on its next start), unless the server lost
            // the command that ended it.
            for run in &node.started_runs {
                let active = self
                    .authority
                    .states
                    .get(&run.aggregate_id)
                    .and_then(|s| s.active_query())
                    .is_some_and(|q| q.query_id == run.query_id);
                let lost = node
                    .outcomes
                    .get(&run.query_id)
                    .is_some_and(|id| self.lost.contains(id));
                assert!(
                    !active || lost,
                    "node {index}: local query {:?} is still active on the server",
                    run.query_id
                );
            }
            let replica = &node.tabs[0];
            assert!(
                replica.outbox().is_empty(),
                "node {index} still has pending commands: {:?}",
                replica.outbox()
            );
            assert!(replica.gaps().is_empty(), "node {index} has gaps left");
            // Exactly once, or reported once, or lost with the server's data.
            for (command_id, _) in &node.submitted {
                let applied = self.authority.processed.contains_key(command_id);
                let rejected = node.reported.contains_key(command_id);
                let lost = self.lost.contains(command_id);
                assert!(
                    applied ^ rejected || (lost && !applied && !rejected),
                    "node {index}: command {command_id} applied={applied} rejected={rejected} lost={lost}"
                );
            }
            // Per aggregate, this node's commands are in the log in the order
            // made (an older server that checks numbers only cannot promise it).
            if self.number_only {
                continue;
            }
            let position: HashMap<Uuid, usize> = self
                .authority
                .log
                .iter()
                .enumerate()
                .map(|(i, e)| (e.metadata.command_id, i))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            for aggregate_id in self.authority.states.keys() {
                let order: Vec<usize> = node
                    .submitted
                    .iter()
                    .filter(|(_, a)| a == aggregate_id)
                    .filter_map(|(id, _)| position.get(id).copied())
                    .collect();
                assert!(
                    order.windows(2).all(|w| w[0] < w[1]),
                    "node {index}: commands on {aggregate_id} applied out of order"
                );
            }
            for (aggregate_id, state) in &self.authority.states {
                for replica in &node.tabs[..1] {
                    assert_eq!(
                        replica.confirmed(*aggregate_id),
                        Some(state),
                        "node {index} diverged on {aggregate_id}"
                    );
                    assert_eq!(&replica.view(*aggregate_id), state);
                }
            }
            for (aggregate_id, _) in replica.confirmed_all() {
                assert!(
                    self.authority.states.contains_key(aggregate_id),
                    "node {index} shows {aggregate_id}, which the server does not have"
                );
            }
        }
    }
}

fn run(actions: &[Action]) -> Stats {
    let mut world = World::new();
    for action in actions {
        world.step(action);
    }
    world.heal();
    world.check_converged();
    world.stats
}

fn schedules() -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(arb_action(), 20..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_command_lands_once_in_order_or_is_reported_once(actions in schedules()) {
        run(&actions);
    }
}

/// Runs `count` deterministic schedules and adds up what they reached;
/// `Err` with the first failure.
pub(super) fn campaign(count: usize, mutant: Option<Mutant>) -> Result<Stats, String> {
    let mut runner = TestRunner::deterministic();
    let mut total = Stats::default();
    for index in 0..count {
        let actions = schedules().new_tree(&mut runner).unwrap().current();
        let outcome = mutants::with(mutant, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&actions)))
        });
        match outcome {
            Ok(stats) => total.add(stats),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(format!(
                    "schedule {index} of the deterministic campaign: {message}\n{actions:#?}"
                ));
            }
        }
    }
    Ok(total)
}

/// Guards the simulation itself: over a fixed set of schedules it must hit
/// every fault path, or the properties would prove little. With
/// `SEXTANT_SIM_SCHEDULES=N` it runs N schedules and prints the counts.
#[test]
fn the_simulation_reaches_every_path() {
    let count = std::env::var("SEXTANT_SIM_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let total = campaign(count, None).unwrap();
    eprintln!("simulation: {count} schedules: {total:?}");
    assert!(total.conflicts > 0, "{total:?}");
    assert!(total.stale_answers > 0, "{total:?}");
    assert!(total.rejections > 0, "{total:?}");
    assert!(total.gaps > 0, "{total:?}");
    assert!(total.resets > 0, "{total:?}");
    assert!(total.crashes > 0, "{total:?}");
    assert!(total.late_requests > 0, "{total:?}");
    assert!(total.splits > 0, "{total:?}");
    assert!(total.backoffs > 0, "{total:?}");
    assert!(total.restores > 0, "{total:?}");
}

/// Each seeded mutant (a deliberate bug behind the test-only switch in
/// `sync::mutants`) must make some schedule fail a property.
#[test]
fn every_seeded_mutant_is_caught() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut survivors = Vec::new();
    for mutant in mutants::ALL {
        let fixed = (mutant == Mutant::FirstEventFinishes).then(|| {
            mutants::with(Some(mutant), || {
                std::panic::catch_unwind(
                    a_close_cut_between_its_two_events_stays_pending_until_both_are_in,
                )
            })
        });
        if let Some(Err(panic)) = fixed {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            eprintln!("mutant {mutant:?} caught by its fixed schedule: {message}");
            continue;
        }
        match campaign(2000, Some(mutant)) {
            Ok(_) => survivors.push(mutant),
            Err(message) => eprintln!("mutant {mutant:?} caught: {message}"),
        }
    }
    std::panic::set_hook(hook);
    assert!(survivors.is_empty(), "mutants survived: {survivors:?}");
}

/// A server dataset name in the commands the generator makes must be one
/// the catalog lacks sometimes, or the decision context is never exercised.
#[test]
fn the_catalog_refuses_some_generated_datasets() {
    let authority = Authority::new(Uuid::nil());
    let attach = |name: &str| SessionCommand::AttachDataset {
        dataset: DatasetRef::Server {
            name: crate::values::DatasetName::new(name).unwrap(),
        },
    };
    assert_eq!(
        authority
            .context(Uuid::nil(), &attach("sales"))
            .server_dataset_exists,
        Some(true)
    );
    assert_eq!(
        authority
            .context(Uuid::nil(), &attach("demo"))
            .server_dataset_exists,
        Some(false)
    );
}

fn submit(node: usize, aggregate: u128, command: SessionCommand) -> Action {
    Action::Submit {
        node,
        tab: 0,
        aggregate,
        command,
    }
}

fn deliver(node: usize, fault: Fault) -> Action {
    Action::Deliver {
        node,
        pick: 0,
        answer: true,
        fault,
    }
}

fn create_session() -> SessionCommand {
    SessionCommand::CreateSession {
        title: SessionTitle::new("a").unwrap(),
    }
}

/// Schedule 486 of the 10,000-schedule campaign, reduced: a command that
/// no longer decides on the view (closing a session the recreated store
/// lost) stayed pending while a later command on the same session, decided
/// past it, was applied first; the close was then rebased after it and
/// applied out of the order made.
#[test]
fn a_command_made_after_one_that_no_longer_decides_waits_for_it() {
    run(&[
        submit(2, 1, create_session()),
        Action::Send { node: 2 },
        submit(2, 1, SessionCommand::CloseSession {}),
        deliver(2, Fault::None),
        Action::Recreate,
        Action::Feed { node: 2, count: 1 },
        submit(2, 1, create_session()),
    ]);
}

/// The same with a command that succeeds without events: the chart saved
/// again is refused a moment (503) while the next chart, decided past it,
/// lands; rebased after it, the first chart would then overwrite it.
#[test]
fn a_command_made_after_one_that_changes_nothing_waits_for_it() {
    let query_id = QueryId(Uuid::from_u128(0));
    let configure = |second| SessionCommand::ConfigureChart {
        query_id,
        chart: chart(second),
    };
    run(&[
        submit(0, 0, create_session()),
        submit(
            0,
            0,
            SessionCommand::SubmitQuery {
                query_id,
                sql: crate::values::SqlQuery::new("SELECT 42").unwrap(),
                engine: crate::values::Engine::Local,
            },
        ),
        submit(0, 0, SessionCommand::StartQuery { query_id }),
        submit(
            0,
            0,
            SessionCommand::CompleteQuery {
                query_id,
                row_count: 1,
                columns: vec![Column::new("answer", "INTEGER")],
                elapsed_ms: 1,
                fingerprint: None,
            },
        ),
        submit(0, 0, configure(false)),
        Action::Send { node: 0 },
        deliver(0, Fault::None),
        submit(
            0,
            0,
            SessionCommand::RenameSession {
                title: SessionTitle::new("x").unwrap(),
            },
        ),
        // The same chart again: nothing changes on the view.
        submit(0, 0, configure(false)),
        submit(0, 0, configure(true)),
        Action::Send { node: 0 },
        // The rename lands, the repeated chart gets 503, the new chart lands.
        deliver(0, Fault::Partial503),
    ]);
}

/// `CloseSession` with an active query is two events; the answer is lost
/// and the feed is cut after the first: the close stays pending (the
/// view keeps the session closed) until the second arrives or its resend
/// is answered with both, applied once.
#[test]
fn a_close_cut_between_its_two_events_stays_pending_until_both_are_in() {
    let query_id = QueryId(Uuid::from_u128(0));
    let lost_answer = Action::Deliver {
        node: 0,
        pick: 0,
        answer: false,
        fault: Fault::None,
    };
    run(&[
        submit(0, 0, create_session()),
        submit(
            0,
            0,
            SessionCommand::SubmitQuery {
                query_id,
                sql: crate::values::SqlQuery::new("SELECT 42").unwrap(),
                engine: crate::values::Engine::Server,
            },
        ),
        Action::Send { node: 0 },
        deliver(0, Fault::None),
        Action::Feed { node: 0, count: 2 },
        submit(0, 0, SessionCommand::CloseSession {}),
        Action::Send { node: 0 },
        lost_answer,
        Action::Feed { node: 0, count: 1 },
        Action::Crash { node: 0 },
        Action::Feed { node: 0, count: 1 },
    ]);
}

/// Schedule 3583 of the campaign, reduced: a replica that had no feed hello
/// yet (so no store id) took events from answers of one store, then, after
/// the store was recreated, from answers of the new one; an event of the
/// new store became its witness, the hello confirmed it, and the session
/// of the old store stayed on screen for good.
#[test]
fn a_replica_holds_the_store_of_the_first_answer_it_takes_events_from() {
    let rename = SessionCommand::RenameSession {
        title: SessionTitle::new("x").unwrap(),
    };
    run(&[
        submit(1, 1, create_session()),
        Action::Send { node: 1 },
        deliver(1, Fault::None),
        Action::Recreate,
        submit(0, 0, create_session()),
        submit(0, 0, rename),
        Action::Send { node: 0 },
        deliver(0, Fault::None),
        // Conflicts, fetches the new store's events: the witness moves there.
        submit(1, 0, create_session()),
        Action::Send { node: 1 },
        deliver(1, Fault::None),
    ]);
}

/// Schedule 7548 of the campaign, reduced: a replica held a session the
/// feed brought; the store was restored from an older backup and grew
/// again. A conflict answer and its catch-up brought the new history's
/// events, one of them above the held one, so it became the witness; the
/// hello confirmed it, and the session the store lost stayed on screen.
#[test]
fn only_a_store_holding_the_witness_adds_to_what_a_replica_holds() {
    let rename = || SessionCommand::RenameSession {
        title: SessionTitle::new("x").unwrap(),
    };
    run(&[
        Action::Backup,
        Action::Toggle { node: 2 },
        submit(2, 0, create_session()),
        submit(0, 1, create_session()),
        Action::Send { node: 0 },
        deliver(0, Fault::None),
        Action::Toggle { node: 2 },
        Action::Feed { node: 2, count: 1 },
        Action::Restore { pick: 0 },
        submit(1, 0, create_session()),
        submit(1, 0, rename()),
        Action::Send { node: 1 },
        deliver(1, Fault::None),
        submit(2, 0, rename()),
    ]);
}

/// Schedule 5820 of the campaign, reduced: a replica's feed left a gap (an
/// event of a session it had not seen); the store was then restored from a
/// backup that has the replica's witness but not that event, and grew
/// again. The hello confirmed, the catch-up found nothing to fill the gap
/// with, and the gap (and the cursor below it) stayed for good.
#[test]
fn a_gap_the_store_no_longer_has_resets_the_replica() {
    run(&[
        submit(0, 1, create_session()),
        Action::Send { node: 0 },
        deliver(0, Fault::None),
        Action::Rejoin { node: 2 },
        Action::Backup,
        submit(0, 1, SessionCommand::CloseSession {}),
        Action::Send { node: 0 },
        deliver(0, Fault::None),
        // Node 2 has not seen session 1: its close leaves a gap.
        Action::Feed { node: 2, count: 1 },
        Action::Restore { pick: 0 },
        submit(1, 0, create_session()),
        Action::Send { node: 1 },
        deliver(1, Fault::None),
    ]);
}
