//! The server's dataset catalog: the files of the datasets directory
//! (Parquet, CSV, JSON), each exposed to SQL as a view named after the file's
//! stem. Rescanned on demand (listing, attaching, before each query) so that
//! files dropped into the directory appear without a restart; only changed
//! files are re-described.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use shared_domain::{Column, DatasetName};

use super::duck::{quote_identifier, quote_literal, Database, DuckError};

/// A file format the catalog understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
    Json,
}

impl Format {
    /// The format of a file by its extension (case-insensitive).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" | "tsv" => Some(Format::Csv),
            "json" | "jsonl" | "ndjson" => Some(Format::Json),
            _ => None,
        }
    }

    /// DuckDB's reader for this format.
    fn reader(self) -> &'static str {
        match self {
            Format::Parquet => "read_parquet",
            Format::Csv => "read_csv",
            Format::Json => "read_json",
        }
    }
}

/// One dataset as `GET /api/datasets` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    pub name: String,
    pub format: Format,
    pub bytes: u64,
    pub columns: Vec<Column>,
    /// Known cheaply for Parquet (from its metadata), else null.
    pub rows: Option<u64>,
}

/// A file that is (or should be) a view, with what identifies its version.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    name: String,
    path: PathBuf,
    format: Format,
    bytes: u64,
    modified: Option<SystemTime>,
}

/// Picks the files that become views: supported formats whose stem is a plain
/// identifier, minus every name claimed by more than one file (identifiers
/// are case-insensitive in DuckDB). Returns them by lower-case name, and the
/// problems to report. Pure, for testing.
fn select_candidates(files: Vec<Candidate>) -> (BTreeMap<String, Candidate>, Vec<String>) {
    let mut problems = Vec::new();
    let mut by_name: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for file in files {
        if DatasetName::new(file.name.clone()).is_err() {
            problems.push(format!(
                "skipping dataset file {}: {:?} is not a plain identifier (letters, digits and _, not starting with a digit)",
                file.path.display(),
                file.name
            ));
            continue;
        }
        by_name
            .entry(file.name.to_ascii_lowercase())
            .or_default()
            .push(file);
    }
    let mut selected = BTreeMap::new();
    for (key, mut files) in by_name {
        if files.len() == 1 {
            selected.insert(key, files.pop().expect("one file"));
        } else {
            let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
            problems.push(format!(
                "skipping dataset name {key:?}: it is claimed by several files ({}); rename all but one",
                paths.join(", ")
            ));
        }
    }
    (selected, problems)
}

struct Registered {
    candidate: Candidate,
    dataset: Dataset,
}

/// The catalog over one directory, with views in the sandboxed database.
pub struct Catalog {
    dir: PathBuf,
    database: Arc<Database>,
    /// Lower-case names of the registered views, for quick lookups.
    names: RwLock<HashSet<String>>,
    state: Mutex<CatalogState>,
}

#[derive(Default)]
struct CatalogState {
    registered: HashMap<String, Registered>,
    /// Problems already logged, so a rescan does not repeat them.
    reported: HashSet<String>,
    /// Files DuckDB could not read, as they were then: tried again only
    /// once they change.
    unreadable: HashMap<String, Candidate>,
}

