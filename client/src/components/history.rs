//! Every query of the session, newest first, with its execution state.

use leptos::prelude::*;
use shared_domain::{QueryRecord, QueryState};

use crate::model::state_name;
use crate::state::Store;

#[component]
pub fn History() -> impl IntoView {
    let store = expect_context::<Store>();
    let records = move || {
        store
            .with_session(|w| w.session.history.iter().rev().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };

    view! {
        <section class="card history">
            <h2>"History"</h2>
            <ol class="history-list" data-testid="history">
                {move || {
                    let records = records();
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
    let store = expect_context::<Store>();
    let state = state_name(&record.state);
    let query_id = record.query_id;
    let detail = match &record.state {
        QueryState::Completed {
            row_count,
            columns,
            elapsed_ms,
            engine,
        } => Some(format!(
            "{row_count} rows · {} columns · {elapsed_ms} ms on {engine}",
            columns.len()
        )),
        QueryState::Failed { error_id, message } => {
            Some(format!("{message} (error id {error_id})"))
        }
        _ => None,
    };
    let active = record.state.is_active();

    view! {
        <li
            class="history-entry"
            data-testid="history-entry"
            data-query-id=query_id.to_string()
            data-state=state
        >
            <div class="entry-head">
                <span class=format!("badge state {state}") data-testid="query-state">
                    {state}
                </span>
                <span class="muted small">{format!("{} engine", record.engine)}</span>
                {active
                    .then(|| {
                        view! {
                            <button
                                class="ghost small"
                                data-testid="cancel-query"
                                on:click=move |_| store.cancel_query(query_id)
                            >
                                "Cancel"
                            </button>
                        }
                    })}
            </div>
            <pre class="sql" data-testid="query-sql">{record.sql.as_str().to_owned()}</pre>
            {detail.map(|detail| view! { <div class="muted small">{detail}</div> })}
        </li>
    }
}
