//! Completed results on disk: one Parquet file per query id, in a
//! directory user SQL cannot read (outside the catalog and DuckDB's temp
//! directory; checked at start-up), bounded by a byte budget with
//! least-recently-used eviction. Pages, downloads and structured queries
//! read these files, so they show the rows the query produced, not a
//! re-run against today's files. Written and read by a trusted DuckDB
//! instance that never sees user SQL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use duckdb::arrow::array::{RecordBatch, RecordBatchIterator};
use duckdb::arrow::datatypes::SchemaRef;
use duckdb::arrow::ffi_stream::FFI_ArrowArrayStream;
use shared_domain::QueryId;

use super::duck::{quote_literal, Database, DuckError, RawConnection, RunControl, RunError};

/// The least-recently-used bookkeeping of the stored files. Pure, for testing.
#[derive(Debug, Default)]
struct Index {
    entries: HashMap<QueryId, Entry>,
    bytes: u64,
    clock: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    used: u64,
}

impl Index {
    fn touch(&mut self, id: QueryId) -> bool {
        self.clock += 1;
        match self.entries.get_mut(&id) {
            Some(entry) => {
                entry.used = self.clock;
                true
            }
            None => false,
        }
    }

    /// Adds (or replaces) `id` as the most recently used, then evicts the
    /// least recently used until the total fits `budget`. Returns the
    /// evicted ids (`id` itself when it alone exceeds the budget).
    fn insert(&mut self, id: QueryId, bytes: u64, budget: u64) -> Vec<QueryId> {
        self.remove(id);
        self.clock += 1;
        self.entries.insert(
            id,
            Entry {
                bytes,
                used: self.clock,
            },
        );
        self.bytes += bytes;
        let mut evicted = Vec::new();
        while self.bytes > budget {
            let Some((&oldest, _)) = self.entries.iter().min_by_key(|(_, e)| e.used) else {
                break;
            };
            self.remove(oldest);
            evicted.push(oldest);
        }
        evicted
    }

    fn remove(&mut self, id: QueryId) {
        if let Some(entry) = self.entries.remove(&id) {
            self.bytes -= entry.bytes;
        }
    }
}

/// The store of one server.
pub struct ResultStore {
    dir: PathBuf,
    budget: u64,
    database: Arc<Database>,
    index: Mutex<Index>,
}

/// Collects a statement's batches (trusted reads of stored files).
#[derive(Default)]
pub(crate) struct Collect {
    pub batches: Vec<RecordBatch>,
    pub schema: Option<SchemaRef>,
}

impl RunControl for Collect {
    fn check(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn progress(&mut self, _progress: crate::query::duck::Progress) {}
    fn schema(&mut self, schema: &SchemaRef) {
        self.schema = Some(schema.clone());
    }
    fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
        self.batches.push(batch);
        Ok(())
    }
}

