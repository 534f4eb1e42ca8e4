//! The page's side of the service worker (`/sw.js`, generated at build time
//! with the list of app-shell files to cache): registration, whether this
//! page is controlled (it then reloads offline), and new-version detection.
//!
//! A new deployment ships a new `sw.js` (its cache version is a hash of the
//! shell files). The browser installs it beside the running one and it waits;
//! the app then offers a reload, which tells the waiting worker to take over
//! and reloads when it has. Debug builds (`trunk serve`) run without a worker.

use std::cell::Cell;
use std::rc::Rc;

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{ServiceWorkerRegistration, ServiceWorkerState};

/// What the page knows about its service worker.
#[derive(Clone, Copy)]
pub struct Shell {
    /// The page is served by the service worker (it will load offline).
    pub controlled: RwSignal<bool>,
    /// A newer version is installed and waiting for a reload.
    pub update_available: RwSignal<bool>,
}

/// How often an open page asks whether a new version was deployed.
const UPDATE_CHECK_MS: i32 = 60_000;

impl Shell {
    /// Registers `/sw.js` (scope `/`) and starts watching for updates.
    pub fn start() -> Self {
        let shell = Shell {
            controlled: RwSignal::new(false),
            update_available: RwSignal::new(false),
        };
        let Some(window) = web_sys::window() else {
            return shell;
        };
        // Absent on plain http origins other than localhost.
        if js_sys::Reflect::get(&window.navigator(), &"serviceWorker".into())
            .map_or(true, |v| v.is_undefined())
        {
            return shell;
        }
        let container = window.navigator().service_worker();
        if cfg!(debug_assertions) {
            // Debug builds (`trunk serve`) must show each rebuild at once, not a
            // cached shell: no worker, and any earlier one is removed. Release
            // builds (`trunk build --release`, `trunk serve --release`) register.
            unregister_all(&container);
            return shell;
        }
        shell.controlled.set(container.controller().is_some());

        let reload_requested = Rc::new(Cell::new(false));
        RELOAD_REQUESTED.with(|flag| flag.set(Some(reload_requested.clone())));
        let on_controller_change = Closure::<dyn FnMut()>::new(move || {
            shell.controlled.set(true);
            // Only reload when the user asked for the new version (the first
            // install also changes the controller, when the worker claims us).
            if reload_requested.get() {
                reload();
            }
        });
        container.set_oncontrollerchange(Some(on_controller_change.as_ref().unchecked_ref()));
        on_controller_change.forget();

        let registered = container.register("/sw.js");
        spawn_local(async move {
            let registration = match wasm_bindgen_futures::JsFuture::from(registered).await {
                Ok(registration) => registration.unchecked_into::<ServiceWorkerRegistration>(),
                Err(error) => {
                    web_sys::console::warn_2(&"service worker not registered:".into(), &error);
                    return;
                }
            };
            watch_for_updates(shell, registration);
        });
        shell
    }

    /// Switches to the waiting version (or just reloads).
    pub fn apply_update(self) {
        let waiting = web_sys::window()
            .map(|w| w.navigator().service_worker())
            .and_then(|_| REGISTRATION.with(|r| r.take()))
            .and_then(|registration| registration.waiting());
        match waiting {
            Some(worker) => {
                RELOAD_REQUESTED.with(|flag| {
                    if let Some(flag) = flag.take() {
                        flag.set(true);
                    }
                });
                let _ = worker.post_message(&JsValue::from_str("skip-waiting"));
            }
            None => reload(),
        }
    }
}

thread_local! {
    static REGISTRATION: Cell<Option<ServiceWorkerRegistration>> = const { Cell::new(None) };
    static RELOAD_REQUESTED: Cell<Option<Rc<Cell<bool>>>> = const { Cell::new(None) };
}

fn unregister_all(container: &web_sys::ServiceWorkerContainer) {
    let registrations = container.get_registrations();
    spawn_local(async move {
        let Ok(list) = wasm_bindgen_futures::JsFuture::from(registrations).await else {
            return;
        };
        for registration in js_sys::Array::from(&list).iter() {
            let _ = registration
                .unchecked_into::<ServiceWorkerRegistration>()
                .unregister();
        }
    });
}

fn reload() {
    if let Some(window) = web_sys::window() {
        let _ = window.location().reload();
    }
}

fn watch_for_updates(shell: Shell, registration: ServiceWorkerRegistration) {
    let has_controller =
        || web_sys::window().is_some_and(|w| w.navigator().service_worker().controller().is_some());
    if registration.waiting().is_some() && has_controller() {
        shell.update_available.set(true);
    }
    let watched = registration.clone();
    let on_update_found = Closure::<dyn FnMut()>::new(move || {
        let Some(installing) = watched.installing() else {
            return;
        };
        let worker = installing.clone();
        let on_state = Closure::<dyn FnMut()>::new(move || {
            // Installed while another version controls the page: an update.
            if worker.state() == ServiceWorkerState::Installed && has_controller() {
                shell.update_available.set(true);
            }
        });
        installing.set_onstatechange(Some(on_state.as_ref().unchecked_ref()));
        on_state.forget();
    });
    registration.set_onupdatefound(Some(on_update_found.as_ref().unchecked_ref()));
    on_update_found.forget();

    // An open page asks now and then whether a new version was deployed.
    let checked = registration.clone();
    let check = Closure::<dyn FnMut()>::new(move || {
        if let Ok(promise) = checked.update() {
            spawn_local(async move {
                let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            });
        }
    });
    if let Some(window) = web_sys::window() {
        let _ = window.set_interval_with_callback_and_timeout_and_arguments_0(
            check.as_ref().unchecked_ref(),
            UPDATE_CHECK_MS,
        );
    }
    check.forget();
    REGISTRATION.with(|r| r.set(Some(registration)));
}
