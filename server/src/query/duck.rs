//! A thin, safe wrapper over DuckDB's C API (`libduckdb-sys`) for what the
//! `duckdb` crate does not expose: splitting SQL with DuckDB's own parser and
//! checking each statement's type *before* anything runs (the crate's
//! `prepare` executes every statement but the last), running a prepared
//! statement task by task so that progress, cancellation and timeouts are
//! observed, and converting result chunks to Arrow with DuckDB's own
//! converter. Everything unsafe in the query module lives here.

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duckdb::arrow::array::{RecordBatch, StructArray};
use duckdb::arrow::datatypes::{Schema, SchemaRef};
use duckdb::arrow::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use duckdb::ffi;

/// A failure reported by DuckDB, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DuckError(pub String);

fn duck_err(message: impl Into<String>) -> DuckError {
    DuckError(message.into())
}

/// Reads a C string owned by DuckDB (never freed here).
fn borrowed_str(raw: *const c_char, fallback: &str) -> String {
    if raw.is_null() {
        fallback.to_owned()
    } else {
        // SAFETY: DuckDB returns NUL-terminated strings that live as long as their owner.
        unsafe { CStr::from_ptr(raw) }
            .to_string_lossy()
            .into_owned()
    }
}

/// An open in-memory DuckDB database. Thread-safe: DuckDB databases are
/// shared by many connections on many threads.
pub struct Database {
    raw: ffi::duckdb_database,
}

// SAFETY: a duckdb_database handle may be used from any thread (DuckDB locks internally).
unsafe impl Send for Database {}
unsafe impl Sync for Database {}

impl Database {
    /// Opens an in-memory database with start-up settings (those DuckDB only
    /// accepts before the database exists).
    pub fn open_in_memory(settings: &[(&str, String)]) -> Result<Arc<Self>, DuckError> {
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: plain C API calls; every allocation is freed on every path.
        unsafe {
            if ffi::duckdb_create_config(&mut config) != ffi::DuckDBSuccess {
                return Err(duck_err("could not create a DuckDB configuration"));
            }
            for (name, value) in settings {
                let c_name = CString::new(*name).map_err(|e| duck_err(e.to_string()))?;
                let c_value = CString::new(value.as_str()).map_err(|e| duck_err(e.to_string()))?;
                if ffi::duckdb_set_config(config, c_name.as_ptr(), c_value.as_ptr())
                    != ffi::DuckDBSuccess
                {
                    ffi::duckdb_destroy_config(&mut config);
                    return Err(duck_err(format!(
                        "DuckDB refused the setting {name} = {value}"
                    )));
                }
            }
            let mut raw: ffi::duckdb_database = ptr::null_mut();
            let mut error: *mut c_char = ptr::null_mut();
            let state = ffi::duckdb_open_ext(ptr::null(), &mut raw, config, &mut error);
            ffi::duckdb_destroy_config(&mut config);
            if state != ffi::DuckDBSuccess {
                let message = borrowed_str(error, "could not open DuckDB");
                if !error.is_null() {
                    ffi::duckdb_free(error.cast());
                }
                return Err(DuckError(message));
            }
            Ok(Arc::new(Self { raw }))
        }
    }

    /// A new raw connection (its own transaction state, interruptible).
    pub fn connect(self: &Arc<Self>) -> Result<RawConnection, DuckError> {
        let mut raw: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: `self.raw` is open for as long as this Arc (held by the connection) lives.
        if unsafe { ffi::duckdb_connect(self.raw, &mut raw) } != ffi::DuckDBSuccess {
            return Err(duck_err("could not connect to DuckDB"));
        }
        Ok(RawConnection {
            _database: self.clone(),
            interrupter: Arc::new(Interrupter {
                raw: Mutex::new(raw),
            }),
            raw,
        })
    }

    /// A `duckdb` crate connection to this database, for trusted set-up SQL.
    /// It must not outlive the database (the caller keeps the Arc).
    pub fn crate_connection(self: &Arc<Self>) -> Result<duckdb::Connection, DuckError> {
        // SAFETY: `open_from_raw` does not take ownership of the database; callers
        // keep an Arc to it while using the connection.
        unsafe { duckdb::Connection::open_from_raw(self.raw) }.map_err(|e| duck_err(e.to_string()))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // SAFETY: every connection holds an Arc to the database, so none is left.
        unsafe { ffi::duckdb_close(&mut self.raw) }
    }
}

/// Interrupts whatever runs on one connection, from any thread.
pub struct Interrupter {
    raw: Mutex<ffi::duckdb_connection>,
}

