//! Browser-local data: files the user opened (CSV, JSON, Parquet) and
//! server datasets taken offline (kept as Parquet, about a third of their
//! Arrow size), kept in the origin-private file system so they survive a
//! reload without the network. A stored file is loaded into duckdb-wasm
//! only when a statement names it (see [`ensure_named`]), each as a view or
//! table under its SQL name.
//!
//! Naming is pure (and tested natively, in `names`): a stored file
//! `trips.csv` is the SQL name `trips`; a server dataset `demo` taken
//! offline is stored as `offline/demo.parquet` and queried under the same
//! name as on the server, so the same SQL runs on both engines. Files that
//! would share a name get distinct ones (`sales_csv`, `sales_json`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use js_sys::Uint8Array;
use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::engine::{bridge, js_message, LocalDb, LocalError};
use super::names::{self, NameRequest};
use super::sql::{quote_identifier, quote_literal};

/// How a stored file becomes a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `read_csv` over the registered file (a view: nothing is copied).
    Csv,
    /// duckdb-wasm's JSON import (array of objects), into a table.
    Json,
    /// Read by parquet-wasm into Arrow, into a table (duckdb-wasm's own
    /// Parquet reader is an extension it would download).
    Parquet,
    /// A server dataset taken offline by an older version: Arrow IPC, into a table.
    Arrow,
}

/// The store folder of offline copies of server datasets (`offline/demo.parquet`).
const OFFLINE_DIR: &str = "offline/";

/// One stored browser-local dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDataset {
    /// The SQL name (view or table), distinct among the stored files.
    pub name: String,
    /// The stored file's name (also its name inside duckdb-wasm).
    pub file_name: String,
    pub kind: Kind,
    pub size_bytes: u64,
}

impl LocalDataset {
    /// Whether this is a server dataset taken offline.
    pub fn is_offline_copy(&self) -> bool {
        is_offline_file(&self.file_name)
    }
}

/// Offline copies live in [`OFFLINE_DIR`]; older versions stored them as
/// `<name>.arrow` beside the user's files (which cannot be `.arrow`).
fn is_offline_file(file_name: &str) -> bool {
    file_name.starts_with(OFFLINE_DIR) || kind_of(file_name) == Some(Kind::Arrow)
}

/// The kind of a file, from its extension.
pub fn kind_of(file_name: &str) -> Option<Kind> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".csv") || lower.ends_with(".tsv") || lower.ends_with(".txt") {
        Some(Kind::Csv)
    } else if lower.ends_with(".json") {
        Some(Kind::Json)
    } else if lower.ends_with(".parquet") || lower.ends_with(".parq") {
        Some(Kind::Parquet)
    } else if lower.ends_with(".arrow") {
        Some(Kind::Arrow)
    } else {
        None
    }
}

/// The SQL name of a file: its stem as a lower-case identifier (letters,
/// digits, `_`; never starting with a digit).
pub fn sql_name(file_name: &str) -> String {
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _)| stem);
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "t_");
    }
    name
}

/// The name a stored file asks for: an offline copy its server dataset's
/// name, verbatim (a valid identifier already); a user's file [`sql_name`].
fn preferred_name(file_name: &str) -> String {
    if is_offline_file(file_name) {
        let file = file_name.strip_prefix(OFFLINE_DIR).unwrap_or(file_name);
        file.rsplit_once('.')
            .map_or(file, |(stem, _)| stem)
            .to_owned()
    } else {
        sql_name(file_name)
    }
}

/// The stored file name of a server dataset taken offline.
pub fn offline_file_name(server_name: &str) -> String {
    format!("{OFFLINE_DIR}{server_name}.parquet")
}

/// Where older versions kept it (removed when the copy is refreshed).
fn legacy_offline_file_name(server_name: &str) -> String {
    format!("{server_name}.arrow")
}

