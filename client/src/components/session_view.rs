//! An open session: its summary (title, version, lifecycle), the query
//! editor, the query history and the event log.

use leptos::prelude::*;
use shared_domain::{Aggregate, Lifecycle};

use crate::components::{EventLog, History, QueryEditor};
use crate::model::lifecycle_name;
use crate::state::Store;

#[component]
pub fn SessionView() -> impl IntoView {
    let store = expect_context::<Store>();
    let title = move || store.with_session(|w| w.title().to_owned());
    let version = move || store.with_session(|w| w.session.version()).unwrap_or(0);
    let lifecycle = move || {
        store
            .with_session(|w| w.session.lifecycle)
            .unwrap_or_default()
    };
    let session_id = move || store.with_session(|w| w.session_id.to_string());
    let queries = move || store.with_session(|w| w.session.history.len()).unwrap_or(0);
    let is_open = move || lifecycle() == Lifecycle::Open;

    view! {
        <section class="card summary" data-testid="session">
            <div class="summary-head">
                <div>
                    <h1 data-testid="session-title">{title}</h1>
                    <div class="muted mono" data-testid="session-id">{session_id}</div>
                </div>
                <div class="summary-actions">
                    <button
                        class="ghost"
                        data-testid="close-session"
                        disabled=move || !is_open()
                        on:click=move |_| store.close_session()
                    >
                        "Close session"
                    </button>
                    <button
                        class="ghost"
                        data-testid="new-session-button"
                        on:click=move |_| store.leave_session()
                    >
                        "New session"
                    </button>
                </div>
            </div>
            <dl class="facts">
                <div>
                    <dt>"Version"</dt>
                    <dd data-testid="session-version">{version}</dd>
                </div>
                <div>
                    <dt>"State"</dt>
                    <dd data-testid="session-lifecycle">{move || lifecycle_name(lifecycle())}</dd>
                </div>
                <div>
                    <dt>"Queries"</dt>
                    <dd data-testid="session-query-count">{queries}</dd>
                </div>
            </dl>
        </section>
        <Show when=is_open>
            <QueryEditor />
        </Show>
        <div class="columns">
            <History />
            <EventLog />
        </div>
    }
}
