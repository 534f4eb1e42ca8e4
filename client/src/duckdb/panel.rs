//! The session view's "Local data" card: open a CSV, JSON or Parquet file (picker or
//! drag and drop) into duckdb-wasm and attach it as a browser-local dataset,
//! take the attached server dataset offline, see what the browser keeps,
//! and the local engine's state.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{DatasetRef, DatasetUrl, LocalFileName, SessionCommand};
use wasm_bindgen::JsCast;

use super::choice::EngineChoice;
use super::local_data::{self, LocalDataset};
use super::runner::{self, EngineStatus};
use crate::offline::engine::engine;
use uuid::Uuid;

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The local datasets the browser keeps, shared by the panel and the
/// engine choice (which runs queries on offline copies locally).
#[derive(Clone, Copy)]
pub struct LocalCatalog {
    pub datasets: RwSignal<Vec<LocalDataset>>,
    pub status: RwSignal<EngineStatus>,
}

impl LocalCatalog {
    pub fn new() -> Self {
        let catalog = Self {
            datasets: RwSignal::new(Vec::new()),
            status: RwSignal::new(EngineStatus::NotStarted),
        };
        catalog.refresh();
        catalog
    }

    /// Re-reads the browser's store.
    pub fn refresh(self) {
        spawn_local(async move {
            match local_data::list().await {
                Ok(list) => self.datasets.set(list),
                Err(error) => engine().report_input(format!("local data unavailable: {error}")),
            }
        });
    }

    /// Server datasets available offline, by name.
    pub fn offline_copies(self) -> Vec<String> {
        self.datasets.with_untracked(|list| {
            list.iter()
                .filter(|d| d.is_offline_copy())
                .map(|d| d.name.clone())
                .collect()
        })
    }
}

impl Default for LocalCatalog {
    fn default() -> Self {
        Self::new()
    }
}

