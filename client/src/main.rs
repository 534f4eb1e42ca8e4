//! Sextant's browser client: a Leptos (client-side rendered) app that runs
//! the shared domain crate compiled to WebAssembly.
//!
//! Layout: `model` is the pure core (native-testable), `state` the reactive
//! store and actions, `sync` the best-effort delivery to the server, `ids`
//! and `errors` the shell's ids and tracked errors, `components` the views.

mod app;
mod components;
mod duckdb;
mod errors;
mod ids;
mod model;
mod offline;
mod state;
mod sync;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
