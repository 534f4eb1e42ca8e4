//! Whole results as downloads. The user's SQL runs in the sandbox (it may
//! read the catalog and nothing else); its rows flow as an Arrow stream into
//! a separate, trusted DuckDB instance that writes the Parquet or CSV file
//! (the sandbox cannot write files). Nothing is materialized in between.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::datatypes::SchemaRef;
use duckdb::arrow::error::ArrowError;
use duckdb::arrow::ffi_stream::FFI_ArrowArrayStream;
use duckdb::arrow::record_batch::RecordBatchReader;

use super::duck::{quote_literal, Database, RawConnection, RunControl, RunError};
use super::sandbox;
use super::slots::JobControl;

/// A download format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Parquet,
    Csv,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "application/vnd.apache.parquet",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    fn copy_options(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "FORMAT parquet, COMPRESSION zstd",
            ExportFormat::Csv => "FORMAT csv, HEADER true",
        }
    }
}

/// What the sandbox side sends: the schema first, then batches.
enum Message {
    Schema(SchemaRef),
    Batch(RecordBatch),
}

/// Forwards the sandbox's rows into the channel.
struct Forward<'a> {
    sender: SyncSender<Message>,
    control: &'a JobControl,
}

impl RunControl for Forward<'_> {
    fn check(&mut self) -> Result<(), String> {
        if self.control.is_stopped() {
            return Err("stopped".into());
        }
        Ok(())
    }
    fn progress(&mut self, _progress: crate::query::duck::Progress) {}
    fn schema(&mut self, schema: &SchemaRef) {
        let _ = self.sender.send(Message::Schema(schema.clone()));
    }
    fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
        self.sender
            .send(Message::Batch(batch))
            .map_err(|_| "the file writer stopped".to_owned())
    }
}

/// The trusted side's view of the channel.
struct ChannelReader {
    schema: SchemaRef,
    receiver: Receiver<Message>,
}

impl Iterator for ChannelReader {
    type Item = Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.receiver.recv() {
            Ok(Message::Batch(batch)) => Some(Ok(batch)),
            Ok(Message::Schema(_)) => self.next(),
            Err(_) => None,
        }
    }
}

impl RecordBatchReader for ChannelReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Runs `sql` in the sandbox on `connection` and writes all its rows to
/// `target` in `format`. Blocking; the sandbox runs on a helper thread.
/// Stops when `control` is cancelled or timed out.
pub fn write_blocking(
    connection: &mut RawConnection,
    sql: &str,
    format: ExportFormat,
    target: &Path,
    control: &JobControl,
) -> Result<(), String> {
    let (sender, receiver) = sync_channel::<Message>(8);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let prepared = sandbox::prepare(connection, sql)?;
            prepared
                .run(&mut Forward { sender, control })
                .map(|_| ())
                .map_err(|e| match e {
                    RunError::Duck(error) => error.0,
                    RunError::Stopped(reason) => reason,
                })
        });
        let written = write_from_channel(receiver, format, target);
        let produced = producer
            .join()
            .map_err(|_| "the query thread failed".to_owned())?;
        produced?;
        written
    })
}

/// `bytes` for people: `64 KiB`, `4 GiB`, `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 || unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How often an export's file size is looked at while it is written.
const SIZE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs `write`, which writes `target`, while a watcher stops it (through
/// `control`) as soon as the file grows past `cap` bytes, so an export can
/// never fill the disk. `Err(bytes)` when the file passed the cap (it is
/// then incomplete); the final size is checked too, so a file that is
/// delivered is never larger than the cap.
pub fn within_size_cap<T>(
    target: &Path,
    cap: u64,
    control: &JobControl,
    write: impl FnOnce() -> T,
) -> Result<T, u64> {
    let size = || std::fs::metadata(target).map(|m| m.len()).unwrap_or(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let exceeded = std::sync::atomic::AtomicU64::new(0);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let bytes = size();
                if bytes > cap {
                    exceeded.store(bytes, std::sync::atomic::Ordering::SeqCst);
                    control.cancel();
                    return;
                }
                std::thread::sleep(SIZE_POLL);
            }
        });
        let outcome = write();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        outcome
    });
    let bytes = exceeded
        .load(std::sync::atomic::Ordering::SeqCst)
        .max(size());
    if bytes > cap {
        Err(bytes)
    } else {
        Ok(outcome)
    }
}