/// The SQL name of a URL dataset: its last path segment's stem
/// (`https://host/data/sales.csv` is `sales`).
pub fn url_sql_name(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = without_query
        .split_once("://")
        .map_or(without_query, |(_, rest)| rest);
    // The path after the host, if any.
    let path = after_scheme.split_once('/').map_or("", |(_, path)| path);
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(last) if !last.is_empty() => sql_name(last),
        _ => "url_data".to_owned(),
    }
}

/// Makes a URL dataset (CSV over HTTP(S)) queryable under
/// [`url_sql_name`]: duckdb-wasm reads it on each query.
pub async fn ensure_url(db: &LocalDb, url: &str) -> Result<String, LocalError> {
    let name = url_sql_name(url);
    let file_name = format!("url_{name}.csv");
    forget_if_restarted(db);
    if URLS.with(|u| !u.borrow().contains(url)) {
        db.register_url(&file_name, url).await?;
        db.execute(&format!(
            "CREATE OR REPLACE VIEW {} AS SELECT * FROM read_csv({})",
            quote_identifier(&name),
            quote_literal(&file_name)
        ))
        .await?;
        URLS.with(|u| u.borrow_mut().insert(url.to_owned()));
    }
    Ok(name)
}

/// Why opening a file was refused.
pub fn unsupported_message(file_name: &str) -> String {
    format!(
        "{file_name}: only CSV (.csv, .tsv, .txt), JSON (.json) and Parquet (.parquet) files \
         can be queried in the browser"
    )
}

#[derive(Deserialize)]
struct StoredFile {
    file_name: String,
    size_bytes: u64,
}

thread_local! {
    /// URL datasets already registered in this page's duckdb-wasm.
    static URLS: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
    /// Stored files loaded into this page's duckdb-wasm: file name → the
    /// SQL name and kind of the view or table made of it.
    static LOADED: RefCell<BTreeMap<String, (String, Kind)>> = const { RefCell::new(BTreeMap::new()) };
    /// The engine generation [`LOADED`] and [`URLS`] describe (see [`forget_if_restarted`]).
    static LOADED_INTO: Cell<u32> = const { Cell::new(0) };
    /// The SQL names of the last listing, by file name (for [`table_name_of`]).
    static NAMES: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
}

/// The datasets in the browser's store, with distinct SQL names.
pub async fn list() -> Result<Vec<LocalDataset>, LocalError> {
    let module = bridge().await?;
    let json = module
        .store_list()
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    let files: Vec<StoredFile> = serde_json::from_str(&json)
        .map_err(|e| LocalError::Duck(format!("unreadable local store listing: {e}")))?;
    let files: Vec<(StoredFile, Kind)> = files
        .into_iter()
        .filter_map(|f| kind_of(&f.file_name).map(|kind| (f, kind)))
        .collect();
    let requests: Vec<NameRequest<'_>> = files
        .iter()
        .map(|(f, _)| NameRequest {
            file_name: &f.file_name,
            preferred: preferred_name(&f.file_name),
            offline_copy: is_offline_file(&f.file_name),
        })
        .collect();
    let assigned = names::assign(&requests);
    let datasets: Vec<LocalDataset> = files
        .into_iter()
        .zip(assigned)
        .map(|((f, kind), name)| LocalDataset {
            name,
            file_name: f.file_name,
            kind,
            size_bytes: f.size_bytes,
        })
        .collect();
    NAMES.with(|n| {
        *n.borrow_mut() = datasets
            .iter()
            .map(|d| (d.file_name.clone(), d.name.clone()))
            .collect();
    });
    Ok(datasets)
}

async fn file_bytes(file: &web_sys::File) -> Result<Uint8Array, LocalError> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    Ok(Uint8Array::new(&buffer))
}

