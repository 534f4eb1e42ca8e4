//! The result grid: the whole result of one query, virtually scrolled
//! (only the rows in view are in the DOM, fetched in blocks as they come
//! into view), sorted by a header click and filtered by column on the
//! engine that ran the query, with numbers right-aligned and grouped,
//! `NULL` shown apart, types in the header, resizable columns, a column
//! profile on demand and keyboard navigation (arrows, Page Up/Down,
//! Home/End). The decisions are pure, in `crate::grid`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{Column, Engine, QueryId};

use crate::api::{self, ApiError, ColumnProfile};
use crate::grid::{self, Filter, FilterOp, GridView, ShownCell, BLOCK_ROWS};

/// Pixel height of one row (CSS `.grid-row` agrees).
const ROW_HEIGHT: f64 = 28.0;
/// Height of the scrolled viewport.
const VIEWPORT_HEIGHT: f64 = 420.0;
const OVERSCAN: usize = 8;
const DEFAULT_WIDTH: f64 = 150.0;
const MIN_WIDTH: f64 = 48.0;

/// What the grid shows: one completed query.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSource {
    pub query_id: QueryId,
    pub engine: Engine,
    pub sql: String,
    pub row_count: u64,
}

/// The rows known so far of one view of one result.
#[derive(Debug, Clone, Default, PartialEq)]
struct Loaded {
    columns: Vec<Column>,
    /// Rows matching the view (all of them, also beyond what can be scrolled).
    total: u64,
    /// Rows that can be scrolled (the engine keeps at most this many).
    scrollable: usize,
    /// Blocks of rows, their cells formatted once as they arrived.
    blocks: HashMap<usize, Arc<Vec<Vec<ShownCell>>>>,
}

impl Loaded {
    /// The cells of row `i`, if its block is here.
    fn row(&self, i: usize) -> Option<&Vec<ShownCell>> {
        self.blocks
            .get(&(i / BLOCK_ROWS))
            .and_then(|block| block.get(i % BLOCK_ROWS))
    }
}

/// What the grid shows above its rows.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Loading,
    Ready,
    Failed(ApiError),
}

