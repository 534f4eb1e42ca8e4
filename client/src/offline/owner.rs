//! Whose local data this page holds. IndexedDB, the outbox's broadcast
//! channel and its sender lock are per user: a second user signing in in
//! the same browser never sees the first one's sessions, and the first
//! one's pending commands are never sent under the second one's cookie.
//!
//! The user is asked from `GET /api/me` before the replica is restored and
//! remembered in `localStorage`, so an offline start opens the last user's
//! data. Every request that writes commands or fills the replica names the
//! user (`X-Sextant-User`, or `as_user=` on the feed, which cannot send
//! headers): the server refuses it with 401 when another user is signed in
//! (the cookie changed in another tab), and the commands stay pending.

use futures::future::{select, Either};
use gloo_net::http::Request;
use serde::Deserialize;
use shared_domain::UserId;
use uuid::Uuid;

/// The header that names the user a request is made for.
pub const USER_HEADER: &str = "X-Sextant-User";
/// Where the last signed-in user is remembered.
const REMEMBERED: &str = "sextant-user";
/// How long the start waits for `/api/me` before using the remembered user.
const ASK_TIMEOUT_MS: u32 = 2_000;

/// The names of one user's local data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNames {
    pub user: Option<Uuid>,
    pub database: String,
    pub channel: String,
    pub sender_lock: String,
}

impl LocalNames {
    /// The owner (and an unknown user: a first start offline) keeps the
    /// names from before accounts existed, so their pending work carries
    /// over; every other user gets their own.
    pub fn for_user(user: Option<Uuid>) -> Self {
        let suffix = match user {
            Some(id) if id != UserId::OWNER.0 => format!("-user-{id}"),
            _ => String::new(),
        };
        LocalNames {
            user,
            database: format!("sextant{suffix}"),
            channel: format!("sextant-outbox{suffix}"),
            sender_lock: format!("sextant-outbox-sender{suffix}"),
        }
    }
}

#[derive(Deserialize)]
struct Me {
    id: Uuid,
}

/// The signed-in user as the server says now: `Ok(Some)` signed in,
/// `Ok(None)` signed out (401), `Err` unreachable.
pub async fn signed_in_user() -> Result<Option<Uuid>, ()> {
    let response = Request::get("/api/me").send().await.map_err(|_| ())?;
    match response.status() {
        401 => Ok(None),
        200 => Ok(response.json::<Me>().await.ok().map(|me| me.id)),
        _ => Err(()),
    }
}

/// The user whose data this page opens: the signed-in one (remembered),
/// else the one remembered from the last start.
pub async fn resolve() -> Option<Uuid> {
    let asked = select(
        Box::pin(signed_in_user()),
        gloo_timers::future::TimeoutFuture::new(ASK_TIMEOUT_MS),
    )
    .await;
    if let Either::Left((Ok(Some(user)), _)) = asked {
        remember(user);
        return Some(user);
    }
    remembered()
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

pub fn remember(user: Uuid) {
    if let Some(storage) = storage() {
        let _ = storage.set_item(REMEMBERED, &user.to_string());
    }
}

fn remembered() -> Option<Uuid> {
    let raw = storage()?.get_item(REMEMBERED).ok()??;
    Uuid::parse_str(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_keeps_the_old_names_and_others_get_their_own() {
        let owner = LocalNames::for_user(Some(UserId::OWNER.0));
        assert_eq!(owner.database, "sextant");
        assert_eq!(
            owner,
            LocalNames {
                user: Some(UserId::OWNER.0),
                ..LocalNames::for_user(None)
            }
        );
        let bob = Uuid::from_u128(7);
        let names = LocalNames::for_user(Some(bob));
        assert_eq!(names.database, format!("sextant-user-{bob}"));
        assert_ne!(names.channel, owner.channel);
        assert_ne!(names.sender_lock, owner.sender_lock);
    }
}