/// Drops the view or table `name` of a `kind` made from a stored file.
async fn drop_object(db: &LocalDb, name: &str, kind: Kind) -> Result<(), LocalError> {
    let name = quote_identifier(name);
    let sql = match kind {
        Kind::Csv => format!("DROP VIEW IF EXISTS {name}"),
        Kind::Json | Kind::Parquet | Kind::Arrow => format!("DROP TABLE IF EXISTS {name}"),
    };
    db.execute(&sql).await.map(drop)
}

/// Forgets what was loaded into an earlier duckdb-wasm worker: the threaded
/// engine replaces its worker to cancel a query ([`LocalDb::generation`]),
/// and the new one starts empty, so stored files are loaded again when a
/// statement names them, URL datasets registered again.
fn forget_if_restarted(db: &LocalDb) {
    let generation = db.generation();
    if LOADED_INTO.with(Cell::get) != generation {
        LOADED.with(|l| l.borrow_mut().clear());
        URLS.with(|u| u.borrow_mut().clear());
        LOADED_INTO.with(|g| g.set(generation));
    }
}

/// Drops what this page loaded under a name that is no longer its file's
/// (another file now shares the stem) or of a file no longer stored, so a
/// stale view can never answer for a renamed one.
async fn forget_stale(db: &LocalDb, current: &[LocalDataset]) -> Result<(), LocalError> {
    forget_if_restarted(db);
    let stale: Vec<(String, String, Kind)> = LOADED.with(|l| {
        l.borrow()
            .iter()
            .filter(|(file_name, (name, _))| {
                !current
                    .iter()
                    .any(|d| &d.file_name == *file_name && &d.name == name)
            })
            .map(|(file_name, (name, kind))| (file_name.clone(), name.clone(), *kind))
            .collect()
    });
    for (file_name, name, kind) in stale {
        drop_object(db, &name, kind).await?;
        LOADED.with(|l| l.borrow_mut().remove(&file_name));
    }
    Ok(())
}

/// Loads one stored dataset into `db` under its name (once per page).
async fn ensure_loaded(db: &LocalDb, dataset: &LocalDataset) -> Result<(), LocalError> {
    let loaded = LOADED.with(|l| l.borrow().get(&dataset.file_name).cloned());
    if loaded
        .as_ref()
        .is_some_and(|(name, _)| *name == dataset.name)
    {
        return Ok(());
    }
    let module = db.module();
    let file = module
        .store_load(&dataset.file_name)
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    let name = quote_identifier(&dataset.name);
    match dataset.kind {
        Kind::Csv => {
            db.register_file(&dataset.file_name, &file).await?;
            db.execute(&format!(
                "CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_csv({})",
                quote_literal(&dataset.file_name)
            ))
            .await?;
        }
        Kind::Json => {
            db.register_file(&dataset.file_name, &file).await?;
            db.execute(&format!("DROP TABLE IF EXISTS {name}")).await?;
            db.insert_json_file(&dataset.name, &dataset.file_name)
                .await?;
        }
        Kind::Parquet => {
            let bytes = file_bytes(&file).await?;
            db.execute(&format!("DROP TABLE IF EXISTS {name}")).await?;
            db.insert_parquet(&dataset.name, bytes)
                .await
                .map_err(|e| LocalError::Duck(format!("{}: {e}", dataset.file_name)))?;
        }
        Kind::Arrow => {
            let bytes = file_bytes(&file).await?;
            db.execute(&format!("DROP TABLE IF EXISTS {name}")).await?;
            db.insert_arrow_ipc(&dataset.name, bytes).await?;
        }
    }
    LOADED.with(|l| {
        l.borrow_mut().insert(
            dataset.file_name.clone(),
            (dataset.name.clone(), dataset.kind),
        )
    });
    Ok(())
}

/// Loads the stored datasets that `sql` names (by SQL name, or by file name
/// in a string literal) and no others: a query that names none reads no
/// stored file. Names that changed since they were loaded are dropped first.
pub async fn ensure_named(db: &LocalDb, sql: &str) -> Result<(), LocalError> {
    let datasets = list().await?;
    forget_stale(db, &datasets).await?;
    let pairs: Vec<(&str, &str)> = datasets
        .iter()
        .map(|d| (d.name.as_str(), d.file_name.as_str()))
        .collect();
    for i in names::referenced(sql, &pairs) {
        ensure_loaded(db, &datasets[i]).await?;
    }
    Ok(())
}

