//! Ids minted in the browser: aggregate, command, query and error ids are
//! UUIDs chosen by the client, so work can start offline.
//!
//! Sessions, commands and queries get time-ordered ids (UUIDv7: the
//! millisecond clock, then random bits): the server's indexes on them then
//! grow at their end instead of at random places, which keeps each group
//! commit's write small (docs/BENCHMARKS.md). Error ids are plain random
//! (v4). Randomness comes from `crypto.getRandomValues`, which (unlike
//! `crypto.randomUUID`) also works outside secure contexts.

use uuid::Uuid;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    web_sys::window()
        .and_then(|window| window.crypto().ok())
        .and_then(|crypto| crypto.get_random_values_with_u8_array(&mut bytes).ok())
        .expect("the browser provides crypto.getRandomValues");
    bytes
}

/// A fresh random (v4) UUID.
pub fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(random_bytes()).into_uuid()
}

/// A fresh time-ordered (v7) UUID: ids minted later sort later.
pub fn time_ordered_uuid() -> Uuid {
    let millis = js_sys::Date::now() as u64;
    uuid::Builder::from_unix_timestamp_millis(millis, &random_bytes()).into_uuid()
}
