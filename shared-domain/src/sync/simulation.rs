//! Deterministic simulation of the sync protocol: several replicas, an
//! in-memory authority that runs the same aggregate with the same rules as
//! the server (idempotency before version check, 409 on any other version),
//! and a hostile network (offline periods, dropped requests and responses,
//! duplicated and delayed requests, duplicated feed events). proptest
//! generates the schedules and shrinks failures to a minimal one.

use std::collections::{BTreeMap, HashMap};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::envelope::EventMetadata;
use crate::session::tests::properties::arb_command;
use crate::session::{QuerySession, SessionCommand};

const NODES: usize = 3;
const AGGREGATES: u128 = 2;

fn aggregate(n: u128) -> Uuid {
    Uuid::from_u128(0xA000 + n)
}

/// What the authority answers one command.
#[derive(Debug, Clone)]
enum Reply {
    Ok(Vec<EventEnvelope>),
    Conflict,
    Rejected(String),
}

/// The server's rules, in memory.
#[derive(Default)]
struct Authority {
    log: Vec<EventEnvelope>,
    states: BTreeMap<Uuid, QuerySession>,
    /// command id -> (aggregate, command, original events)
    processed: HashMap<Uuid, (Uuid, SessionCommand, Vec<EventEnvelope>)>,
    applied_order: Vec<Uuid>,
}

