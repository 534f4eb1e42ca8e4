//! The form that creates a session.

use leptos::prelude::*;

use crate::state::Store;

#[component]
pub fn NewSession() -> impl IntoView {
    let store = expect_context::<Store>();
    let title = RwSignal::new(String::new());
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        store.create_session(&title.get_untracked());
    };

    view! {
        <section class="card welcome" data-testid="new-session">
            <h1>"Start a query session"</h1>
            <p class="muted">
                "A session keeps a title, a dataset and the history of every query you run. "
                "It is created here in the browser, so it works offline."
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
    }
}
