//! The wasm-bindgen declarations of `client/js/duckdb-bridge.js` (bundled
//! into `/duckdb-wasm/duckdb-bridge.js` by `cargo xtask duckdb-bundle`):
//! the one place where Rust meets duckdb-wasm's JavaScript.

use js_sys::{Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Where the bundled bridge is served (the trunk output, or the crate
/// directory under wasm-bindgen-test-runner, which serves both at this path).
pub const BRIDGE_URL: &str = "/duckdb-wasm/duckdb-bridge.js";

#[wasm_bindgen(inline_js = "export function import_module(url) { return import(url); }")]
extern "C" {
    /// A dynamic `import()`: the bridge (and its 220 kB of JavaScript) is
    /// loaded only when a local query first needs it.
    #[wasm_bindgen(catch)]
    fn import_module(url: &str) -> Result<Promise, JsValue>;
}

#[wasm_bindgen]
extern "C" {
    /// A started duckdb-wasm (worker, database, one connection).
    pub type JsLocalDuckDb;

    #[wasm_bindgen(method, getter)]
    pub fn bundle(this: &JsLocalDuckDb) -> String;

    /// DuckDB's `threads` setting as the engine started.
    #[wasm_bindgen(method, getter)]
    pub fn threads(this: &JsLocalDuckDb) -> u32;

    /// Why the threaded build was chosen but not used, or empty.
    #[wasm_bindgen(method, getter)]
    pub fn fallback(this: &JsLocalDuckDb) -> String;

    /// Workers replaced so far: the threaded engine replaces its worker to
    /// cancel a query, and what was loaded into the old one is gone.
    #[wasm_bindgen(method, getter)]
    pub fn generation(this: &JsLocalDuckDb) -> u32;

    #[wasm_bindgen(method, getter, js_name = startupMs)]
    pub fn startup_ms(this: &JsLocalDuckDb) -> f64;

    #[wasm_bindgen(method, catch)]
    pub async fn version(this: &JsLocalDuckDb) -> Result<JsValue, JsValue>;

    /// JSON `{"rows", "total_rows"}`, at most `max_rows` rows kept.
    #[wasm_bindgen(method, catch)]
    pub async fn run(this: &JsLocalDuckDb, sql: &str, max_rows: u32) -> Result<JsValue, JsValue>;

    /// Rejects unless the text is exactly one statement (nothing runs).
    #[wasm_bindgen(method, catch, js_name = checkSingleStatement)]
    pub async fn check_single_statement(
        this: &JsLocalDuckDb,
        sql: &str,
    ) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub async fn cancel(this: &JsLocalDuckDb) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch, js_name = registerFile)]
    pub async fn register_file(
        this: &JsLocalDuckDb,
        name: &str,
        file: &web_sys::File,
    ) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch, js_name = registerBuffer)]
    pub async fn register_buffer(
        this: &JsLocalDuckDb,
        name: &str,
        bytes: Uint8Array,
    ) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch, js_name = registerUrl)]
    pub async fn register_url(
        this: &JsLocalDuckDb,
        name: &str,
        url: &str,
    ) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch, js_name = dropFile)]
    pub async fn drop_file(this: &JsLocalDuckDb, name: &str) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch, js_name = insertArrowIpc)]
    pub async fn insert_arrow_ipc(
        this: &JsLocalDuckDb,
        table: &str,
        bytes: Uint8Array,
    ) -> Result<JsValue, JsValue>;

    /// Creates table `table` from Parquet file bytes (parquet-wasm).
    #[wasm_bindgen(method, catch, js_name = insertParquet)]
    pub async fn insert_parquet(
        this: &JsLocalDuckDb,
        table: &str,
        bytes: Uint8Array,
    ) -> Result<JsValue, JsValue>;

    /// The whole result of `sql` as Parquet file bytes (a Uint8Array).
    #[wasm_bindgen(method, catch, js_name = exportParquet)]
    pub async fn export_parquet(this: &JsLocalDuckDb, sql: &str) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch, js_name = insertJsonFile)]
    pub async fn insert_json_file(
        this: &JsLocalDuckDb,
        table: &str,
        file_name: &str,
    ) -> Result<JsValue, JsValue>;

    #[wasm_bindgen(method, catch)]
    pub async fn terminate(this: &JsLocalDuckDb) -> Result<JsValue, JsValue>;
}

/// The loaded bridge module (its exports).
#[derive(Clone)]
pub struct BridgeModule(Object);

impl BridgeModule {
    /// Imports the bridge from [`BRIDGE_URL`].
    pub async fn load() -> Result<Self, JsValue> {
        let module = JsFuture::from(import_module(BRIDGE_URL)?).await?;
        Ok(Self(module.unchecked_into()))
    }

    fn export(&self, name: &str) -> Result<js_sys::Function, JsValue> {
        Reflect::get(&self.0, &JsValue::from_str(name))?
            .dyn_into::<js_sys::Function>()
            .map_err(|_| JsValue::from_str(&format!("the duckdb bridge exports no `{name}`")))
    }

    async fn call(&self, name: &str, args: &[&JsValue]) -> Result<JsValue, JsValue> {
        let function = self.export(name)?;
        let array: js_sys::Array = args.iter().copied().collect();
        let promise: Promise = function.apply(&JsValue::NULL, &array)?.dyn_into()?;
        JsFuture::from(promise).await
    }

    /// Starts duckdb-wasm in a worker (the bridge's `start()`).
    pub async fn start(&self) -> Result<JsLocalDuckDb, JsValue> {
        Ok(self.call("start", &[]).await?.unchecked_into())
    }

    /// An Arrow IPC stream as Parquet file bytes (parquet-wasm, loaded on first use).
    pub async fn ipc_to_parquet(&self, ipc: &Uint8Array) -> Result<Uint8Array, JsValue> {
        Ok(self.call("ipcToParquet", &[ipc]).await?.unchecked_into())
    }

    /// Saves `data` (a Blob/File or Uint8Array) in the origin-private file system.
    pub async fn store_save(&self, file_name: &str, data: &JsValue) -> Result<(), JsValue> {
        self.call("storeSave", &[&JsValue::from_str(file_name), data])
            .await
            .map(drop)
    }

    /// JSON `[{"file_name", "size_bytes"}]`.
    pub async fn store_list(&self) -> Result<String, JsValue> {
        Ok(self
            .call("storeList", &[])
            .await?
            .as_string()
            .unwrap_or_default())
    }

    pub async fn store_load(&self, file_name: &str) -> Result<web_sys::File, JsValue> {
        Ok(self
            .call("storeLoad", &[&JsValue::from_str(file_name)])
            .await?
            .unchecked_into())
    }

    pub async fn store_delete(&self, file_name: &str) -> Result<(), JsValue> {
        self.call("storeDelete", &[&JsValue::from_str(file_name)])
            .await
            .map(drop)
    }
}
