//! The app's lazily loaded JavaScript bundles (`/bundles/*.js`, built by
//! `cargo xtask duckdb-bundle` from `client/js/`): each is imported with a
//! dynamic `import()` the first time a view needs it, from our own origin,
//! and kept for the page's lifetime.

use std::cell::RefCell;
use std::collections::HashMap;

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(inline_js = "export function import_bundle(url) { return import(url); }")]
extern "C" {
    #[wasm_bindgen(catch)]
    fn import_bundle(url: &str) -> Result<Promise, JsValue>;
}

/// The CodeMirror SQL editor (`client/js/sql-editor.js`).
pub const SQL_EDITOR: &str = "/bundles/sql-editor.js";
/// Observable Plot charts (`client/js/chart.js`).
pub const CHART: &str = "/bundles/chart.js";

thread_local! {
    /// Imports under way or done, by URL (a JS promise, so every caller
    /// awaits the same import).
    static LOADED: RefCell<HashMap<&'static str, Promise>> = RefCell::new(HashMap::new());
}

/// The exports of the bundle at `url`, imported once per page.
pub async fn load(url: &'static str) -> Result<Object, String> {
    let promise = LOADED.with(|loaded| -> Result<Promise, String> {
        if let Some(promise) = loaded.borrow().get(url) {
            return Ok(promise.clone());
        }
        let promise = import_bundle(url).map_err(|e| message(&e))?;
        loaded.borrow_mut().insert(url, promise.clone());
        Ok(promise)
    })?;
    match JsFuture::from(promise).await {
        Ok(module) => Ok(module.unchecked_into()),
        Err(error) => {
            // A later call may try again (the network may be back).
            LOADED.with(|loaded| loaded.borrow_mut().remove(url));
            Err(message(&error))
        }
    }
}

/// The function `name` exported by `module`.
pub fn export(module: &Object, name: &str) -> Result<js_sys::Function, String> {
    Reflect::get(module, &JsValue::from_str(name))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| format!("the bundle exports no `{name}`"))
}

/// Calls method `name` of the JS object `target` with `args`.
pub fn call_method(target: &JsValue, name: &str, args: &[JsValue]) -> Result<JsValue, String> {
    let method = Reflect::get(target, &JsValue::from_str(name))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| format!("no method `{name}`"))?;
    let array: js_sys::Array = args.iter().cloned().collect();
    method.apply(target, &array).map_err(|e| message(&e))
}

/// The message of a JavaScript error value.
pub fn message(error: &JsValue) -> String {
    if let Some(error) = error.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    error.as_string().unwrap_or_else(|| format!("{error:?}"))
}
