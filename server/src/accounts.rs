//! Users and their tokens: generating and hashing tokens, the first start's
//! `owner`, and the in-memory [`Directory`] every request is authenticated
//! against.
//!
//! Users live in the store (`users`, migration 0004; SQL in
//! [`crate::store::accounts`]). A token is 256 random bits, shown once and
//! stored only as its SHA-256; authenticating hashes the presented token and
//! compares it with *every* active user's hash in constant time, so neither
//! the comparison nor the scan stops early. `server users add|revoke` may
//! change the table from another process while a server runs: the server
//! re-reads it every [`REFRESH_INTERVAL`] and publishes a new directory on a
//! watch channel, which also ends the SSE streams of revoked users.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{AppError, ErrorKind};
use crate::store::accounts::UserRow;
use crate::store::{self, Store, StoreError};

/// The admin a fresh store creates.
pub const OWNER_NAME: &str = "owner";
/// The first start's owner has this fixed id, so the sessions stored before
/// accounts existed (`SessionCreated` version 1) can name it.
pub const OWNER_USER_ID: Uuid = shared_domain::UserId::OWNER.0;
/// Where the owner's token is kept, in the data directory (mode 0600).
pub const OWNER_TOKEN_FILE: &str = "owner.token";
/// The login cookie `GET /?token=…` sets.
pub const COOKIE_NAME: &str = "sextant_token";
/// How often a running server re-reads `users` for changes made by
/// `server users …` in another process.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);
/// The `actor` recorded for commands of the server's query executor.
pub const EXECUTOR_ACTOR: &str = "server:query-executor";

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub admin: bool,
}

/// A new random token: 32 bytes from the operating system, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of a token, as stored (hex).
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a user name: 1 to 64 characters of letters, digits, `.`, `_`,
/// `-`, starting with a letter or digit (names appear in URLs and logs).
pub fn validate_name(name: &str) -> Result<(), AppError> {
    shared_domain::UserName::new(name)
        .map(drop)
        .map_err(|e| AppError::bad_request(e.to_string()))
}

/// Creates a user with a fresh id and token in `store`; returns the user
/// and its token, the only time the token exists in clear. A name taken by
/// an active user is a 409.
pub async fn add_user(store: &Store, name: &str, admin: bool) -> Result<(User, String), AppError> {
    add_user_with_id(store, Uuid::now_v7(), name, admin).await
}

async fn add_user_with_id(
    store: &Store,
    user_id: Uuid,
    name: &str,
    admin: bool,
) -> Result<(User, String), AppError> {
    validate_name(name)?;
    let token = new_token();
    let row = UserRow {
        user_id,
        name: name.to_owned(),
        admin,
        token_hash: hash_token(&token),
        created_at: store::format_timestamp(store::now()),
        revoked_at: None,
    };
    match store.insert_user(row).await {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => {
            return Err(AppError::new(
                ErrorKind::Conflict,
                format!("a user named {name:?} already exists"),
            ));
        }
        Err(e) => return Err(AppError::internal(format!("adding user {name:?}: {e}"))),
    }
    let user = User {
        id: user_id,
        name: name.to_owned(),
        admin,
    };
    tracing::info!(user_id = %user.id, name, admin, "user added");
    Ok((user, token))
}

/// Revokes the active user `name` in `store` (404 when there is none).
pub async fn revoke_user(store: &Store, name: &str) -> Result<Uuid, AppError> {
    let at = store::format_timestamp(store::now());
    let revoked = store
        .revoke_user(name.to_owned(), at)
        .await
        .map_err(|e| AppError::internal(format!("revoking user {name:?}: {e}")))?;
    let id =
        revoked.ok_or_else(|| AppError::not_found(format!("no active user named {name:?}")))?;
    tracing::info!(user_id = %id, name, "user revoked");
    Ok(id)
}