impl ResultStore {
    /// Opens the store in `dir` (created if missing), indexing the files a
    /// previous run left (oldest modification first) and removing unfinished writes.
    pub fn open(dir: PathBuf, budget: u64, threads: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = name
                .strip_suffix(".parquet")
                .and_then(|stem| uuid::Uuid::parse_str(stem).ok())
            else {
                continue;
            };
            let metadata = entry.metadata()?;
            found.push((metadata.modified().ok(), QueryId(id), metadata.len()));
        }
        found.sort_by_key(|(modified, _, _)| *modified);
        let mut index = Index::default();
        for (_, id, bytes) in found {
            for evicted in index.insert(id, bytes, budget) {
                let _ = std::fs::remove_file(file_of(&dir, evicted));
            }
        }
        let database = Database::open_in_memory(&[
            ("threads", threads.max(1).to_string()),
            ("autoinstall_known_extensions", "false".into()),
            ("autoload_known_extensions", "false".into()),
        ])
        .map_err(|e| anyhow::anyhow!("opening the result store's DuckDB: {e}"))?;
        Ok(Self {
            dir,
            budget,
            database,
            index: Mutex::new(index),
        })
    }

    /// The directory of the stored files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (bytes, results) held now.
    pub fn usage(&self) -> (u64, u64) {
        let index = self.index.lock().expect("result index");
        (index.bytes, index.entries.len() as u64)
    }

    /// A connection of the trusted instance (for server-built SQL over stored files).
    pub fn connect(&self) -> Result<RawConnection, DuckError> {
        self.database.connect()
    }

    /// The file of `id` if it is stored (and marks it used).
    pub fn file(&self, id: QueryId) -> Option<PathBuf> {
        let path = file_of(&self.dir, id);
        let mut index = self.index.lock().expect("result index");
        if !index.touch(id) {
            return None;
        }
        if path.exists() {
            Some(path)
        } else {
            index.remove(id);
            None
        }
    }

    /// Writes `batch` as the result of `id` and evicts what no longer fits.
    /// Blocking. Returns whether the file was kept (a result larger than the
    /// whole budget is not).
    pub fn save(&self, id: QueryId, batch: &RecordBatch) -> Result<bool, String> {
        let target = file_of(&self.dir, id);
        let temporary = self.dir.join(format!(".{}.parquet.tmp", id.0));
        let written = self.write(batch, &temporary);
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
        std::fs::rename(&temporary, &target).map_err(|e| e.to_string())?;
        let bytes = std::fs::metadata(&target).map_err(|e| e.to_string())?.len();
        let evicted = self
            .index
            .lock()
            .expect("result index")
            .insert(id, bytes, self.budget);
        for old in &evicted {
            let _ = std::fs::remove_file(file_of(&self.dir, *old));
        }
        Ok(!evicted.contains(&id))
    }

    fn write(&self, batch: &RecordBatch, path: &Path) -> Result<(), String> {
        let mut connection = self.database.connect().map_err(|e| e.0)?;
        let reader = RecordBatchIterator::new(vec![Ok(batch.clone())], batch.schema());
        let mut stream = FFI_ArrowArrayStream::new(Box::new(reader));
        connection
            .register_arrow_stream("kept_result", &mut stream)
            .map_err(|e| e.0)?;
        let copied = connection
            .execute(&format!(
                "COPY (SELECT * FROM kept_result) TO {} (FORMAT parquet, COMPRESSION zstd)",
                quote_literal(&path.to_string_lossy())
            ))
            .map_err(|e| e.0);
        drop(connection);
        drop(stream);
        copied
    }

    /// Reads the stored rows of `id`: None when it is not stored. Blocking.
    pub fn load(&self, id: QueryId) -> Option<Result<(SchemaRef, Vec<RecordBatch>), String>> {
        let path = self.file(id)?;
        Some(self.read(&path))
    }

    fn read(&self, path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
        let mut connection = self.database.connect().map_err(|e| e.0)?;
        let sql = format!(
            "SELECT * FROM read_parquet({})",
            quote_literal(&path.to_string_lossy())
        );
        let prepared = connection
            .prepare_single(&sql, |_| true)
            .map_err(|e| format!("{e:?}"))?;
        let mut collect = Collect::default();
        let schema = prepared.run(&mut collect).map_err(|e| match e {
            RunError::Duck(error) => error.0,
            RunError::Stopped(reason) => reason,
        })?;
        Ok((collect.schema.unwrap_or(schema), collect.batches))
    }

    /// Forgets `id` and deletes its file (tests and operators).
    pub fn remove(&self, id: QueryId) {
        self.index.lock().expect("result index").remove(id);
        let _ = std::fs::remove_file(file_of(&self.dir, id));
    }
}

fn file_of(dir: &Path, id: QueryId) -> PathBuf {
    dir.join(format!("{}.parquet", id.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::arrow::array::Int64Array;
    use duckdb::arrow::datatypes::{DataType, Field, Schema};

    fn id(n: u128) -> QueryId {
        QueryId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn the_least_recently_used_go_first_and_an_oversized_one_is_not_kept() {
        let mut index = Index::default();
        assert!(index.insert(id(1), 40, 100).is_empty());
        assert!(index.insert(id(2), 40, 100).is_empty());
        assert!(index.touch(id(1)));
        // 1 was used after 2: 2 goes.
        assert_eq!(index.insert(id(3), 40, 100), vec![id(2)]);
        assert_eq!(index.bytes, 80);
        assert!(!index.touch(id(2)));
        // Bigger than the budget on its own: everything goes, itself last.
        assert_eq!(index.insert(id(4), 150, 100), vec![id(1), id(3), id(4)]);
        assert_eq!(index.bytes, 0);
        // Replacing an id does not count it twice.
        index.insert(id(5), 30, 100);
        index.insert(id(5), 50, 100);
        assert_eq!(index.bytes, 50);
    }

    #[test]
    fn results_survive_a_reopen_and_the_budget_evicts_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..10_000))],
        )
        .unwrap();
        let store = ResultStore::open(dir.path().join("results"), 1 << 20, 1).unwrap();
        assert!(store.save(id(1), &batch).unwrap());
        let (bytes, count) = store.usage();
        assert_eq!(count, 1);
        drop(store);

        let store = ResultStore::open(dir.path().join("results"), 1 << 20, 1).unwrap();
        assert_eq!(store.usage(), (bytes, 1));
        let (_, batches) = store.load(id(1)).unwrap().unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 10_000);
        assert!(store.load(id(2)).is_none());

        // A budget of about two files keeps the two most recently used.
        let store =
            ResultStore::open(dir.path().join("results"), bytes * 2 + bytes / 2, 1).unwrap();
        store.save(id(2), &batch).unwrap();
        assert!(store.file(id(1)).is_some());
        store.save(id(3), &batch).unwrap();
        assert!(store.file(id(2)).is_none(), "the least recently used went");
        assert!(store.file(id(1)).is_some());
        assert!(!dir
            .path()
            .join(format!("results/{}.parquet", id(2).0))
            .exists());
    }
}
