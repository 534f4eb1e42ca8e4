//! Offline-first plumbing around the pure sync core: durable local storage
//! (IndexedDB), the HTTP calls to the sync server, the Web Locks that say
//! which local queries a live tab runs, and the engine that ties them to
//! the replica and the UI.

pub mod engine;
pub mod local_runs;
pub mod net;
pub mod owner;
pub mod storage;
