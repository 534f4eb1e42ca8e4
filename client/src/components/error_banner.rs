//! The last error, with the id to quote when reporting it.

use leptos::prelude::*;

use crate::state::Store;

#[component]
pub fn ErrorBanner() -> impl IntoView {
    let store = expect_context::<Store>();
    move || {
        store.error.get().map(|error| {
            view! {
                <div class="banner error" role="alert" data-testid="error-banner">
                    <div>
                        <strong>{error.kind.label()}</strong>
                        ": "
                        <span data-testid="error-message">{error.message.clone()}</span>
                        <div class="error-id">
                            "error id " <code data-testid="error-id">{error.error_id.to_string()}</code>
                        </div>
                    </div>
                    <button class="ghost" on:click=move |_| store.dismiss_error()>
                        "Dismiss"
                    </button>
                </div>
            }
        })
    }
}
