//! Whole server datasets as Arrow IPC streams
//! (`GET /api/datasets/{name}/download`), so the browser can take a dataset
//! offline into duckdb-wasm (`insertArrowFromIPCStream`). The rows are read
//! in the sandbox on a query slot and encoded batch by batch as DuckDB
//! produces them: memory stays bounded whatever the dataset's size. A reader
//! that stops reading for the stall timeout loses the slot (the stream then
//! ends with an error, never looking complete).

use std::io;
use std::time::Duration;

use arrow::ipc::writer::StreamWriter;
use axum::body::Bytes;
use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use super::duck::{quote_identifier, RawConnection, RunControl, RunError};
use super::sandbox;
use super::slots::JobControl;

/// A chunk of the IPC stream, or the error that ends it early (the HTTP body
/// then aborts, so a client never mistakes half a dataset for all of it).
pub type Chunk = Result<Bytes, io::Error>;

/// The SQL that reads a whole dataset, by its catalog (view) name.
pub fn dataset_sql(name: &str) -> String {
    format!("SELECT * FROM {}", quote_identifier(name))
}

/// Encodes each batch as it arrives and hands the bytes to the HTTP body.
struct IpcForward<'a> {
    writer: Option<StreamWriter<Vec<u8>>>,
    sender: &'a mpsc::Sender<Chunk>,
    control: &'a JobControl,
    stall: Duration,
}

impl IpcForward<'_> {
    fn start(&mut self, schema: &SchemaRef) -> Result<(), String> {
        if self.writer.is_none() {
            let writer = StreamWriter::try_new(Vec::new(), schema).map_err(|e| e.to_string())?;
            self.writer = Some(writer);
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let bytes = std::mem::take(writer.get_mut());
        if bytes.is_empty() {
            return Ok(());
        }
        self.control
            .send(self.sender, Ok(Bytes::from(bytes)), self.stall)
    }
}

impl RunControl for IpcForward<'_> {
    fn check(&mut self) -> Result<(), String> {
        if self.sender.is_closed() {
            return Err("the client went away".into());
        }
        if self.control.is_stopped() {
            return Err("stopped".into());
        }
        Ok(())
    }

    fn progress(&mut self, _progress: crate::query::duck::Progress) {}

    fn schema(&mut self, schema: &SchemaRef) {
        // An error here surfaces at the first batch (no writer) or at the end.
        let _ = self.start(schema);
    }

    fn batch(&mut self, batch: RecordBatch) -> Result<(), String> {
        self.start(&batch.schema())?;
        let writer = self.writer.as_mut().expect("started above");
        writer.write(&batch).map_err(|e| e.to_string())?;
        self.flush()
    }
}

/// Streams dataset `name` as Arrow IPC into `sender`, waiting at most
/// `stall` for the reader to take each chunk. Blocking (run it on a query
/// slot). Returns whether the whole stream was sent.
pub fn stream_blocking(
    connection: &mut RawConnection,
    name: &str,
    sender: &mpsc::Sender<Chunk>,
    control: &JobControl,
    stall: Duration,
) -> bool {
    let mut forward = IpcForward {
        writer: None,
        sender,
        control,
        stall,
    };
    let outcome = connection
        .prepare_single(&dataset_sql(name), sandbox::allows)
        .map_err(|e| sandbox::refusal_message(&e))
        .and_then(|prepared| {
            prepared.run(&mut forward).map_err(|e| match e {
                RunError::Duck(error) => error.0,
                RunError::Stopped(reason) => reason,
            })
        })
        .and_then(|schema| {
            forward.start(&schema)?;
            let writer = forward.writer.as_mut().expect("started above");
            writer.finish().map_err(|e| e.to_string())?;
            forward.flush()
        });
    match outcome {
        Ok(()) => true,
        Err(message) => {
            tracing::warn!(dataset = name, %message, "dataset download stopped");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataset_name_is_quoted() {
        assert_eq!(dataset_sql("demo"), "SELECT * FROM \"demo\"");
        assert_eq!(dataset_sql("a\"b"), "SELECT * FROM \"a\"\"b\"");
    }
}