/// On a store without users, creates the admin `owner` and writes its token
/// to `DATA_DIR/owner.token` (0600). Later starts read the token back; when
/// the file is missing or no longer matches, the owner gets a new token
/// (same user, same sessions) written to the file. Returns the owner's
/// token, or `None` when the owner was revoked.
///
/// On PostgreSQL, where several nodes with data directories of their own
/// share the users, a node without the file does not rotate the owner's
/// token (that would sign out every other node's owner): it has no owner
/// token until `owner.token` is copied into its data directory.
pub async fn ensure_owner(store: &Store, data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(OWNER_TOKEN_FILE);
    let app = |e: AppError| anyhow::anyhow!("{}", e.detail);
    if store.user_count().await.map_err(app)? == 0 {
        let (_, token) = match add_user_with_id(store, OWNER_USER_ID, OWNER_NAME, true).await {
            Ok(added) => added,
            // Another node created the owner a moment ago.
            Err(e) if e.kind == ErrorKind::Conflict && matches!(store, Store::Postgres(_)) => {
                return Ok(read_token_file(&path));
            }
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        };
        write_token_file(&path, &token)?;
        tracing::info!(path = %path.display(), "created the admin user `owner`");
        return Ok(Some(token));
    }
    let Some(owner) = store.user_by_id(OWNER_USER_ID).await.map_err(app)? else {
        return Ok(None);
    };
    if owner.revoked_at.is_some() {
        tracing::warn!("the first admin `owner` was revoked; sign in with another user's token");
        return Ok(None);
    }
    let stored = std::fs::read_to_string(&path).ok();
    if let Some(token) = stored.as_deref().map(str::trim) {
        if hash_token(token)
            .as_bytes()
            .ct_eq(owner.token_hash.as_bytes())
            .into()
        {
            // Keep the mode right even if someone loosened it.
            set_private(&path)?;
            return Ok(Some(token.to_owned()));
        }
    }
    if matches!(store, Store::Postgres(_)) {
        tracing::warn!(
            path = %path.display(),
            "owner.token is missing or does not match the owner in the shared database: \
             copy it from the node that created the owner (or sign in with another admin's token)"
        );
        return Ok(None);
    }
    let token = new_token();
    store
        .replace_token_hash(OWNER_USER_ID, hash_token(&token))
        .await?;
    write_token_file(&path, &token)?;
    tracing::warn!(path = %path.display(), "owner.token was missing or stale: the owner has a new token");
    Ok(Some(token))
}

/// The token in `owner.token`, if the file exists.
fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|token| token.trim().to_owned())
}

fn write_token_file(path: &Path, token: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        writeln!(file, "{token}")?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    set_private(path)
}

fn set_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", path.display()))?;
    }
    Ok(())
}

struct Entry {
    user: User,
    hash: [u8; 64],
}

/// The active users as one request sees them.
#[derive(Default)]
pub struct Directory {
    entries: Vec<Entry>,
}

impl Directory {
    fn from_rows(rows: &[UserRow]) -> Self {
        let entries = rows
            .iter()
            .filter(|row| row.revoked_at.is_none())
            .filter_map(|row| {
                let hash: [u8; 64] = row.token_hash.as_bytes().try_into().ok()?;
                Some(Entry {
                    user: User {
                        id: row.user_id,
                        name: row.name.clone(),
                        admin: row.admin,
                    },
                    hash,
                })
            })
            .collect();
        Directory { entries }
    }

    /// The active user holding `token`, if any. Every entry is compared, in
    /// constant time, whatever matches.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let presented = hash_token(token);
        let presented = presented.as_bytes();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash[..].ct_eq(presented)) {
                found = Some(entry.user.clone());
            }
        }
        found
    }

    /// Whether `user_id` is an active user.
    pub fn is_active(&self, user_id: Uuid) -> bool {
        self.entries.iter().any(|e| e.user.id == user_id)
    }

    /// The active user called `name`.
    pub fn by_name(&self, name: &str) -> Option<&User> {
        self.entries
            .iter()
            .map(|e| &e.user)
            .find(|u| u.name == name)
    }

    /// The active user with this id.
    pub fn by_id(&self, user_id: Uuid) -> Option<&User> {
        self.entries
            .iter()
            .map(|e| &e.user)
            .find(|u| u.id == user_id)
    }

    /// Every active user, oldest first.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.entries.iter().map(|e| &e.user)
    }

    fn same_as(&self, other: &Directory) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.user == b.user && a.hash == b.hash)
    }
}

/// `ShareSession` names users; the domain resolves them here.
impl shared_domain::UserDirectory for Directory {
    fn user_id(&self, name: &shared_domain::UserName) -> Option<shared_domain::UserId> {
        self.by_name(name.as_str())
            .map(|user| shared_domain::UserId(user.id))
    }
}

/// The server's view of its users; cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    directory: watch::Sender<Arc<Directory>>,
}