/// Stores a file the user opened and loads it (which checks that it can
/// be read); its content never leaves the browser. Returns it with its
/// SQL name, distinct from every other stored file's.
pub async fn open_file(file: &web_sys::File) -> Result<LocalDataset, LocalError> {
    let file_name = file.name();
    let kind =
        kind_of(&file_name).ok_or_else(|| LocalError::Duck(unsupported_message(&file_name)))?;
    if kind == Kind::Arrow {
        return Err(LocalError::Duck(unsupported_message(&file_name)));
    }
    let module = bridge().await?;
    module
        .store_save(&file_name, file.as_ref())
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    // The same file name again replaces the stored file: load it afresh.
    LOADED.with(|l| l.borrow_mut().remove(&file_name));
    let datasets = list().await?;
    let dataset = datasets
        .iter()
        .find(|d| d.file_name == file_name)
        .cloned()
        .ok_or_else(|| LocalError::Duck(format!("{file_name} was not stored")))?;
    let db = LocalDb::shared().await?;
    forget_stale(&db, &datasets).await?;
    ensure_loaded(&db, &dataset).await?;
    Ok(dataset)
}

/// Downloads server dataset `server_name` as Arrow IPC
/// (`GET /api/datasets/{name}/download`) and stores it as Parquet
/// (parquet-wasm, zstd), to be loaded when a query names it.
pub async fn take_offline(server_name: &str) -> Result<LocalDataset, LocalError> {
    let url = format!("/api/datasets/{server_name}/download");
    let window = web_sys::window().ok_or_else(|| LocalError::Duck("no window".into()))?;
    // Plain fetch: the bytes stay a JS ArrayBuffer on their way to parquet-wasm.
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(&url))
        .await
        .map_err(|e| {
            LocalError::Duck(format!("the server cannot be reached ({})", js_message(&e)))
        })?
        .unchecked_into();
    if !response.ok() {
        let status = response.status();
        let detail = match response.json() {
            Ok(promise) => JsFuture::from(promise)
                .await
                .ok()
                .and_then(|body| js_sys::Reflect::get(&body, &"detail".into()).ok())
                .and_then(|detail| detail.as_string()),
            Err(_) => None,
        };
        let detail = detail.unwrap_or_else(|| "download refused".into());
        return Err(LocalError::Duck(format!("{detail} (HTTP {status})")));
    }
    let buffer = JsFuture::from(
        response
            .array_buffer()
            .map_err(|e| LocalError::Duck(js_message(&e)))?,
    )
    .await
    .map_err(|e| LocalError::Duck(format!("the download broke off: {}", js_message(&e))))?;
    let ipc = Uint8Array::new(&buffer);
    let module = bridge().await?;
    let parquet = module.ipc_to_parquet(&ipc).await.map_err(|e| {
        LocalError::Duck(format!(
            "the copy could not be written as Parquet: {}",
            js_message(&e)
        ))
    })?;
    let file_name = offline_file_name(server_name);
    module
        .store_save(&file_name, parquet.unchecked_ref())
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    // A copy kept by an older version is superseded.
    let legacy = legacy_offline_file_name(server_name);
    if list().await?.iter().any(|d| d.file_name == legacy) {
        let _ = module.store_delete(&legacy).await;
    }
    LOADED.with(|l| l.borrow_mut().remove(&file_name));
    // Reconcile now, so a refreshed copy is read again by the next query.
    if LocalDb::is_started() {
        let db = LocalDb::shared().await?;
        forget_stale(&db, &list().await?).await?;
    }
    Ok(LocalDataset {
        name: server_name.to_owned(),
        size_bytes: parquet.length() as u64,
        file_name,
        kind: Kind::Parquet,
    })
}