#[component]
pub fn ResultGrid(
    source: GridSource,
    /// The sort and filters (shared with the chart).
    view: RwSignal<GridView>,
    /// The first rows of the current view, for the chart panel.
    #[prop(into)]
    first_rows: RwSignal<Option<Result<api::ResultPage, ApiError>>>,
) -> impl IntoView {
    let loaded = RwSignal::new(None::<Result<Loaded, ApiError>>);
    let in_flight = StoredValue::new(HashSet::<usize>::new());
    // Responses of an older view are dropped.
    let generation = StoredValue::new(0u64);
    let scroll_top = RwSignal::new(0.0f64);
    let widths = RwSignal::new(Vec::<f64>::new());
    let active = RwSignal::new(None::<(usize, usize)>);
    let profile = RwSignal::new(None::<Result<ColumnProfile, ApiError>>);
    let scroller = NodeRef::<leptos::html::Div>::new();
    let source = StoredValue::new(source);

    let fetch_block = move |block: usize| {
        let current = generation.get_value();
        if in_flight.with_value(|f| f.contains(&block)) {
            return;
        }
        in_flight.update_value(|f| {
            f.insert(block);
        });
        let GridSource {
            query_id,
            engine,
            sql,
            ..
        } = source.get_value();
        let wanted = view.get_untracked();
        spawn_local(async move {
            let answer = api::result_view(
                engine,
                query_id,
                &sql,
                &wanted,
                (block * BLOCK_ROWS) as u64,
                BLOCK_ROWS as u64,
            )
            .await;
            if generation.get_value() != current {
                return;
            }
            in_flight.update_value(|f| {
                f.remove(&block);
            });
            match answer {
                Ok(page) => {
                    if block == 0 {
                        first_rows.set(Some(Ok(page.clone())));
                    }
                    loaded.update(|state| {
                        let fresh = !matches!(state, Some(Ok(_)));
                        if fresh {
                            *state = Some(Ok(Loaded::default()));
                        }
                        if let Some(Ok(state)) = state {
                            let available = page.available_rows.unwrap_or(page.total_rows);
                            state.total = page.total_rows;
                            state.scrollable = available.min(page.total_rows) as usize;
                            let numeric: Vec<bool> = page
                                .columns
                                .iter()
                                .map(|c| grid::is_numeric_type(&c.data_type))
                                .collect();
                            let cells = page
                                .rows
                                .iter()
                                .map(|row| {
                                    row.iter()
                                        .enumerate()
                                        .map(|(c, value)| {
                                            grid::shown_cell(value, numeric.get(c) == Some(&true))
                                        })
                                        .collect()
                                })
                                .collect();
                            state.columns = page.columns;
                            state.blocks.insert(block, Arc::new(cells));
                        }
                    });
                    // Only when the columns change (a notification re-renders the header).
                    let count = loaded.with_untracked(|l| match l {
                        Some(Ok(l)) => l.columns.len(),
                        _ => 0,
                    });
                    if widths.with_untracked(Vec::len) != count {
                        widths.set(vec![DEFAULT_WIDTH; count]);
                    }
                }
                Err(error) => {
                    if block == 0 {
                        first_rows.set(Some(Err(error.clone())));
                    }
                    loaded.set(Some(Err(error)));
                }
            }
        });
    };

    // A new view starts from its first block, scrolled to the top.
    Effect::new(move |_| {
        view.track();
        generation.update_value(|g| *g += 1);
        in_flight.update_value(HashSet::clear);
        loaded.set(None);
        active.set(None);
        scroll_top.set(0.0);
        if let Some(el) = scroller.get_untracked() {
            el.set_scroll_top(0);
        }
        fetch_block(0);
    });

    let window = Memo::new(move |_| {
        let rows = loaded.with(|l| match l {
            Some(Ok(l)) => l.scrollable,
            _ => 0,
        });
        grid::visible_rows(
            scroll_top.get(),
            VIEWPORT_HEIGHT,
            ROW_HEIGHT,
            rows,
            OVERSCAN,
        )
    });
    // Blocks coming into view (or about to) are fetched.
    Effect::new(move |_| {
        let (start, end) = window.get();
        let missing: Vec<usize> = loaded.with_untracked(|l| match l {
            Some(Ok(l)) => grid::blocks_wanted(start, end, l.scrollable)
                .filter(|b| !l.blocks.contains_key(b))
                .collect(),
            _ => Vec::new(),
        });
        for block in missing {
            fetch_block(block);
        }
    });

    let on_scroll = move |_| {
        if let Some(el) = scroller.get_untracked() {
            scroll_top.set(el.scroll_top() as f64);
        }
    };

    let columns = Memo::new(move |_| {
        loaded.with(|l| match l {
            Some(Ok(l)) => l.columns.clone(),
            _ => Vec::new(),
        })
    });
    let numeric = Memo::new(move |_| {
        columns
            .get()
            .iter()
            .map(|c| grid::is_numeric_type(&c.data_type))
            .collect::<Vec<bool>>()
    });

    // Keyboard navigation over cells; the active cell is kept in view.
    let move_active = move |d_row: i64, d_col: i64, absolute: Option<(usize, usize)>| {
        let (rows, cols) = loaded.with_untracked(|l| match l {
            Some(Ok(l)) => (l.scrollable, l.columns.len()),
            _ => (0, 0),
        });
        if rows == 0 || cols == 0 {
            return;
        }
        let (row, col) = absolute.unwrap_or_else(|| {
            let (r, c) = active.get_untracked().unwrap_or((0, 0));
            (
                (r as i64 + d_row).clamp(0, rows as i64 - 1) as usize,
                (c as i64 + d_col).clamp(0, cols as i64 - 1) as usize,
            )
        });
        active.set(Some((row.min(rows - 1), col.min(cols - 1))));
        if let Some(el) = scroller.get_untracked() {
            let top = row as f64 * ROW_HEIGHT;
            let header = ROW_HEIGHT;
            let current = el.scroll_top() as f64;
            if top < current {
                el.set_scroll_top(top as i32);
            } else if top + 2.0 * ROW_HEIGHT + header > current + VIEWPORT_HEIGHT {
                el.set_scroll_top((top + 2.0 * ROW_HEIGHT + header - VIEWPORT_HEIGHT) as i32);
            }
            scroll_top.set(el.scroll_top() as f64);
        }
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let page = (VIEWPORT_HEIGHT / ROW_HEIGHT) as i64 - 2;
        let handled = match ev.key().as_str() {
            "ArrowDown" => {
                move_active(1, 0, None);
                true
            }
            "ArrowUp" => {
                move_active(-1, 0, None);
                true
            }
            "ArrowRight" => {
                move_active(0, 1, None);
                true
            }
            "ArrowLeft" => {
                move_active(0, -1, None);
                true
            }
            "PageDown" => {
                move_active(page, 0, None);
                true
            }
            "PageUp" => {
                move_active(-page, 0, None);
                true
            }
            "Home" if ev.ctrl_key() => {
                move_active(0, 0, Some((0, 0)));
                true
            }
            "End" if ev.ctrl_key() => {
                move_active(0, 0, Some((usize::MAX, usize::MAX)));
                true
            }
            "Home" => {
                let row = active.get_untracked().map_or(0, |(r, _)| r);
                move_active(0, 0, Some((row, 0)));
                true
            }
            "End" => {
                let row = active.get_untracked().map_or(0, |(r, _)| r);
                move_active(0, 0, Some((row, usize::MAX)));
                true
            }
            _ => false,
        };
        if handled {
            ev.prevent_default();
        }
    };

    // Column resizing: drag the handle in a header (or focus it and use ←/→).
    let dragging = StoredValue::new(None::<(usize, f64, f64)>);
    let move_handle = window_event_listener(leptos::ev::pointermove, move |ev| {
        if let Some((col, start_x, start_width)) = dragging.get_value() {
            let width = (start_width + ev.client_x() as f64 - start_x).max(MIN_WIDTH);
            widths.update(|w| {
                if let Some(slot) = w.get_mut(col) {
                    *slot = width;
                }
            });
        }
    });
    let up_handle = window_event_listener(leptos::ev::pointerup, move |_| {
        dragging.set_value(None);
    });
    on_cleanup(move || {
        move_handle.remove();
        up_handle.remove();
    });

    let show_profile = move |column: String| {
        let GridSource {
            query_id,
            engine,
            sql,
            ..
        } = source.get_value();
        let wanted = view.get_untracked();
        profile.set(None);
        spawn_local(async move {
            let answer = api::profile(engine, query_id, &sql, &wanted, &column).await;
            profile.set(Some(answer));
        });
    };

    let total_width = move || widths.get().iter().sum::<f64>();
    let header = move || {
        let current = view.get();
        let numeric = numeric.get();
        columns
            .get()
            .into_iter()
            .enumerate()
            .map(|(i, column)| {
                let name = column.name.clone();
                let sorted = current
                    .sort
                    .as_ref()
                    .filter(|s| s.column == column.name)
                    .map(|s| s.descending);
                let aria_sort = match sorted {
                    Some(true) => "descending",
                    Some(false) => "ascending",
                    None => "none",
                };
                let arrow = match sorted {
                    Some(true) => " ▼",
                    Some(false) => " ▲",
                    None => "",
                };
                let sort_name = name.clone();
                let profile_name = name.clone();
                let is_number = numeric.get(i).copied().unwrap_or(false);
                view! {
                    <th
                        role="columnheader"
                        aria-sort=aria_sort
                        class:numeric=is_number
                        data-testid="column-header"
                        data-column=name.clone()
                    >
                        <button
                            type="button"
                            class="sort-button"
                            data-testid="sort-column"
                            title=format!("Sort by {name}")
                            on:click=move |_| {
                                view.update(|v| v.sort = v.cycle_sort(&sort_name));
                            }
                        >
                            <span class="col-name">{name.clone()}</span>
                            <span class="sort-mark" aria-hidden="true">{arrow}</span>
                        </button>
                        <span class="col-type" data-testid="column-type">{column.data_type.clone()}</span>
                        <button
                            type="button"
                            class="ghost tiny profile-button"
                            data-testid="profile-column"
                            aria-label=format!("Profile of {name}")
                            title="Profile: min, max, distinct, nulls"
                            on:click=move |_| show_profile(profile_name.clone())
                        >
                            "ℹ"
                        </button>
                        <span
                            class="col-resize"
                            role="separator"
                            aria-orientation="vertical"
                            aria-label=format!("Resize {name}")
                            aria-valuemin=MIN_WIDTH
                            aria-valuemax="2000"
                            aria-valuenow=move || widths.with(|w| w.get(i).copied().unwrap_or(DEFAULT_WIDTH).round())
                            tabindex="0"
                            on:pointerdown=move |ev| {
                                ev.prevent_default();
                                let width = widths.with_untracked(|w| w.get(i).copied().unwrap_or(DEFAULT_WIDTH));
                                dragging.set_value(Some((i, ev.client_x() as f64, width)));
                            }
                            on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                                let delta = match ev.key().as_str() {
                                    "ArrowLeft" => -16.0,
                                    "ArrowRight" => 16.0,
                                    _ => return,
                                };
                                ev.prevent_default();
                                ev.stop_propagation();
                                widths.update(|w| {
                                    if let Some(slot) = w.get_mut(i) {
                                        *slot = (*slot + delta).max(MIN_WIDTH);
                                    }
                                });
                            }
                        ></span>
                    </th>
                }
            })
            .collect_view()
    };

    // The rows in view, keyed by (view generation, row, loaded): scrolling
    // adds and removes rows at the edges instead of rebuilding all of them,
    // and a row still loading is replaced once its block is here.
    let row_keys = move || {
        let (start, end) = window.get();
        let current = generation.get_value();
        loaded.with(|l| match l {
            Some(Ok(l)) => (start..end)
                .map(|i| (current, i, l.row(i).is_some()))
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    };
    let row_view = move |(_, i, _): (u64, usize, bool)| {
        let (cells, width) = loaded.with_untracked(|l| match l {
            Some(Ok(l)) => (l.row(i).cloned(), l.columns.len()),
            _ => (None, 0),
        });
        match cells {
            None => view! {
                <tr class="grid-row pending" role="row" data-testid="result-row-pending" aria-rowindex=i + 2>
                    <td role="gridcell" colspan=width.max(1)>"…"</td>
                </tr>
            }
            .into_any(),
            Some(cells) => {
                let cells = cells
                    .into_iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        let ShownCell { class, text, raw, title } = cell;
                        view! {
                            <td
                                class=class
                                class:active=move || active.get() == Some((i, c))
                                role="gridcell"
                                data-null=(class == "null").then_some("true")
                                data-value=raw
                                title=title
                            >
                                {text}
                            </td>
                        }
                    })
                    .collect_view();
                view! {
                    <tr class="grid-row" role="row" data-testid="result-row" aria-rowindex=i + 2>
                        {cells}
                    </tr>
                }
                .into_any()
            }
        }
    };
    let spacer_above = move || window.get().0 as f64 * ROW_HEIGHT;
    let spacer_below = move || {
        let rows = loaded.with(|l| match l {
            Some(Ok(l)) => l.scrollable,
            _ => 0,
        });
        rows.saturating_sub(window.get().1) as f64 * ROW_HEIGHT
    };
    let range_text = move || {
        let top = scroll_top.get();
        loaded.with(|l| match l {
            Some(Ok(l)) => {
                let filtered = if view.with(|v| v.filters.is_empty()) {
                    String::new()
                } else {
                    format!(" (filtered from {})", source.with_value(|s| s.row_count))
                };
                let kept = if (l.scrollable as u64) < l.total {
                    format!("; first {} scrollable, downloads hold all", l.scrollable)
                } else {
                    String::new()
                };
                if l.scrollable == 0 {
                    format!("0 of {} rows{filtered}", l.total)
                } else {
                    let in_view = (VIEWPORT_HEIGHT / ROW_HEIGHT) as usize - 1;
                    let first = ((top / ROW_HEIGHT) as usize).min(l.scrollable - 1) + 1;
                    let last = (first + in_view - 1).min(l.scrollable);
                    format!("rows {first}–{last} of {}{filtered}{kept}", l.total)
                }
            }
            _ => String::new(),
        })
    };

    // Only a change of state re-renders the line above the rows (not every block).
    let status = Memo::new(move |_| {
        loaded.with(|l| match l {
            None => Status::Loading,
            Some(Ok(_)) => Status::Ready,
            Some(Err(error)) => Status::Failed(error.clone()),
        })
    });

    view! {
        <FilterBar view columns />
        {move || match status.get() {
            Status::Failed(error) => {
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
            Status::Loading => view! { <p class="muted" data-testid="result-loading">"Loading rows…"</p> }.into_any(),
            Status::Ready => view! { <span></span> }.into_any(),
        }}
        <div
            class="grid-scroll"
            node_ref=scroller
            tabindex="0"
            role="grid"
            aria-label="Query result"
            aria-rowcount=move || {
                loaded.with(|l| match l {
                    Some(Ok(l)) => l.total as i64 + 1,
                    _ => -1,
                })
            }
            aria-colcount=move || columns.with(Vec::len)
            data-testid="result-grid"
            style:height=format!("{VIEWPORT_HEIGHT}px")
            on:scroll=on_scroll
            on:keydown=on_key
            on:focus=move |_| {
                if active.get_untracked().is_none() {
                    move_active(0, 0, Some((0, 0)));
                }
            }
        >
            <table
                class="result-table"
                data-testid="result-table"
                role="presentation"
                style:width=move || format!("{}px", total_width())
            >
                <colgroup>
                    {move || {
                        widths
                            .get()
                            .into_iter()
                            .map(|w| view! { <col style:width=format!("{w}px") /> })
                            .collect_view()
                    }}
                </colgroup>
                <thead>
                    <tr role="row" aria-rowindex="1">{header}</tr>
                </thead>
                <tbody>
                    <tr class="spacer" aria-hidden="true" style:height=move || format!("{}px", spacer_above())></tr>
                    <For each=row_keys key=|key| *key children=row_view />
                    <tr class="spacer" aria-hidden="true" style:height=move || format!("{}px", spacer_below())></tr>
                </tbody>
            </table>
        </div>
        <div class="row end pager small">
            <span data-testid="result-range" aria-live="polite">{range_text}</span>
            <span class="muted">"↑↓←→, Page Up/Down, Home/End move; click a header to sort"</span>
        </div>
        {move || {
            profile
                .get()
                .map(|answer| {
                    view! { <ProfileCard answer on_close=move || profile.set(None) /> }
                })
        }}
    }
}

