//! The root component: the page frame (brand, connection indicator,
//! banners, local-data controls) and the sessions-list-or-session switch.

use leptos::prelude::*;

use crate::components::{
    Account, AccountBadge, ConnectionBadge, Problems, SessionView, SessionsPage, UpdateBanners,
};
use crate::route::{Route, Router};
use crate::sw::Shell;

#[component]
pub fn App() -> impl IntoView {
    let router = Router::new();
    provide_context(router);
    let shell = Shell::start();
    provide_context(shell);
    provide_context(Account::start());
    let sw_state = move || {
        if shell.controlled.get() {
            "controlled"
        } else {
            "none"
        }
    };

    view! {
        <div class="shell" id="app" data-testid="app-ready" data-sw=sw_state>
            <header class="topbar">
                <a
                    class="brand"
                    href="/"
                    on:click=move |ev| {
                        ev.prevent_default();
                        router.go(Route::Sessions);
                    }
                >
                    <span class="brand-mark" aria-hidden="true">"◎"</span>
                    <span class="brand-name">"Sextant"</span>
                    <span class="brand-tagline">"local-first analytics workbench"</span>
                </a>
                <AccountBadge />
                <ConnectionBadge />
            </header>
            <main class="content">
                <UpdateBanners />
                <Problems />
                {move || match router.current.get() {
                    Route::Sessions => view! { <SessionsPage /> }.into_any(),
                    Route::Session(id) => view! { <SessionView session_id=id /> }.into_any(),
                }}
            </main>
            <crate::components::Footer />
        </div>
    }
}
