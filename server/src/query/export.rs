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
    fn progress(&mut self, _percent: Option<f64>) {}
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