/// Removes a stored dataset (and its table or view in this page).
pub async fn remove(dataset: &LocalDataset) -> Result<(), LocalError> {
    let loaded = LOADED.with(|l| l.borrow_mut().remove(&dataset.file_name));
    if LocalDb::is_started() {
        let db = LocalDb::shared().await?;
        if let Some((name, kind)) = loaded {
            drop_object(&db, &name, kind).await?;
        }
        let _ = db.drop_file(&dataset.file_name).await;
    }
    let module = bridge().await?;
    module
        .store_delete(&dataset.file_name)
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))
}

/// The SQL name under which the local engine reads `dataset` (a server
/// dataset and its offline copy share the server's name; a local file has
/// the name the last listing gave it).
pub fn table_name_of(dataset: &shared_domain::DatasetRef) -> String {
    match dataset {
        shared_domain::DatasetRef::Server { name } => name.as_str().to_owned(),
        shared_domain::DatasetRef::Local { name, .. } => NAMES
            .with(|n| n.borrow().get(name.as_str()).cloned())
            .unwrap_or_else(|| sql_name(name.as_str())),
        shared_domain::DatasetRef::Url { url } => url_sql_name(url.as_str()),
    }
}

/// The tables and views of the running local engine with their columns,
/// for autocomplete; empty while duckdb-wasm is not started (this never
/// starts it).
pub async fn table_columns() -> Result<Vec<(String, Vec<String>)>, LocalError> {
    if !LocalDb::is_started() {
        return Ok(Vec::new());
    }
    let db = LocalDb::shared().await?;
    if db.is_running() {
        // One query at a time: the next refresh will catch up.
        return Ok(Vec::new());
    }
    let rows = db
        .execute(
            "SELECT table_name, column_name FROM information_schema.columns \
             WHERE table_schema = 'main' ORDER BY table_name, ordinal_position",
        )
        .await?;
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let text = |i: usize| {
            row.get(i)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (table, column) = (text(0), text(1));
        match tables.last_mut() {
            Some((name, columns)) if *name == table => columns.push(column),
            _ => tables.push((table, vec![column])),
        }
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_become_plain_identifiers() {
        assert_eq!(sql_name("trips.csv"), "trips");
        assert_eq!(sql_name("My Sales-2024.csv"), "my_sales_2024");
        assert_eq!(sql_name("2024.json"), "t_2024");
        assert_eq!(sql_name(".csv"), "t_");
        assert_eq!(offline_file_name("demo"), "offline/demo.parquet");
        assert_eq!(preferred_name(&offline_file_name("Demo_2")), "Demo_2");
        assert_eq!(preferred_name("demo.arrow"), "demo");
        assert_eq!(preferred_name("My Sales.parquet"), "my_sales");
    }

    #[test]
    fn urls_are_named_after_their_file() {
        assert_eq!(
            url_sql_name("https://example.com/data/Sales 2024.csv?x=1"),
            "sales_2024"
        );
        assert_eq!(url_sql_name("https://example.com/"), "url_data");
        assert_eq!(url_sql_name("http://example.com"), "url_data");
    }

    #[test]
    fn kinds_come_from_extensions() {
        assert_eq!(kind_of("a.CSV"), Some(Kind::Csv));
        assert_eq!(kind_of("a.tsv"), Some(Kind::Csv));
        assert_eq!(kind_of("a.json"), Some(Kind::Json));
        assert_eq!(kind_of("demo.arrow"), Some(Kind::Arrow));
        assert_eq!(kind_of("a.parquet"), Some(Kind::Parquet));
        assert_eq!(kind_of("a.xlsx"), None);
        assert!(is_offline_file("offline/demo.parquet"));
        assert!(is_offline_file("demo.arrow"));
        assert!(!is_offline_file("demo.parquet"));
    }
}
