//! The shown query's result: a paged table with CSV / Parquet downloads,
//! and an SVG chart (bar or line, choosing the columns). Fixed heights keep
//! the page still while pages load.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{Engine, QueryId, QueryState};

use super::session::Workbench;
use crate::api::{self, ApiError, ResultPage, PAGE_ROWS};
use crate::chart::{self, ChartKind};
use crate::offline::engine::engine;

/// What the panel shows for the shown query.
#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Nothing,
    Waiting,
    Cancelled,
    Failed {
        error_id: String,
        message: String,
    },
    Completed {
        query_id: QueryId,
        engine: Engine,
        row_count: u64,
    },
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
            QueryState::Completed { row_count, .. } => Shown::Completed {
                query_id,
                engine: record.engine,
                row_count,
            },
        }
    });
    // The page offset belongs to one query: another query starts at 0.
    let offset = RwSignal::new((None::<QueryId>, 0u64));
    let page = RwSignal::new(None::<Result<ResultPage, ApiError>>);
    let loading = RwSignal::new(false);
    Effect::new(move |_| {
        let Shown::Completed {
            query_id, engine, ..
        } = shown.get()
        else {
            page.set(None);
            return;
        };
        let (owner, at) = offset.get();
        let at = if owner == Some(query_id) { at } else { 0 };
        loading.set(true);
        spawn_local(async move {
            let answer = api::result_page(engine, query_id, at).await;
            // Only the latest request may land.
            if matches!(shown.get_untracked(), Shown::Completed { query_id: q, .. } if q == query_id)
            {
                page.set(Some(answer));
                loading.set(false);
            }
        });
    });
    let turn = move |forward: bool| {
        let Shown::Completed { query_id, .. } = shown.get_untracked() else {
            return;
        };
        let current = page
            .get_untracked()
            .and_then(Result::ok)
            .map_or(0, |p| p.offset);
        let next = if forward {
            current + PAGE_ROWS
        } else {
            current.saturating_sub(PAGE_ROWS)
        };
        offset.set((Some(query_id), next));
    };

    view! {
        <section class="card result" data-testid="result-panel" aria-busy=move || loading.get()>
            <div class="row end result-head">
                <h2>"Result"</h2>
                {move || match shown.get() {
                    Shown::Completed { query_id, engine: Engine::Server, .. } => {
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
                    Shown::Completed { row_count, .. } => {
                        view! { <ResultTable page row_count turn /> }.into_any()
                    }
                }}
            </div>
        </section>
        <ChartPanel page />
    }
}

#[component]
fn ResultTable(
    page: RwSignal<Option<Result<ResultPage, ApiError>>>,
    row_count: u64,
    turn: impl Fn(bool) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        {move || match page.get() {
            None => view! { <p class="muted">"Loading rows…"</p> }.into_any(),
            Some(Err(error)) => {
                view! {
                    <div class="inline-error" data-testid="result-error">
                        "Rows unavailable: " {error.message.clone()}
                        <div class="error-id">
                            "error id " <code data-testid="error-id">{error.error_id.clone()}</code>
                        </div>
                    </div>
                }
                    .into_any()
            }
            Some(Ok(page)) => {
                let first = page.offset + 1;
                let last = page.offset + page.rows.len() as u64;
                let available = page.available_rows.unwrap_or(page.total_rows);
                let has_next = last < available;
                let has_prev = page.offset > 0;
                let note = if page.truncated {
                    format!(" (first {available} kept; downloads hold all {})", page.total_rows)
                } else {
                    String::new()
                };
                view! {
                    <div class="table-wrap">
                        <table class="result-table" data-testid="result-table">
                            <thead>
                                <tr>
                                    {page
                                        .columns
                                        .iter()
                                        .map(|c| {
                                            view! {
                                                <th title=c.data_type.clone()>{c.name.clone()}</th>
                                            }
                                        })
                                        .collect_view()}
                                </tr>
                            </thead>
                            <tbody>
                                {page
                                    .rows
                                    .iter()
                                    .map(|row| {
                                        view! {
                                            <tr data-testid="result-row">
                                                {row
                                                    .iter()
                                                    .map(|v| view! { <td>{api::cell_text(v)}</td> })
                                                    .collect_view()}
                                            </tr>
                                        }
                                    })
                                    .collect_view()}
                            </tbody>
                        </table>
                    </div>
                    <div class="row end pager small">
                        <span data-testid="result-range">
                            {if page.rows.is_empty() {
                                format!("0 of {row_count} rows")
                            } else {
                                format!("rows {first}–{last} of {}{note}", page.total_rows)
                            }}
                        </span>
                        <span>
                            <button
                                class="ghost small"
                                data-testid="result-prev"
                                disabled=!has_prev
                                on:click=move |_| turn(false)
                            >
                                "← Previous"
                            </button>
                            <button
                                class="ghost small"
                                data-testid="result-next"
                                disabled=!has_next
                                on:click=move |_| turn(true)
                            >
                                "Next →"
                            </button>
                        </span>
                    </div>
                }
                    .into_any()
            }
        }}
    }
}

