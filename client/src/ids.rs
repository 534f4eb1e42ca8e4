//! Ids minted in the browser: aggregate, command, query and error ids are
//! random UUIDs chosen by the client, so work can start offline.
//!
//! Randomness comes from `crypto.getRandomValues`, which (unlike
//! `crypto.randomUUID`) also works outside secure contexts.

use uuid::Uuid;

/// A fresh random (v4) UUID.
pub fn random_uuid() -> Uuid {
    let mut bytes = [0u8; 16];
    web_sys::window()
        .and_then(|window| window.crypto().ok())
        .and_then(|crypto| crypto.get_random_values_with_u8_array(&mut bytes).ok())
        .expect("the browser provides crypto.getRandomValues");
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}