/// The filters of the view: add one (column, comparison, value), remove any.
#[component]
fn FilterBar(view: RwSignal<GridView>, columns: Memo<Vec<Column>>) -> impl IntoView {
    let column = RwSignal::new(String::new());
    let op = RwSignal::new(FilterOp::Eq);
    let value = RwSignal::new(String::new());
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let chosen = column.get_untracked();
        let chosen = if chosen.is_empty() {
            columns.with_untracked(|c| c.first().map(|c| c.name.clone()).unwrap_or_default())
        } else {
            chosen
        };
        if chosen.is_empty() {
            return;
        }
        let filter = Filter {
            column: chosen,
            op: op.get_untracked(),
            value: value.get_untracked(),
        };
        view.update(|v| v.filters.push(filter));
        value.set(String::new());
    };
    view! {
        <form class="row filter-bar small" on:submit=add aria-label="Filter the result">
            <label>
                "Filter "
                <select
                    data-testid="filter-column"
                    aria-label="Column to filter"
                    on:change=move |ev| column.set(event_target_value(&ev))
                >
                    {move || {
                        columns
                            .get()
                            .into_iter()
                            .map(|c| {
                                let name = c.name.clone();
                                let selected = {
                                    let name = name.clone();
                                    move || column.get() == name
                                };
                                let value = name.clone();
                                view! { <option value=value selected=selected>{name}</option> }
                            })
                            .collect_view()
                    }}
                </select>
            </label>
            <select
                data-testid="filter-op"
                aria-label="Comparison"
                on:change=move |ev| {
                    op.set(FilterOp::parse(&event_target_value(&ev)).unwrap_or(FilterOp::Eq))
                }
            >
                {FilterOp::ALL
                    .into_iter()
                    .map(|o| view! { <option value=o.code()>{o.symbol()}</option> })
                    .collect_view()}
            </select>
            <input
                type="text"
                data-testid="filter-value"
                aria-label="Value"
                placeholder="value"
                disabled=move || !op.get().takes_value()
                bind:value=value
            />
            <button type="submit" class="ghost small" data-testid="filter-add">
                "Add filter"
            </button>
            <ul class="chips" aria-label="Active filters">
                {move || {
                    view.get()
                        .filters
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            let label = f.label();
                            view! {
                                <li class="chip" data-testid="filter-chip">
                                    {label.clone()}
                                    <button
                                        type="button"
                                        class="ghost tiny"
                                        data-testid="filter-remove"
                                        aria-label=format!("Remove filter {label}")
                                        on:click=move |_| {
                                            view.update(|v| {
                                                if i < v.filters.len() {
                                                    v.filters.remove(i);
                                                }
                                            })
                                        }
                                    >
                                        "×"
                                    </button>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
        </form>
    }
}

#[component]
fn ProfileCard(
    answer: Result<ColumnProfile, ApiError>,
    on_close: impl Fn() + Send + Sync + Clone + 'static,
) -> impl IntoView {
    let body = match answer {
        Ok(p) => view! {
            <h3>"Profile of " <code>{p.column.clone()}</code></h3>
            <dl class="facts" data-testid="column-profile">
                <div><dt>"Rows"</dt><dd data-testid="profile-rows">{p.rows}</dd></div>
                <div><dt>"Nulls"</dt><dd data-testid="profile-nulls">{p.nulls}</dd></div>
                <div><dt>"Distinct"</dt><dd data-testid="profile-distinct">{p.distinct}</dd></div>
                <div><dt>"Min"</dt><dd data-testid="profile-min">{api::cell_text(&p.min)}</dd></div>
                <div><dt>"Max"</dt><dd data-testid="profile-max">{api::cell_text(&p.max)}</dd></div>
            </dl>
        }
        .into_any(),
        Err(error) => view! {
            <div class="inline-error" data-testid="profile-error">
                "Profile unavailable: " {error.message.clone()}
                <div class="error-id">"error id " <code>{error.error_id.clone()}</code></div>
            </div>
        }
        .into_any(),
    };
    view! {
        <aside class="profile-card" aria-label="Column profile">
            {body}
            <button type="button" class="ghost small" data-testid="profile-close" on:click=move |_| on_close()>
                "Close"
            </button>
        </aside>
    }
}
