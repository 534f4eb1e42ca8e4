//! The app's reactive store: the current `Workbench`, the last error and the
//! sync status, plus the actions the components call.
//!
//! Actions mint ids (the imperative shell), hand the decision to the pure
//! `Workbench`, publish the outcome through signals and queue the command
//! for the server. Components get the store with `expect_context::<Store>()`.

use std::collections::VecDeque;

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_domain::{CommandEnvelope, QueryId, SessionCommand};
use uuid::Uuid;

use crate::errors::{ClientError, ErrorKind};
use crate::ids::random_uuid;
use crate::model::Workbench;
use crate::sync::{deliver, Delivery, SyncStatus};

/// Signals and actions shared by every component. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Store {
    /// The open session, if one was created in this tab.
    pub workbench: RwSignal<Option<Workbench>>,
    /// The last error reported to the user, until dismissed or superseded.
    pub error: RwSignal<Option<ClientError>>,
    pub sync: RwSignal<SyncStatus>,
    outbox: StoredValue<VecDeque<CommandEnvelope<SessionCommand>>>,
    pumping: StoredValue<bool>,
}

impl Store {
    pub fn new() -> Self {
        Self {
            workbench: RwSignal::new(None),
            error: RwSignal::new(None),
            sync: RwSignal::new(SyncStatus::Idle),
            outbox: StoredValue::new(VecDeque::new()),
            pumping: StoredValue::new(false),
        }
    }

    /// Reads the open session reactively: `None` when there is none.
    pub fn with_session<T>(&self, read: impl FnOnce(&Workbench) -> T) -> Option<T> {
        self.workbench
            .with(|workbench| workbench.as_ref().map(read))
    }

    /// Leaves the shown session and returns to the welcome form.
    pub fn leave_session(&self) {
        self.workbench.set(None);
        self.error.set(None);
    }

    /// Starts a new session titled `title` (replacing the one shown).
    pub fn create_session(&self, title: &str) {
        let outcome = Workbench::create(random_uuid(), title, random_uuid());
        match outcome {
            Ok((workbench, envelope)) => {
                self.outbox.update_value(VecDeque::clear);
                self.workbench.set(Some(workbench));
                self.succeeded(envelope);
            }
            Err(error) => self.report(error),
        }
    }

    /// Submits `sql` to the browser's engine.
    pub fn submit_query(&self, sql: &str) {
        let (query_id, command_id) = (random_uuid(), random_uuid());
        self.with_workbench(|workbench| workbench.submit_local_query(query_id, sql, command_id));
    }

    /// Cancels the active query.
    pub fn cancel_query(&self, query_id: QueryId) {
        self.run(SessionCommand::CancelQuery { query_id });
    }

    /// Closes the session; an active query is cancelled by the aggregate.
    pub fn close_session(&self) {
        self.run(SessionCommand::CloseSession {});
    }

    /// Forgets the last error.
    pub fn dismiss_error(&self) {
        self.error.set(None);
    }

    fn run(&self, command: SessionCommand) {
        let command_id = random_uuid();
        self.with_workbench(|workbench| workbench.execute(command, command_id));
    }

    fn with_workbench(
        &self,
        decide: impl FnOnce(&mut Workbench) -> Result<CommandEnvelope<SessionCommand>, ClientError>,
    ) {
        let Some(mut workbench) = self.workbench.get_untracked() else {
            self.report(ClientError::new(
                random_uuid(),
                ErrorKind::Refused,
                "create a session first",
            ));
            return;
        };
        match decide(&mut workbench) {
            Ok(envelope) => {
                self.workbench.set(Some(workbench));
                self.succeeded(envelope);
            }
            Err(error) => self.report(error),
        }
    }

    fn succeeded(&self, envelope: CommandEnvelope<SessionCommand>) {
        self.error.set(None);
        self.outbox.update_value(|queue| queue.push_back(envelope));
        self.pump();
    }

    /// Shows `error` to the user and logs it with its id.
    fn report(&self, error: ClientError) {
        web_sys::console::warn_1(&format!("sextant: {error}").into());
        self.error.set(Some(error));
    }

    /// Delivers queued commands in order, one at a time, unless already doing so.
    fn pump(&self) {
        if self.pumping.get_value() {
            return;
        }
        self.pumping.set_value(true);
        let store = *self;
        spawn_local(async move {
            while let Some(envelope) = store.outbox.with_value(|queue| queue.front().cloned()) {
                let queued = store.outbox.with_value(VecDeque::len);
                store.sync.set(SyncStatus::Sending { queued });
                match deliver(&envelope).await {
                    Delivery::Accepted { version } => {
                        store.outbox.update_value(|queue| {
                            queue.pop_front();
                        });
                        store.sync.set(SyncStatus::Synced { version });
                    }
                    Delivery::Unreachable(reason) => {
                        store.sync.set(SyncStatus::LocalOnly { reason, queued });
                        break;
                    }
                    Delivery::Rejected {
                        status,
                        detail,
                        error_id,
                    } => {
                        store.outbox.update_value(VecDeque::clear);
                        let id = error_id
                            .as_deref()
                            .and_then(|id| Uuid::parse_str(id).ok())
                            .unwrap_or_else(random_uuid);
                        store.report(ClientError::new(
                            id,
                            ErrorKind::Server,
                            format!("the server refused {}: {detail}", envelope.command.name()),
                        ));
                        store.sync.set(SyncStatus::Rejected {
                            status,
                            detail,
                            error_id,
                        });
                        break;
                    }
                }
            }
            store.pumping.set_value(false);
        });
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}
