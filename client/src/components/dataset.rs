//! The dataset panel: the server's catalog (`GET /api/datasets`), attaching
//! one to the session, and the attached dataset's columns as a schema list.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{DatasetName, DatasetRef, SessionCommand};

use super::session::Workbench;
use crate::api::{self, ApiError, Dataset};
use crate::offline::engine::engine;

#[component]
pub fn DatasetPanel() -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let catalog = RwSignal::new(None::<Result<Vec<Dataset>, ApiError>>);
    let choice = RwSignal::new(String::new());
    let load = move || {
        spawn_local(async move {
            let answer = api::datasets().await;
            if let Ok(list) = &answer {
                engine().know_catalog(list.iter().map(|d| d.name.clone()));
                if choice.get_untracked().is_empty() {
                    if let Some(first) = list.first() {
                        choice.set(first.name.clone());
                    }
                }
            }
            catalog.set(Some(answer));
        });
    };
    load();
    let attached = Memo::new(move |_| engine().view(workbench.session_id).dataset.clone());
    let attached_name = move || match attached.get() {
        Some(DatasetRef::Server { name }) => Some(name.as_str().to_owned()),
        Some(DatasetRef::Url { url }) => Some(url.as_str().to_owned()),
        Some(DatasetRef::Local { name, .. }) => Some(name.as_str().to_owned()),
        None => None,
    };
    let is_open =
        move || engine().view(workbench.session_id).lifecycle == shared_domain::Lifecycle::Open;
    let attach = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = match DatasetName::new(choice.get_untracked()) {
            Ok(name) => name,
            Err(error) => {
                engine().report_input(error.to_string());
                return;
            }
        };
        let sql = format!("SELECT * FROM {} LIMIT 100", name.as_str());
        if engine()
            .submit(
                workbench.session_id,
                SessionCommand::AttachDataset {
                    dataset: DatasetRef::Server { name },
                },
            )
            .is_some()
            && workbench.sql.get_untracked().trim() == "SELECT 42"
        {
            workbench.sql.set(sql);
        }
    };
    // The schema of the attached dataset, else of the one chosen in the list.
    let schema = move || {
        let name = attached_name().unwrap_or_else(|| choice.get());
        catalog.with(|c| {
            c.as_ref()
                .and_then(|c| c.as_ref().ok())
                .and_then(|list| list.iter().find(|d| d.name == name).cloned())
        })
    };

    view! {
        <section class="card dataset" data-testid="dataset-panel">
            <h2>"Dataset"</h2>
            <div class="attached small">
                {move || match attached_name() {
                    Some(name) => {
                        view! {
                            "Attached: "
                            <code data-testid="attached-dataset">{name}</code>
                        }
                            .into_any()
                    }
                    None => view! { <span class="muted">"None attached."</span> }.into_any(),
                }}
            </div>
            {move || match catalog.get() {
                None => view! { <div class="muted small">"Loading the catalog…"</div> }.into_any(),
                Some(Err(error)) => {
                    view! {
                        <div class="inline-error small" data-testid="dataset-error">
                            "Catalog unavailable: " {error.message.clone()}
                            <div class="error-id">
                                "error id " <code data-testid="error-id">{error.error_id.clone()}</code>
                            </div>
                            <button class="ghost small" on:click=move |_| load()>
                                "Retry"
                            </button>
                        </div>
                    }
                        .into_any()
                }
                Some(Ok(list)) => {
                    view! {
                        <form class="row" on:submit=attach>
                            <select
                                data-testid="dataset-select"
                                aria-label="Dataset"
                                on:change=move |ev| choice.set(event_target_value(&ev))
                                prop:value=move || choice.get()
                            >
                                {list
                                    .iter()
                                    .map(|d| {
                                        let rows = d
                                            .rows
                                            .map(|r| format!(" ({r} rows)"))
                                            .unwrap_or_default();
                                        view! {
                                            <option value=d.name.clone()>
                                                {format!("{}{rows}", d.name)}
                                            </option>
                                        }
                                    })
                                    .collect_view()}
                            </select>
                            <button
                                type="submit"
                                class="ghost"
                                data-testid="attach-dataset"
                                disabled=move || !is_open()
                            >
                                "Attach"
                            </button>
                        </form>
                    }
                        .into_any()
                }
            }}
            <ul class="schema" data-testid="schema">
                {move || {
                    schema()
                        .map(|dataset| {
                            dataset
                                .columns
                                .into_iter()
                                .map(|column| {
                                    view! {
                                        <li data-testid="schema-column">
                                            <span class="mono">{column.name}</span>
                                            <span class="muted small">{column.data_type}</span>
                                        </li>
                                    }
                                })
                                .collect_view()
                        })
                }}
            </ul>
        </section>
    }
}
