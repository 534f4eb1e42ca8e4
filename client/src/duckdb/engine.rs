//! The local engine: one duckdb-wasm instance per page, started lazily in a
//! Web Worker the first time it is needed (the UI thread never blocks), with
//! one connection that runs one query at a time.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Promise, Uint8Array};
use serde::Deserialize;
use serde_json::Value;
use shared_domain::Column;
use thiserror::Error;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::bridge::{BridgeModule, JsLocalDuckDb};
use super::sql;

/// Rows kept of a local result (all rows are still counted).
pub const MAX_KEPT_ROWS: u32 = 10_000;

/// How long a query waits for the previous one to finish before it is refused.
const BUSY_WAIT_MS: u32 = 5_000;

/// Why a local operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LocalError {
    /// DuckDB's own message (binder, parser, conversion errors …).
    #[error("{0}")]
    Duck(String),
    /// The query was cancelled by [`LocalDb::cancel`].
    #[error("cancelled")]
    Cancelled,
    /// The connection runs one query at a time.
    #[error("another local query is still running")]
    Busy,
    /// duckdb-wasm could not be loaded or started.
    #[error("duckdb-wasm could not start: {0}")]
    Start(String),
}

/// The message of a JavaScript error value.
pub fn js_message(error: &JsValue) -> String {
    if let Some(error) = error.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    error.as_string().unwrap_or_else(|| format!("{error:?}"))
}

fn duck_error(error: JsValue) -> LocalError {
    LocalError::Duck(js_message(&error))
}

/// A finished local query.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResult {
    /// Names and DuckDB type names.
    pub columns: Vec<Column>,
    /// The first [`MAX_KEPT_ROWS`] rows, in the server's JSON conventions.
    pub rows: Vec<Vec<Value>>,
    /// Rows of the whole result.
    pub total_rows: u64,
    /// Wall time of the query in the worker, including the type lookup.
    pub elapsed_ms: u64,
}

#[derive(Deserialize)]
struct RunOutput {
    rows: Vec<Vec<Value>>,
    total_rows: u64,
}

/// JavaScript writes the double 12.0 as `12`, which reads back as an
/// integer: make FLOAT and DOUBLE values floats again, as the server's are.
fn floats_as_floats(columns: &[Column], rows: &mut [Vec<Value>]) {
    let float_columns: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.data_type.as_str(), "FLOAT" | "DOUBLE"))
        .map(|(i, _)| i)
        .collect();
    for row in rows {
        for &i in &float_columns {
            if let Some(Value::Number(n)) = row.get(i) {
                if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                    row[i] = Value::Number(f);
                }
            }
        }
    }
}

/// A started duckdb-wasm: worker, in-memory database, one connection.
pub struct LocalDb {
    module: BridgeModule,
    db: JsLocalDuckDb,
    running: Cell<bool>,
    cancel_requested: Cell<bool>,
}

