//! The one slot runner for every piece of DuckDB work: server queries,
//! recomputed results, exports and dataset downloads. `--query-slots`
//! permits of a FIFO semaphore, one sandboxed connection per slot.
//!
//! - The permit and the connection move into the blocking task with the
//!   work, so a slot is busy exactly as long as DuckDB works, whatever
//!   happens to the request that asked for it.
//! - Dropping the future that awaits the work (a client that disconnected)
//!   cancels the job: its DuckDB query is interrupted at once.
//! - A job's deadline counts from when it was asked for, queue time
//!   included: at the deadline a waiting job gives up and a running one is
//!   interrupted.
//! - Work that hands data to a reader uses [`JobControl::send`], whose stall
//!   timeout frees the slot from a reader that stopped reading.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::duck::{Database, Interrupter, RawConnection};

/// Why a job did not run to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotError {
    /// Cancelled (by a user or because the requester went away).
    Cancelled,
    /// The deadline passed, while queued or while running.
    TimedOut,
    /// The work panicked (a bug).
    Panicked(String),
    /// No DuckDB connection could be made for the slot.
    NoConnection,
}

/// How long a job may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The wait for a slot and the work together end at this instant.
    Until(Instant),
    /// Only the wait for a slot is bounded (streams that take as long as
    /// their reader; a stall timeout guards them instead).
    QueueUntil(Instant),
}

impl Limit {
    fn queue_deadline(self) -> Instant {
        match self {
            Limit::Until(at) | Limit::QueueUntil(at) => at,
        }
    }

    fn run_deadline(self) -> Option<Instant> {
        match self {
            Limit::Until(at) => Some(at),
            Limit::QueueUntil(_) => None,
        }
    }
}

/// Cancellation and timeout state of one job, shared by the async side
/// (which cancels and interrupts) and the blocking side (which checks).
#[derive(Default)]
pub struct JobControl {
    token: CancellationToken,
    timed_out: AtomicBool,
    /// The connection the job runs on, while it runs (cleared before the
    /// connection goes back to the pool, so a late cancel never interrupts
    /// another job).
    interrupter: Mutex<Option<Arc<Interrupter>>>,
}

impl JobControl {
    /// A fresh control, shared between the caller and the job.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Stops the job: a waiting job leaves the queue, a running one is interrupted.
    pub fn cancel(&self) {
        self.token.cancel();
        self.interrupt();
    }

    /// Whether [`JobControl::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Whether the deadline passed.
    pub fn is_timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Whether the job should stop (cancelled or timed out).
    pub fn is_stopped(&self) -> bool {
        self.is_cancelled() || self.is_timed_out()
    }

    fn time_out(&self) {
        self.timed_out.store(true, Ordering::SeqCst);
        self.interrupt();
    }

    fn interrupt(&self) {
        if let Some(interrupter) = &*self.interrupter.lock().expect("interrupter") {
            interrupter.interrupt();
        }
    }

    fn attach(&self, interrupter: Arc<Interrupter>) {
        *self.interrupter.lock().expect("interrupter") = Some(interrupter);
        // A cancel that came between the check and the attach still lands.
        if self.is_stopped() {
            self.interrupt();
        }
    }

    /// Makes cancels and timeouts interrupt `interrupter`'s connection from
    /// now on (work that moves to another connection, such as the trusted
    /// instance that reads stored results).
    pub fn watch(&self, interrupter: Arc<Interrupter>) {
        self.attach(interrupter);
    }

    fn detach(&self) {
        *self.interrupter.lock().expect("interrupter") = None;
    }

    /// Sends `value` to an async reader from blocking work: waits while the
    /// reader is slow, but at most `stall` for one value, and not past a
    /// cancel. `Err` says why the value was not delivered.
    pub fn send<T>(
        &self,
        sender: &mpsc::Sender<T>,
        value: T,
        stall: Duration,
    ) -> Result<(), String> {
        let handle = tokio::runtime::Handle::current();
        handle.block_on(async {
            tokio::select! {
                sent = tokio::time::timeout(stall, sender.send(value)) => match sent {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err("the client went away".to_owned()),
                    Err(_) => Err(format!(
                        "the client read nothing for {} s and was dropped",
                        stall.as_secs_f64()
                    )),
                },
                _ = self.token.cancelled() => Err("cancelled".to_owned()),
            }
        })
    }
}