impl Authority {
    fn handle(&mut self, envelope: &CommandEnvelope<SessionCommand>) -> Reply {
        if let Some((aggregate_id, command, events)) = self.processed.get(&envelope.command_id) {
            return if *aggregate_id == envelope.aggregate_id && *command == envelope.command {
                Reply::Ok(events.clone())
            } else {
                Reply::Rejected("command id reused with a different body".into())
            };
        }
        let state = self.states.entry(envelope.aggregate_id).or_default();
        if envelope.expected_version != state.version() {
            return Reply::Conflict;
        }
        match state.handle(&envelope.command) {
            Err(error) => Reply::Rejected(error.to_string()),
            Ok(events) => {
                let mut stored = Vec::new();
                for event in events {
                    let mut e = EventEnvelope::new::<QuerySession>(
                        Uuid::from_u128(self.log.len() as u128 + 1),
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
                self.processed.insert(
                    envelope.command_id,
                    (
                        envelope.aggregate_id,
                        envelope.command.clone(),
                        stored.clone(),
                    ),
                );
                self.applied_order.push(envelope.command_id);
                Reply::Ok(stored)
            }
        }
    }

    fn events_after(&self, aggregate_id: Uuid, version: u64) -> Vec<EventEnvelope> {
        self.log
            .iter()
            .filter(|e| e.aggregate_id == aggregate_id && e.aggregate_sequence > version)
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct Node {
    replica: Replica<QuerySession>,
    online: bool,
    submitted: Vec<Uuid>,
    rejected: Vec<Uuid>,
    /// Where this replica's feed began (after a rejoin): it saw nothing before.
    feed_start: u64,
    /// A request that left but has not reached the authority yet.
    delayed: Option<Vec<CommandEnvelope<SessionCommand>>>,
}

impl Node {
    /// GET /api/aggregates/…/events?after_version=N, then receive them.
    fn catch_up(&mut self, authority: &Authority, aggregate_id: Uuid) {
        let have = self
            .replica
            .confirmed(aggregate_id)
            .map_or(0, |a| a.version());
        for event in authority.events_after(aggregate_id, have) {
            let received = self.replica.receive(&event, Source::Fetch).unwrap();
            assert!(
                !matches!(received, Received::Gap { .. }),
                "fetch fills gaps"
            );
        }
    }

    fn handle_gaps(&mut self, authority: &Authority, outcomes: &[Received]) {
        for outcome in outcomes {
            if let Received::Gap { aggregate_id, .. } = outcome {
                self.catch_up(authority, *aggregate_id);
            }
        }
    }

    fn record(&mut self, rejections: Vec<Rejection<SessionCommand>>) {
        self.rejected
            .extend(rejections.into_iter().map(|r| r.pending.command_id));
    }
}

#[derive(Debug, Clone)]
enum Action {
    Submit {
        node: usize,
        aggregate: u128,
        command: SessionCommand,
    },
    Sync {
        node: usize,
        network: Network,
    },
    Feed {
        node: usize,
        count: usize,
    },
    DuplicateFeed {
        node: usize,
        back: usize,
    },
    Toggle {
        node: usize,
    },
    /// A fresh replica (a new tab, or cleared local data) bootstraps from the
    /// read model's global sequence instead of replaying the whole feed.
    Rejoin {
        node: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Network {
    Reliable,
    DropRequest,
    DropResponse,
    DuplicateRequest,
    DelayRequest,
}

fn arb_action() -> impl Strategy<Value = Action> {
    let node = 0..NODES;
    let network = prop_oneof![
        4 => Just(Network::Reliable),
        1 => Just(Network::DropRequest),
        1 => Just(Network::DropResponse),
        1 => Just(Network::DuplicateRequest),
        1 => Just(Network::DelayRequest),
    ];
    prop_oneof![
        5 => (node.clone(), 0..AGGREGATES, arb_command())
            .prop_map(|(node, aggregate, command)| Action::Submit { node, aggregate, command }),
        3 => (node.clone(), network).prop_map(|(node, network)| Action::Sync { node, network }),
        3 => (node.clone(), 1usize..6).prop_map(|(node, count)| Action::Feed { node, count }),
        1 => (node.clone(), 0usize..4).prop_map(|(node, back)| Action::DuplicateFeed { node, back }),
        1 => node.clone().prop_map(|node| Action::Toggle { node }),
        1 => node.prop_map(|node| Action::Rejoin { node }),
    ]
}

struct World {
    authority: Authority,
    nodes: Vec<Node>,
    next_command: u128,
    stats: Stats,
}

/// How often each interesting path ran, to prove the simulation reaches them.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    conflicts: usize,
    rejections: usize,
    gaps: usize,
    idempotent_replays: usize,
}

impl World {
    fn new() -> Self {
        World {
            authority: Authority::default(),
            nodes: (0..NODES)
                .map(|_| Node {
                    online: true,
                    ..Default::default()
                })
                .collect(),
            next_command: 1,
            stats: Stats::default(),
        }
    }

    fn step(&mut self, action: &Action) {
        match action {
            Action::Submit {
                node,
                aggregate: n,
                command,
            } => {
                let command_id = Uuid::from_u128(self.next_command);
                self.next_command += 1;
                let node = &mut self.nodes[*node];
                let before = node.replica.view(aggregate(*n));
                match node
                    .replica
                    .submit(command_id, aggregate(*n), command.clone())
                {
                    Ok(events) => {
                        node.submitted.push(command_id);
                        // The optimistic view is the old view plus exactly these events.
                        let mut expected = before;
                        for event in &events {
                            expected.apply(event);
                        }
                        assert_eq!(node.replica.view(aggregate(*n)), expected);
                    }
                    Err(_) => assert!(!node
                        .replica
                        .outbox()
                        .iter()
                        .any(|p| p.command_id == command_id)),
                }
            }
            Action::Sync { node, network } => self.sync(*node, *network),
            Action::Feed { node, count } => self.feed(*node, *count),
            Action::DuplicateFeed { node, back } => {
                let node = &mut self.nodes[*node];
                let cursor = node.replica.last_global_sequence();
                let start = node.feed_start;
                let seen: Vec<&EventEnvelope> = self
                    .authority
                    .log
                    .iter()
                    .filter(|e| e.global_sequence > start && e.global_sequence <= cursor)
                    .collect();
                if let Some(event) = seen.iter().rev().nth(*back) {
                    let outcome = node.replica.receive(event, Source::Feed).unwrap();
                    assert_eq!(
                        outcome,
                        Received::Duplicate,
                        "a re-sent feed event is a duplicate"
                    );
                }
            }
            Action::Toggle { node } => {
                let node = &mut self.nodes[*node];
                node.online = !node.online;
            }
            Action::Rejoin { node } => {
                let node = &mut self.nodes[*node];
                if node.online && node.replica.outbox().is_empty() && node.delayed.is_none() {
                    let cursor = self.authority.log.last().map_or(0, |e| e.global_sequence);
                    node.replica = Replica::restore([], cursor, []);
                    node.feed_start = cursor;
                }
            }
        }
    }

    fn sync(&mut self, index: usize, network: Network) {
        let node = &mut self.nodes[index];
        if !node.online {
            return;
        }
        // A delayed request arrives before the next one from the same outbox.
        if let Some(delayed) = node.delayed.take() {
            for envelope in &delayed {
                self.authority.handle(envelope);
            }
        }
        let batch: Vec<CommandEnvelope<SessionCommand>> = node
            .replica
            .outbox()
            .iter()
            .map(|p| p.envelope::<QuerySession>())
            .collect();
        if batch.is_empty() {
            return;
        }
        match network {
            Network::DropRequest => return,
            Network::DelayRequest => {
                node.delayed = Some(batch);
                return;
            }
            _ => {}
        }
        let mut replies: Vec<Reply> = batch.iter().map(|e| self.authority.handle(e)).collect();
        if let Network::DuplicateRequest = network {
            replies = batch.iter().map(|e| self.authority.handle(e)).collect();
            self.stats.idempotent_replays += 1;
        }
        if let Network::DropResponse = network {
            return;
        }
        for (envelope, reply) in batch.iter().zip(replies) {
            match reply {
                Reply::Ok(events) => {
                    let outcomes = node.replica.accepted(envelope.command_id, &events).unwrap();
                    node.handle_gaps(&self.authority, &outcomes);
                    if !outcomes.iter().any(|o| matches!(o, Received::Gap { .. })) {
                        continue;
                    }
                    // The gap is filled now; the command's own events are in.
                    assert!(!node
                        .replica
                        .outbox()
                        .iter()
                        .any(|p| p.command_id == envelope.command_id));
                }
                Reply::Conflict => {
                    self.stats.conflicts += 1;
                    node.catch_up(&self.authority, envelope.aggregate_id);
                    let rejections = node.replica.rebase(envelope.aggregate_id);
                    node.record(rejections);
                }
                Reply::Rejected(reason) => {
                    self.stats.rejections += 1;
                    let rejections = node.replica.rejected(envelope.command_id, reason);
                    node.record(rejections);
                }
            }
        }
    }

    fn feed(&mut self, index: usize, count: usize) {
        let node = &mut self.nodes[index];
        if !node.online {
            return;
        }
        // SSE resumes after the replica's cursor and delivers in global order.
        let cursor = node.replica.last_global_sequence();
        let events: Vec<EventEnvelope> = self
            .authority
            .log
            .iter()
            .filter(|e| e.global_sequence > cursor)
            .take(count)
            .cloned()
            .collect();
        for event in events {
            let outcome = node.replica.receive(&event, Source::Feed).unwrap();
            if matches!(outcome, Received::Gap { .. }) {
                self.stats.gaps += 1;
            }
            node.handle_gaps(&self.authority, &[outcome]);
        }
    }

    /// The network heals: everyone is online and talks until quiet.
    fn heal(&mut self) {
        for node in &mut self.nodes {
            node.online = true;
        }
        for _ in 0..50 {
            for index in 0..NODES {
                self.sync(index, Network::Reliable);
                self.feed(index, usize::MAX);
            }
            if self
                .nodes
                .iter()
                .all(|n| n.replica.outbox().is_empty() && n.delayed.is_none())
            {
                break;
            }
        }
        for index in 0..NODES {
            self.feed(index, usize::MAX);
            // The user opens every session listed by the read model: a
            // rejoined replica fetches those it has not seen on the feed.
            let node = &mut self.nodes[index];
            for aggregate_id in self.authority.states.keys() {
                node.catch_up(&self.authority, *aggregate_id);
            }
        }
    }

    fn check_converged(&self) {
        // Every command was applied exactly once.
        let mut applied = self.authority.applied_order.clone();
        applied.sort();
        let before = applied.len();
        applied.dedup();
        assert_eq!(before, applied.len(), "a command was applied twice");

        for (index, node) in self.nodes.iter().enumerate() {
            assert!(
                node.replica.outbox().is_empty(),
                "node {index} still has pending commands"
            );
            for command_id in &node.submitted {
                let was_applied = self.authority.processed.contains_key(command_id);
                let was_rejected = node.rejected.contains(command_id);
                assert!(
                    was_applied ^ was_rejected,
                    "node {index}: command {command_id} applied={was_applied} rejected={was_rejected}"
                );
            }
            for (aggregate_id, state) in &self.authority.states {
                assert_eq!(
                    node.replica.confirmed(*aggregate_id),
                    Some(state),
                    "node {index} diverged on {aggregate_id}"
                );
                assert_eq!(&node.replica.view(*aggregate_id), state);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_and_commands_apply_exactly_once(actions in prop::collection::vec(arb_action(), 0..80)) {
        let mut world = World::new();
        for action in &actions {
            world.step(action);
        }
        world.heal();
        world.check_converged();
    }
}

/// Guards the simulation itself: over a fixed set of schedules it must hit
/// conflicts, domain rejections, feed gaps and duplicated requests, or the
/// property above would prove little.
#[test]
fn the_simulation_reaches_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut total = Stats::default();
    let schedules = prop::collection::vec(arb_action(), 40..80);
    for _ in 0..200 {
        let actions = schedules.new_tree(&mut runner).unwrap().current();
        let mut world = World::new();
        for action in &actions {
            world.step(action);
        }
        world.heal();
        world.check_converged();
        total.conflicts += world.stats.conflicts;
        total.rejections += world.stats.rejections;
        total.gaps += world.stats.gaps;
        total.idempotent_replays += world.stats.idempotent_replays;
    }
    assert!(total.conflicts > 0, "{total:?}");
    assert!(total.rejections > 0, "{total:?}");
    assert!(total.gaps > 0, "{total:?}");
    assert!(total.idempotent_replays > 0, "{total:?}");
    eprintln!("simulation coverage over 200 schedules: {total:?}");
}