thread_local! {
    /// The page's instance once started, or the start under way (a JS
    /// promise, so every caller can await the same start).
    static SHARED: RefCell<Option<Rc<LocalDb>>> = const { RefCell::new(None) };
    static STARTING: RefCell<Option<Promise>> = const { RefCell::new(None) };
    static MODULE: RefCell<Option<BridgeModule>> = const { RefCell::new(None) };
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// The bridge module, imported once per page.
pub async fn bridge() -> Result<BridgeModule, LocalError> {
    if let Some(module) = MODULE.with(|m| m.borrow().clone()) {
        return Ok(module);
    }
    let module = BridgeModule::load()
        .await
        .map_err(|e| LocalError::Start(js_message(&e)))?;
    MODULE.with(|m| *m.borrow_mut() = Some(module.clone()));
    Ok(module)
}

impl LocalDb {
    fn wrap(module: BridgeModule, db: JsLocalDuckDb) -> Self {
        Self {
            module,
            db,
            running: Cell::new(false),
            cancel_requested: Cell::new(false),
        }
    }

    /// The page's instance, started on first use.
    pub async fn shared() -> Result<Rc<LocalDb>, LocalError> {
        if let Some(db) = SHARED.with(|s| s.borrow().clone()) {
            return Ok(db);
        }
        let promise = STARTING.with(|starting| {
            starting
                .borrow_mut()
                .get_or_insert_with(|| {
                    wasm_bindgen_futures::future_to_promise(async {
                        let module = bridge()
                            .await
                            .map_err(|e| JsValue::from_str(&e.to_string()))?;
                        Ok(module.start().await?.into())
                    })
                })
                .clone()
        });
        let started = JsFuture::from(promise).await;
        if let Some(db) = SHARED.with(|s| s.borrow().clone()) {
            return Ok(db);
        }
        match started {
            Ok(db) => {
                let db = Rc::new(Self::wrap(bridge().await?, db.unchecked_into()));
                SHARED.with(|s| *s.borrow_mut() = Some(db.clone()));
                Ok(db)
            }
            Err(error) => {
                // A later call may try again.
                STARTING.with(|s| *s.borrow_mut() = None);
                Err(LocalError::Start(js_message(&error)))
            }
        }
    }

    /// Whether the page's instance is already running (without starting it).
    pub fn is_started() -> bool {
        SHARED.with(|s| s.borrow().is_some())
    }

    /// `"coi"` (threaded, in a cross-origin isolated page), `"eh"`
    /// (exception handling) or `"mvp"`.
    pub fn bundle(&self) -> String {
        self.db.bundle()
    }

    /// The threads DuckDB uses (1 but for the `"coi"` build).
    pub fn threads(&self) -> u32 {
        self.db.threads()
    }

    /// Why the threaded build was chosen but did not start (empty if it did,
    /// or was not chosen).
    pub fn fallback(&self) -> String {
        self.db.fallback()
    }

    /// How long loading and starting duckdb-wasm took, in ms.
    pub fn startup_ms(&self) -> f64 {
        self.db.startup_ms()
    }

    /// Workers replaced so far (the threaded build restarts its worker to
    /// cancel a query; the new one holds none of the data loaded before).
    pub fn generation(&self) -> u32 {
        self.db.generation()
    }

    /// DuckDB's version (`v1.4.3`).
    #[cfg(all(test, target_arch = "wasm32"))]
    pub async fn version(&self) -> Result<String, LocalError> {
        let version = self.db.version().await.map_err(duck_error)?;
        Ok(version.as_string().unwrap_or_default())
    }

    /// The bridge, for the local data store.
    pub fn module(&self) -> &BridgeModule {
        &self.module
    }

    async fn run_raw(&self, sql: &str, max_rows: u32) -> Result<RunOutput, LocalError> {
        let json = self.db.run(sql, max_rows).await.map_err(duck_error)?;
        let json = json.as_string().unwrap_or_default();
        serde_json::from_str(&json)
            .map_err(|e| LocalError::Duck(format!("unreadable result from duckdb-wasm: {e}")))
    }

    /// Runs one read-only statement (checked by DuckDB's prepare, which
    /// refuses several statements): its column types from `DESCRIBE`
    /// (which refuses anything but a query), then its rows through the
    /// presentation wrapper (see [`sql`]). One query at a time.
    pub async fn query(&self, user_sql: &str) -> Result<LocalResult, LocalError> {
        self.wait_idle().await?;
        self.running.set(true);
        self.cancel_requested.set(false);
        let started = now_ms();
        let outcome = self.query_inner(user_sql).await;
        self.running.set(false);
        let cancelled = self.cancel_requested.replace(false);
        let (columns, output) = match outcome {
            Err(_) if cancelled => return Err(LocalError::Cancelled),
            Err(error) => return Err(error),
            Ok(_) if cancelled => return Err(LocalError::Cancelled),
            Ok(done) => done,
        };
        Ok(LocalResult {
            columns,
            rows: output.rows,
            total_rows: output.total_rows,
            elapsed_ms: (now_ms() - started).max(0.0).round() as u64,
        })
    }

    /// The result columns of `user_sql` (names and DuckDB type names), from
    /// `DESCRIBE`, which binds the query without running it.
    async fn describe(&self, user_sql: &str) -> Result<Vec<Column>, LocalError> {
        let described = self.run_raw(&sql::describe_sql(user_sql), u32::MAX).await?;
        Ok(described
            .rows
            .iter()
            .map(|row| {
                let text = |i: usize| row.get(i).and_then(Value::as_str).unwrap_or_default();
                Column::new(text(0), text(1))
            })
            .collect())
    }

    /// Waits until the connection is free: a cancelled query takes a moment
    /// to unwind in the worker, so the next one waits rather than being refused.
    async fn wait_idle(&self) -> Result<(), LocalError> {
        let mut waited_ms = 0;
        while self.running.get() {
            if waited_ms >= BUSY_WAIT_MS {
                return Err(LocalError::Busy);
            }
            gloo_timers::future::TimeoutFuture::new(20).await;
            waited_ms += 20;
        }
        Ok(())
    }

    /// The whole result of `user_sql` (every row, not only those kept) as
    /// Parquet file bytes, written by parquet-wasm from DuckDB's Arrow.
    pub async fn export_parquet(&self, user_sql: &str) -> Result<Uint8Array, LocalError> {
        self.exclusive(self.export_parquet_inner(user_sql)).await
    }

    async fn export_parquet_inner(&self, user_sql: &str) -> Result<Uint8Array, LocalError> {
        self.db
            .check_single_statement(sql::trim_statement(user_sql))
            .await
            .map_err(duck_error)?;
        let columns = self.describe(user_sql).await?;
        let bytes = self
            .db
            .export_parquet(&sql::parquet_export_sql(user_sql, &columns))
            .await
            .map_err(duck_error)?;
        Ok(bytes.unchecked_into())
    }

    async fn query_inner(&self, user_sql: &str) -> Result<(Vec<Column>, RunOutput), LocalError> {
        // One statement, checked before anything runs; DESCRIBE then
        // refuses anything that is not a query.
        self.db
            .check_single_statement(sql::trim_statement(user_sql))
            .await
            .map_err(duck_error)?;
        let columns = self.describe(user_sql).await?;
        if self.cancel_requested.get() {
            return Err(LocalError::Cancelled);
        }
        let mut output = self
            .run_raw(&sql::presentation_sql(user_sql, &columns), MAX_KEPT_ROWS)
            .await?;
        floats_as_floats(&columns, &mut output.rows);
        Ok((columns, output))
    }

    /// Runs any statement and returns its rows as they come (no wrapper):
    /// for the engine's own setup statements.
    pub async fn execute(&self, sql: &str) -> Result<Vec<Vec<Value>>, LocalError> {
        self.exclusive(self.run_raw(sql, MAX_KEPT_ROWS))
            .await
            .map(|output| output.rows)
    }

    /// Runs `work` on the connection alone: one statement at a time, so an
    /// autocomplete lookup or a file load never interleaves with a query's
    /// stream (duckdb-wasm closes an open stream when the connection runs
    /// something else).
    async fn exclusive<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, LocalError>>,
    ) -> Result<T, LocalError> {
        self.wait_idle().await?;
        self.running.set(true);
        let outcome = work.await;
        self.running.set(false);
        outcome
    }

    /// Interrupts the running query; `false` when none was running.
    pub async fn cancel(&self) -> Result<bool, LocalError> {
        if !self.running.get() {
            return Ok(false);
        }
        self.cancel_requested.set(true);
        let cancelled = self.db.cancel().await.map_err(duck_error)?;
        Ok(cancelled.as_bool().unwrap_or(false) || self.running.get())
    }

    /// Whether a query is running.
    pub fn is_running(&self) -> bool {
        self.running.get()
    }

    /// Makes a browser file readable by SQL as `file_name` (zero copy).
    pub async fn register_file(
        &self,
        file_name: &str,
        file: &web_sys::File,
    ) -> Result<(), LocalError> {
        self.exclusive(async {
            self.db
                .register_file(file_name, file)
                .await
                .map(drop)
                .map_err(duck_error)
        })
        .await
    }

    /// Makes bytes readable by SQL as `file_name`.
    #[cfg(all(test, target_arch = "wasm32"))]
    pub async fn register_buffer(&self, file_name: &str, bytes: &[u8]) -> Result<(), LocalError> {
        self.db
            .register_buffer(file_name, Uint8Array::from(bytes))
            .await
            .map(drop)
            .map_err(duck_error)
    }

    /// Makes the remote file at `url` readable by SQL as `file_name`
    /// (duckdb-wasm fetches it; CORS applies).
    pub async fn register_url(&self, file_name: &str, url: &str) -> Result<(), LocalError> {
        self.exclusive(async {
            self.db
                .register_url(file_name, url)
                .await
                .map(drop)
                .map_err(duck_error)
        })
        .await
    }

    pub async fn drop_file(&self, file_name: &str) -> Result<(), LocalError> {
        self.exclusive(async {
            self.db
                .drop_file(file_name)
                .await
                .map(drop)
                .map_err(duck_error)
        })
        .await
    }

    /// Creates table `table` from an Arrow IPC stream.
    pub async fn insert_arrow_ipc(&self, table: &str, bytes: Uint8Array) -> Result<(), LocalError> {
        self.exclusive(async {
            self.db
                .insert_arrow_ipc(table, bytes)
                .await
                .map(drop)
                .map_err(duck_error)
        })
        .await
    }

    /// Creates table `table` from Parquet file bytes (read by parquet-wasm).
    pub async fn insert_parquet(&self, table: &str, bytes: Uint8Array) -> Result<(), LocalError> {
        self.exclusive(async {
            self.db
                .insert_parquet(table, bytes)
                .await
                .map(drop)
                .map_err(duck_error)
        })
        .await
    }

    /// Creates table `table` from a registered JSON file (array of objects
    /// or column object), read by duckdb-wasm's JS API without any extension.
    pub async fn insert_json_file(&self, table: &str, file_name: &str) -> Result<(), LocalError> {
        self.exclusive(async {
            self.db
                .insert_json_file(table, file_name)
                .await
                .map(drop)
                .map_err(duck_error)
        })
        .await
    }
}