/// Cancels the job when the future awaiting it is dropped before the end.
struct CancelOnDrop(Option<Arc<JobControl>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(control) = self.0.take() {
            control.cancel();
        }
    }
}

/// Counts a state (queued, running) for as long as it lives.
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the slots are doing, for metrics.
#[derive(Default)]
pub struct SlotStats {
    queued: AtomicUsize,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    timed_out_in_queue: AtomicUsize,
}

/// A moment's view of the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub slots: usize,
    pub queued: usize,
    /// Jobs whose DuckDB work is running now.
    pub running: usize,
    /// The most jobs that ever ran at once (never more than `slots`).
    pub peak_running: usize,
    pub timed_out_in_queue: usize,
}

/// A slot's permit and connection, owned by the blocking work: the
/// connection goes back to the pool and the permit is released when the
/// work ends, panic included.
struct Lease {
    control: Arc<JobControl>,
    connection: Option<RawConnection>,
    pool: Arc<Mutex<Vec<RawConnection>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.control.detach();
        if let Some(connection) = self.connection.take() {
            self.pool.lock().expect("pool").push(connection);
        }
    }
}

/// The slots of one server.
pub struct Slots {
    size: usize,
    semaphore: Arc<Semaphore>,
    pool: Arc<Mutex<Vec<RawConnection>>>,
    database: Arc<Database>,
    stats: Arc<SlotStats>,
}

impl Slots {
    /// Slots over the sandbox `database`, one per connection.
    pub fn new(database: Arc<Database>, connections: Vec<RawConnection>) -> Self {
        let size = connections.len().max(1);
        Self {
            size,
            semaphore: Arc::new(Semaphore::new(size)),
            pool: Arc::new(Mutex::new(connections)),
            database,
            stats: Arc::default(),
        }
    }

    /// The current counts.
    pub fn snapshot(&self) -> SlotSnapshot {
        SlotSnapshot {
            slots: self.size,
            queued: self.stats.queued.load(Ordering::SeqCst),
            running: self.stats.running.load(Ordering::SeqCst),
            peak_running: self.stats.peak_running.load(Ordering::SeqCst),
            timed_out_in_queue: self.stats.timed_out_in_queue.load(Ordering::SeqCst),
        }
    }