/// `sql` and `choice` are the session view's editor text and engine
/// choice: attaching a file proposes a query on it, on the Auto engine.
#[component]
pub fn LocalDataPanel(
    session_id: Uuid,
    sql: RwSignal<String>,
    choice: RwSignal<EngineChoice>,
    catalog: LocalCatalog,
) -> impl IntoView {
    let busy = RwSignal::new(None::<String>);
    let last_error = RwSignal::new(None::<String>);

    let attach_local = move |dataset: &LocalDataset| {
        let name = match LocalFileName::new(dataset.file_name.clone()) {
            Ok(name) => name,
            Err(error) => {
                engine().report_input(error.to_string());
                return;
            }
        };
        let attached = engine().submit(
            session_id,
            SessionCommand::AttachDataset {
                dataset: DatasetRef::Local {
                    name,
                    size_bytes: dataset.size_bytes,
                },
            },
        );
        if attached.is_some() {
            sql.set(format!("SELECT * FROM {} LIMIT 100", dataset.name));
            choice.set(EngineChoice::Auto);
        }
    };

    let open_files = move |files: Vec<web_sys::File>| {
        runner::warm_up(catalog.status);
        for file in files {
            let label = file.name();
            busy.set(Some(format!("Opening {label}…")));
            last_error.set(None);
            spawn_local(async move {
                match local_data::open_file(&file).await {
                    Ok(dataset) => {
                        attach_local(&dataset);
                        catalog.refresh();
                    }
                    Err(error) => {
                        let message = error.to_string();
                        last_error.set(Some(message.clone()));
                        engine().report_input(message);
                    }
                }
                busy.set(None);
            });
        }
    };

    let on_pick = move |ev: leptos::ev::Event| {
        let Some(input) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        else {
            return;
        };
        let files = input.files().map(file_list).unwrap_or_default();
        input.set_value("");
        open_files(files);
    };
    let dragging = RwSignal::new(false);
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        let files = ev
            .data_transfer()
            .and_then(|dt| dt.files())
            .map(file_list)
            .unwrap_or_default();
        open_files(files);
    };

    let url_text = RwSignal::new(String::new());
    let attach_url = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let url = match DatasetUrl::new(url_text.get_untracked().trim()) {
            Ok(url) => url,
            Err(error) => {
                engine().report_input(error.to_string());
                return;
            }
        };
        let name = local_data::url_sql_name(url.as_str());
        let attached = engine().submit(
            session_id,
            SessionCommand::AttachDataset {
                dataset: DatasetRef::Url { url },
            },
        );
        if attached.is_some() {
            url_text.set(String::new());
            sql.set(format!("SELECT * FROM {name} LIMIT 100"));
            choice.set(EngineChoice::Auto);
            runner::warm_up(catalog.status);
        }
    };

    let attached_server = move || match engine().view(session_id).dataset {
        Some(DatasetRef::Server { name }) => Some(name.as_str().to_owned()),
        _ => None,
    };
    let is_offline = move |name: &str| {
        catalog
            .datasets
            .with(|list| list.iter().any(|d| d.is_offline_copy() && d.name == name))
    };
    let take_offline = move |_| {
        let Some(name) = attached_server() else {
            return;
        };
        runner::warm_up(catalog.status);
        busy.set(Some(format!("Taking {name} offline…")));
        last_error.set(None);
        spawn_local(async move {
            match local_data::take_offline(&name).await {
                Ok(_) => catalog.refresh(),
                Err(error) => {
                    let message = format!("{name} could not be taken offline: {error}");
                    last_error.set(Some(message.clone()));
                    engine().report_input(message);
                }
            }
            busy.set(None);
        });
    };

    view! {
        <section class="card local-data" data-testid="local-data-panel">
            <h2>"Local data"</h2>
            <div
                class="drop-zone small"
                class:dragging=move || dragging.get()
                data-testid="local-drop"
                on:dragover=move |ev: leptos::ev::DragEvent| {
                    ev.prevent_default();
                    dragging.set(true);
                }
                on:dragleave=move |_| dragging.set(false)
                on:drop=on_drop
            >
                <label class="file-pick">
                    "Open a CSV, JSON or Parquet file "
                    <input
                        type="file"
                        data-testid="local-file-input"
                        accept=".csv,.tsv,.txt,.json,.parquet,.parq"
                        multiple=true
                        on:change=on_pick
                    />
                </label>
                <div class="muted">"or drop it here. It stays in this browser."</div>
            </div>
            <form class="row small url-row" on:submit=attach_url>
                <input
                    type="url"
                    data-testid="url-input"
                    aria-label="CSV URL"
                    placeholder="https://…/data.csv"
                    bind:value=url_text
                />
                <button type="submit" class="ghost small" data-testid="attach-url">
                    "Attach URL"
                </button>
            </form>
            {move || {
                attached_server()
                    .map(|name| {
                        let offline = is_offline(&name);
                        view! {
                            <div class="row small offline-row">
                                <button
                                    class="ghost small"
                                    data-testid="take-offline"
                                    disabled=move || busy.get().is_some()
                                    on:click=take_offline
                                >
                                    {if offline { "Refresh offline copy" } else { "Take offline" }}
                                </button>
                                <span class="muted" data-testid="offline-state">
                                    {if offline {
                                        format!("{name} is available offline")
                                    } else {
                                        format!("{name} is on the server only")
                                    }}
                                </span>
                            </div>
                        }
                    })
            }}
            <div class="muted small" data-testid="local-busy">
                {move || busy.get().unwrap_or_default()}
            </div>
            {move || {
                last_error
                    .get()
                    .map(|message| {
                        view! {
                            <div class="inline-error small" data-testid="local-error">
                                {message}
                            </div>
                        }
                    })
            }}
            <ul class="schema local-list" data-testid="local-datasets">
                {move || {
                    catalog
                        .datasets
                        .get()
                        .into_iter()
                        .map(|dataset| {
                            let kind = if dataset.is_offline_copy() { "offline copy" } else { "file" };
                            let attach_with = dataset.clone();
                            let remove_with = dataset.clone();
                            view! {
                                <li data-testid="local-dataset">
                                    <span class="mono" data-testid="local-dataset-name">
                                        {dataset.name.clone()}
                                    </span>
                                    <span class="muted small">
                                        {format!(" {kind} · {}", human_size(dataset.size_bytes))}
                                    </span>
                                    <Show when=move || !dataset.is_offline_copy()>
                                        <button
                                            class="ghost small"
                                            data-testid="attach-local"
                                            on:click={
                                                let d = attach_with.clone();
                                                move |_| attach_local(&d)
                                            }
                                        >
                                            "Attach"
                                        </button>
                                    </Show>
                                    <button
                                        class="ghost small"
                                        data-testid="remove-local"
                                        on:click={
                                            let d = remove_with.clone();
                                            move |_| {
                                                let d = d.clone();
                                                spawn_local(async move {
                                                    if let Err(error) = local_data::remove(&d).await {
                                                        engine().report_input(error.to_string());
                                                    }
                                                    catalog.refresh();
                                                });
                                            }
                                        }
                                    >
                                        "Remove"
                                    </button>
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
            <div
                class="muted small"
                data-testid="local-engine-status"
                data-bundle=move || match catalog.status.get() {
                    EngineStatus::Ready { bundle, .. } => bundle,
                    _ => String::new(),
                }
                data-threads=move || match catalog.status.get() {
                    EngineStatus::Ready { threads, .. } => threads.to_string(),
                    _ => String::new(),
                }
            >
                {move || catalog.status.get().describe()}
            </div>
        </section>
    }
}

fn file_list(list: web_sys::FileList) -> Vec<web_sys::File> {
    (0..list.length()).filter_map(|i| list.get(i)).collect()
}
