//! `GET /api/metrics`: operational figures in the Prometheus text format,
//! read from the parts that own them at scrape time (no extra bookkeeping
//! on hot paths): the pipeline's command and group counters, commit latency
//! histogram and writer queue, SSE subscribers and their lag catch-ups, the
//! query slots, the server queries this node ran, and the result cache and
//! store.

use prometheus::{Encoder, IntCounter, IntGauge, Opts, Registry, TextEncoder};

use crate::state::AppState;

/// One server's registry and the instruments it holds.
pub struct Metrics {
    registry: Registry,
    commands: IntCounter,
    groups: IntCounter,
    writer_queue: IntGauge,
    sse_subscribers: IntGauge,
    slots: IntGauge,
    slots_running: IntGauge,
    slots_queued: IntGauge,
    slots_peak: IntGauge,
    queue_timeouts: IntCounter,
    query_runs: IntCounter,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    recomputes: IntCounter,
    cache_bytes: IntGauge,
    store_bytes: IntGauge,
    store_files: IntGauge,
    sse_lag_catch_ups: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::with_opts(Opts::new(name, help)).expect("valid counter");
    registry
        .register(Box::new(counter.clone()))
        .expect("unique metric");
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge");
    registry
        .register(Box::new(gauge.clone()))
        .expect("unique metric");
    gauge
}

/// Brings a monotonic counter up to `total` (the owner keeps the truth).
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let r = &registry;
        Self {
            commands: counter(
                r,
                "sextant_commands_total",
                "Commands handled by the writer.",
            ),
            groups: counter(
                r,
                "sextant_commit_groups_total",
                "Transactions committed by the writer (commands / groups = mean group size).",
            ),
            writer_queue: gauge(
                r,
                "sextant_writer_queue_depth",
                "Commands waiting for the writer.",
            ),
            sse_subscribers: gauge(
                r,
                "sextant_sse_subscribers",
                "Live subscribers of the event bus (SSE streams, projections, reactors).",
            ),
            slots: gauge(r, "sextant_query_slots", "Query slots (--query-slots)."),
            slots_running: gauge(
                r,
                "sextant_query_slots_busy",
                "Slots whose DuckDB work is running.",
            ),
            slots_queued: gauge(
                r,
                "sextant_query_slots_queued",
                "Jobs waiting for a query slot.",
            ),
            slots_peak: gauge(
                r,
                "sextant_query_slots_peak_busy",
                "The most slots ever busy at once (never above sextant_query_slots).",
            ),
            queue_timeouts: counter(
                r,
                "sextant_query_queue_timeouts_total",
                "Jobs that timed out while waiting for a slot.",
            ),
            query_runs: counter(
                r,
                "sextant_server_queries_run_total",
                "Server queries this node ran (each claimed by this node with its submission).",
            ),
            cache_hits: counter(
                r,
                "sextant_result_cache_hits_total",
                "Result requests served from the in-memory cache.",
            ),
            cache_misses: counter(
                r,
                "sextant_result_cache_misses_total",
                "Result requests that had to load or recompute the result.",
            ),
            recomputes: counter(
                r,
                "sextant_result_recomputes_total",
                "Evicted results run again from their SQL (their data unchanged).",
            ),
            cache_bytes: gauge(
                r,
                "sextant_result_cache_bytes",
                "Bytes held by the in-memory result cache.",
            ),
            store_bytes: gauge(
                r,
                "sextant_result_store_bytes",
                "Bytes of persisted results on disk.",
            ),
            store_files: gauge(
                r,
                "sextant_result_store_results",
                "Results persisted on disk.",
            ),
            sse_lag_catch_ups: counter(
                r,
                "sextant_sse_lag_catch_ups_total",
                "Times an SSE stream fell behind the bus and caught up from the store.",
            ),
            registry,
        }
    }
}

impl Metrics {
    /// The registry, with the instruments their owners keep themselves
    /// (the pipeline's commit latency histogram).
    pub fn new(pipeline: &crate::pipeline::Pipeline) -> Self {
        let metrics = Self::default();
        metrics
            .registry
            .register(Box::new(pipeline.commit_latency()))
            .expect("unique metric");
        metrics
    }

    /// Reads every figure from its owner and renders the text format.
    pub fn render(&self, state: &AppState) -> String {
        let (groups, commands) = state.pipeline().stats();
        catch_up(&self.groups, groups);
        catch_up(&self.commands, commands);
        self.writer_queue.set(state.pipeline().queue_depth() as i64);
        self.sse_subscribers
            .set(state.bus().subscriber_count() as i64);
        catch_up(&self.sse_lag_catch_ups, state.bus().lag_catch_ups());
        let query = state.query();
        let slots = query.slots();
        self.slots.set(slots.slots as i64);
        self.slots_running.set(slots.running as i64);
        self.slots_queued.set(slots.queued as i64);
        self.slots_peak.set(slots.peak_running as i64);
        catch_up(&self.queue_timeouts, slots.timed_out_in_queue as u64);
        catch_up(&self.query_runs, query.runs());
        let results = query.result_stats();
        catch_up(&self.cache_hits, results.cache_hits);
        catch_up(&self.cache_misses, results.cache_misses);
        catch_up(&self.recomputes, results.recomputes);
        self.cache_bytes.set(results.cache_bytes as i64);
        self.store_bytes.set(results.store_bytes as i64);
        self.store_files.set(results.store_results as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