    /// Runs `work` on a slot's connection on a blocking thread, waiting in
    /// line for the slot within `limit`. Dropping the returned future
    /// cancels the job; the slot stays busy until the work has actually stopped.
    pub async fn run<T, F>(
        &self,
        control: Arc<JobControl>,
        limit: Limit,
        work: F,
    ) -> Result<T, SlotError>
    where
        T: Send + 'static,
        F: FnOnce(&mut RawConnection, &JobControl) -> T + Send + 'static,
    {
        let cancel_on_drop = CancelOnDrop(Some(control.clone()));
        let queue_deadline = tokio::time::sleep_until(limit.queue_deadline().into());
        let run_deadline = async {
            match limit.run_deadline() {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(queue_deadline, run_deadline);
        let permit = {
            let _queued = Gauge::enter(&self.stats.queued);
            tokio::select! {
                biased;
                _ = control.token.cancelled() => return Err(SlotError::Cancelled),
                permit = self.semaphore.clone().acquire_owned() => {
                    permit.expect("the slot semaphore is never closed")
                }
                _ = &mut queue_deadline => {
                    control.time_out();
                    self.stats.timed_out_in_queue.fetch_add(1, Ordering::SeqCst);
                    return Err(SlotError::TimedOut);
                }
            }
        };
        let connection = self.pool.lock().expect("pool").pop();
        // A connection lost to a panic is replaced (without progress tracking,
        // which can no longer be turned on once the configuration is locked).
        let Some(connection) = connection.or_else(|| self.database.connect().ok()) else {
            return Err(SlotError::NoConnection);
        };
        control.attach(connection.interrupter());
        let mut lease = Lease {
            control: control.clone(),
            connection: Some(connection),
            pool: self.pool.clone(),
            _permit: permit,
        };
        let stats = self.stats.clone();
        let blocking_control = control.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            let _running = Gauge::enter(&stats.running);
            stats
                .peak_running
                .fetch_max(stats.running.load(Ordering::SeqCst), Ordering::SeqCst);
            if blocking_control.is_stopped() {
                return None;
            }
            let connection = lease.connection.as_mut().expect("leased connection");
            Some(work(connection, &blocking_control))
        });
        let joined = tokio::select! {
            joined = &mut handle => joined,
            _ = &mut run_deadline => {
                control.time_out();
                handle.await
            }
        };
        cancel_on_drop.disarm();
        match joined {
            Ok(Some(value)) => Ok(value),
            Ok(None) if control.is_timed_out() => Err(SlotError::TimedOut),
            Ok(None) => Err(SlotError::Cancelled),
            Err(error) => Err(SlotError::Panicked(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::sandbox;

    fn slots(count: usize) -> (tempfile::TempDir, Slots) {
        let dir = tempfile::tempdir().unwrap();
        let settings = sandbox::SandboxSettings {
            catalog_dir: dir.path().join("catalog"),
            temp_dir: dir.path().join("tmp"),
            threads: 1,
            memory_limit_bytes: 1 << 30,
            spill_limit_bytes: 1 << 30,
        };
        std::fs::create_dir_all(&settings.catalog_dir).unwrap();
        let (database, connections) = sandbox::open(&settings, count).unwrap();
        (dir, Slots::new(database, connections))
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Blocks until the job is stopped (or 10 s pass).
    fn wait_stopped(control: &JobControl) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !control.is_stopped() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        control.is_stopped()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_request_keeps_its_slot_until_the_work_has_stopped() {
        let (_dir, slots) = slots(1);
        let slots = Arc::new(slots);
        let control = JobControl::new();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let request = {
            let slots = slots.clone();
            let control = control.clone();
            tokio::spawn(async move {
                slots
                    .run(control, Limit::QueueUntil(far()), move |_, control| {
                        let _ = started_tx.send(());
                        let stopped = wait_stopped(control);
                        // Hold the slot a moment longer, as DuckDB unwinding would.
                        let _ = release_rx.recv();
                        stopped
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        request.abort();
        let _ = request.await;
        assert!(
            control.is_cancelled(),
            "dropping the request cancels the job"
        );
        assert_eq!(slots.snapshot().running, 1, "the work still holds its slot");
        let next = slots.run(
            JobControl::new(),
            Limit::Until(Instant::now() + Duration::from_millis(200)),
            |_, _| (),
        );
        assert_eq!(
            next.await,
            Err(SlotError::TimedOut),
            "no second job ran beside it"
        );
        release_tx.send(()).unwrap();
        let after = slots.run(
            JobControl::new(),
            Limit::Until(Instant::now() + Duration::from_secs(10)),
            |_, _| 7,
        );
        assert_eq!(after.await, Ok(7));
        assert_eq!(slots.snapshot().peak_running, 1);
        assert_eq!(slots.snapshot().timed_out_in_queue, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_deadline_interrupts_running_duckdb_work() {
        let (_dir, slots) = slots(1);
        let started = Instant::now();
        let outcome = slots
            .run(
                JobControl::new(),
                Limit::Until(Instant::now() + Duration::from_millis(300)),
                |connection, _| {
                    connection.execute(
                        "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE (a.range + b.range) % 7 = 3",
                    )
                },
            )
            .await;
        let error = outcome.unwrap().unwrap_err();
        assert!(error.0.contains("Interrupted"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_stops_reading_times_out() {
        let (_dir, slots) = slots(1);
        let (sender, _receiver) = mpsc::channel::<u32>(1);
        let outcome = slots
            .run(
                JobControl::new(),
                Limit::QueueUntil(far()),
                move |_, control| {
                    control.send(&sender, 1, Duration::from_millis(100))?;
                    control.send(&sender, 2, Duration::from_millis(100))
                },
            )
            .await
            .unwrap();
        assert!(outcome.unwrap_err().contains("read nothing"));
        assert_eq!(slots.snapshot().running, 0);
    }
}
