//! The chart of the shown result: bar, line, scatter or histogram, with a
//! time axis for dates and colour-by, drawn by Observable Plot (the lazily
//! loaded `/bundles/chart.js`) from an aggregation over the whole result,
//! computed by the engine that ran the query (filtered like the grid). The
//! settings are saved with the query (`ConfigureChart`), so they sync and
//! replay; a data table is the chart's text alternative.

use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;
use shared_domain::{ChartAggregate, ChartSettings, Column, Engine, SessionCommand};
use wasm_bindgen::JsValue;

use super::grid::GridSource;
use super::session::Workbench;
use crate::api::{self, ApiError};
use crate::bundles;
use crate::chart::{self, ChartKind};
use crate::grid::GridView;
use crate::offline::engine::engine;

/// The aggregated data of the current settings.
#[derive(Debug, Clone, PartialEq)]
struct Drawn {
    records: Vec<Value>,
    /// Why the data is not over all rows, if it is not.
    note: Option<String>,
}

fn kind_code(kind: ChartKind) -> &'static str {
    match kind {
        ChartKind::Bar => "bar",
        ChartKind::Line => "line",
        ChartKind::Scatter => "scatter",
        ChartKind::Histogram => "histogram",
    }
}

fn parse_kind(code: &str) -> ChartKind {
    match code {
        "line" => ChartKind::Line,
        "scatter" => ChartKind::Scatter,
        "histogram" => ChartKind::Histogram,
        _ => ChartKind::Bar,
    }
}

fn parse_aggregate(code: &str) -> ChartAggregate {
    match code {
        "sum" => ChartAggregate::Sum,
        "avg" => ChartAggregate::Avg,
        "min" => ChartAggregate::Min,
        "max" => ChartAggregate::Max,
        _ => ChartAggregate::Count,
    }
}

async fn aggregated(
    source: &GridSource,
    settings: &ChartSettings,
    view: &GridView,
    first_rows: Option<api::ResultPage>,
) -> Result<Drawn, ApiError> {
    let (columns, rows, note) = match source.engine {
        Engine::Local => {
            let sql = chart::local_sql(&source.sql, settings, view);
            let result = crate::duckdb::runner::aggregate(&sql)
                .await
                .map_err(|e| ApiError::local(e.to_string()))?;
            (result.columns, result.rows, None)
        }
        Engine::Server => {
            let params = chart::server_params(settings, view);
            match api::aggregate(source.query_id, &params).await? {
                Some(result) => {
                    let (columns, rows) =
                        chart::from_server(&result.columns, &result.rows, settings);
                    (columns, rows, None)
                }
                None => {
                    // An older server without the aggregation API: the rows held here.
                    let page = first_rows.ok_or_else(|| {
                        ApiError::local("the server cannot aggregate this result")
                    })?;
                    let (columns, rows) =
                        chart::aggregate_rows(&page.columns, &page.rows, settings);
                    let note = (page.total_rows > page.rows.len() as u64).then(|| {
                        format!(
                            "This server cannot aggregate results: the chart shows the first {} of {} rows.",
                            page.rows.len(),
                            page.total_rows
                        )
                    });
                    (columns, rows, note)
                }
            }
        }
    };
    Ok(Drawn {
        records: chart::records(&columns, &rows, settings),
        note,
    })
}

