//! Whether the server has the commands decided here.

use leptos::prelude::*;

use crate::state::Store;
use crate::sync::SyncStatus;

#[component]
pub fn SyncBadge() -> impl IntoView {
    let store = expect_context::<Store>();
    let view_of = move || match store.sync.get() {
        SyncStatus::Idle => ("idle", "local".to_owned(), String::new()),
        SyncStatus::Sending { queued } => ("sending", format!("sending {queued}…"), String::new()),
        SyncStatus::Synced { version } => (
            "synced",
            format!("synced · server v{version}"),
            String::new(),
        ),
        SyncStatus::LocalOnly { reason, queued } => (
            "local-only",
            format!("local only · {queued} unsent"),
            reason,
        ),
        SyncStatus::Rejected { status, detail, .. } => {
            ("rejected", format!("server refused ({status})"), detail)
        }
    };
    view! {
        <span
            class=move || format!("badge sync {}", view_of().0)
            data-testid="sync-status"
            data-sync=move || view_of().0
            title=move || view_of().2
        >
            {move || view_of().1}
        </span>
    }
}
