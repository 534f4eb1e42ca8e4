//! Offline-first plumbing around the pure sync core: durable local storage
//! (IndexedDB), the HTTP calls to the sync server, and the engine that ties
//! them to the replica and the UI.

pub mod engine;
pub mod net;
pub mod owner;
pub mod storage;
