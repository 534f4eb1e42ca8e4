//! # shared-domain: Sextant's pure core
//!
//! The event-sourced aggregates of Sextant, the wire types its server and
//! browser client exchange, and the upcasters that keep old events readable.
//!
//! Everything here is synchronous and free of I/O: no clock, no random
//! numbers, no network, no storage. The same code compiles to
//! `wasm32-unknown-unknown` for the browser's optimistic UI and to native for
//! the server, which is the authority. Ids and timestamps a decision needs
//! come in through commands; the shells (server, client) generate them.
//!
//! ## A session in five lines
//!
//! ```
//! use shared_domain::{Aggregate, QuerySession, SessionCommand, SessionTitle};
//!
//! let session = QuerySession::default();
//! let create = SessionCommand::CreateSession { title: SessionTitle::new("Revenue").unwrap() };
//! let (session, events) = session.execute(&create).unwrap();
//! assert_eq!(session.version(), 1);
//! assert_eq!(events.len(), 1);
//! ```
//!
//! ## Wire format
//!
//! Commands travel in a [`CommandEnvelope`] (with a `command_id` that makes
//! resends idempotent and the `expected_version` used for optimistic
//! locking); events are stored and streamed in an [`EventEnvelope`], whose
//! literal JSON is shown in its documentation. Versions count from 0: a new
//! aggregate is at version 0, its first event has `aggregate_sequence` 1.
//!
//! See `examples/replay.rs` for replaying a JSON event log into an aggregate.

pub mod access;
pub mod aggregate;
pub mod decision;
pub mod envelope;
pub mod session;
pub mod sync;
pub mod testing;
pub mod timeline;
pub mod upcast;
pub mod values;

pub use access::{AccessContext, Actor, Member, Role, UserDirectory, UserId, UserName};
pub use aggregate::{Aggregate, DomainEvent};
pub use envelope::{CommandEnvelope, EventEnvelope, EventMetadata};
pub use session::{
    ChartAggregate, ChartSettings, Lifecycle, QueryRecord, QuerySession, QueryState,
    SessionCommand, SessionError, SessionEvent,
};
pub use upcast::{UpcastError, Upcaster};
pub use values::{
    Column, DatasetName, DatasetRef, DatasetUrl, Engine, ErrorId, LocalFileName, QueryId,
    SessionTitle, SqlQuery, ValueError,
};
