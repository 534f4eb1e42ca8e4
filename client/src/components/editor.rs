//! The SQL editor (CodeMirror 6 from the lazily loaded `/bundles/sql-editor.js`,
//! a plain text area until it arrives; Ctrl/Cmd+Enter runs the selection or
//! the statement under the cursor; autocomplete of the server catalog's and
//! the local engine's tables and columns; the session's draft kept in
//! `localStorage`), the engine selector, and the active query's progress bar
//! and cancel button.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{QueryState, SessionCommand};
use uuid::Uuid;
use wasm_bindgen::prelude::*;

use super::session::Workbench;
use crate::duckdb::choice::EngineChoice;
use crate::offline::engine::engine;
use crate::{api, bundles, progress, sqltext};

/// The mounted CodeMirror editor and the callbacks it calls (kept alive
/// as long as it is mounted).
struct Mounted {
    handle: JsValue,
    _on_change: Closure<dyn FnMut(String)>,
    _on_run: Closure<dyn FnMut(String, u32, u32)>,
}

impl Mounted {
    fn call(&self, method: &str, args: &[JsValue]) {
        if let Err(error) = bundles::call_method(&self.handle, method, args) {
            web_sys::console::warn_1(&format!("sql editor {method}: {error}").into());
        }
    }
}

/// Loading the editor bundle, or why it failed (the plain text area then stays).
#[derive(Debug, Clone, PartialEq)]
enum EditorState {
    Loading,
    Ready,
    Failed(String),
}

/// The session's draft, kept in the browser across visits and reloads.
pub fn load_draft(session_id: Uuid) -> String {
    local_storage()
        .and_then(|s| s.get_item(&sqltext::draft_key(&session_id)).ok().flatten())
        .unwrap_or_else(|| sqltext::DEFAULT_SQL.to_owned())
}

fn save_draft(session_id: Uuid, text: &str) {
    if let Some(storage) = local_storage() {
        // A full or disabled storage only loses the draft, never the session.
        let _ = storage.set_item(&sqltext::draft_key(&session_id), text);
    }
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

#[component]
pub fn Editor() -> impl IntoView {
    let workbench = expect_context::<Workbench>();
    let host = NodeRef::<leptos::html::Div>::new();
    let state = RwSignal::new(EditorState::Loading);
    let mounted = StoredValue::new_local(None::<Mounted>);
    let session_id = workbench.session_id;

    // Mount CodeMirror once its bundle is loaded (the text area serves meanwhile).
    Effect::new(move |done: Option<bool>| {
        if done == Some(true) {
            return true;
        }
        let Some(parent) = host.get() else {
            return false;
        };
        spawn_local(async move {
            match mount(parent, workbench).await {
                Ok(editor) => {
                    mounted.set_value(Some(editor));
                    state.set(EditorState::Ready);
                }
                Err(error) => {
                    web_sys::console::warn_1(&format!("sql editor unavailable: {error}").into());
                    state.set(EditorState::Failed(error));
                }
            }
        });
        true
    });
    on_cleanup(move || {
        mounted.update_value(|m| {
            if let Some(editor) = m.take() {
                editor.call("destroy", &[]);
            }
        });
    });
    // Text set elsewhere (a history entry, an attached dataset) reaches the editor.
    Effect::new(move |_| {
        let text = workbench.sql.get();
        save_draft(session_id, &text);
        if state.get() == EditorState::Ready {
            mounted.with_value(|m| {
                if let Some(editor) = m {
                    editor.call("setDoc", &[JsValue::from_str(&text)]);
                }
            });
        }
    });
    // Autocomplete: the server catalog and the local engine's tables.
    let catalog = RwSignal::new(Vec::<(String, Vec<String>)>::new());
    spawn_local(async move {
        if let Ok(list) = api::datasets().await {
            catalog.set(
                list.into_iter()
                    .map(|d| (d.name, d.columns.into_iter().map(|c| c.name).collect()))
                    .collect(),
            );
        }
    });
    let local_tables = RwSignal::new(Vec::<(String, Vec<String>)>::new());
    Effect::new(move |_| {
        // Re-read when the engine starts, local data changes or a query ran.
        workbench.local.status.track();
        workbench.local.datasets.track();
        let _ = engine().view(session_id).history.len();
        spawn_local(async move {
            if let Ok(tables) = crate::duckdb::local_data::table_columns().await {
                local_tables.set(tables);
            }
        });
    });
    Effect::new(move |_| {
        if state.get() != EditorState::Ready {
            return;
        }
        let mut local: Vec<(String, Vec<String>)> = workbench
            .local
            .datasets
            .get()
            .into_iter()
            .map(|d| (d.name, Vec::new()))
            .collect();
        local.extend(local_tables.get());
        let schema = sqltext::completion_schema(&catalog.get(), &local);
        let default_table = engine()
            .view(session_id)
            .dataset
            .as_ref()
            .map(crate::duckdb::local_data::table_name_of);
        let schema = serde_json::to_string(&schema).unwrap_or_else(|_| "{}".into());
        let schema = js_sys::JSON::parse(&schema).unwrap_or(JsValue::NULL);
        let default_table = default_table.map_or(JsValue::NULL, |t| JsValue::from_str(&t));
        mounted.with_value(|m| {
            if let Some(editor) = m {
                editor.call("setSchema", &[schema.clone(), default_table.clone()]);
            }
        });
    });

    let run = move || {
        let ran = mounted.with_value(|m| match m {
            Some(editor) => {
                editor.call("run", &[]);
                true
            }
            None => false,
        });
        if !ran {
            workbench.run_sql(workbench.sql.get_untracked());
        }
    };
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        run();
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
            ev.prevent_default();
            run();
        }
    };
    let on_engine = move |ev: leptos::ev::Event| {
        workbench
            .choice
            .set(EngineChoice::parse(&event_target_value(&ev)));
    };
    let plain = move || state.get() != EditorState::Ready;
    view! {
        <section class="card editor">
            <h2 id="query-heading">"Query"</h2>
            <form on:submit=on_submit>
                <div
                    class="code-editor"
                    node_ref=host
                    data-testid="sql-editor"
                    data-state=move || match state.get() {
                        EditorState::Loading => "loading",
                        EditorState::Ready => "ready",
                        EditorState::Failed(_) => "failed",
                    }
                ></div>
                <Show when=plain>
                    // Until the editor arrives (or if it cannot load), a plain text area.
                    <textarea
                        id="sql-input"
                        data-testid=move || {
                            if matches!(state.get(), EditorState::Failed(_)) {
                                "sql-input"
                            } else {
                                "sql-input-plain"
                            }
                        }
                        rows="5"
                        spellcheck="false"
                        aria-label="SQL"
                        bind:value=workbench.sql
                        on:keydown=on_keydown
                    ></textarea>
                </Show>
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
                        <kbd>"Ctrl"</kbd> "/" <kbd>"⌘"</kbd> " + " <kbd>"Enter"</kbd>
                        " runs the selection or the statement at the cursor"
                    </span>
                    <button type="submit" class="primary" data-testid="submit-query">
                        "Run"
                    </button>
                </div>
            </form>
        </section>
    }
}

