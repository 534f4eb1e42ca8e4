//! The views. Each component reads the `Store` from context and renders one
//! part of the page; stable `data-testid` attributes are for the browser tests.

mod error_banner;
mod event_log;
mod history;
mod new_session;
mod query_editor;
mod session_view;
mod sync_badge;

pub use error_banner::ErrorBanner;
pub use event_log::EventLog;
pub use history::History;
pub use new_session::NewSession;
pub use query_editor::QueryEditor;
pub use session_view::SessionView;
pub use sync_badge::SyncBadge;
