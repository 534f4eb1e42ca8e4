//! Client-side routes: the sessions list at `/`, one session at
//! `/sessions/{id}`. The server answers every non-API path with index.html
//! (and the service worker does the same offline), so a reload keeps the page.

use leptos::prelude::*;
use uuid::Uuid;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// A page of the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Sessions,
    Session(Uuid),
}

impl Route {
    /// The route of a path; anything unknown is the sessions list.
    pub fn parse(path: &str) -> Self {
        path.strip_prefix("/sessions/")
            .and_then(|rest| Uuid::parse_str(rest.trim_end_matches('/')).ok())
            .map_or(Route::Sessions, Route::Session)
    }

    pub fn path(self) -> String {
        match self {
            Route::Sessions => "/".to_owned(),
            Route::Session(id) => format!("/sessions/{id}"),
        }
    }
}

/// The current route, following the address bar (back and forward included).
#[derive(Clone, Copy)]
pub struct Router {
    pub current: RwSignal<Route>,
}

impl Router {
    pub fn new() -> Self {
        let path = web_sys::window()
            .and_then(|w| w.location().pathname().ok())
            .unwrap_or_default();
        let current = RwSignal::new(Route::parse(&path));
        if let Some(window) = web_sys::window() {
            let on_pop = Closure::<dyn FnMut()>::new(move || {
                let path = web_sys::window()
                    .and_then(|w| w.location().pathname().ok())
                    .unwrap_or_default();
                current.set(Route::parse(&path));
            });
            window.set_onpopstate(Some(on_pop.as_ref().unchecked_ref()));
            on_pop.forget();
        }
        Self { current }
    }

    /// Shows `route` and records it in the browser history.
    pub fn go(self, route: Route) {
        if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = history.push_state_with_url(&JsValue::NULL, "", Some(&route.path()));
        }
        self.current.set(route);
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_unknown_paths_show_the_list() {
        let id = Uuid::from_u128(7);
        assert_eq!(Route::parse(&Route::Session(id).path()), Route::Session(id));
        assert_eq!(Route::parse("/"), Route::Sessions);
        assert_eq!(Route::parse("/sessions/not-a-file"), Route::Sessions);
        assert_eq!(Route::parse("/elsewhere"), Route::Sessions);
    }
}
