//! The sync protocol with several users: an owner who shares, re-shares
//! and unshares sessions, and a second user (bob) whose replica edits them,
//! often offline, against an in-memory authority that decides as the
//! server does (the decision context with the actor, access before the
//! version, a per-user feed, 404 for what the reader may not see).
//!
//! Properties: each of bob's commands is applied once or reported rejected
//! once; a rejection for a session bob lost access to says so in words
//! ("not shared with you"), a too weak role says "may not"; none of bob's
//! commands is ever applied unless bob was an editor (or the owner) when
//! the authority decided it. Seeded authority bugs show the properties can
//! fail. `SEXTANT_SIM_SCHEDULES=N` runs more schedules.

use std::collections::{BTreeMap, HashMap};

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use super::base::{check_base, Head};
use super::{ConflictStep, Received, Replica, Source};
use crate::access::{Actor, Role, UserId, UserName};
use crate::aggregate::Aggregate;
use crate::decision::{authorize, decide, DecisionContext, Issuer, Refusal};
use crate::envelope::{CommandEnvelope, EventEnvelope, EventMetadata};
use crate::session::{QuerySession, SessionCommand, SessionEvent};
use crate::values::SessionTitle;

const OWNER: UserId = UserId::OWNER;
const BOB: UserId = UserId(Uuid::from_u128(2));
const SESSIONS: [Uuid; 2] = [Uuid::from_u128(0xB000), Uuid::from_u128(0xB001)];

/// Deliberate authority bugs, to show the properties catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Faults {
    /// Decides as the system actor: access is never checked.
    ignore_actor: bool,
    /// Checks the version before access: a replica that lost access gets
    /// 409, its catch-up 404, and its command is never settled.
    version_before_access: bool,
    /// Answers 404 with the domain's bare words, not what happened.
    vague_not_found: bool,
}

enum Answer {
    Ok(Vec<EventEnvelope>),
    Conflict(u64, Option<Uuid>),
    /// The status (the answer table's input) and the problem's detail.
    Refused(#[allow(dead_code)] u16, String),
}

#[derive(Default)]
struct Authority {
    log: Vec<EventEnvelope>,
    sessions: BTreeMap<Uuid, QuerySession>,
    heads: BTreeMap<Uuid, Uuid>,
    /// command id -> who sent it and the events it produced.
    processed: HashMap<Uuid, (UserId, Vec<EventEnvelope>)>,
    /// bob's feed: the events bob may see, in global order.
    bob_feed: Vec<EventEnvelope>,
    /// bob's role when each of bob's applied commands was decided.
    bob_roles: Vec<Option<Role>>,
    faults: Faults,
}

fn user_named(name: &UserName) -> Option<UserId> {
    match name.as_str() {
        "owner" => Some(OWNER),
        "bob" => Some(BOB),
        _ => None,
    }
}

impl Authority {
    fn handle(&mut self, sender: UserId, envelope: &CommandEnvelope<SessionCommand>) -> Answer {
        if let Some((who, events)) = self.processed.get(&envelope.command_id) {
            return if *who == sender {
                Answer::Ok(events.clone())
            } else {
                Answer::Refused(422, "command id reused".into())
            };
        }
        let id = envelope.aggregate_id;
        let session = self.sessions.get(&id).cloned().unwrap_or_default();
        let actor = if self.faults.ignore_actor {
            Actor::System
        } else {
            Actor::User(sender)
        };
        let mut context = DecisionContext::new(Issuer::Client, actor, id);
        if let SessionCommand::ShareSession { user, .. } = &envelope.command {
            context.share_target = user_named(user);
        }
        let access = authorize(&session, &envelope.command, &context);
        if !self.faults.version_before_access {
            if let Err(refusal) = access.clone() {
                return self.refused(refusal, id);
            }
        }
        let head = Head {
            version: session.version(),
            last_command: self.heads.get(&id).copied(),
        };
        if let Err(conflict) = check_base(envelope.expected_version, envelope.base_command, head) {
            return Answer::Conflict(conflict.current_version, head.last_command);
        }
        if let Err(refusal) = access {
            return self.refused(refusal, id);
        }
        let events = match decide(&session, &envelope.command, &context) {
            Ok(events) => events,
            Err(refusal) => return self.refused(refusal, id),
        };
        if sender == BOB {
            self.bob_roles.push(session.role_of(BOB));
        }
        let stored = self.append(id, envelope.command_id, &events);
        self.processed
            .insert(envelope.command_id, (sender, stored.clone()));
        Answer::Ok(stored)
    }

