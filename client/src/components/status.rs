//! The page frame's status parts: the connection indicator, the problems
//! (every one with its error id), the update banners and the local-data
//! controls.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::offline::engine::{engine, Connection};
use crate::sw::Shell;

/// Online, Offline or Syncing with the number of pending commands: derived
/// from whether the feed is open and what the outbox holds.
#[component]
pub fn ConnectionBadge() -> impl IntoView {
    let state = move || {
        let (class, text) = match engine().connection() {
            Connection::Connecting => ("connecting", "Connecting…".to_owned()),
            Connection::Online => ("online", "Online".to_owned()),
            Connection::Syncing { pending } => ("syncing", format!("Syncing · {pending} pending")),
            Connection::Offline { pending: 0 } => ("offline", "Offline".to_owned()),
            Connection::Offline { pending } => ("offline", format!("Offline · {pending} pending")),
        };
        (class, text)
    };
    view! {
        <span
            class=move || format!("badge sync {}", state().0)
            data-testid="sync-status"
            data-sync=move || state().0
            data-pending=move || engine().pending_count()
            role="status"
            aria-live="polite"
        >
            <span class="dot" aria-hidden="true"></span>
            {move || state().1}
        </span>
    }
}

/// Every problem not yet dismissed, newest last, each with its error id.
#[component]
pub fn Problems() -> impl IntoView {
    let problems = move || engine().problems();
    view! {
        <Show when=move || !problems().is_empty()>
            <div class="banner error" role="alert" data-testid="error-banner">
                <ul class="problems">
                    {move || {
                        problems()
                            .into_iter()
                            .map(|problem| {
                                let id = problem.error_id.clone();
                                view! {
                                    <li class="problem" data-testid="problem">
                                        <div>
                                            <strong>{problem.kind.label()}</strong>
                                            ": "
                                            <span data-testid="error-message">
                                                {problem.message.clone()}
                                            </span>
                                            <div class="error-id">
                                                "error id "
                                                <code data-testid="error-id">
                                                    {problem.error_id.clone()}
                                                </code>
                                            </div>
                                        </div>
                                        <button
                                            class="ghost small"
                                            data-testid="dismiss-problem"
                                            on:click=move |_| engine().dismiss_problem(&id)
                                        >
                                            "Dismiss"
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view()
                    }}
                </ul>
            </div>
        </Show>
    }
}

/// "Reload to update": a newer app version is waiting (service worker), or
/// data newer than this app was met (version skew).
#[component]
pub fn UpdateBanners() -> impl IntoView {
    let shell = expect_context::<Shell>();
    let fatal = move || engine().fatal();
    view! {
        <Show when=move || fatal().is_some()>
            <div class="banner warn" role="alert" data-testid="update-needed">
                <div>
                    <strong>"This app is out of date. "</strong>
                    {move || fatal().unwrap_or_default()}
                    " Changes are paused so nothing is misread."
                </div>
                <button class="primary" on:click=move |_| shell.apply_update()>
                    "Reload to update"
                </button>
            </div>
        </Show>
        <Show when=move || shell.update_available.get()>
            <div class="banner info" role="status" data-testid="update-available">
                <div>"A new version of Sextant is ready."</div>
                <button
                    class="primary"
                    data-testid="apply-update"
                    on:click=move |_| shell.apply_update()
                >
                    "Reload to update"
                </button>
            </div>
        </Show>
    }
}

/// The footer, with the way to clear local data (two clicks: it drops pending changes).
#[component]
pub fn Footer() -> impl IntoView {
    let confirming = RwSignal::new(false);
    let clear = move |_| {
        if confirming.get_untracked() {
            spawn_local(async move { engine().clear_local_data().await });
        } else {
            confirming.set(true);
        }
    };
    view! {
        <footer class="footer">
            <span>
                "Sessions are computed by the shared " <code>"QuerySession"</code>
                " aggregate, running in your browser as WebAssembly, and kept on this device."
            </span>
            <span class="muted small" data-testid="storage-persistence">
                {move || match engine().persistent() {
                    Some(true) => "Local data: persistent",
                    Some(false) => "Local data: the browser may evict it under storage pressure",
                    None => "",
                }}
            </span>
            <button class="ghost small" data-testid="clear-local-data" on:click=clear>
                {move || {
                    if confirming.get() {
                        let pending = engine().pending_count();
                        if pending == 1 {
                            "Really clear? 1 unsent change will be lost".to_owned()
                        } else if pending > 1 {
                            format!("Really clear? {pending} unsent changes will be lost")
                        } else {
                            "Really clear local data?".to_owned()
                        }
                    } else {
                        "Clear local data".to_owned()
                    }
                }}
            </button>
        </footer>
    }
}