/// Bars or a line of one numeric column against another column.
#[component]
fn ChartPanel(page: RwSignal<Option<Result<ResultPage, ApiError>>>) -> impl IntoView {
    let kind = RwSignal::new(ChartKind::Bar);
    let x = RwSignal::new(0usize);
    let y = RwSignal::new(None::<usize>);
    let ready = move || page.with(|p| matches!(p, Some(Ok(p)) if !p.rows.is_empty()));
    let columns = move || {
        page.with(|p| match p {
            Some(Ok(p)) => p.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    };
    let numeric = move || {
        page.with(|p| match p {
            Some(Ok(p)) => chart::numeric_columns(&p.rows, p.columns.len()),
            _ => Vec::new(),
        })
    };
    // The value column: the chosen one if it is numeric, else the last numeric one.
    let y_column = move || {
        let numeric = numeric();
        y.get()
            .filter(|c| numeric.contains(c))
            .or_else(|| numeric.last().copied())
    };
    let x_column = move || {
        let count = columns().len();
        let x = x.get();
        if x < count {
            x
        } else {
            0
        }
    };
    let svg = move || {
        let Some(yc) = y_column() else {
            return chart::svg(&[], kind.get(), 640.0, 260.0);
        };
        let xc = x_column();
        page.with(|p| match p {
            Some(Ok(p)) => chart::svg(&chart::series(&p.rows, xc, yc), kind.get(), 640.0, 260.0),
            _ => String::new(),
        })
    };
    view! {
        <Show when=ready>
            <section class="card chart-card" data-testid="chart-panel">
                <div class="row end">
                    <h2>"Chart"</h2>
                    <div class="row small">
                        <label>
                            "Type "
                            <select
                                data-testid="chart-kind"
                                on:change=move |ev| kind.set(ChartKind::parse(&event_target_value(&ev)))
                            >
                                <option value="bar">"Bar"</option>
                                <option value="line">"Line"</option>
                            </select>
                        </label>
                        <label>
                            "Labels "
                            <select
                                data-testid="chart-x"
                                on:change=move |ev| {
                                    x.set(event_target_value(&ev).parse().unwrap_or(0))
                                }
                            >
                                {move || {
                                    columns()
                                        .into_iter()
                                        .enumerate()
                                        .map(|(i, name)| {
                                            view! {
                                                <option value=i.to_string() selected=move || x_column() == i>
                                                    {name}
                                                </option>
                                            }
                                        })
                                        .collect_view()
                                }}
                            </select>
                        </label>
                        <label>
                            "Values "
                            <select
                                data-testid="chart-y"
                                on:change=move |ev| y.set(event_target_value(&ev).parse().ok())
                            >
                                {move || {
                                    let names = columns();
                                    numeric()
                                        .into_iter()
                                        .map(|i| {
                                            let name = names.get(i).cloned().unwrap_or_default();
                                            view! {
                                                <option value=i.to_string() selected=move || y_column() == Some(i)>
                                                    {name}
                                                </option>
                                            }
                                        })
                                        .collect_view()
                                }}
                            </select>
                        </label>
                    </div>
                </div>
                <div class="chart-box" inner_html=svg></div>
            </section>
        </Show>
    }
}
