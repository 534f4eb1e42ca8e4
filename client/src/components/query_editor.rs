//! The SQL editor that submits a query to the browser's engine.

use leptos::prelude::*;

use crate::state::Store;

#[component]
pub fn QueryEditor() -> impl IntoView {
    let store = expect_context::<Store>();
    let sql = RwSignal::new(String::from("SELECT 42"));
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        store.submit_query(&sql.get_untracked());
    };

    view! {
        <section class="card editor">
            <h2>"Query"</h2>
            <form on:submit=on_submit>
                <textarea
                    id="sql-input"
                    data-testid="sql-input"
                    rows="4"
                    spellcheck="false"
                    bind:value=sql
                ></textarea>
                <div class="row end">
                    <span class="muted small">
                        "Runs on the local engine. Until the in-browser engine is wired in, "
                        "a query stays submitted until you cancel it."
                    </span>
                    <button type="submit" class="primary" data-testid="submit-query">
                        "Submit locally"
                    </button>
                </div>
            </form>
        </section>
    }
}
