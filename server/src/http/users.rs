//! The admin API and `GET /api/me`: who is signed in, adding and revoking
//! users. Admins manage users; being an admin grants nothing on sessions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Authenticated;
use super::extract::{JsonBody, PathParams};
use crate::accounts::User;
use crate::error::{AppError, ErrorKind};
use crate::state::AppState;

/// `GET /api/me`: the signed-in user.
pub async fn me(Authenticated(user): Authenticated) -> Json<User> {
    Json(user)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
}

fn require_admin(user: &User) -> Result<(), AppError> {
    if user.admin {
        Ok(())
    } else {
        Err(AppError::new(
            ErrorKind::Forbidden,
            "only admins manage users",
        ))
    }
}

/// `POST /api/users {"name": "bob"}` → 201 `{"name": "bob", "token": "…"}`.
pub async fn add_user(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    JsonBody(new): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    require_admin(&caller)?;
    let (user, token) = state.accounts().add(new.name, new.admin).await?;
    tracing::info!(by = %caller.name, name = %user.name, "user added over the API");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": user.name, "id": user.id, "admin": user.admin, "token": token })),
    ))
}

/// `GET /api/users`: the active users (names and ids; any signed-in user,
/// so the share dialog can offer names).
pub async fn list_users(
    State(state): State<AppState>,
    Authenticated(_): Authenticated,
) -> Json<Value> {
    let directory = state.accounts().directory();
    let users: Vec<&User> = directory.users().collect();
    Json(json!({ "users": users }))
}

/// `DELETE /api/users/{name}`: revokes; its token stops working at once.
pub async fn revoke_user(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, AppError> {
    require_admin(&caller)?;
    state.accounts().revoke(name).await?;
    Ok(StatusCode::NO_CONTENT)
}