impl Catalog {
    /// A catalog over `dir` (created if missing), registering views in `database`.
    pub fn open(dir: PathBuf, database: Arc<Database>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            database,
            names: RwLock::new(HashSet::new()),
            state: Mutex::new(CatalogState::default()),
        })
    }

    /// The datasets directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a dataset of this name is registered, from memory only (the
    /// command writer asks inside its transaction). A file added since the
    /// last scan is known after [`Catalog::refresh`].
    pub fn knows(&self, name: &str) -> bool {
        let key = name.to_ascii_lowercase();
        self.names.read().expect("catalog names").contains(&key)
    }

    fn scan(&self) -> std::io::Result<Vec<Candidate>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(format) = Format::from_path(&path) else {
                continue;
            };
            let metadata = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            // Hidden and temporary files (a demo being written) are not datasets.
            if stem.starts_with('.') {
                continue;
            }
            files.push(Candidate {
                name: stem.to_owned(),
                path: path.clone(),
                format,
                bytes: metadata.len(),
                modified: metadata.modified().ok(),
            });
        }
        Ok(files)
    }

    /// Rescans the directory and brings the views up to date: new and changed
    /// files are (re)registered and described, removed ones dropped. A file
    /// DuckDB cannot read is logged and skipped. Blocking.
    pub fn refresh(&self) -> Result<(), DuckError> {
        let files = self
            .scan()
            .map_err(|e| DuckError(format!("reading {}: {e}", self.dir.display())))?;
        let (selected, problems) = select_candidates(files);
        let mut state = self.state.lock().expect("catalog state");
        for problem in problems {
            if state.reported.insert(problem.clone()) {
                tracing::warn!("{problem}");
            }
        }
        let stale: Vec<String> = state
            .registered
            .iter()
            .filter(|(key, reg)| selected.get(*key) != Some(&reg.candidate))
            .map(|(key, _)| key.clone())
            .collect();
        let unchanged = stale.is_empty()
            && selected.iter().all(|(key, candidate)| {
                state.registered.contains_key(key) || state.unreadable.get(key) == Some(candidate)
            });
        if unchanged {
            // Every query rescans: when nothing moved, no DuckDB work at all.
            return Ok(());
        }
        let connection = self.database.crate_connection()?;
        for key in stale {
            let reg = state.registered.remove(&key).expect("registered");
            let _ = connection.execute_batch(&format!(
                "DROP VIEW IF EXISTS {}",
                quote_identifier(&reg.candidate.name)
            ));
            tracing::info!(dataset = %reg.candidate.name, "dataset removed or changed");
        }
        for (key, candidate) in selected {
            if state.registered.contains_key(&key) || state.unreadable.get(&key) == Some(&candidate)
            {
                continue;
            }
            match register(&connection, &candidate) {
                Ok(dataset) => {
                    state.unreadable.remove(&key);
                    tracing::info!(
                        dataset = %dataset.name,
                        format = ?dataset.format,
                        bytes = dataset.bytes,
                        rows = ?dataset.rows,
                        "dataset registered"
                    );
                    state
                        .registered
                        .insert(key, Registered { candidate, dataset });
                }
                Err(error) => {
                    let problem = format!(
                        "skipping dataset file {}: DuckDB cannot read it: {error}",
                        candidate.path.display()
                    );
                    state.unreadable.insert(key, candidate);
                    if state.reported.insert(problem.clone()) {
                        tracing::warn!("{problem}");
                    }
                }
            }
        }
        *self.names.write().expect("catalog names") = state.registered.keys().cloned().collect();
        Ok(())
    }

    /// The registered datasets, by name.
    pub fn list(&self) -> Vec<Dataset> {
        let state = self.state.lock().expect("catalog state");
        let mut datasets: Vec<Dataset> = state
            .registered
            .values()
            .map(|reg| reg.dataset.clone())
            .collect();
        datasets.sort_by(|a, b| a.name.cmp(&b.name));
        datasets
    }

    /// What the registered dataset files look like now (names, sizes,
    /// modification times): a query's result is only recomputed while the
    /// fingerprint it ran on is still current. Every dataset counts, not
    /// just those a query names: a query may read any of them (views or
    /// file paths inside the catalog), so the coarse answer is the safe one.
    pub fn fingerprint(&self) -> String {
        let state = self.state.lock().expect("catalog state");
        fingerprint_of(state.registered.values().map(|reg| &reg.candidate))
    }

    /// Whether the catalog has no dataset (after a refresh).
    pub fn is_empty(&self) -> bool {
        self.state
            .lock()
            .expect("catalog state")
            .registered
            .is_empty()
    }
}

