//! The SQL editor (Ctrl/Cmd+Enter runs), the engine selector, and the
//! active query's progress bar and cancel button.

use leptos::prelude::*;
use shared_domain::{QueryState, SessionCommand};

use super::session::Workbench;
use crate::duckdb::choice::EngineChoice;
use crate::offline::engine::engine;

#[component]
pub fn Editor() -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        workbench.run();
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
            ev.prevent_default();
            workbench.run();
        }
    };
    let on_engine = move |ev: leptos::ev::Event| {
        workbench
            .choice
            .set(EngineChoice::parse(&event_target_value(&ev)));
    };
    view! {
        <section class="card editor">
            <h2>"Query"</h2>
            <form on:submit=on_submit>
                <textarea
                    id="sql-input"
                    data-testid="sql-input"
                    rows="5"
                    spellcheck="false"
                    aria-label="SQL"
                    bind:value=workbench.sql
                    on:keydown=on_keydown
                ></textarea>
                <div class="row end">
                    <label class="row small">
                        "Engine"
                        <select
                            data-testid="engine-select"
                            on:change=on_engine
                            prop:value=move || workbench.choice.get().value()
                        >
                            <option value="auto">"Auto"</option>
                            <option value="server">"Server (DuckDB)"</option>
                            <option value="local">"Local (duckdb-wasm)"</option>
                        </select>
                    </label>
                    <span class="muted small">
                        <kbd>"Ctrl"</kbd> "/" <kbd>"⌘"</kbd> " + " <kbd>"Enter"</kbd> " runs"
                    </span>
                    <button type="submit" class="primary" data-testid="submit-query">
                        "Run"
                    </button>
                </div>
            </form>
        </section>
    }
}

/// Always the same height, so nothing below jumps when a query starts or ends.
#[component]
pub fn ActiveQuery() -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let active = Memo::new(move |_| engine().view(workbench.session_id).active_query().cloned());
    view! {
        <section class="card active-query" data-testid="active-query">
            {move || match active.get() {
                None => view! { <div class="muted small">"No query running."</div> }.into_any(),
                Some(record) => {
                    let query_id = record.query_id;
                    let running = record.state == QueryState::Running;
                    let percent = move || {
                        engine().progress(query_id).and_then(|p| p.percent).unwrap_or(0.0)
                    };
                    let elapsed = move || {
                        engine().progress(query_id).map(|p| p.elapsed_ms).unwrap_or(0)
                    };
                    view! {
                        <div class="row end active-head">
                            <span class="small">
                                <span class="badge state" data-testid="active-state">
                                    {if running { "running" } else { "submitted" }}
                                </span>
                                " "
                                <code class="small">{record.sql.as_str().chars().take(80).collect::<String>()}</code>
                            </span>
                            <button
                                class="ghost small"
                                data-testid="cancel-query"
                                on:click=move |_| {
                                    engine()
                                        .submit(
                                            workbench.session_id,
                                            SessionCommand::CancelQuery { query_id },
                                        );
                                    // A local query is interrupted in this tab's duckdb-wasm.
                                    crate::duckdb::runner::cancel(query_id);
                                }
                            >
                                "Cancel"
                            </button>
                        </div>
                        <div
                            class="progress"
                            data-testid="query-progress"
                            role="progressbar"
                            aria-valuemin="0"
                            aria-valuemax="100"
                            aria-valuenow=move || format!("{:.0}", percent())
                        >
                            <div
                                class="progress-fill"
                                class:indeterminate=move || !running
                                style:width=move || format!("{:.1}%", percent().clamp(2.0, 100.0))
                            ></div>
                        </div>
                        <div class="muted small">
                            {move || format!("{:.0}% · {} ms", percent(), elapsed())}
                        </div>
                    }
                        .into_any()
                }
            }}
        </section>
    }
}
