//! The `Aggregate` trait: a pure, synchronous decision function plus a fold.
//!
//! An aggregate never reads a clock, a random number generator or any I/O:
//! whatever a decision needs (ids, timestamps) arrives inside the command.
//! That is what lets the browser and the server run the very same code and
//! agree on the outcome.

use std::fmt::Debug;

use serde::{de::DeserializeOwned, Serialize};

use crate::upcast::Upcaster;

/// An event of an aggregate that knows its own schema name and version.
///
/// `event_type` is the stable name stored beside the payload;
/// `event_version` is the current schema version of that payload (starting
/// at 1). Older stored versions are migrated by [`crate::upcast`] before
/// they are deserialized.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Debug + PartialEq {
    /// The stable name of this event, equal to its JSON `type` tag.
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event's payload.
    fn event_version(&self) -> u32 {
        Self::current_version(self.event_type()).unwrap_or(1)
    }

    /// The current schema version of the event named `event_type`, or `None`
    /// when this code does not know that event type at all.
    fn current_version(event_type: &str) -> Option<u32>;
}

/// An event-sourced aggregate: `handle` decides, `apply` evolves.
///
/// Rules every implementation keeps:
/// - `handle` is pure: it reads `self` and the command, never mutates, and
///   returns the events to append (possibly none) or a typed error;
/// - `apply` never fails: events are facts that already happened;
/// - `version()` is the number of events applied so far. A new aggregate is
///   at version 0, its first event has aggregate sequence 1.
pub trait Aggregate: Default + Clone + Debug {
    /// The aggregate type name stored with every event (`"QuerySession"`).
    const TYPE: &'static str;

    /// What a caller asks for.
    type Command: Serialize + DeserializeOwned + Clone + Debug + PartialEq;
    /// What happened.
    type Event: DomainEvent;
    /// Why a command was refused. Plain, comparable kinds: no ids, no backtraces.
    type Error: std::error::Error + Clone + PartialEq + Eq;

    /// Decide: the events this command produces in the current state.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolve: fold one event into the state. Must increment `version()` by one.
    fn apply(&mut self, event: &Self::Event);

    /// The number of events applied so far (the aggregate sequence of the last one).
    fn version(&self) -> u64;

    /// The chain that migrates this aggregate's stored payloads to the
    /// current event versions. None by default.
    fn upcaster() -> Upcaster {
        Upcaster::new()
    }

    /// Rebuild an aggregate by replaying its events from the start.
    fn from_events<'a, I>(events: I) -> Self
    where
        I: IntoIterator<Item = &'a Self::Event>,
        Self::Event: 'a,
    {
        let mut aggregate = Self::default();
        for event in events {
            aggregate.apply(event);
        }
        aggregate
    }

    /// Decide and, on success, apply the resulting events to a copy of `self`.
    /// A convenience for optimistic UIs and tests.
    fn execute(&self, command: &Self::Command) -> Result<(Self, Vec<Self::Event>), Self::Error> {
        let events = self.handle(command)?;
        let mut next = self.clone();
        for event in &events {
            next.apply(event);
        }
        Ok((next, events))
    }
}