impl Accounts {
    /// Creates the owner on a fresh store, loads the directory and starts
    /// following changes made by other processes. Returns the owner's token.
    pub async fn open(store: Store, data_dir: &Path) -> anyhow::Result<(Self, Option<String>)> {
        let owner_token = ensure_owner(&store, data_dir)
            .await
            .context("creating the owner")?;
        let accounts = Accounts {
            inner: Arc::new(Inner {
                store,
                directory: watch::channel(Arc::new(Directory::default())).0,
            }),
        };
        accounts
            .refresh()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let weak = Arc::downgrade(&accounts.inner);
        tokio::spawn(follow_changes(weak));
        Ok((accounts, owner_token))
    }

    /// The current directory.
    pub fn directory(&self) -> Arc<Directory> {
        self.inner.directory.borrow().clone()
    }

    /// A receiver that changes whenever users are added or revoked.
    pub fn watch(&self) -> watch::Receiver<Arc<Directory>> {
        self.inner.directory.subscribe()
    }

    /// The active user holding `token`.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        self.directory().authenticate(token)
    }

    /// Re-reads `users` and publishes the directory if it changed.
    pub async fn refresh(&self) -> Result<(), AppError> {
        refresh(&self.inner).await
    }

    /// Adds a user (admin API); the directory knows it before this returns.
    pub async fn add(&self, name: String, admin: bool) -> Result<(User, String), AppError> {
        let added = add_user(&self.inner.store, &name, admin).await?;
        self.refresh().await?;
        Ok(added)
    }

    /// Revokes a user (admin API); its token stops working before this returns.
    pub async fn revoke(&self, name: String) -> Result<Uuid, AppError> {
        let id = revoke_user(&self.inner.store, &name).await?;
        self.refresh().await?;
        Ok(id)
    }
}

async fn refresh(inner: &Inner) -> Result<(), AppError> {
    let rows = inner.store.active_users().await?;
    let next = Directory::from_rows(&rows);
    inner.directory.send_if_modified(|current| {
        if current.same_as(&next) {
            false
        } else {
            *current = Arc::new(next);
            true
        }
    });
    Ok(())
}

async fn follow_changes(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(error) = refresh(&inner).await {
            tracing::warn!(%error, "re-reading users failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_conn() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store::SqliteStore::open(&dir.path().join("s.sqlite3")).unwrap();
        (dir, store.into())
    }

    #[tokio::test]
    async fn tokens_are_long_random_and_stored_as_hashes() {
        let (_dir, conn) = store_conn();
        let (alice, token) = add_user(&conn, "alice", false).await.unwrap();
        assert!(token.len() >= 43, "{token}");
        assert_ne!(token, new_token());
        let rows = conn.all_users().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_ne!(rows[0].token_hash, token);
        let directory = Directory::from_rows(&rows);
        assert_eq!(directory.authenticate(&token), Some(alice));
        assert_eq!(directory.authenticate("nope"), None);
        assert_eq!(directory.authenticate(&token[..token.len() - 1]), None);
    }

    #[tokio::test]
    async fn names_are_unique_among_active_users_only() {
        let (_dir, conn) = store_conn();
        let (first, old_token) = add_user(&conn, "bob", false).await.unwrap();
        let taken = add_user(&conn, "bob", true).await.unwrap_err();
        assert_eq!(taken.kind, ErrorKind::Conflict);
        revoke_user(&conn, "bob").await.unwrap();
        let (second, new_token) = add_user(&conn, "bob", false).await.unwrap();
        assert_ne!(first.id, second.id, "a re-added name is a new user");
        let directory = Directory::from_rows(&conn.all_users().await.unwrap());
        assert_eq!(directory.authenticate(&old_token), None);
        assert_eq!(directory.authenticate(&new_token), Some(second));
        assert_eq!(
            revoke_user(&conn, "carol").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            add_user(&conn, "../x", false).await.unwrap_err().kind,
            ErrorKind::BadRequest
        );
    }

    #[tokio::test]
    async fn the_owner_keeps_its_token_across_starts() {
        let (dir, conn) = store_conn();
        let first = ensure_owner(&conn, dir.path()).await.unwrap().unwrap();
        let again = ensure_owner(&conn, dir.path()).await.unwrap().unwrap();
        assert_eq!(first, again);
        let path = dir.path().join(OWNER_TOKEN_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A lost file gives the same owner a new token.
        std::fs::remove_file(&path).unwrap();
        let rotated = ensure_owner(&conn, dir.path()).await.unwrap().unwrap();
        assert_ne!(rotated, first);
        let directory = Directory::from_rows(&conn.all_users().await.unwrap());
        let owner = directory.authenticate(&rotated).unwrap();
        assert_eq!((owner.id, owner.admin), (OWNER_USER_ID, true));
        assert_eq!(directory.authenticate(&first), None);
    }
}