    fn refused(&self, refusal: Refusal, id: Uuid) -> Answer {
        if refusal.is_not_found() {
            let detail = if self.faults.vague_not_found {
                "not found".to_owned()
            } else {
                // The server's words (`server::error::not_readable`).
                format!("session {id} does not exist or is not shared with you")
            };
            Answer::Refused(404, detail)
        } else if refusal.is_forbidden() {
            Answer::Refused(403, refusal.to_string())
        } else {
            Answer::Refused(422, refusal.to_string())
        }
    }

    fn append(
        &mut self,
        id: Uuid,
        command_id: Uuid,
        events: &[SessionEvent],
    ) -> Vec<EventEnvelope> {
        let session = self.sessions.entry(id).or_default();
        let mut stored = Vec::new();
        for event in events {
            let sequence = session.version() + 1;
            let mut envelope = EventEnvelope::new::<QuerySession>(
                Uuid::from_u128(0xE000_0000 + self.log.len() as u128),
                id,
                sequence,
                event,
                EventMetadata {
                    command_id,
                    ..EventMetadata::default()
                },
                Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            );
            envelope.global_sequence = self.log.len() as u64 + 1;
            session.apply(event);
            // bob's feed: events of sessions bob may read, and the share
            // events naming bob (as the server's per-user feed).
            if event.member_changed() == Some(BOB) || session.can_read(BOB) {
                self.bob_feed.push(envelope.clone());
            }
            self.log.push(envelope.clone());
            stored.push(envelope);
        }
        if !events.is_empty() {
            self.heads.insert(id, command_id);
        }
        stored
    }

    /// `GET …/events?after_version=N` as `reader`: 404 unless readable.
    fn fetch(&self, reader: UserId, id: Uuid, after: u64) -> Option<Vec<EventEnvelope>> {
        let session = self.sessions.get(&id)?;
        session.can_read(reader).then(|| {
            self.log
                .iter()
                .filter(|e| e.aggregate_id == id && e.aggregate_sequence > after)
                .cloned()
                .collect()
        })
    }

    fn owner(&mut self, id: Uuid, command: SessionCommand, command_id: Uuid) {
        let session = self.sessions.get(&id).cloned().unwrap_or_default();
        let envelope = CommandEnvelope {
            command_id,
            aggregate_type: QuerySession::TYPE.to_owned(),
            aggregate_id: id,
            expected_version: session.version(),
            base_command: self.heads.get(&id).copied(),
            command,
        };
        let _ = self.handle(OWNER, &envelope);
    }
}

/// bob's browser.
#[derive(Default)]
struct Bob {
    replica: Replica<QuerySession>,
    feed_position: usize,
    made: Vec<Uuid>,
    /// command id -> how often reported rejected, and the last reason.
    rejected: HashMap<Uuid, (usize, String)>,
    refused_here: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    applied: usize,
    rejected_not_shared: usize,
    rejected_role: usize,
    refused_here: usize,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn title(text: String) -> SessionTitle {
    SessionTitle::new(text).unwrap()
}

impl Bob {
    fn record(&mut self, rejections: Vec<super::Rejection<SessionCommand>>) {
        for rejection in rejections {
            let entry = self
                .rejected
                .entry(rejection.pending.command_id)
                .or_insert((0, String::new()));
            entry.0 += 1;
            entry.1 = rejection.reason;
        }
    }

