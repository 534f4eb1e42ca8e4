//! One session: its summary (title, rename, close, version, state), the
//! dataset panel, the SQL editor with the active query, the history, and
//! the result of the selected query as a table and a chart.

use leptos::prelude::*;
use shared_domain::{Aggregate, Engine, Lifecycle, QueryId, SessionCommand};
use uuid::Uuid;

use super::account::{allowed, MembersPanel};
use super::dataset::DatasetPanel;
use super::editor::{ActiveQuery, Editor};
use super::history::History;
use super::result::ResultPanel;
use super::sessions::{lifecycle_name, rename, title_of};
use super::timetravel::TimeTravel;
use crate::duckdb::choice::{self, EngineChoice};
use crate::duckdb::panel::{LocalCatalog, LocalDataPanel};
use crate::offline::engine::{engine, Connection};
use crate::route::{Route, Router};

/// What the parts of one session view share.
#[derive(Clone, Copy)]
pub struct Workbench {
    pub session_id: Uuid,
    /// The editor's text.
    pub sql: RwSignal<String>,
    /// Where the next query runs (Auto is resolved before `SubmitQuery`).
    pub choice: RwSignal<EngineChoice>,
    /// The data this browser keeps for the local engine (issue 6).
    pub local: LocalCatalog,
    /// The query whose result is shown (None: the latest).
    pub selected: RwSignal<Option<QueryId>>,
}

impl Workbench {
    /// The query whose result is shown: the selected one, else the latest.
    pub fn shown_query(self) -> Option<QueryId> {
        self.selected
            .get()
            .or_else(|| engine().view(self.session_id).current_query)
    }

    /// Submits `text` (the editor's selection or statement) on the chosen engine.
    pub fn run_sql(self, text: String) {
        let sql = match shared_domain::SqlQuery::new(text.clone()) {
            Ok(sql) => sql,
            Err(error) => {
                engine().report_input(error.to_string());
                return;
            }
        };
        let query_id = QueryId(crate::ids::time_ordered_uuid());
        let chosen = choice::resolve(
            self.choice.get_untracked(),
            engine().view_untracked(self.session_id).dataset.as_ref(),
            &self.local.offline_copies(),
            !matches!(engine().connection_untracked(), Connection::Offline { .. }),
        );
        let command = SessionCommand::SubmitQuery {
            query_id,
            sql,
            engine: chosen,
        };
        let submitted = if chosen == Engine::Local {
            // Remembered until its outcome is stored: see `duckdb::runner`.
            engine().submit_local_query(self.session_id, query_id, command)
        } else {
            engine().submit(self.session_id, command)
        };
        if submitted.is_some() {
            self.selected.set(None);
            if chosen == Engine::Local {
                crate::duckdb::runner::warm_up(self.local.status);
                crate::duckdb::runner::start(self.session_id, query_id, text);
            }
        }
    }
}

#[component]
pub fn SessionView(session_id: Uuid) -> impl IntoView {
    let router = expect_context::<Router>();
    let workbench = Workbench {
        session_id,
        sql: RwSignal::new(super::editor::load_draft(session_id)),
        choice: RwSignal::new(EngineChoice::Auto),
        local: LocalCatalog::new(),
        selected: RwSignal::new(None),
    };
    provide_context(workbench);
    let session = move || engine().view(session_id);
    let exists = move || session().version() > 0;
    let is_open = move || session().lifecycle == Lifecycle::Open;
    // Controls the signed-in user's role does not allow are hidden.
    let may = move |command: SessionCommand| allowed(session_id, &session(), &command);
    let may_rename = move || {
        is_open()
            && may(SessionCommand::RenameSession {
                title: shared_domain::SessionTitle::new("x").expect("a valid title"),
            })
    };
    let may_close = move || may(SessionCommand::CloseSession {});
    let may_run = move || {
        is_open()
            && may(SessionCommand::CancelQuery {
                query_id: QueryId(Uuid::nil()),
            })
    };
    let draft = RwSignal::new(String::new());
    let on_rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if rename(session_id, &draft.get_untracked()) {
            draft.set(String::new());
        }
    };

    view! {
        <Show
            when=exists
            fallback=move || {
                view! {
                    <section class="card welcome" data-testid="session-missing">
                        <h1>"Session not found"</h1>
                        <p class="muted">
                            "This browser does not know session " <code>{session_id.to_string()}</code>
                            " (yet). It appears here as soon as the server sends it."
                        </p>
                        <button class="ghost" on:click=move |_| router.go(Route::Sessions)>
                            "All sessions"
                        </button>
                    </section>
                }
            }
        >
            <section class="card summary" data-testid="session">
                <div class="summary-head">
                    <div class="summary-title">
                        <h1 data-testid="session-title">{move || title_of(&session())}</h1>
                        <div class="muted mono small" data-testid="session-id">
                            {session_id.to_string()}
                        </div>
                    </div>
                    <div class="summary-actions">
                        <button
                            class="ghost"
                            data-testid="new-session-button"
                            on:click=move |_| router.go(Route::Sessions)
                        >
                            "All sessions"
                        </button>
                        <Show when=may_close>
                            <button
                                class="ghost danger"
                                data-testid="close-session"
                                disabled=move || !is_open()
                                on:click=move |_| {
                                    engine().submit(session_id, SessionCommand::CloseSession {});
                                }
                            >
                                "Close session"
                            </button>
                        </Show>
                    </div>
                </div>
                <div class="summary-body">
                    <dl class="facts">
                        <div>
                            <dt>"Version"</dt>
                            <dd data-testid="session-version">{move || session().version()}</dd>
                        </div>
                        <div>
                            <dt>"State"</dt>
                            <dd data-testid="session-lifecycle">
                                {move || lifecycle_name(session().lifecycle)}
                            </dd>
                        </div>
                        <div>
                            <dt>"Queries"</dt>
                            <dd data-testid="session-query-count">
                                {move || session().history.len()}
                            </dd>
                        </div>
                        <div>
                            <dt>"Server"</dt>
                            <dd data-testid="session-sync">
                                {move || {
                                    if engine().has_pending(session_id) {
                                        "changes pending"
                                    } else {
                                        "up to date"
                                    }
                                }}
                            </dd>
                        </div>
                    </dl>
                    <Show when=may_rename>
                        <form class="row rename" on:submit=on_rename>
                            <input
                                type="text"
                                data-testid="rename-input"
                                placeholder="New title"
                                maxlength="400"
                                bind:value=draft
                            />
                            <button type="submit" class="ghost" data-testid="rename-session">
                                "Rename"
                            </button>
                        </form>
                    </Show>
                </div>
            </section>
            <div class="workbench">
                <div class="side">
                    <MembersPanel session_id />
                    <DatasetPanel />
                    <LocalDataPanel
                        session_id
                        sql=workbench.sql
                        choice=workbench.choice
                        catalog=workbench.local
                    />
                    <History />
                    <TimeTravel />
                </div>
                <div class="main">
                    <Show when=may_run>
                        <Editor />
                    </Show>
                    <ActiveQuery />
                    <ResultPanel />
                </div>
            </div>
        </Show>
    }
}
