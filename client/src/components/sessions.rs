//! The sessions list: create a session, and rename, open or close any
//! session this browser knows (live: other clients' changes arrive on the feed).

use leptos::prelude::*;
use shared_domain::{Aggregate, Lifecycle, QuerySession, SessionCommand, SessionTitle};
use uuid::Uuid;

use crate::ids::time_ordered_uuid;
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
    let ids = move || {
        let mut sessions = engine().sessions();
        // A session unshared from this user leaves the list.
        sessions.retain(|(id, s)| super::account::readable(*id, s));
        sessions
            .sort_by_key(|(_, s)| (s.lifecycle == Lifecycle::Closed, title_of(s).to_lowercase()));
        sessions.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
    };

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
        <section class="card sessions">
            <h2>"Sessions"</h2>
            <Show
                when=move || !ids().is_empty()
                fallback=|| view! { <p class="muted empty">"No sessions yet."</p> }
            >
                <ul class="session-list" data-testid="session-list">
                    <For each=ids key=|id| *id children=move |id| view! { <SessionRow id /> } />
                </ul>
            </Show>
        </section>
    }
}

#[component]
fn SessionRow(id: Uuid) -> impl IntoView {
    let router = expect_context::<Router>();
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
