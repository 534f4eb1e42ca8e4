//! The shown query's result: the grid over the whole result (see `grid`)
//! with CSV / Parquet downloads, and its chart (see `chart_panel`). Fixed
//! heights keep the page still while rows load.

use leptos::prelude::*;
use shared_domain::{Column, Engine, QueryState};

use super::chart_panel::ChartPanel;
use super::export;
use super::grid::{GridSource, ResultGrid};
use super::session::Workbench;
use crate::api::{self, ApiError, ResultPage};
use crate::grid::GridView;
use crate::offline::engine::engine;

/// What the panel shows for the shown query.
#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Nothing,
    Waiting,
    Cancelled,
    Failed { error_id: String, message: String },
    Completed(GridSource, Vec<Column>),
}

#[component]
pub fn ResultPanel() -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let shown = Memo::new(move |_| {
        let Some(query_id) = workbench.shown_query() else {
            return Shown::Nothing;
        };
        let session = engine().view(workbench.session_id);
        let Some(record) = session.query(query_id) else {
            return Shown::Nothing;
        };
        match record.state.clone() {
            QueryState::Submitted | QueryState::Running => Shown::Waiting,
            QueryState::Cancelled => Shown::Cancelled,
            QueryState::Failed { error_id, message } => Shown::Failed {
                error_id: error_id.to_string(),
                message,
            },
            QueryState::Completed {
                row_count, columns, ..
            } => Shown::Completed(
                GridSource {
                    query_id,
                    engine: record.engine,
                    sql: record.sql.as_str().to_owned(),
                    row_count,
                },
                columns,
            ),
        }
    });
    // The first rows of the grid's current view, for the chart.
    let page = RwSignal::new(None::<Result<ResultPage, ApiError>>);
    // The grid's sort and filters (the chart follows the filters).
    let view = RwSignal::new(GridView::default());
    // A local Parquet export is being written.
    let exporting = RwSignal::new(false);
    Effect::new(move |_| {
        shown.track();
        page.set(None);
        view.set(GridView::default());
    });

    view! {
        <section class="card result" data-testid="result-panel" aria-labelledby="result-heading">
            <div class="row end result-head">
                <h2 id="result-heading">"Result"</h2>
                {move || match shown.get() {
                    Shown::Completed(GridSource { query_id, engine: Engine::Server, .. }, _) => {
                        view! {
                            <span class="downloads small">
                                <a
                                    data-testid="download-csv"
                                    href=api::download_url(query_id, "csv")
                                    download=""
                                >
                                    "CSV"
                                </a>
                                " · "
                                <a
                                    data-testid="download-parquet"
                                    href=api::download_url(query_id, "parquet")
                                    download=""
                                >
                                    "Parquet"
                                </a>
                            </span>
                        }
                            .into_any()
                    }
                    Shown::Completed(GridSource { query_id, engine: Engine::Local, sql, .. }, _) => {
                        view! {
                            <span class="downloads small">
                                <button
                                    type="button"
                                    class="ghost small"
                                    data-testid="download-local-csv"
                                    on:click=move |_| export::local_csv(query_id)
                                >
                                    "CSV"
                                </button>
                                " · "
                                <button
                                    type="button"
                                    class="ghost small"
                                    data-testid="download-local-parquet"
                                    title="The whole result, every row, with exact types"
                                    disabled=move || exporting.get()
                                    data-busy=move || exporting.get().to_string()
                                    on:click=move |_| export::local_parquet(query_id, sql.clone(), exporting)
                                >
                                    "Parquet"
                                </button>
                            </span>
                        }
                            .into_any()
                    }
                    _ => view! { <span></span> }.into_any(),
                }}
            </div>
            <div class="result-body">
                {move || match shown.get() {
                    Shown::Nothing => {
                        view! { <p class="muted">"Run a query to see its result here."</p> }
                            .into_any()
                    }
                    Shown::Waiting => {
                        view! { <p class="muted">"Waiting for the query to finish…"</p> }.into_any()
                    }
                    Shown::Cancelled => {
                        view! { <p class="muted">"This query was cancelled."</p> }.into_any()
                    }
                    Shown::Failed { error_id, message } => {
                        view! {
                            <div class="inline-error" data-testid="query-error">
                                <span data-testid="error-message">{message}</span>
                                <div class="error-id">
                                    "error id " <code data-testid="error-id">{error_id}</code>
                                </div>
                            </div>
                        }
                            .into_any()
                    }
                    Shown::Completed(source, _) => {
                        view! { <ResultGrid source view first_rows=page /> }.into_any()
                    }
                }}
            </div>
        </section>
        {move || match shown.get() {
            Shown::Completed(source, columns) => {
                let saved = engine()
                    .view(workbench.session_id)
                    .query(source.query_id)
                    .and_then(|q| q.chart.clone());
                view! { <ChartPanel source columns saved view first_rows=page /> }.into_any()
            }
            _ => view! { <span></span> }.into_any(),
        }}
    }
}
