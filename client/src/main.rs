//! Sextant's browser client: a Leptos (client-side rendered) app that runs
//! the shared domain crate compiled to WebAssembly, offline first.
//!
//! Layout: `offline` is the sync engine (replica + IndexedDB + SSE + outbox
//! sender), `api` the read-side HTTP calls, `route` the two pages, `sw` the
//! service worker's page side, `chart` pure SVG charts, `ids` client-minted
//! ids, `components` the views.

mod api;
mod app;
mod bundles;
mod chart;
mod components;
mod duckdb;
mod grid;
mod held;
mod ids;
mod listing;
mod offline;
mod progress;
mod route;
mod sqltext;
mod sw;

fn main() {
    console_error_panic_hook::set_once();
    // Leptos' executor starts with the mount: before it, plain wasm-bindgen futures.
    wasm_bindgen_futures::spawn_local(async {
        // The replica is restored from IndexedDB before the first render, so
        // the page never flashes an empty state.
        let user = offline::owner::resolve().await;
        let names = offline::owner::LocalNames::for_user(user);
        let engine = offline::engine::SyncEngine::start(names).await;
        offline::engine::install(engine);
        leptos::mount::mount_to_body(app::App);
        // Navigation to first interactive render, for the benchmark.
        if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
            let _ = performance.mark("sextant-interactive");
        }
    });
}
