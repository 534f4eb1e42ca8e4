//! The sessions list: create a session, and rename, open or close any
//! session this browser knows (live: other clients' changes arrive on the
//! feed), most recently changed first with each one's last activity, and a
//! search over titles and SQL (the decisions are in `crate::listing`).

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{Aggregate, Lifecycle, QuerySession, SessionCommand, SessionTitle};
use uuid::Uuid;

use crate::ids::time_ordered_uuid;
use crate::listing;
use crate::offline::engine::engine;
use crate::route::{Route, Router};

/// The name a lifecycle shows as.
pub fn lifecycle_name(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::NotCreated => "not created",
        Lifecycle::Open => "open",
        Lifecycle::Closed => "closed",
    }
}

pub fn title_of(session: &QuerySession) -> String {
    session
        .title
        .as_ref()
        .map_or_else(|| "(untitled)".to_owned(), |t| t.as_str().to_owned())
}

/// Validates `raw` and renames `session_id`; problems are reported with an error id.
pub fn rename(session_id: Uuid, raw: &str) -> bool {
    match SessionTitle::new(raw) {
        Ok(title) => engine()
            .submit(session_id, SessionCommand::RenameSession { title })
            .is_some(),
        Err(error) => {
            engine().report_input(error.to_string());
            false
        }
    }
}

/// When each session last changed (shared by the rows).
#[derive(Clone, Copy)]
struct ActivityTimes(RwSignal<HashMap<Uuid, DateTime<Utc>>>);

#[component]
pub fn SessionsPage() -> impl IntoView {
    let router = expect_context::<Router>();
    let title = RwSignal::new(String::new());
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match SessionTitle::new(title.get_untracked()) {
            Ok(valid) => {
                let id = time_ordered_uuid();
                if engine()
                    .submit(id, SessionCommand::CreateSession { title: valid })
                    .is_some()
                {
                    title.set(String::new());
                    router.go(Route::Session(id));
                }
            }
            Err(error) => engine().report_input(error.to_string()),
        }
    };
    let search = RwSignal::new(String::new());
    // When each session last changed, from the events this browser holds
    // (re-read when any session's version changes).
    let activity = RwSignal::new(HashMap::<Uuid, DateTime<Utc>>::new());
    let versions = Memo::new(move |_| {
        engine()
            .sessions()
            .into_iter()
            .map(|(id, s)| (id, s.version()))
            .collect::<Vec<_>>()
    });
    Effect::new(move |_| {
        versions.track();
        spawn_local(async move {
            if let Ok(events) = crate::held::all().await {
                let mut latest = HashMap::new();
                for event in events {
                    let entry = latest.entry(event.aggregate_id).or_insert(event.created_at);
                    if event.created_at > *entry {
                        *entry = event.created_at;
                    }
                }
                activity.set(latest);
            }
        });
    });
    let entries = move || {
        let known = activity.get();
        engine()
            .sessions()
            .into_iter()
            // A session unshared from this user leaves the list.
            .filter(|(id, s)| super::account::readable(*id, s))
            .map(|(id, s)| listing::Entry {
                id,
                title: title_of(&s),
                sql: s
                    .history
                    .iter()
                    .map(|q| q.sql.as_str().to_owned())
                    .collect(),
                last_activity: known.get(&id).copied(),
                pending: engine().has_pending(id),
            })
            .collect::<Vec<_>>()
    };
    let ids = move || listing::ordered(&entries(), &search.get());
    let has_sessions = move || !engine().sessions().is_empty();
    provide_context(ActivityTimes(activity));

    view! {
        <section class="card welcome" data-testid="new-session">
            <h1>"Start a query session"</h1>
            <p class="muted">
                "A session keeps a title, a dataset and the history of every query you run. "
                "It is created here in the browser, so it works offline too."
            </p>
            <form class="row" on:submit=on_submit>
                <input
                    id="session-title-input"
                    data-testid="session-title-input"
                    type="text"
                    placeholder="Session title, e.g. Q3 revenue"
                    maxlength="400"
                    bind:value=title
                />
                <button type="submit" class="primary" data-testid="create-session">
                    "Create session"
                </button>
            </form>
        </section>
        <section class="card sessions" aria-labelledby="sessions-heading">
            <div class="row end sessions-head">
                <h2 id="sessions-heading">"Sessions"</h2>
                <input
                    type="search"
                    class="session-search"
                    data-testid="session-search"
                    aria-label="Search sessions by title or SQL"
                    placeholder="Search titles and SQL"
                    bind:value=search
                />
            </div>
            <Show
                when=has_sessions
                fallback=|| view! { <p class="muted empty">"No sessions yet."</p> }
            >
                <Show
                    when=move || !ids().is_empty()
                    fallback=|| {
                        view! { <p class="muted empty" data-testid="no-search-match">"No session matches."</p> }
                    }
                >
                    <ul class="session-list" data-testid="session-list" aria-label="Sessions, most recently changed first">
                        <For each=ids key=|id| *id children=move |id| view! { <SessionRow id /> } />
                    </ul>
                </Show>
            </Show>
        </section>
    }
}