    fn catch_up(&mut self, authority: &Authority, id: Uuid) {
        let from = self.replica.fetch_from(id);
        if let Some(events) = authority.fetch(BOB, id, from) {
            for event in &events {
                self.replica.receive(event, Source::Fetch).unwrap();
            }
        }
    }

    fn read_feed(&mut self, authority: &Authority, count: usize) {
        for _ in 0..count {
            let Some(event) = authority.bob_feed.get(self.feed_position).cloned() else {
                return;
            };
            self.feed_position += 1;
            match self.replica.receive(&event, Source::Feed).unwrap() {
                Received::Gap { aggregate_id, .. } => self.catch_up(authority, aggregate_id),
                Received::Diverged => panic!("one store: nothing diverges"),
                Received::Applied | Received::Duplicate => {}
            }
        }
    }

    fn rename(&mut self, id: Uuid, text: String, next_id: &mut u128) {
        let view = self.replica.view(id);
        if view.version() == 0 {
            return;
        }
        let command = SessionCommand::RenameSession { title: title(text) };
        // The browser applies the access rules first, on confirmed sessions.
        if self.replica.confirmed(id).is_some_and(|c| c.version() > 0) {
            let context = DecisionContext::new(Issuer::Client, Actor::User(BOB), id);
            if authorize(&view, &command, &context).is_err() {
                self.refused_here += 1;
                return;
            }
        }
        *next_id += 1;
        let command_id = Uuid::from_u128(0xC000_0000 + *next_id);
        if self.replica.submit(command_id, id, command).is_ok() {
            self.made.push(command_id);
        }
    }

