//! Time travel: the session as it was at any earlier version (a slider over
//! its event log, folded by `shared_domain::timeline`, i.e. by the same
//! `QuerySession` code as everywhere), and the differences between that
//! version and another. Reads the events this browser holds, so it works
//! offline.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::timeline::{self, Change, Timeline};
use shared_domain::Aggregate;

use super::session::Workbench;
use super::sessions::{lifecycle_name, title_of};
use crate::offline::engine::engine;

#[component]
pub fn TimeTravel() -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let session_id = workbench.session_id;
    let open = RwSignal::new(false);
    let timeline = RwSignal::new(None::<Result<Timeline, String>>);
    let version = RwSignal::new(0u64);
    let compare = RwSignal::new(0u64);

    let load = move || {
        spawn_local(async move {
            let answer = crate::held::of_session(session_id)
                .await
                .and_then(|events| Timeline::new(session_id, &events).map_err(|e| e.to_string()));
            if let Ok(t) = &answer {
                version.set(t.latest());
                compare.set(t.latest());
            }
            timeline.set(Some(answer));
        });
    };
    // Reload while open when the session changes (a new event arrived).
    Effect::new(move |_| {
        let _ = engine().view(session_id).version();
        if open.get_untracked() {
            load();
        }
    });
    let toggle = move |_| {
        let now_open = !open.get_untracked();
        open.set(now_open);
        if now_open {
            load();
        }
    };

    let latest = move || {
        timeline.with(|t| match t {
            Some(Ok(t)) => t.latest(),
            _ => 0,
        })
    };
    let state_at = move |v: u64| {
        timeline.with(|t| match t {
            Some(Ok(t)) => Some(t.at(v)),
            _ => None,
        })
    };

    view! {
        <section class="card time-travel" data-testid="time-travel" aria-labelledby="time-travel-heading">
            <div class="row end">
                <h2 id="time-travel-heading">"Time travel"</h2>
                <button
                    type="button"
                    class="ghost small"
                    data-testid="time-travel-toggle"
                    aria-expanded=move || open.get().to_string()
                    on:click=toggle
                >
                    {move || if open.get() { "Hide" } else { "Show earlier versions" }}
                </button>
            </div>
            <Show when=move || open.get()>
                {move || match timeline.get() {
                    None => view! { <p class="muted small">"Reading the session's events…"</p> }.into_any(),
                    Some(Err(error)) => {
                        view! {
                            <p class="inline-error small" data-testid="time-travel-error">{error}</p>
                        }
                            .into_any()
                    }
                    Some(Ok(_)) => {
                        view! {
                            <label class="slider small">
                                <span>
                                    "Version "
                                    <strong data-testid="time-travel-version">{move || version.get()}</strong>
                                    " of " {latest}
                                </span>
                                <input
                                    type="range"
                                    data-testid="time-travel-slider"
                                    aria-label="Session version"
                                    min="1"
                                    max=move || latest().to_string()
                                    prop:value=move || version.get().to_string()
                                    on:input=move |ev| {
                                        version.set(event_target_value(&ev).parse().unwrap_or(1))
                                    }
                                />
                            </label>
                            {move || {
                                let v = version.get();
                                let made_by = timeline.with(|t| match t {
                                    Some(Ok(t)) => {
                                        let at = t
                                            .recorded_at(v)
                                            .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                                            .unwrap_or_default();
                                        format!("{} · {at}", t.event_type(v).unwrap_or("-"))
                                    }
                                    _ => String::new(),
                                });
                                state_at(v)
                                    .map(|s| {
                                        view! {
                                            <dl class="facts small" data-testid="time-travel-state">
                                                <div>
                                                    <dt>"Title"</dt>
                                                    <dd data-testid="time-travel-title">{title_of(&s)}</dd>
                                                </div>
                                                <div>
                                                    <dt>"Dataset"</dt>
                                                    <dd>
                                                        {s
                                                            .dataset
                                                            .as_ref()
                                                            .map(timeline::dataset_label)
                                                            .unwrap_or_else(|| "none".into())}
                                                    </dd>
                                                </div>
                                                <div>
                                                    <dt>"Queries"</dt>
                                                    <dd>{s.history.len()}</dd>
                                                </div>
                                                <div>
                                                    <dt>"State"</dt>
                                                    <dd>{lifecycle_name(s.lifecycle)}</dd>
                                                </div>
                                            </dl>
                                            <p class="muted small" data-testid="time-travel-event">{made_by}</p>
                                        }
                                    })
                            }}
                            <label class="slider small">
                                <span>
                                    "Compare with version "
                                    <strong data-testid="time-travel-compare-version">{move || compare.get()}</strong>
                                </span>
                                <input
                                    type="range"
                                    data-testid="time-travel-compare"
                                    aria-label="Version to compare with"
                                    min="1"
                                    max=move || latest().to_string()
                                    prop:value=move || compare.get().to_string()
                                    on:input=move |ev| {
                                        compare.set(event_target_value(&ev).parse().unwrap_or(1))
                                    }
                                />
                            </label>
                            <ul class="changes small" data-testid="time-travel-diff" aria-label="Changes between the versions">
                                {move || {
                                    let (a, b) = (version.get(), compare.get());
                                    let (from, to) = (a.min(b), a.max(b));
                                    let changes = match (state_at(from), state_at(to)) {
                                        (Some(old), Some(new)) => timeline::diff(&old, &new),
                                        _ => Vec::new(),
                                    };
                                    if changes.is_empty() {
                                        return view! { <li class="muted">"No differences."</li> }.into_any();
                                    }
                                    changes
                                        .into_iter()
                                        .map(|c| view! { <li data-testid="time-travel-change">{describe(&c)}</li> })
                                        .collect_view()
                                        .into_any()
                                }}
                            </ul>
                        }
                            .into_any()
                    }
                }}
            </Show>
        </section>
    }
}

fn describe(change: &Change) -> String {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    match change {
        Change::Title { from, to } => format!("Title: {} → {}", or_none(from), or_none(to)),
        Change::Dataset { from, to } => format!("Dataset: {} → {}", or_none(from), or_none(to)),
        Change::Lifecycle { from, to } => {
            format!("State: {} → {}", lifecycle_name(*from), lifecycle_name(*to))
        }
        Change::QueryAdded {
            sql,
            engine,
            outcome,
            ..
        } => format!("Query added ({engine:?}): {sql} — {outcome}"),
        Change::QueryOutcome { sql, from, to, .. } => format!("Query {sql}: {from} → {to}"),
    }
}