#[component]
pub fn ChartPanel(
    source: GridSource,
    columns: Vec<Column>,
    saved: Option<ChartSettings>,
    view: RwSignal<GridView>,
    first_rows: RwSignal<Option<Result<api::ResultPage, ApiError>>>,
) -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let Some(initial) = saved.clone().or_else(|| chart::default_settings(&columns)) else {
        return view! { <span></span> }.into_any();
    };
    let settings = RwSignal::new(initial);
    let drawn = RwSignal::new(None::<Result<Drawn, ApiError>>);
    let host = NodeRef::<leptos::html::Div>::new();
    let source = StoredValue::new(source);
    let columns = StoredValue::new(columns);
    let x_type = move |name: &str| {
        columns.with_value(|cs| {
            cs.iter()
                .find(|c| c.name == name)
                .map(|c| c.data_type.clone())
                .unwrap_or_default()
        })
    };

    // Aggregate again when the settings or the grid's filters change.
    Effect::new(move |_| {
        let wanted = settings.get();
        let filters = view.with(|v| GridView {
            sort: None,
            filters: v.filters.clone(),
        });
        let rows = first_rows.with(|r| r.as_ref().and_then(|r| r.as_ref().ok().cloned()));
        let server_fallback_ready =
            source.with_value(|s| s.engine == Engine::Local) || rows.is_some();
        if !server_fallback_ready {
            return;
        }
        drawn.set(None);
        let source = source.get_value();
        spawn_local(async move {
            let answer = aggregated(&source, &wanted, &filters, rows).await;
            // The panel may be gone by now (a new result replaced it): its
            // signals are disposed, and the answer is simply dropped.
            if settings.try_get_untracked().as_ref() == Some(&wanted) {
                let _ = drawn.try_set(Some(answer));
            }
        });
    });
    // Draw with Plot once both the data and the container are there.
    Effect::new(move |_| {
        let Some(Ok(data)) = drawn.get() else {
            return;
        };
        let Some(container) = host.get() else {
            return;
        };
        let current = settings.get_untracked();
        // Read now, while the panel exists; the task below may outlive it.
        let x_kind = x_type(&current.x);
        spawn_local(async move {
            let drawn_ok = async {
                let module = bundles::load(bundles::CHART).await?;
                let render = bundles::export(&module, "renderChart")?;
                let spec = serde_json::json!({
                    "kind": kind_code(current.kind),
                    "x": current.x,
                    "xType": x_kind,
                    "y": chart::title(&current).split(" by ").next().unwrap_or_default(),
                    "color": current.color,
                    "title": chart::title(&current),
                    "description": format!("{} points; the data table below lists them.", data.records.len()),
                });
                let parse = |v: &Value| js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL);
                render
                    .call3(
                        &JsValue::NULL,
                        &container,
                        &parse(&spec),
                        &parse(&Value::Array(data.records.clone())),
                    )
                    .map_err(|e| bundles::message(&e))?;
                Ok::<(), String>(())
            }
            .await;
            if let Err(error) = drawn_ok {
                web_sys::console::warn_1(&format!("chart unavailable: {error}").into());
                container.set_text_content(Some(&format!("The chart cannot be drawn: {error}")));
            }
        });
    });

    let names =
        move || columns.with_value(|cs| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
    let numeric_names = move || {
        columns.with_value(|cs| {
            cs.iter()
                .filter(|c| crate::grid::is_numeric_type(&c.data_type))
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        })
    };
    let options = move |list: Vec<String>, selected: Option<String>, none: Option<&'static str>| {
        let none_option = none.map(|label| {
            let is_selected = selected.is_none();
            view! { <option value="" selected=is_selected>{label}</option> }
        });
        let rest = list
            .into_iter()
            .map(|name| {
                let is_selected = selected.as_deref() == Some(name.as_str());
                let value = name.clone();
                view! { <option value=value selected=is_selected>{name}</option> }
            })
            .collect_view();
        view! { {none_option} {rest} }
    };
    let saved_now = move || {
        let query_id = source.with_value(|s| s.query_id);
        engine()
            .view(workbench.session_id)
            .query(query_id)
            .and_then(|q| q.chart.clone())
    };
    let save = move |_| {
        let query_id = source.with_value(|s| s.query_id);
        engine().submit(
            workbench.session_id,
            SessionCommand::ConfigureChart {
                query_id,
                chart: settings.get_untracked(),
            },
        );
    };
    let set = move |change: &dyn Fn(&mut ChartSettings)| {
        settings.update(|s| change(s));
    };

    view! {
        <section class="card chart-card" data-testid="chart-panel" aria-labelledby="chart-heading">
            <div class="row end">
                <h2 id="chart-heading">"Chart"</h2>
                <div class="row small chart-controls">
                    <label>
                        "Type "
                        <select
                            data-testid="chart-kind"
                            on:change=move |ev| {
                                let kind = parse_kind(&event_target_value(&ev));
                                set(&|s| s.kind = kind)
                            }
                        >
                            {move || {
                                let current = settings.get().kind;
                                [ChartKind::Bar, ChartKind::Line, ChartKind::Scatter, ChartKind::Histogram]
                                    .into_iter()
                                    .map(|k| {
                                        let label = match k {
                                            ChartKind::Bar => "Bar",
                                            ChartKind::Line => "Line",
                                            ChartKind::Scatter => "Scatter",
                                            ChartKind::Histogram => "Histogram",
                                        };
                                        view! { <option value=kind_code(k) selected=current == k>{label}</option> }
                                    })
                                    .collect_view()
                            }}
                        </select>
                    </label>
                    <label>
                        "X "
                        <select
                            data-testid="chart-x"
                            on:change=move |ev| {
                                let x = event_target_value(&ev);
                                set(&|s| s.x = x.clone())
                            }
                        >
                            {move || options(names(), Some(settings.get().x), None)}
                        </select>
                    </label>
                    <label>
                        "Value "
                        <select
                            data-testid="chart-aggregate"
                            on:change=move |ev| {
                                let aggregate = parse_aggregate(&event_target_value(&ev));
                                set(&|s| s.aggregate = aggregate)
                            }
                        >
                            {move || {
                                let current = settings.get().aggregate;
                                [ChartAggregate::Count, ChartAggregate::Sum, ChartAggregate::Avg, ChartAggregate::Min, ChartAggregate::Max]
                                    .into_iter()
                                    .map(|a| view! { <option value=a.name() selected=current == a>{a.name()}</option> })
                                    .collect_view()
                            }}
                        </select>
                    </label>
                    <label>
                        "of "
                        <select
                            data-testid="chart-y"
                            on:change=move |ev| {
                                let y = event_target_value(&ev);
                                set(&|s| s.y = (!y.is_empty()).then(|| y.clone()))
                            }
                        >
                            {move || options(numeric_names(), settings.get().y, Some("(rows)"))}
                        </select>
                    </label>
                    <label>
                        "Colour "
                        <select
                            data-testid="chart-color"
                            on:change=move |ev| {
                                let color = event_target_value(&ev);
                                set(&|s| s.color = (!color.is_empty()).then(|| color.clone()))
                            }
                        >
                            {move || options(names(), settings.get().color, Some("none"))}
                        </select>
                    </label>
                    <button
                        type="button"
                        class="ghost small"
                        data-testid="chart-save"
                        disabled=move || saved_now() == Some(settings.get())
                        on:click=save
                    >
                        {move || if saved_now() == Some(settings.get()) { "Saved" } else { "Save with query" }}
                    </button>
                </div>
            </div>
            <figure class="chart-figure" aria-label=move || chart::title(&settings.get())>
                <div class="chart-box" node_ref=host data-testid="chart-box" role="img" aria-label=move || chart::title(&settings.get())></div>
                <figcaption class="muted small" data-testid="chart-caption">
                    {move || chart::title(&settings.get())}
                    {move || match drawn.get() {
                        None => " · aggregating…".to_owned(),
                        Some(Ok(d)) => d.note.map(|n| format!(" · {n}")).unwrap_or_default(),
                        Some(Err(e)) => format!(" · unavailable: {} (error id {})", e.message, e.error_id),
                    }}
                </figcaption>
            </figure>
            <details class="chart-data small">
                <summary>"Data table (the chart as text)"</summary>
                <table class="result-table" data-testid="chart-data">
                    <thead>
                        <tr>
                            <th scope="col">{move || settings.get().x}</th>
                            {move || settings.get().color.map(|c| view! { <th scope="col">{c}</th> })}
                            <th scope="col">"value"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || match drawn.get() {
                            Some(Ok(d)) => d
                                .records
                                .iter()
                                .take(500)
                                .map(|r| {
                                    let x = match (&r["x"], r.get("x2")) {
                                        (x, Some(x2)) => format!("{} – {}", api::cell_text(x), api::cell_text(x2)),
                                        (x, None) => api::cell_text(x),
                                    };
                                    let color = r.get("color").map(|c| view! { <td>{api::cell_text(c)}</td> });
                                    view! {
                                        <tr data-testid="chart-datum">
                                            <td>{x}</td>
                                            {color}
                                            <td class="numeric" data-testid="chart-value">{api::cell_text(&r["y"])}</td>
                                        </tr>
                                    }
                                })
                                .collect_view()
                                .into_any(),
                            _ => view! { <tr></tr> }.into_any(),
                        }}
                    </tbody>
                </table>
            </details>
        </section>
    }
    .into_any()
}