    /// Sends the first pending command and settles its answer.
    fn send(&mut self, authority: &mut Authority) {
        let Some(pending) = self.replica.outbox().front().cloned() else {
            return;
        };
        let envelope = pending.envelope::<QuerySession>();
        match authority.handle(BOB, &envelope) {
            Answer::Ok(events) => {
                let outcomes = self.replica.accepted(&envelope, &events).unwrap();
                for outcome in outcomes {
                    if let Received::Gap { aggregate_id, .. } = outcome {
                        self.catch_up(authority, aggregate_id);
                    }
                }
            }
            Answer::Conflict(current, command) => {
                match self.replica.conflict(&envelope, Some(current), command) {
                    ConflictStep::CatchUp { aggregate_id, .. } => {
                        self.catch_up(authority, aggregate_id);
                        let rejections = self.replica.rebase(aggregate_id);
                        self.record(rejections);
                    }
                    ConflictStep::Stale => {}
                    ConflictStep::Reset => panic!("one store that never loses events"),
                }
            }
            Answer::Refused(_, reason) => {
                let rejections = self.replica.rejected(&envelope, reason);
                self.record(rejections);
            }
        }
    }
}

fn run(seed: u64, steps: usize, faults: Faults) -> Result<Stats, String> {
    let mut rng = Rng(seed.max(1));
    let mut authority = Authority {
        faults,
        ..Authority::default()
    };
    let mut bob = Bob::default();
    let mut next_id = 0u128;
    let bob_name = UserName::new("bob").unwrap();
    for (n, id) in SESSIONS.iter().enumerate() {
        next_id += 1;
        authority.owner(
            *id,
            SessionCommand::CreateSession {
                title: title(format!("session {n}")),
            },
            Uuid::from_u128(0xD000_0000 + next_id),
        );
    }
    for step in 0..steps {
        let id = SESSIONS[rng.below(2) as usize];
        next_id += 1;
        let owner_command_id = Uuid::from_u128(0xD000_0000 + next_id);
        match rng.below(10) {
            0 => authority.owner(
                id,
                SessionCommand::ShareSession {
                    user: bob_name.clone(),
                    role: if rng.below(3) == 0 {
                        Role::Viewer
                    } else {
                        Role::Editor
                    },
                },
                owner_command_id,
            ),
            1 => authority.owner(
                id,
                SessionCommand::UnshareSession {
                    user: bob_name.clone(),
                },
                owner_command_id,
            ),
            2 => authority.owner(
                id,
                SessionCommand::RenameSession {
                    title: title(format!("owner {step}")),
                },
                owner_command_id,
            ),
            3..=5 => bob.rename(id, format!("bob {step}"), &mut next_id),
            6 | 7 => bob.send(&mut authority),
            _ => {
                let count = rng.below(4) as usize;
                bob.read_feed(&authority, count);
            }
        }
    }
    // Online for good: everything pending is answered.
    for _ in 0..10 * steps + 100 {
        bob.read_feed(&authority, usize::MAX);
        if bob.replica.outbox().is_empty() {
            break;
        }
        bob.send(&mut authority);
    }
    check(&authority, &bob)
}

fn check(authority: &Authority, bob: &Bob) -> Result<Stats, String> {
    let mut stats = Stats {
        refused_here: bob.refused_here,
        ..Stats::default()
    };
    for command_id in &bob.made {
        let applied = authority.processed.contains_key(command_id);
        let rejected = bob.rejected.get(command_id);
        match (applied, rejected) {
            (true, None) => stats.applied += 1,
            (false, Some((1, reason))) => {
                if reason.contains("not shared with you") {
                    stats.rejected_not_shared += 1;
                } else if reason.contains("may not") {
                    stats.rejected_role += 1;
                } else {
                    return Err(format!(
                        "command {command_id} rejected without saying why: {reason:?}"
                    ));
                }
            }
            (false, Some((count, _))) => {
                return Err(format!(
                    "command {command_id} reported rejected {count} times"
                ))
            }
            (true, Some(_)) => return Err(format!("command {command_id} applied and rejected")),
            (false, None) => {
                return Err(format!("command {command_id} neither applied nor rejected"))
            }
        }
    }
    if let Some(role) = authority
        .bob_roles
        .iter()
        .find(|role| !role.is_some_and(|r| r >= Role::Editor))
    {
        return Err(format!(
            "a command of bob's was applied while bob was {role:?}"
        ));
    }
    Ok(stats)
}

fn schedules() -> u64 {
    std::env::var("SEXTANT_SIM_SCHEDULES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

#[test]
fn shares_revoked_while_bob_is_offline_reject_his_edits_once_and_say_why() {
    let mut total = Stats::default();
    for seed in 1..=schedules() {
        let stats = run(seed, 60, Faults::default())
            .unwrap_or_else(|error| panic!("schedule {seed}: {error}"));
        total.applied += stats.applied;
        total.rejected_not_shared += stats.rejected_not_shared;
        total.rejected_role += stats.rejected_role;
        total.refused_here += stats.refused_here;
    }
    println!("multi-user simulation: {total:?}");
    // The schedules reach every path the properties are about.
    assert!(total.applied > 0, "{total:?}");
    assert!(total.rejected_not_shared > 0, "{total:?}");
    assert!(total.rejected_role > 0, "{total:?}");
    assert!(total.refused_here > 0, "{total:?}");
}

#[test]
fn the_properties_catch_each_seeded_authority_bug() {
    let bugs = [
        Faults {
            ignore_actor: true,
            ..Faults::default()
        },
        Faults {
            version_before_access: true,
            ..Faults::default()
        },
        Faults {
            vague_not_found: true,
            ..Faults::default()
        },
    ];
    for faults in bugs {
        let caught = (1..=300).any(|seed| run(seed, 60, faults).is_err());
        assert!(caught, "{faults:?} survived 300 schedules");
    }
    // And a replica that reports a rejection twice.
    let twice = Some(super::mutants::Mutant::RejectionReportedTwice);
    let caught = super::mutants::with(twice, || {
        (1..=300).any(|seed| {
            std::panic::catch_unwind(|| run(seed, 60, Faults::default()))
                .map_or(true, |outcome| outcome.is_err())
        })
    });
    assert!(caught, "a rejection reported twice survived");
}
