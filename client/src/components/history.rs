//! Every query of the session, newest first, with its state and duration.
//! Clicking one loads it back into the editor and shows its result; "Run
//! again" submits it anew.

use leptos::prelude::*;
use shared_domain::{QueryRecord, QueryState};

use super::session::Workbench;
use crate::offline::engine::engine;

/// The name a query state shows as.
pub fn state_name(state: &QueryState) -> &'static str {
    match state {
        QueryState::Submitted => "submitted",
        QueryState::Running => "running",
        QueryState::Completed { .. } => "completed",
        QueryState::Failed { .. } => "failed",
        QueryState::Cancelled => "cancelled",
    }
}

#[component]
pub fn History() -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let records = Memo::new(move |_| {
        engine()
            .view(workbench.session_id)
            .history
            .iter()
            .rev()
            .cloned()
            .collect::<Vec<_>>()
    });
    view! {
        <section class="card history">
            <h2>"History"</h2>
            <ol class="history-list" data-testid="history">
                {move || {
                    let records = records.get();
                    if records.is_empty() {
                        view! { <li class="muted empty">"No queries yet."</li> }.into_any()
                    } else {
                        records
                            .into_iter()
                            .map(|record| view! { <HistoryEntry record /> })
                            .collect_view()
                            .into_any()
                    }
                }}
            </ol>
        </section>
    }
}

#[component]
fn HistoryEntry(record: QueryRecord) -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let state = state_name(&record.state);
    let query_id = record.query_id;
    let sql = record.sql.as_str().to_owned();
    let detail = match &record.state {
        QueryState::Completed {
            row_count,
            elapsed_ms,
            ..
        } => Some(format!("{row_count} rows · {elapsed_ms} ms")),
        QueryState::Failed { error_id, .. } => Some(format!("error id {error_id}")),
        _ => None,
    };
    let selected = move || workbench.shown_query() == Some(query_id);
    let load = {
        let sql = sql.clone();
        move || {
            workbench.sql.set(sql.clone());
            workbench
                .choice
                .set(crate::duckdb::choice::EngineChoice::from_engine(
                    record.engine,
                ));
            workbench.selected.set(Some(query_id));
        }
    };
    let on_click = {
        let load = load.clone();
        move |_| load()
    };
    let on_key = {
        let load = load.clone();
        move |ev: leptos::ev::KeyboardEvent| {
            if ev.key() == "Enter" || ev.key() == " " {
                ev.prevent_default();
                load();
            }
        }
    };
    let rerun = {
        let sql = sql.clone();
        move |ev: leptos::ev::MouseEvent| {
            ev.stop_propagation();
            load();
            workbench.run_sql(sql.clone());
        }
    };
    view! {
        <li
            class="history-entry"
            class:selected=selected
            data-testid="history-entry"
            data-query-id=query_id.to_string()
            data-state=state
            tabindex="0"
            title="Load into the editor and show its result"
            on:click=on_click
            on:keydown=on_key
        >
            <div class="entry-head">
                <span class=format!("badge state {state}") data-testid="query-state">
                    {state}
                </span>
                <span class="muted small" data-testid="query-engine">
                    {format!("{}", record.engine)}
                </span>
                {detail
                    .map(|detail| {
                        view! {
                            <span class="muted small" data-testid="query-detail">
                                {detail}
                            </span>
                        }
                    })}
                <button class="ghost small rerun" data-testid="rerun-query" on:click=rerun>
                    "Run again"
                </button>
            </div>
            <pre class="sql" data-testid="query-sql">{sql}</pre>
        </li>
    }
}
