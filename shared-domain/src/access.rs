//! Who may do what to a session: users, roles and the authorization rules.
//!
//! The rules are decided here, beside the aggregate, so the browser refuses
//! optimistically what the server will refuse. A session has one owner (the
//! user who created it) and members it was shared with, each a viewer or an
//! editor:
//!
//! | command                                            | needs  |
//! |----------------------------------------------------|--------|
//! | reading the session, its events, results, downloads| viewer |
//! | rename, attach a dataset, submit, start, complete, fail, cancel | editor |
//! | close, share, unshare                              | owner  |
//!
//! Anyone signed in may create a session (and owns it). Someone who may not
//! read a session learns nothing about it: a command on it is refused as if
//! it did not exist ([`crate::SessionError::NotFound`]); a reader who may not
//! change it gets [`crate::SessionError::Forbidden`]. Admins manage users;
//! being one grants nothing here.
//!
//! The actor always comes from the credentials the shell verified, never
//! from the command envelope.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::ValueError;

/// A user's stable id. A user re-added under an old name gets a new id and
/// inherits nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// The admin `owner` a fresh server creates; sessions stored before
    /// accounts existed belong to it.
    pub const OWNER: UserId = UserId(Uuid::from_u128(1));
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user name: 1 to 64 letters, digits, `.`, `_` or `-`, starting with a
/// letter or digit (names appear in URLs, logs and share dialogs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    /// The longest name accepted.
    pub const MAX_CHARS: usize = 64;

    /// Checks the characters and the length.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValueError> {
        let raw = raw.into();
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if first_ok && rest_ok && raw.len() <= Self::MAX_CHARS {
            Ok(Self(raw))
        } else {
            Err(ValueError::InvalidUserName(
                raw.chars().take(Self::MAX_CHARS + 16).collect(),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, ValueError> {
        Self::new(raw)
    }
}

impl From<UserName> for String {
    fn from(name: UserName) -> String {
        name.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may do with a session; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the session, its history and results.
    Viewer,
    /// Also renames, attaches datasets, submits, re-runs and cancels queries.
    Editor,
    /// Also closes, shares and unshares. Only the creator; not transferable.
    Owner,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        })
    }
}

/// A user a session is shared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub name: UserName,
    pub role: Role,
}

/// Who issues a command, as the shell established it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in user: the access rules apply.
    User(UserId),
    /// The server itself (its query executor), replays and single-user
    /// callers: no access rules; a session it creates belongs to
    /// [`UserId::OWNER`].
    System,
}

/// Finds active users by name, for `ShareSession`. The server answers from
/// its user directory; a client that does not know the name answers `None`
/// and leaves the decision to the server.
pub trait UserDirectory {
    /// The id of the active user called `name`.
    fn user_id(&self, name: &UserName) -> Option<UserId>;
}

/// Knows no user.
impl UserDirectory for () {
    fn user_id(&self, _: &UserName) -> Option<UserId> {
        None
    }
}

impl<F: Fn(&UserName) -> Option<UserId>> UserDirectory for F {
    fn user_id(&self, name: &UserName) -> Option<UserId> {
        self(name)
    }
}

/// What a decision needs to know beyond the session and the command.
#[derive(Clone, Copy)]
pub struct AccessContext<'a> {
    pub actor: Actor,
    pub users: &'a dyn UserDirectory,
}

impl AccessContext<'static> {
    /// The system actor with no user directory.
    pub fn system() -> Self {
        AccessContext {
            actor: Actor::System,
            users: &(),
        }
    }

    /// A user with no user directory (enough for everything but sharing).
    pub fn user(user: UserId) -> Self {
        AccessContext {
            actor: Actor::User(user),
            users: &(),
        }
    }
}

impl fmt::Debug for AccessContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessContext")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}