/// Imports the editor bundle and mounts CodeMirror into `parent`, wired to
/// the session's text and runs.
async fn mount(parent: web_sys::HtmlDivElement, workbench: Workbench) -> Result<Mounted, String> {
    {
        let module = bundles::load(bundles::SQL_EDITOR).await?;
        let mount_editor = bundles::export(&module, "mountEditor")?;
        let on_change = Closure::<dyn FnMut(String)>::new(move |text: String| {
            if workbench.sql.get_untracked() != text {
                workbench.sql.set(text);
            }
        });
        let on_run =
            Closure::<dyn FnMut(String, u32, u32)>::new(move |text: String, from: u32, to: u32| {
                workbench.run_sql(sqltext::text_to_run(&text, from as usize, to as usize));
            });
        let options = js_sys::Object::new();
        let set = |key: &str, value: &JsValue| {
            let _ = js_sys::Reflect::set(&options, &JsValue::from_str(key), value);
        };
        set("doc", &JsValue::from_str(&workbench.sql.get_untracked()));
        set("label", &JsValue::from_str("SQL"));
        set("testid", &JsValue::from_str("sql-input"));
        set("onChange", on_change.as_ref());
        set("onRun", on_run.as_ref());
        let handle = mount_editor
            .call2(&JsValue::NULL, &parent, &options)
            .map_err(|e| bundles::message(&e))?;
        Ok(Mounted {
            handle,
            _on_change: on_change,
            _on_run: on_run,
        })
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
                    let fill = move || engine().progress(query_id).and_then(|p| progress::fill(&p));
                    let percent = move || fill().unwrap_or(0.0);
                    let described = move || match engine().progress(query_id) {
                        Some(p) => progress::describe(&p),
                        None if running => "running".to_owned(),
                        None => "waiting to start".to_owned(),
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
                                class:indeterminate=move || !running || fill().is_none()
                                style:width=move || format!("{:.1}%", percent().clamp(2.0, 100.0))
                            ></div>
                        </div>
                        <div class="muted small" data-testid="query-progress-text">
                            {described}
                        </div>
                    }
                        .into_any()
                }
            }}
        </section>
    }
}
