//! Browser-local data: files the user opened (CSV, JSON) and server
//! datasets taken offline (Arrow IPC), kept in the origin-private file
//! system so they survive a reload without the network, and loaded into
//! duckdb-wasm on demand, each as a view or table named after its file.
//!
//! Naming is pure (and tested natively): a stored file `trips.csv` is the
//! SQL name `trips`; a server dataset `demo` taken offline is stored as
//! `demo.arrow` and queried under the same name as on the server, so the
//! same SQL runs on both engines.

use std::cell::RefCell;
use std::collections::BTreeSet;

use js_sys::Uint8Array;
use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use super::engine::{bridge, js_message, LocalDb, LocalError};
use super::sql::{quote_identifier, quote_literal};

/// How a stored file becomes a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `read_csv` over the registered file (a view: nothing is copied).
    Csv,
    /// duckdb-wasm's JSON import (array of objects), into a table.
    Json,
    /// A server dataset taken offline: Arrow IPC, into a table.
    Arrow,
}

/// One stored browser-local dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDataset {
    /// The SQL name (view or table).
    pub name: String,
    /// The stored file's name (also its name inside duckdb-wasm).
    pub file_name: String,
    pub kind: Kind,
    pub size_bytes: u64,
}

impl LocalDataset {
    /// Whether this is a server dataset taken offline.
    pub fn is_offline_copy(&self) -> bool {
        self.kind == Kind::Arrow
    }
}

/// The kind of a file, from its extension.
pub fn kind_of(file_name: &str) -> Option<Kind> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".csv") || lower.ends_with(".tsv") || lower.ends_with(".txt") {
        Some(Kind::Csv)
    } else if lower.ends_with(".json") {
        Some(Kind::Json)
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

/// The stored file name of a server dataset taken offline.
pub fn offline_file_name(server_name: &str) -> String {
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
    if LOADED.with(|l| !l.borrow().contains(url)) {
        db.register_url(&file_name, url).await?;
        db.execute(&format!(
            "CREATE OR REPLACE VIEW {} AS SELECT * FROM read_csv({})",
            quote_identifier(&name),
            quote_literal(&file_name)
        ))
        .await?;
        LOADED.with(|l| l.borrow_mut().insert(url.to_owned()));
    }
    Ok(name)
}

/// Why opening a file was refused.
pub fn unsupported_message(file_name: &str) -> String {
    format!(
        "{file_name}: only CSV (.csv, .tsv, .txt) and JSON (.json) files can be queried in the \
         browser; Parquet files must go to the server's datasets directory"
    )
}

#[derive(Deserialize)]
struct StoredFile {
    file_name: String,
    size_bytes: u64,
}

/// The datasets in the browser's store, by name.
pub async fn list() -> Result<Vec<LocalDataset>, LocalError> {
    let module = bridge().await?;
    let json = module
        .store_list()
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    let files: Vec<StoredFile> = serde_json::from_str(&json)
        .map_err(|e| LocalError::Duck(format!("unreadable local store listing: {e}")))?;
    Ok(files
        .into_iter()
        .filter_map(|f| {
            kind_of(&f.file_name).map(|kind| LocalDataset {
                name: sql_name(&f.file_name),
                file_name: f.file_name,
                kind,
                size_bytes: f.size_bytes,
            })
        })
        .collect())
}

thread_local! {
    /// Stored files already loaded into this page's duckdb-wasm.
    static LOADED: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

async fn file_bytes(file: &web_sys::File) -> Result<Uint8Array, LocalError> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    Ok(Uint8Array::new(&buffer))
}

/// Loads one stored dataset into `db` (once per page).
pub async fn ensure_loaded(db: &LocalDb, dataset: &LocalDataset) -> Result<(), LocalError> {
    if LOADED.with(|l| l.borrow().contains(&dataset.file_name)) {
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
        Kind::Arrow => {
            let bytes = file_bytes(&file).await?;
            db.execute(&format!("DROP TABLE IF EXISTS {name}")).await?;
            db.insert_arrow_ipc(&dataset.name, bytes).await?;
        }
    }
    LOADED.with(|l| l.borrow_mut().insert(dataset.file_name.clone()));
    Ok(())
}

/// Loads every stored dataset into `db` (cheap once loaded).
pub async fn ensure_all_loaded(db: &LocalDb) -> Result<(), LocalError> {
    for dataset in list().await? {
        ensure_loaded(db, &dataset).await?;
    }
    Ok(())
}

/// Stores a file the user opened and loads it; its content never leaves
/// the browser.
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
    LOADED.with(|l| l.borrow_mut().remove(&file_name));
    let dataset = LocalDataset {
        name: sql_name(&file_name),
        file_name,
        kind,
        size_bytes: file.size() as u64,
    };
    let db = LocalDb::shared().await?;
    ensure_loaded(&db, &dataset).await?;
    Ok(dataset)
}

/// Downloads server dataset `server_name` as Arrow IPC
/// (`GET /api/datasets/{name}/download`), stores it and loads it as a table
/// of the same name.
pub async fn take_offline(server_name: &str) -> Result<LocalDataset, LocalError> {
    let url = format!("/api/datasets/{server_name}/download");
    let window = web_sys::window().ok_or_else(|| LocalError::Duck("no window".into()))?;
    // Plain fetch: the bytes stay a JS ArrayBuffer on their way to the worker.
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
    let bytes = Uint8Array::new(&buffer);
    let file_name = offline_file_name(server_name);
    let module = bridge().await?;
    module
        .store_save(&file_name, bytes.unchecked_ref())
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))?;
    LOADED.with(|l| l.borrow_mut().remove(&file_name));
    let dataset = LocalDataset {
        name: sql_name(&file_name),
        size_bytes: bytes.length() as u64,
        file_name,
        kind: Kind::Arrow,
    };
    let db = LocalDb::shared().await?;
    ensure_loaded(&db, &dataset).await?;
    Ok(dataset)
}

/// Removes a stored dataset (and its table or view in this page).
pub async fn remove(dataset: &LocalDataset) -> Result<(), LocalError> {
    if LocalDb::is_started() {
        let db = LocalDb::shared().await?;
        let name = quote_identifier(&dataset.name);
        let drop_sql = match dataset.kind {
            Kind::Csv => format!("DROP VIEW IF EXISTS {name}"),
            Kind::Json | Kind::Arrow => format!("DROP TABLE IF EXISTS {name}"),
        };
        db.execute(&drop_sql).await?;
        let _ = db.drop_file(&dataset.file_name).await;
    }
    LOADED.with(|l| l.borrow_mut().remove(&dataset.file_name));
    let module = bridge().await?;
    module
        .store_delete(&dataset.file_name)
        .await
        .map_err(|e| LocalError::Duck(js_message(&e)))
}

/// The SQL name under which the local engine reads `dataset` (a server
/// dataset and its offline copy share the server's name).
pub fn table_name_of(dataset: &shared_domain::DatasetRef) -> String {
    match dataset {
        shared_domain::DatasetRef::Server { name } => name.as_str().to_owned(),
        shared_domain::DatasetRef::Local { name, .. } => sql_name(name.as_str()),
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
        assert_eq!(sql_name(&offline_file_name("demo")), "demo");
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
        assert_eq!(kind_of("a.parquet"), None);
        assert!(unsupported_message("a.parquet").contains("server"));
    }
}