// SAFETY: `duckdb_interrupt` is meant to be called from another thread; the
// pointer is cleared (under the lock) before the connection is closed.
unsafe impl Send for Interrupter {}
unsafe impl Sync for Interrupter {}

impl Interrupter {
    /// Makes the running query (if any) fail with an "interrupted" error.
    pub fn interrupt(&self) {
        let raw = self.raw.lock().expect("interrupter lock");
        if !raw.is_null() {
            // SAFETY: the connection is open while the pointer is non-null.
            unsafe { ffi::duckdb_interrupt(*raw) }
        }
    }
}

/// A connection used through the raw C API (one thread at a time).
pub struct RawConnection {
    _database: Arc<Database>,
    interrupter: Arc<Interrupter>,
    raw: ffi::duckdb_connection,
}

// SAFETY: a connection may move between threads; it is used by one at a time (&mut / owned).
unsafe impl Send for RawConnection {}

/// DuckDB's classification of a statement, as the sandbox needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    /// Anything else, with DuckDB's name for it (COPY, INSERT, PRAGMA, …).
    Other(&'static str),
}

fn statement_kind(kind: ffi::duckdb_statement_type) -> StatementKind {
    use StatementKind::{Other, Select};
    match kind {
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT => Select,
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT => Other("INSERT"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE => Other("UPDATE"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN => Other("EXPLAIN"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE => Other("DELETE"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PREPARE => Other("PREPARE"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE => Other("CREATE"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXECUTE => Other("EXECUTE"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ALTER => Other("ALTER"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION => Other("TRANSACTION"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY => Other("COPY"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ANALYZE => Other("ANALYZE"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VARIABLE_SET => Other("SET VARIABLE"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE_FUNC => Other("CREATE FUNCTION"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP => Other("DROP"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT => Other("EXPORT"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PRAGMA => Other("PRAGMA"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VACUUM => Other("VACUUM"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CALL => Other("CALL"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SET => Other("SET"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD => Other("LOAD/INSTALL"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_RELATION => Other("RELATION"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXTENSION => Other("EXTENSION"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOGICAL_PLAN => Other("LOGICAL PLAN"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH => Other("ATTACH"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DETACH => Other("DETACH"),
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MULTI => Other("MULTI"),
        _ => Other("INVALID"),
    }
}

/// Why a text was not turned into one prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareError {
    /// DuckDB could not parse or bind it.
    Duck(DuckError),
    /// The text holds this many statements (not exactly one).
    StatementCount(usize),
    /// The one statement is of a kind the caller does not allow.
    Kind(StatementKind),
}

/// Frees extracted statements on every path.
struct Extracted(ffi::duckdb_extracted_statements);

impl Drop for Extracted {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_extract_statements, freed once.
        unsafe { ffi::duckdb_destroy_extracted(&mut self.0) }
    }
}

impl RawConnection {
    /// The handle that interrupts this connection's running query.
    pub fn interrupter(&self) -> Arc<Interrupter> {
        self.interrupter.clone()
    }

    /// Runs trusted SQL (set-up statements written by the server, never user
    /// SQL), discarding any result.
    pub fn execute(&mut self, sql: &str) -> Result<(), DuckError> {
        let c_sql = CString::new(sql).map_err(|e| duck_err(e.to_string()))?;
        // SAFETY: duckdb_result is a plain C struct; zeroed is its empty state.
        let mut result = QueryResult(unsafe { std::mem::zeroed() });
        // SAFETY: the connection is open; `result` is destroyed by its Drop.
        if unsafe { ffi::duckdb_query(self.raw, c_sql.as_ptr(), &mut result.0) }
            != ffi::DuckDBSuccess
        {
            // SAFETY: the error belongs to `result`.
            let message = unsafe { ffi::duckdb_result_error(&mut result.0) };
            return Err(DuckError(borrowed_str(message, "statement failed")));
        }
        Ok(())
    }

    /// Registers an Arrow stream as a view named `name` (trusted instance
    /// only). The stream must stay alive until the last query that reads it.
    pub fn register_arrow_stream(
        &mut self,
        name: &str,
        stream: &mut duckdb::arrow::ffi_stream::FFI_ArrowArrayStream,
    ) -> Result<(), DuckError> {
        let c_name = CString::new(name).map_err(|e| duck_err(e.to_string()))?;
        // SAFETY: the stream has the C stream interface layout DuckDB expects
        // and outlives its use (the caller's contract).
        let state = unsafe {
            ffi::duckdb_arrow_scan(
                self.raw,
                c_name.as_ptr(),
                (stream as *mut duckdb::arrow::ffi_stream::FFI_ArrowArrayStream).cast(),
            )
        };
        if state != ffi::DuckDBSuccess {
            return Err(duck_err(format!(
                "could not register the Arrow stream {name}"
            )));
        }
        Ok(())
    }

    /// Splits `sql` with DuckDB's parser, requires exactly one statement, and
    /// prepares it only if `allowed` accepts its kind. Nothing is executed:
    /// preparing binds the statement (names, types) but runs no query.
    pub fn prepare_single(
        &mut self,
        sql: &str,
        allowed: impl Fn(StatementKind) -> bool,
    ) -> Result<Prepared<'_>, PrepareError> {
        let c_sql = CString::new(sql)
            .map_err(|_| PrepareError::Duck(duck_err("SQL must not contain NUL characters")))?;
        let mut extracted = Extracted(ptr::null_mut());
        // SAFETY: the connection is open; `extracted` is freed by its Drop.
        let count =
            unsafe { ffi::duckdb_extract_statements(self.raw, c_sql.as_ptr(), &mut extracted.0) };
        if count == 0 {
            // SAFETY: the error string belongs to `extracted`.
            let message = unsafe { ffi::duckdb_extract_statements_error(extracted.0) };
            let message = borrowed_str(message, "no statement found");
            return Err(if message.is_empty() || message == "no statement found" {
                PrepareError::StatementCount(0)
            } else {
                PrepareError::Duck(DuckError(message))
            });
        }
        if count != 1 {
            return Err(PrepareError::StatementCount(count as usize));
        }
        let mut raw: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: index 0 exists; the statement is destroyed by `Prepared`'s Drop.
        let state =
            unsafe { ffi::duckdb_prepare_extracted_statement(self.raw, extracted.0, 0, &mut raw) };
        let prepared = Prepared {
            raw,
            connection: self,
        };
        if state != ffi::DuckDBSuccess {
            // SAFETY: the error belongs to the (failed) prepared statement.
            let message = unsafe { ffi::duckdb_prepare_error(prepared.raw) };
            return Err(PrepareError::Duck(DuckError(borrowed_str(
                message,
                "could not prepare the statement",
            ))));
        }
        // SAFETY: a successfully prepared statement.
        let kind = statement_kind(unsafe { ffi::duckdb_prepared_statement_type(prepared.raw) });
        if !allowed(kind) {
            return Err(PrepareError::Kind(kind));
        }
        Ok(prepared)
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        *self.interrupter.raw.lock().expect("interrupter lock") = ptr::null_mut();
        // SAFETY: no interrupt can reach the connection any more; closed once.
        unsafe { ffi::duckdb_disconnect(&mut self.raw) }
    }
}

/// A result column: its name and DuckDB's name for its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub type_name: String,
}

/// What a running statement reports, and how it is stopped.
pub trait RunControl {
    /// Called between units of work: `Err(reason)` stops the query.
    fn check(&mut self) -> Result<(), String>;
    /// DuckDB's progress, at most a few times a second.
    fn progress(&mut self, progress: Progress);
    /// The result's Arrow schema, once, before the first batch.
    fn schema(&mut self, _schema: &SchemaRef) {}
    /// A batch of result rows, in order. `Err(reason)` stops the query.
    fn batch(&mut self, batch: RecordBatch) -> Result<(), String>;
}

/// DuckDB's view of a running query (`duckdb_query_progress`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// 0–100 when DuckDB can estimate it (every source knows its size).
    pub percent: Option<f64>,
    /// Rows the query's sources have read so far, with that estimate.
    pub rows_processed: u64,
    /// Rows the sources will read in all, with that estimate.
    pub total_rows: u64,
}

/// Why a statement stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// DuckDB reported an error (including "interrupted").
    Duck(DuckError),
    /// The control asked to stop, with its reason.
    Stopped(String),
}

/// A prepared statement on a connection.
pub struct Prepared<'conn> {
    raw: ffi::duckdb_prepared_statement,
    connection: &'conn mut RawConnection,
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        // SAFETY: destroyed once; destroy_prepare accepts a failed statement too.
        unsafe { ffi::duckdb_destroy_prepare(&mut self.raw) }
    }
}

struct Pending(ffi::duckdb_pending_result);
impl Drop for Pending {
    fn drop(&mut self) {
        // SAFETY: destroyed once.
        unsafe { ffi::duckdb_destroy_pending(&mut self.0) }
    }
}

struct QueryResult(ffi::duckdb_result);
impl Drop for QueryResult {
    fn drop(&mut self) {
        // SAFETY: destroyed once; duckdb_destroy_result accepts a failed result.
        unsafe { ffi::duckdb_destroy_result(&mut self.0) }
    }
}

struct ArrowOptions(ffi::duckdb_arrow_options);
impl Drop for ArrowOptions {
    fn drop(&mut self) {
        // SAFETY: destroyed once.
        unsafe { ffi::duckdb_destroy_arrow_options(&mut self.0) }
    }
}

struct LogicalType(ffi::duckdb_logical_type);
impl Drop for LogicalType {
    fn drop(&mut self) {
        // SAFETY: destroyed once.
        unsafe { ffi::duckdb_destroy_logical_type(&mut self.0) }
    }
}

/// DuckDB's error data carries some messages as JSON
/// (`{"exception_type":"Invalid Input","exception_message":"…"}`): show
/// them as DuckDB prints its other errors, `Invalid Input Error: …`.
fn readable_message(message: String) -> String {
    #[derive(serde::Deserialize)]
    struct Structured {
        exception_type: String,
        exception_message: String,
    }
    match serde_json::from_str::<Structured>(&message) {
        Ok(error) => format!(
            "{} Error: {}",
            error.exception_type, error.exception_message
        ),
        Err(_) => message,
    }
}

/// Turns a `duckdb_error_data` into a Result, freeing it.
fn error_data(mut data: ffi::duckdb_error_data) -> Result<(), DuckError> {
    if data.is_null() {
        return Ok(());
    }
    // SAFETY: a valid error data object, destroyed once.
    unsafe {
        let result = if ffi::duckdb_error_data_has_error(data) {
            Err(DuckError(readable_message(borrowed_str(
                ffi::duckdb_error_data_message(data),
                "DuckDB error",
            ))))
        } else {
            Ok(())
        };
        ffi::duckdb_destroy_error_data(&mut data);
        result
    }
}

/// How often progress is sampled while a query runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Prepared<'_> {
    /// The columns the statement will return (known after binding).
    pub fn columns(&self) -> Vec<ColumnInfo> {
        // SAFETY: a prepared statement; indexes are in range; strings and types freed.
        unsafe {
            let count = ffi::duckdb_prepared_statement_column_count(self.raw);
            (0..count)
                .map(|i| {
                    let name_ptr = ffi::duckdb_prepared_statement_column_name(self.raw, i);
                    let name = borrowed_str(name_ptr, "");
                    if !name_ptr.is_null() {
                        ffi::duckdb_free(name_ptr as *mut _);
                    }
                    let logical = LogicalType(ffi::duckdb_prepared_statement_column_logical_type(
                        self.raw, i,
                    ));
                    ColumnInfo {
                        name,
                        type_name: type_name(logical.0),
                    }
                })
                .collect()
        }
    }

    /// Runs the statement as a stream: DuckDB's tasks are executed on this
    /// thread (DuckDB's worker threads help), `control` is consulted between
    /// tasks and chunks, and the rows arrive as Arrow batches converted by
    /// DuckDB itself. Returns the Arrow schema of the result.
    pub fn run(self, control: &mut dyn RunControl) -> Result<SchemaRef, RunError> {
        let interrupter = self.connection.interrupter();
        let connection = self.connection.raw;
        let mut last_progress = Instant::now();
        let mut sample = |control: &mut dyn RunControl, force: bool| {
            if force || last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                // SAFETY: progress of the query on this (open) connection.
                let progress = unsafe { ffi::duckdb_query_progress(connection) };
                control.progress(Progress {
                    percent: (progress.percentage >= 0.0).then_some(progress.percentage),
                    rows_processed: progress.rows_processed,
                    total_rows: progress.total_rows_to_process,
                });
            }
        };
        let stop = |reason: String| {
            interrupter.interrupt();
            RunError::Stopped(reason)
        };

        let mut pending = Pending(ptr::null_mut());
        // SAFETY: a prepared statement; `pending` is destroyed by its Drop.
        let state = unsafe { ffi::duckdb_pending_prepared_streaming(self.raw, &mut pending.0) };
        if state != ffi::DuckDBSuccess {
            // SAFETY: the error belongs to `pending`.
            let message = unsafe { ffi::duckdb_pending_error(pending.0) };
            return Err(RunError::Duck(DuckError(borrowed_str(
                message,
                "could not start the query",
            ))));
        }
        loop {
            // SAFETY: a live pending result.
            let state = unsafe { ffi::duckdb_pending_execute_task(pending.0) };
            match state {
                ffi::duckdb_pending_state_DUCKDB_PENDING_RESULT_READY => break,
                ffi::duckdb_pending_state_DUCKDB_PENDING_ERROR => {
                    // SAFETY: the error belongs to `pending`.
                    let message = unsafe { ffi::duckdb_pending_error(pending.0) };
                    return Err(RunError::Duck(DuckError(borrowed_str(
                        message,
                        "query failed",
                    ))));
                }
                ffi::duckdb_pending_state_DUCKDB_PENDING_NO_TASKS_AVAILABLE => {
                    // DuckDB's own workers hold every task: wait instead of spinning.
                    std::thread::sleep(Duration::from_micros(500));
                }
                _ => {}
            }
            control.check().map_err(stop)?;
            sample(control, false);
        }

        let mut result = QueryResult(
            // SAFETY: duckdb_result is a plain C struct; zeroed is its "empty" state.
            unsafe { std::mem::zeroed() },
        );
        // SAFETY: the pending result is ready; `result` is destroyed by its Drop.
        if unsafe { ffi::duckdb_execute_pending(pending.0, &mut result.0) } != ffi::DuckDBSuccess {
            // SAFETY: the error belongs to `result`.
            let message = unsafe { ffi::duckdb_result_error(&mut result.0) };
            return Err(RunError::Duck(DuckError(borrowed_str(
                message,
                "query failed",
            ))));
        }
        drop(pending);

        let (options, ffi_schema, schema) = arrow_schema(&mut result).map_err(RunError::Duck)?;
        control.schema(&schema);
        loop {
            // SAFETY: fetches the next chunk of a live result (null at the end).
            let mut chunk = unsafe { ffi::duckdb_fetch_chunk(result.0) };
            if chunk.is_null() {
                // SAFETY: an error while streaming surfaces on the result.
                let message = unsafe { ffi::duckdb_result_error(&mut result.0) };
                if !message.is_null() {
                    return Err(RunError::Duck(DuckError(borrowed_str(
                        message,
                        "query failed",
                    ))));
                }
                break;
            }
            let mut array = FFI_ArrowArray::empty();
            // SAFETY: FFI_ArrowArray has the C Data Interface layout DuckDB writes;
            // the chunk is destroyed right after conversion.
            let converted = unsafe {
                let converted = ffi::duckdb_data_chunk_to_arrow(
                    options.0,
                    chunk,
                    (&mut array as *mut FFI_ArrowArray).cast(),
                );
                ffi::duckdb_destroy_data_chunk(&mut chunk);
                converted
            };
            error_data(converted).map_err(RunError::Duck)?;
            // SAFETY: the array was produced for exactly this schema.
            let data = unsafe { from_ffi(array, &ffi_schema) }
                .map_err(|e| RunError::Duck(duck_err(format!("reading DuckDB's Arrow: {e}"))))?;
            let batch = RecordBatch::from(StructArray::from(data));
            control.batch(batch).map_err(stop)?;
            control.check().map_err(stop)?;
            sample(control, false);
        }
        sample(control, true);
        Ok(schema)
    }
}

/// The Arrow options, C schema and Rust schema of a result.
fn arrow_schema(
    result: &mut QueryResult,
) -> Result<(ArrowOptions, FFI_ArrowSchema, SchemaRef), DuckError> {
    // SAFETY: a successful result; names are borrowed from it; types freed by Drop.
    unsafe {
        let options = ArrowOptions(ffi::duckdb_result_get_arrow_options(&mut result.0));
        let count = ffi::duckdb_column_count(&mut result.0);
        let types: Vec<LogicalType> = (0..count)
            .map(|i| LogicalType(ffi::duckdb_column_logical_type(&mut result.0, i)))
            .collect();
        let mut raw_types: Vec<ffi::duckdb_logical_type> = types.iter().map(|t| t.0).collect();
        let mut names: Vec<*const c_char> = (0..count)
            .map(|i| ffi::duckdb_column_name(&mut result.0, i))
            .collect();
        let mut ffi_schema = FFI_ArrowSchema::empty();
        error_data(ffi::duckdb_to_arrow_schema(
            options.0,
            raw_types.as_mut_ptr(),
            names.as_mut_ptr(),
            count,
            (&mut ffi_schema as *mut FFI_ArrowSchema).cast(),
        ))?;
        let schema = Schema::try_from(&ffi_schema)
            .map_err(|e| duck_err(format!("reading DuckDB's Arrow schema: {e}")))?;
        Ok((options, ffi_schema, Arc::new(schema)))
    }
}

/// DuckDB's SQL name of a logical type (`INTEGER`, `DECIMAL(18,3)`,
/// `STRUCT(a INTEGER, b VARCHAR[])`, …).
fn type_name(logical: ffi::duckdb_logical_type) -> String {
    // SAFETY: `logical` is a live logical type; child types and strings are freed.
    unsafe {
        let alias = ffi::duckdb_logical_type_get_alias(logical);
        if !alias.is_null() {
            let name = borrowed_str(alias, "");
            ffi::duckdb_free(alias.cast());
            if !name.is_empty() {
                return name;
            }
        }
        let child = |raw: ffi::duckdb_logical_type| {
            let child = LogicalType(raw);
            type_name(child.0)
        };
        let owned_name = |raw: *mut c_char| {
            let name = borrowed_str(raw, "");
            if !raw.is_null() {
                ffi::duckdb_free(raw.cast());
            }
            name
        };
        match ffi::duckdb_get_type_id(logical) {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => "BOOLEAN".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => "TINYINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => "SMALLINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => "INTEGER".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => "BIGINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => "UTINYINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => "USMALLINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => "UINTEGER".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => "UBIGINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => "FLOAT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => "DOUBLE".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP => "TIMESTAMP".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => "DATE".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME => "TIME".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTERVAL => "INTERVAL".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT => "HUGEINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT => "UHUGEINT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => "VARCHAR".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => "BLOB".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => format!(
                "DECIMAL({},{})",
                ffi::duckdb_decimal_width(logical),
                ffi::duckdb_decimal_scale(logical)
            ),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S => "TIMESTAMP_S".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS => "TIMESTAMP_MS".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => "TIMESTAMP_NS".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_ENUM => {
                let size = ffi::duckdb_enum_dictionary_size(logical);
                let values: Vec<String> = (0..size)
                    .map(|i| {
                        let value =
                            owned_name(ffi::duckdb_enum_dictionary_value(logical, i as u64));
                        format!("'{}'", value.replace('\'', "''"))
                    })
                    .collect();
                format!("ENUM({})", values.join(", "))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_LIST => {
                format!("{}[]", child(ffi::duckdb_list_type_child_type(logical)))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_ARRAY => format!(
                "{}[{}]",
                child(ffi::duckdb_array_type_child_type(logical)),
                ffi::duckdb_array_type_array_size(logical)
            ),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT => {
                let count = ffi::duckdb_struct_type_child_count(logical);
                let fields: Vec<String> = (0..count)
                    .map(|i| {
                        let name = owned_name(ffi::duckdb_struct_type_child_name(logical, i));
                        let ty = child(ffi::duckdb_struct_type_child_type(logical, i));
                        format!("{} {ty}", quote_identifier(&name))
                    })
                    .collect();
                format!("STRUCT({})", fields.join(", "))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_MAP => format!(
                "MAP({}, {})",
                child(ffi::duckdb_map_type_key_type(logical)),
                child(ffi::duckdb_map_type_value_type(logical))
            ),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UNION => {
                let count = ffi::duckdb_union_type_member_count(logical);
                let members: Vec<String> = (0..count)
                    .map(|i| {
                        let name = owned_name(ffi::duckdb_union_type_member_name(logical, i));
                        let ty = child(ffi::duckdb_union_type_member_type(logical, i));
                        format!("{} {ty}", quote_identifier(&name))
                    })
                    .collect();
                format!("UNION({})", members.join(", "))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID => "UUID".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIT => "BIT".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_TZ => "TIME WITH TIME ZONE".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ => "TIMESTAMP WITH TIME ZONE".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGNUM => "BIGNUM".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SQLNULL => "\"NULL\"".into(),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIME_NS => "TIME_NS".into(),
            other => format!("UNKNOWN({other})"),
        }
    }
}

/// Quotes an SQL identifier for DuckDB (`"a""b"`).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (`'it''s'`).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_error_messages_read_like_duckdbs_others() {
        assert_eq!(
            readable_message(
                r#"{"exception_type":"Invalid Input","exception_message":"too big"}"#.into()
            ),
            "Invalid Input Error: too big"
        );
        assert_eq!(
            readable_message("Binder Error: x".into()),
            "Binder Error: x"
        );
    }
}