/// FNV-1a over the sorted (name, bytes, modified) of `files`. Pure, for testing.
fn fingerprint_of<'a>(files: impl Iterator<Item = &'a Candidate>) -> String {
    let mut lines: Vec<String> = files
        .map(|file| {
            let modified = file
                .modified
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!(
                "{}\t{}\t{}",
                file.name.to_ascii_lowercase(),
                file.bytes,
                modified
            )
        })
        .collect();
    lines.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in lines.join("\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("catalog-v1:{hash:016x}")
}

/// Creates the view of one file and describes it.
fn register(connection: &duckdb::Connection, candidate: &Candidate) -> Result<Dataset, DuckError> {
    let duck = |e: duckdb::Error| DuckError(e.to_string());
    let view = quote_identifier(&candidate.name);
    let path = candidate.path.to_string_lossy();
    connection
        .execute_batch(&format!(
            "CREATE OR REPLACE VIEW {view} AS SELECT * FROM {}({})",
            candidate.format.reader(),
            quote_literal(&path)
        ))
        .map_err(duck)?;
    let mut describe = connection
        .prepare(&format!(
            "SELECT column_name, column_type FROM (DESCRIBE {view})"
        ))
        .map_err(duck)?;
    let columns = describe
        .query_map([], |row| {
            Ok(Column::new(
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
            ))
        })
        .map_err(duck)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(duck)?;
    // Parquet keeps row counts in its footer: counting reads no data.
    let rows = match candidate.format {
        Format::Parquet => Some(
            connection
                .query_row(&format!("SELECT count(*) FROM {view}"), [], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(duck)? as u64,
        ),
        _ => None,
    };
    Ok(Dataset {
        name: candidate.name.clone(),
        format: candidate.format,
        bytes: candidate.bytes,
        columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, ext: &str) -> Candidate {
        Candidate {
            name: name.into(),
            path: PathBuf::from(format!("/d/{name}.{ext}")),
            format: Format::from_path(Path::new(&format!("x.{ext}"))).unwrap(),
            bytes: 1,
            modified: None,
        }
    }

    #[test]
    fn invalid_and_clashing_names_are_skipped_and_reported() {
        let (selected, problems) = select_candidates(vec![
            file("lineitem", "parquet"),
            file("sales", "csv"),
            file("Sales", "parquet"),
            file("2020-report", "csv"),
            file("trips", "json"),
        ]);
        assert_eq!(
            selected.keys().cloned().collect::<Vec<_>>(),
            vec!["lineitem", "trips"]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("2020-report")));
        assert!(problems.iter().any(|p| p.contains("\"sales\"")));
    }

    #[test]
    fn the_fingerprint_changes_with_any_file_and_not_with_order() {
        let a = file("a", "csv");
        let b = file("b", "parquet");
        let both = fingerprint_of([&a, &b].into_iter());
        assert_eq!(both, fingerprint_of([&b, &a].into_iter()));
        assert!(both.starts_with("catalog-v1:"));
        let mut grown = b.clone();
        grown.bytes += 1;
        assert_ne!(both, fingerprint_of([&a, &grown].into_iter()));
        let mut touched = b.clone();
        touched.modified = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5));
        assert_ne!(both, fingerprint_of([&a, &touched].into_iter()));
        assert_ne!(both, fingerprint_of([&a].into_iter()));
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            Format::from_path(Path::new("a.PARQUET")),
            Some(Format::Parquet)
        );
        assert_eq!(Format::from_path(Path::new("a.ndjson")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("a.txt")), None);
        assert_eq!(Format::from_path(Path::new("a")), None);
    }

    #[test]
    fn an_unreadable_file_is_tried_again_once_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let database = Database::open_in_memory(&[]).unwrap();
        let catalog = Catalog::open(dir.path().to_path_buf(), database).unwrap();
        let path = dir.path().join("broken.parquet");
        std::fs::write(&path, b"not parquet").unwrap();
        catalog.refresh().unwrap();
        assert!(!catalog.knows("broken"));
        // Unchanged: still skipped (and not tried again).
        catalog.refresh().unwrap();
        assert!(!catalog.knows("broken"));
        // Rewritten as real Parquet: registered at the next rescan.
        duckdb::Connection::open_in_memory()
            .unwrap()
            .execute_batch(&format!(
                "COPY (SELECT 1 AS x) TO '{}' (FORMAT parquet)",
                path.display()
            ))
            .unwrap();
        catalog.refresh().unwrap();
        assert!(catalog.knows("broken"));
        // Removed: dropped.
        std::fs::remove_file(&path).unwrap();
        catalog.refresh().unwrap();
        assert!(!catalog.knows("broken"));
    }
}