/// Writes the stored result file `stored` (Parquet) to `target` in
/// `format` with the trusted instance, if the file holds all `rows` rows.
/// Returns false, writing nothing, when it holds only the first rows.
pub fn write_stored(
    connection: &mut RawConnection,
    stored: &Path,
    rows: u64,
    format: ExportFormat,
    target: &Path,
) -> Result<bool, String> {
    let source = format!("read_parquet({})", quote_literal(&stored.to_string_lossy()));
    let prepared = connection
        .prepare_single(&format!("SELECT count(*) FROM {source}"), |_| true)
        .map_err(|e| format!("{e:?}"))?;
    let mut counted = super::result_store::Collect::default();
    prepared.run(&mut counted).map_err(|e| format!("{e:?}"))?;
    let kept = counted
        .batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<duckdb::arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(-1);
    if kept < 0 || kept as u64 != rows {
        return Ok(false);
    }
    connection
        .execute(&format!(
            "COPY (SELECT * FROM {source}) TO {} ({})",
            quote_literal(&target.to_string_lossy()),
            format.copy_options()
        ))
        .map_err(|e| e.0)?;
    Ok(true)
}

fn write_from_channel(
    receiver: Receiver<Message>,
    format: ExportFormat,
    target: &Path,
) -> Result<(), String> {
    // The producer sends the schema before any row (or fails and hangs up).
    let schema = match receiver.recv() {
        Ok(Message::Schema(schema)) => schema,
        Ok(Message::Batch(_)) => return Err("rows arrived before the schema".into()),
        Err(_) => return Ok(()),
    };
    let reader = ChannelReader { schema, receiver };
    let mut stream = FFI_ArrowArrayStream::new(Box::new(reader));
    let trusted = Database::open_in_memory(&[
        ("autoinstall_known_extensions", "false".into()),
        ("autoload_known_extensions", "false".into()),
    ])
    .map_err(|e| e.0)?;
    let mut writer = trusted.connect().map_err(|e| e.0)?;
    writer
        .register_arrow_stream("query_result", &mut stream)
        .map_err(|e| e.0)?;
    let copied = writer
        .execute(&format!(
            "COPY (SELECT * FROM query_result) TO {} ({})",
            quote_literal(&target.to_string_lossy()),
            format.copy_options()
        ))
        .map_err(|e| e.0);
    drop(writer);
    drop(stream);
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 * 1024), "64 KiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(4 << 30), "4 GiB");
    }

    #[test]
    fn a_file_growing_past_the_cap_stops_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("export.csv");
        let control = JobControl::new();
        let outcome = within_size_cap(&target, 1000, &control, || {
            let mut written = 0;
            while !control.is_stopped() && written < 1_000_000 {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&target)
                    .unwrap();
                std::io::Write::write_all(&mut file, &[b'x'; 100]).unwrap();
                written += 100;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            written
        });
        let bytes = outcome.expect_err("the cap was not noticed");
        assert!(bytes > 1000);
        assert!(control.is_cancelled());
        // Stopped soon after the cap, not at the end of the work.
        assert!(std::fs::metadata(&target).unwrap().len() < 100_000);
        let small = dir.path().join("small.csv");
        let outcome = within_size_cap(&small, 1000, &JobControl::new(), || {
            std::fs::write(&small, "a\n1\n").unwrap();
            7
        });
        assert_eq!(outcome, Ok(7));
    }
}
