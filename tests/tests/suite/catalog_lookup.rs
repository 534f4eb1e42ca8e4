//! The writer decides `AttachDataset` from what the catalog has in memory;
//! reading the datasets directory happens before the command is queued,
//! never on the writer thread inside the write transaction (every command
//! of the group would wait for the disk).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use server::bus::Bus;
use server::pipeline::{CommandContext, DatasetCatalog, Pipeline};
use server::store::EventStore;
use shared_domain::{
    Aggregate, CommandEnvelope, DatasetName, DatasetRef, QuerySession, SessionCommand, SessionTitle,
};
use uuid::Uuid;

/// A catalog over a set of names "on disk"; it remembers the threads that
/// read them.
#[derive(Default)]
struct WatchedCatalog {
    on_disk: Mutex<HashSet<String>>,
    known: Mutex<HashSet<String>>,
    disk_reads_on: Mutex<Vec<String>>,
}

impl WatchedCatalog {
    fn read_disk(&self) {
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        self.disk_reads_on.lock().unwrap().push(thread);
        let on_disk = self.on_disk.lock().unwrap().clone();
        *self.known.lock().unwrap() = on_disk;
    }
}

/// What the pipeline holds; the test keeps the other handle.
struct Hook(Arc<WatchedCatalog>);

impl DatasetCatalog for Hook {
    fn exists(&self, name: &DatasetName) -> bool {
        self.0.known.lock().unwrap().contains(name.as_str())
    }

    fn learn(&self, _name: &DatasetName) {
        self.0.read_disk();
    }
}

fn envelope(
    session: Uuid,
    version: u64,
    command: SessionCommand,
) -> CommandEnvelope<SessionCommand> {
    CommandEnvelope {
        command_id: Uuid::new_v4(),
        aggregate_type: QuerySession::TYPE.into(),
        aggregate_id: session,
        expected_version: version,
        base_command: None,
        command,
    }
}

fn attach(name: &str) -> SessionCommand {
    SessionCommand::AttachDataset {
        dataset: DatasetRef::Server {
            name: DatasetName::new(name).unwrap(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_added_since_the_last_scan_is_learned_off_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, writer) = EventStore::open(&dir.path().join("sextant.sqlite3")).unwrap();
    let pipeline = Pipeline::start(writer, Bus::default());
    let catalog = Arc::new(WatchedCatalog::default());
    pipeline.set_catalog(Arc::new(Hook(catalog.clone())));
    let session = Uuid::new_v4();
    let create = SessionCommand::CreateSession {
        title: SessionTitle::new("s").unwrap(),
    };
    pipeline
        .execute_with(envelope(session, 0, create), CommandContext::default())
        .await
        .unwrap();

    // Not on disk: refused, after one look at the disk.
    let refused = pipeline
        .execute_with(
            envelope(session, 1, attach("fresh")),
            CommandContext::default(),
        )
        .await;
    assert!(refused.is_err(), "an unknown dataset was attached");

    // Dropped into the directory since: learned, then attached.
    catalog.on_disk.lock().unwrap().insert("fresh".into());
    pipeline
        .execute_with(
            envelope(session, 1, attach("fresh")),
            CommandContext::default(),
        )
        .await
        .unwrap();

    // Known now: attached again without reading the disk.
    let reads_before = catalog.disk_reads_on.lock().unwrap().len();
    pipeline
        .execute_with(
            envelope(session, 2, attach("fresh")),
            CommandContext::default(),
        )
        .await
        .unwrap();
    let reads = catalog.disk_reads_on.lock().unwrap().clone();
    assert_eq!(reads.len(), reads_before, "a known name read the disk");
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert!(
        reads.iter().all(|thread| thread != "event-store-writer"),
        "the writer thread read the datasets directory: {reads:?}"
    );
}
