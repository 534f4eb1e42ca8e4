//! The root component: page frame, store and the session-or-welcome switch.

use leptos::prelude::*;

use crate::components::{ErrorBanner, NewSession, SessionView, SyncBadge};
use crate::state::Store;

#[component]
pub fn App() -> impl IntoView {
    let store = Store::new();
    provide_context(store);
    let has_session = move || store.workbench.with(Option::is_some);

    view! {
        <div class="shell" id="app" data-testid="app-ready">
            <header class="topbar">
                <div class="brand">
                    <span class="brand-mark" aria-hidden="true">"◎"</span>
                    <span class="brand-name">"Sextant"</span>
                    <span class="brand-tagline">"local-first analytics workbench"</span>
                </div>
                <SyncBadge />
            </header>
            <main class="content">
                <ErrorBanner />
                <Show when=has_session fallback=|| view! { <NewSession /> }>
                    <SessionView />
                </Show>
            </main>
            <footer class="footer">
                "Every state on this page is computed by the shared "
                <code>"QuerySession"</code>
                " aggregate, running in your browser as WebAssembly."
            </footer>
        </div>
    }
}
