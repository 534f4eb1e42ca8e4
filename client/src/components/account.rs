//! Who is signed in, and sharing: the account badge in the top bar, the
//! members panel of a session (its members, and a share form for its
//! owner), and the role checks that hide what the signed-in user may not
//! do. The rules themselves are `shared_domain::access`, the same code the
//! server runs.

use gloo_net::http::Request;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::Deserialize;
use shared_domain::{
    Aggregate, CommandEnvelope, Lifecycle, QuerySession, Role, SessionCommand, UserId, UserName,
};
use uuid::Uuid;

use crate::offline::engine::engine;

/// The signed-in user, as `GET /api/me` answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Me {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

/// The account state every view can read.
#[derive(Clone, Copy)]
pub struct Account {
    pub me: RwSignal<Option<Me>>,
    /// The server answered 401: the token was revoked or the cookie is gone.
    pub signed_out: RwSignal<bool>,
}

impl Account {
    /// Asks the server who is signed in (offline: unknown until it answers).
    pub fn start() -> Self {
        let account = Account {
            me: RwSignal::new(None),
            signed_out: RwSignal::new(false),
        };
        spawn_local(async move {
            match Request::get("/api/me").send().await {
                Ok(response) if response.status() == 401 => account.signed_out.set(true),
                Ok(response) if response.ok() => {
                    if let Ok(me) = response.json::<Me>().await {
                        account.me.set(Some(me));
                    }
                }
                _ => {}
            }
        });
        account
    }
}

fn account() -> Account {
    expect_context::<Account>()
}

/// Whether the server's view of the session decides what is shown: the
/// user is known and the server confirmed the session. A session created
/// here and not confirmed yet is the user's own (this browser decided it
/// optimistically as the system actor, so its owner is not the user yet).
fn judged(session_id: Uuid) -> Option<UserId> {
    let me = account().me.get()?;
    engine().is_confirmed(session_id).then_some(UserId(me.id))
}

/// Whether the signed-in user may issue `command` on the session. While
/// the user is unknown (offline start), everything is shown and the server
/// decides.
pub fn allowed(session_id: Uuid, session: &QuerySession, command: &SessionCommand) -> bool {
    match judged(session_id) {
        Some(me) => session.lifecycle == Lifecycle::NotCreated || session.allows(me, command),
        None => true,
    }
}

/// Whether the signed-in user may read the session (an unshared session
/// leaves the views).
pub fn readable(session_id: Uuid, session: &QuerySession) -> bool {
    match judged(session_id) {
        Some(me) => session.can_read(me),
        None => true,
    }
}

/// "Signed in as …", or the request to sign in again after a 401 (pending
/// work stays in the outbox and goes out once signed in).
#[component]
pub fn AccountBadge() -> impl IntoView {
    let account = account();
    view! {
        <Show
            when=move || !(account.signed_out.get() || engine().signed_out())
            fallback=|| {
                view! {
                    <span class="badge warn" data-testid="sign-in-required">
                        "Signed out: open your sign-in link again (your pending changes are kept)"
                    </span>
                }
            }
        >
            <span class="badge muted" data-testid="signed-in-user">
                {move || account.me.get().map(|me| me.name).unwrap_or_default()}
            </span>
        </Show>
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Editor => "editor",
        Role::Owner => "owner",
    }
}

/// Sends a sharing command straight to the server (not through the outbox:
/// only the server knows the user names) and reports a refusal.
async fn send_now(session_id: Uuid, command: SessionCommand) {
    let version = engine().view_untracked(session_id).version();
    let envelope = CommandEnvelope {
        command_id: crate::ids::random_uuid(),
        aggregate_type: QuerySession::TYPE.to_owned(),
        aggregate_id: session_id,
        expected_version: version,
        // A direct send, decided on the version alone (no outbox base).
        base_command: None,
        command,
    }
    .to_json();
    let sent = Request::post("/api/commands")
        .header("content-type", "application/json")
        .body(serde_json::to_string(&envelope).unwrap_or_default());
    let answer = match sent {
        Ok(request) => request.send().await,
        Err(error) => {
            engine().report_input(error.to_string());
            return;
        }
    };
    match answer {
        Ok(response) if response.ok() => {}
        Ok(response) => {
            let problem: serde_json::Value = response.json().await.unwrap_or_default();
            let detail = problem["detail"].as_str().unwrap_or("refused").to_owned();
            engine().report_input(format!("sharing failed: {detail}"));
        }
        Err(error) => engine().report_input(format!("sharing failed: {error}")),
    }
}

/// The members of a session and, for its owner, the share form.
#[component]
pub fn MembersPanel(session_id: Uuid) -> impl IntoView {
    let session = move || engine().view(session_id);
    let user = RwSignal::new(String::new());
    let role = RwSignal::new(String::from("viewer"));
    let may_share = move || {
        allowed(
            session_id,
            &session(),
            &SessionCommand::UnshareSession {
                user: UserName::new("x").expect("a valid name"),
            },
        ) && account().me.get().is_some()
    };
    let on_share = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = match UserName::new(user.get_untracked().trim()) {
            Ok(name) => name,
            Err(error) => {
                engine().report_input(error.to_string());
                return;
            }
        };
        let role = if role.get_untracked() == "editor" {
            Role::Editor
        } else {
            Role::Viewer
        };
        user.set(String::new());
        spawn_local(send_now(
            session_id,
            SessionCommand::ShareSession { user: name, role },
        ));
    };
    let my_role = move || {
        account()
            .me
            .get()
            .and_then(|me| session().role_of(UserId(me.id)))
            .map(role_name)
            .unwrap_or("")
    };
    view! {
        <section class="card members" data-testid="members">
            <h2>"Members"</h2>
            <p class="muted small" data-testid="my-role">{my_role}</p>
            <ul>
                {move || {
                    session()
                        .members
                        .into_iter()
                        .map(|member| {
                            let name = member.name.clone();
                            view! {
                                <li data-testid="member">
                                    <span data-testid="member-name">{member.name.to_string()}</span>
                                    " "
                                    <span class="muted" data-testid="member-role">
                                        {role_name(member.role)}
                                    </span>
                                    <Show when=may_share>
                                        {
                                            let name = name.clone();
                                            view! {
                                                <button
                                                    class="ghost small"
                                                    data-testid="unshare"
                                                    on:click=move |_| {
                                                        spawn_local(send_now(
                                                            session_id,
                                                            SessionCommand::UnshareSession {
                                                                user: name.clone(),
                                                            },
                                                        ));
                                                    }
                                                >
                                                    "Remove"
                                                </button>
                                            }
                                        }
                                    </Show>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
            <Show when=may_share>
                <form class="row share" on:submit=on_share>
                    <input
                        type="text"
                        data-testid="share-user-input"
                        placeholder="User name"
                        aria-label="User to share with"
                        bind:value=user
                    />
                    <select
                        data-testid="share-role"
                        aria-label="Role"
                        prop:value=move || role.get()
                        on:change=move |ev| role.set(event_target_value(&ev))
                    >
                        <option value="viewer">"viewer"</option>
                        <option value="editor">"editor"</option>
                    </select>
                    <button type="submit" class="ghost" data-testid="share-session">
                        "Share"
                    </button>
                </form>
            </Show>
        </section>
    }
}