#[component]
fn SessionRow(id: Uuid) -> impl IntoView {
    let router = expect_context::<Router>();
    let times = expect_context::<ActivityTimes>();
    let session = move || engine().view(id);
    let editing = RwSignal::new(false);
    let draft = RwSignal::new(String::new());
    let is_open = move || session().lifecycle == Lifecycle::Open;
    // Controls the signed-in user's role does not allow are hidden.
    let may_rename = move || {
        super::account::allowed(
            id,
            &session(),
            &SessionCommand::RenameSession {
                title: shared_domain::SessionTitle::new("x").expect("a valid title"),
            },
        )
    };
    let may_close =
        move || super::account::allowed(id, &session(), &SessionCommand::CloseSession {});
    let open = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        router.go(Route::Session(id));
    };
    let start_rename = move |_| {
        draft.set(title_of(&session()));
        editing.set(true);
    };
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if rename(id, &draft.get_untracked()) {
            editing.set(false);
        }
    };
    view! {
        <li
            class="session-row"
            data-testid="session-row"
            data-session-id=id.to_string()
            data-lifecycle=move || lifecycle_name(session().lifecycle)
        >
            <Show
                when=move || editing.get()
                fallback=move || {
                    view! {
                        <a
                            class="session-link"
                            data-testid="session-link"
                            href=Route::Session(id).path()
                            on:click=open
                        >
                            {move || title_of(&session())}
                        </a>
                    }
                }
            >
                <form class="row grow" on:submit=save>
                    <input
                        type="text"
                        data-testid="row-rename-input"
                        maxlength="400"
                        bind:value=draft
                        on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                            if ev.key() == "Escape" {
                                editing.set(false);
                            }
                        }
                    />
                    <button type="submit" class="primary small" data-testid="row-rename-save">
                        "Save"
                    </button>
                </form>
            </Show>
            <span class="muted small">
                {move || {
                    let s = session();
                    format!("{} queries · v{}", s.history.len(), s.version())
                }}
            </span>
            <span class="muted small last-activity" data-testid="last-activity">
                {move || {
                    let now = Utc
                        .timestamp_millis_opt(js_sys::Date::now() as i64)
                        .single()
                        .unwrap_or_default();
                    match times.0.get().get(&id) {
                        Some(at) => listing::relative_time(now, *at),
                        None => "not yet synced".to_owned(),
                    }
                }}
            </span>
            <span class=move || format!("badge lifecycle {}", lifecycle_name(session().lifecycle))>
                {move || lifecycle_name(session().lifecycle)}
            </span>
            <Show when=move || engine().has_pending(id)>
                <span class="badge pending" title="not yet confirmed by the server">
                    "pending"
                </span>
            </Show>
            <div class="row-actions">
                <Show when=may_rename>
                    <button
                        class="ghost small"
                        data-testid="row-rename"
                        disabled=move || !is_open()
                        on:click=start_rename
                    >
                        "Rename"
                    </button>
                </Show>
                <Show when=may_close>
                    <button
                        class="ghost small"
                        data-testid="row-close"
                        disabled=move || !is_open()
                        on:click=move |_| {
                            engine().submit(id, SessionCommand::CloseSession {});
                        }
                    >
                        "Close"
                    </button>
                </Show>
            </div>
        </li>
    }
}
