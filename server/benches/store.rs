//! The event store benchmark (`cargo bench -p server --bench store`, also run
//! by `cargo xtask bench`). Prints one table, measured in one run:
//!
//! - the fsync rate of the disk the stores are on (4 KiB write + fdatasync);
//! - append throughput of the in-process command pipeline (load, decide,
//!   durable append; no HTTP) with 1 and 64 concurrent issuers on distinct
//!   sessions, in both durability modes, against baselines on the same
//!   schema and pragmas: raw rusqlite inserting the same rows in one
//!   transaction (the ceiling) and one transaction per command (the naive
//!   store). With `full`, a group holds at most one command per waiting
//!   issuer, so its bound is min(ceiling, issuers x fsyncs/s);
//! - command round trip over HTTP, p50/p99;
//! - SSE delivery latency from append to receipt with 1,000 and 10,000
//!   subscribers held by a child process, and the server's RSS per idle
//!   subscriber;
//! - projection rebuild rate from 1,000,000 stored events.
//!
//! Sizes can be scaled down for a quick look with `SEXTANT_BENCH_SCALE=0.1`;
//! `SEXTANT_BENCH_IDS=random` makes session and command ids random (v4)
//! instead of time-ordered (v7, what the client mints).

use std::time::{Duration, Instant};

use rusqlite::{params, TransactionBehavior};
use serde_json::json;
use server::bus::Bus;
use server::pipeline::{self, Origin, Pipeline};
use server::projections::{replay_into, ReadModel};
use server::store::{self, Durability, ProcessedCommand, SqliteStore as EventStore, StoreOptions};
use shared_domain::{
    Aggregate, Column, CommandEnvelope, DatasetName, DatasetRef, Engine, ErrorId, EventEnvelope,
    EventMetadata, QueryId, QuerySession, SessionCommand, SessionEvent, SessionTitle, SqlQuery,
};
use uuid::Uuid;

#[path = "support/subscribers.rs"]
mod subscribers;

const ISSUERS: usize = 64;

fn scale() -> f64 {
    std::env::var("SEXTANT_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// `SEXTANT_BENCH_ONLY=append,http,sse,rebuild` runs only those sections.
fn enabled(section: &str) -> bool {
    std::env::var("SEXTANT_BENCH_ONLY")
        .map(|only| only.split(',').any(|s| s.trim() == section))
        .unwrap_or(true)
}

/// A session or command id as clients mint them: time-ordered (UUIDv7), or
/// random (v4) with `SEXTANT_BENCH_IDS=random` (what clients sent before).
fn client_id() -> Uuid {
    static RANDOM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *RANDOM.get_or_init(|| std::env::var("SEXTANT_BENCH_IDS").as_deref() == Ok("random")) {
        Uuid::new_v4()
    } else {
        Uuid::now_v7()
    }
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

struct Row {
    metric: String,
    value: String,
    note: String,
}

fn main() {
    if let Ok(spec) = std::env::var(subscribers::CHILD_ENV) {
        subscribers::run_child(&spec);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let commands_per_issuer = scaled(300);
    let total = commands_per_issuer * ISSUERS;

    if let Ok(only) = std::env::var("SEXTANT_BENCH_ONLY") {
        // For profilers: only the 64-issuer pipeline run in one mode.
        let durability = match only.as_str() {
            "profile-64" | "profile-64-normal" => Some(Durability::Normal),
            "profile-64-full" => Some(Durability::Full),
            _ => None,
        };
        if let Some(durability) = durability {
            let (many, group) = runtime.block_on(pipeline_throughput(ISSUERS, total, durability));
            println!("{many:.0} commands/s, {group:.1} per transaction");
            return;
        }
    }
    if enabled("append") {
        eprintln!("fsync rate …");
        let fsyncs = fsync_rate();
        eprintln!("append throughput: {total} commands …");
        let ceiling = ceiling_throughput(total);
        let naive = naive_throughput(total, Durability::Normal);
        let (one_normal, _) = runtime.block_on(pipeline_throughput(1, total, Durability::Normal));
        let (many_normal, group_normal) =
            runtime.block_on(pipeline_throughput(ISSUERS, total, Durability::Normal));
        // One issuer under `full` pays one fsync per command: fewer commands.
        let (one_full, _) =
            runtime.block_on(pipeline_throughput(1, scaled(1000), Durability::Full));
        let (many_full, group_full) =
            runtime.block_on(pipeline_throughput(ISSUERS, total, Durability::Full));
        let bound_full = ceiling.min(ISSUERS as f64 * fsyncs);
        let per_s = |x: f64| format!("{x:.0} commands/s");
        rows.push(Row {
            metric: "disk fsync rate".into(),
            value: format!("{fsyncs:.0} fsyncs/s"),
            note: "4 KiB pwrite + fdatasync, same directory as the stores".into(),
        });
        rows.push(Row {
            metric: "ceiling (raw rusqlite, 1 transaction)".into(),
            value: per_s(ceiling),
            note: "the same event + processed-command rows, prepared, one COMMIT".into(),
        });
        rows.push(Row {
            metric: "naive store, normal (1 transaction per command)".into(),
            value: per_s(naive),
            note: "same load/decide/append, BEGIN..COMMIT per command".into(),
        });
        rows.push(Row {
            metric: "pipeline, normal, 1 issuer".into(),
            value: per_s(one_normal),
            note: format!("{total} commands; load + decide + append"),
        });
        rows.push(Row {
            metric: format!("pipeline, normal, {ISSUERS} concurrent issuers"),
            value: per_s(many_normal),
            note: format!(
                "{total} commands on {ISSUERS} distinct sessions; {group_normal:.1} commands per transaction"
            ),
        });
        rows.push(Row {
            metric: "pipeline, full, 1 issuer".into(),
            value: per_s(one_full),
            note: format!("{} commands; one fsync each", scaled(1000)),
        });
        rows.push(Row {
            metric: format!("pipeline, full, {ISSUERS} concurrent issuers"),
            value: per_s(many_full),
            note: format!(
                "{total} commands on {ISSUERS} distinct sessions; {group_full:.1} commands per transaction"
            ),
        });
        rows.push(Row {
            metric: format!("full, {ISSUERS} issuers / min(ceiling, {ISSUERS} x fsyncs/s)"),
            value: format!("{:.0}%", 100.0 * many_full / bound_full),
            note: format!("bound {bound_full:.0} commands/s; target >= 50%"),
        });
        rows.push(Row {
            metric: format!("normal, {ISSUERS} issuers / ceiling"),
            value: format!("{:.0}%", 100.0 * many_normal / ceiling),
            note: "target >= 50%".into(),
        });
        rows.push(Row {
            metric: format!("normal, {ISSUERS} issuers / naive"),
            value: format!("{:.1}x", many_normal / naive),
            note: String::new(),
        });
    }

    if enabled("http") {
        eprintln!("HTTP round trip …");
        let (p50, p99, n) = runtime.block_on(http_round_trip(scaled(2000)));
        rows.push(Row {
            metric: "command round trip over HTTP".into(),
            value: format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
            note: format!("{n} sequential POST /api/commands, one client, loopback"),
        });
    }

    if enabled("sse") {
        // (subscribers, events, one append every …, p99 target)
        let runs = [
            (scaled(1000), scaled(200), Duration::from_millis(20), 5.0),
            (scaled(10_000), scaled(50), Duration::from_millis(100), 20.0),
        ];
        for (subscribers, events, every, target) in runs {
            eprintln!("SSE delivery with {subscribers} subscribers (separate process) …");
            let (delivery, (per_subscriber, heap_per_subscriber), expected) =
                runtime.block_on(sse_delivery(subscribers, events, every));
            rows.push(Row {
                metric: format!("SSE delivery, {subscribers} subscribers"),
                value: format!(
                    "p50 {:.2} ms, p99 {:.2} ms",
                    delivery.p50_ms, delivery.p99_ms
                ),
                note: format!(
                    "append -> receipt, {}/{expected} deliveries, max {:.1} ms, one append every {} ms; target p99 < {target} ms",
                    delivery.received,
                    delivery.max_ms,
                    every.as_millis()
                ),
            });
            rows.push(Row {
                metric: format!("server RSS per idle subscriber ({subscribers})"),
                value: format!("{:.1} KiB", per_subscriber / 1024.0),
                note: format!(
                    "RSS growth once every stream is open and idle ({:.1} KiB of it allocated on the heap); target < 16 KiB",
                    heap_per_subscriber / 1024.0
                ),
            });
        }
    }

    if enabled("rebuild") {
        let events = scaled(1_000_000);
        eprintln!("projection rebuild from {events} events …");
        for checkpointed in [false, true] {
            let (rate, sessions) = rebuild_rate(events, checkpointed);
            rows.push(Row {
                metric: if checkpointed {
                    "projection rebuild, WAL checkpointed".into()
                } else {
                    "projection rebuild, all in the WAL".into()
                },
                value: format!("{rate:.0} events/s"),
                note: format!(
                    "{events} stored events, {sessions} sessions; target >= 1000000/s (issue 12)"
                ),
            });
        }
    }

    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    let w0 = rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
    println!();
    println!("| {:w0$} | {:w1$} | notes", "metric", "value");
    println!("|-{}-|-{}-|------", "-".repeat(w0), "-".repeat(w1));
    for row in rows {
        println!("| {:w0$} | {:w1$} | {}", row.metric, row.value, row.note);
    }
}

fn fresh_store(durability: Durability) -> (tempfile::TempDir, EventStore, store::WriteConnection) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability,
        vfs: None,
    };
    let (store, writer) =
        EventStore::open_with(&dir.path().join("bench.sqlite3"), &options).unwrap();
    (dir, store, writer)
}

/// fsyncs per second of the disk the temp dir is on: a 4 KiB write at the
/// same offset, then fdatasync, for about a second.
fn fsync_rate() -> f64 {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("fsync")).unwrap();
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut count = 0;
    while started.elapsed() < Duration::from_secs(1) {
        file.seek(SeekFrom::Start(0)).unwrap();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        count += 1;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The `index`-th command of one session's script: create, then renames.
fn scripted(session: Uuid, index: usize) -> CommandEnvelope<SessionCommand> {
    let command = if index == 0 {
        SessionCommand::CreateSession {
            title: SessionTitle::new("bench").unwrap(),
        }
    } else {
        SessionCommand::RenameSession {
            title: SessionTitle::new(format!("bench title {index}")).unwrap(),
        }
    };
    CommandEnvelope {
        command_id: client_id(),
        aggregate_type: QuerySession::TYPE.into(),
        aggregate_id: session,
        expected_version: index as u64,
        base_command: None,
        command,
    }
}

/// Commands per second through [`Pipeline`] with `issuers` concurrent issuers,
/// each sending its session's commands one after the other.
async fn pipeline_throughput(issuers: usize, total: usize, durability: Durability) -> (f64, f64) {
    let (_dir, _store, writer) = fresh_store(durability);
    let pipeline = Pipeline::start(writer, Bus::default());
    let per_issuer = total / issuers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..issuers {
        let pipeline = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            let session = client_id();
            for index in 0..per_issuer {
                pipeline
                    .execute(scripted(session, index), Origin::Http)
                    .await
                    .expect("accepted");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rate = (per_issuer * issuers) as f64 / started.elapsed().as_secs_f64();
    let (groups, commands) = pipeline.stats();
    (rate, commands as f64 / groups.max(1) as f64)
}

/// The naive store: for every command its own transaction that loads the
/// session from the store, decides, and appends.
fn naive_throughput(total: usize, durability: Durability) -> f64 {
    let (_dir, _store, writer) = fresh_store(durability);
    let mut conn = writer.0;
    let sessions: Vec<Uuid> = (0..ISSUERS).map(|_| client_id()).collect();
    let per_session = total / ISSUERS;
    let started = Instant::now();
    // Interleaved like concurrent issuers would be, but one at a time.
    for index in 0..per_session {
        for session in &sessions {
            let envelope = scripted(*session, index);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            assert!(store::find_processed(&tx, envelope.command_id)
                .unwrap()
                .is_none());
            let stored = store::aggregate_events(&tx, "QuerySession", *session, 0).unwrap();
            let state = pipeline::fold_session(*session, &stored).unwrap();
            assert_eq!(state.version(), envelope.expected_version);
            let events = state.handle(&envelope.command).unwrap();
            let now = store::now();
            let mut sequences = Vec::new();
            for (offset, event) in events.iter().enumerate() {
                let stored = EventEnvelope::new::<QuerySession>(
                    Uuid::now_v7(),
                    *session,
                    state.version() + 1 + offset as u64,
                    event,
                    EventMetadata {
                        command_id: envelope.command_id,
                        ..Default::default()
                    },
                    now,
                );
                sequences.push(store::insert_event(&tx, &stored).unwrap());
            }
            let record = ProcessedCommand {
                request: serde_json::to_string(&envelope).unwrap(),
                aggregate_id: *session,
                version: state.version() + events.len() as u64,
                first_global_sequence: sequences.first().copied(),
                last_global_sequence: sequences.last().copied(),
                actor: None,
            };
            store::insert_processed(&tx, envelope.command_id, QuerySession::TYPE, &record, now)
                .unwrap();
            tx.commit().unwrap();
        }
    }
    (per_session * ISSUERS) as f64 / started.elapsed().as_secs_f64()
}

/// The ceiling: the same rows (one event and one processed-command record
/// per command), serialized beforehand, inserted in one transaction.
fn ceiling_throughput(total: usize) -> f64 {
    let (_dir, _store, writer) = fresh_store(Durability::Full);
    let mut conn = writer.0;
    let per_session = total / ISSUERS;
    let now = store::format_timestamp(store::now());
    let mut prepared = Vec::with_capacity(total);
    for _ in 0..ISSUERS {
        let session = client_id();
        let mut state = QuerySession::default();
        for index in 0..per_session {
            let envelope = scripted(session, index);
            let event = state.handle(&envelope.command).unwrap().remove(0);
            state.apply(&event);
            prepared.push((
                Uuid::now_v7().to_string(),
                session.to_string(),
                state.version(),
                shared_domain::DomainEvent::event_type(&event),
                serde_json::to_string(&event).unwrap(),
                serde_json::to_string(&EventMetadata {
                    command_id: envelope.command_id,
                    ..Default::default()
                })
                .unwrap(),
                envelope.command_id.to_string(),
                serde_json::to_string(&envelope).unwrap(),
            ));
        }
    }
    let started = Instant::now();
    let tx = conn.transaction().unwrap();
    {
        let mut insert_event = tx
            .prepare(
                "INSERT INTO events (id, aggregate_type, aggregate_id, aggregate_sequence, event_type,
                                     event_version, payload, metadata, created_at)
                 VALUES (?1, 'QuerySession', ?2, ?3, ?4, 1, ?5, ?6, ?7)",
            )
            .unwrap();
        let mut insert_processed = tx
            .prepare(
                "INSERT INTO processed_commands (command_id, aggregate_type, aggregate_id, request,
                     version, first_global_sequence, last_global_sequence, processed_at)
                 VALUES (?1, 'QuerySession', ?2, ?3, ?4, ?5, ?5, ?6)",
            )
            .unwrap();
        for (id, session, version, event_type, payload, metadata, command_id, request) in &prepared
        {
            insert_event
                .execute(params![
                    id, session, version, event_type, payload, metadata, now
                ])
                .unwrap();
            let sequence = tx.last_insert_rowid();
            insert_processed
                .execute(params![
                    command_id, session, request, version, sequence, now
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    prepared.len() as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

async fn http_round_trip(count: usize) -> (f64, f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = server::start(server::Config::for_data_dir(dir.path()))
        .await
        .unwrap();
    let url = format!("http://{}/api/commands", server.addr);
    let client = reqwest::Client::new();
    let session = client_id();
    let mut samples = Vec::with_capacity(count);
    for index in 0..count {
        let body = scripted(session, index).to_json();
        let started = Instant::now();
        let response = client
            .post(&url)
            .bearer_auth(server.owner_token.as_deref().unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    server.stop().await.unwrap();
    samples.sort_by(f64::total_cmp);
    (
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        count,
    )
}

/// One SSE measurement: `subscribers` streams of one signed-in user, held
/// by the child process; the server runs in this process, so its RSS is
/// this process's. Appends `events` commands (one every `every`) and
/// returns the child's delivery figures, the server's RSS growth per idle
/// subscriber (after every stream is open and idle on the bus), and the
/// number of deliveries expected.
async fn sse_delivery(
    subscribers: usize,
    events: usize,
    every: Duration,
) -> (subscribers::Delivery, (f64, f64), usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = server::Config::for_data_dir(dir.path());
    // One user holds every subscriber here: raise the caps and the rate
    // limit (every stream is a request).
    config.sse_per_user = subscribers + 16;
    config.sse_total = subscribers + 16;
    config.rate_limit = 1_000_000;
    // Delivery, not the disk: the fsync of `full` is measured above.
    config.durability = Durability::Normal;
    let server = server::start(config).await.unwrap();
    let token = server.owner_token.clone().unwrap();
    let addr = server.addr;
    // Warm the allocator and the runtime with one stream before the baseline.
    let before = {
        let warm = tokio::task::spawn_blocking(move || {
            subscribers::Subscribers::start(addr, &token, 1, 0)
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = subscribers::rss_bytes();
        let heap = subscribers::heap_in_use();
        drop(warm);
        (rss, heap)
    };
    let token = server.owner_token.clone().unwrap();
    let child = tokio::task::spawn_blocking(move || {
        subscribers::Subscribers::start(addr, &token, subscribers, events)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let per_subscriber =
        |now: u64, before: u64| now.saturating_sub(before) as f64 / subscribers as f64;
    let per_subscriber = (
        per_subscriber(subscribers::rss_bytes(), before.0),
        per_subscriber(subscribers::heap_in_use(), before.1),
    );

    let pipeline = server.state.pipeline().clone();
    let session = client_id();
    let mut ticker = tokio::time::interval(every);
    for index in 0..events {
        ticker.tick().await;
        let mut command = scripted(session, index);
        let title = SessionTitle::new(format!("t{}", subscribers::unix_nanos())).unwrap();
        command.command = match command.command {
            SessionCommand::CreateSession { .. } => SessionCommand::CreateSession { title },
            _ => SessionCommand::RenameSession { title },
        };
        pipeline.execute(command, Origin::Http).await.unwrap();
    }
    let delivery = tokio::task::spawn_blocking(move || child.finish())
        .await
        .unwrap();
    server.stop().await.unwrap();
    (delivery, per_subscriber, subscribers * events)
}

/// Ten events per session, a realistic mix (queries with columns, failures).
fn session_script(query_a: QueryId, query_b: QueryId) -> Vec<SessionEvent> {
    let title = |t: &str| SessionTitle::new(t).unwrap();
    vec![
        SessionEvent::SessionCreated {
            title: title("Revenue by region"),
            owner: shared_domain::UserId::OWNER,
        },
        SessionEvent::SessionRenamed {
            title: title("Revenue by region, Q3"),
        },
        SessionEvent::DatasetAttached {
            dataset: DatasetRef::Server {
                name: DatasetName::new("demo").unwrap(),
            },
        },
        SessionEvent::QuerySubmitted {
            query_id: query_a,
            sql: SqlQuery::new("SELECT region, sum(amount) FROM demo GROUP BY 1").unwrap(),
            engine: Engine::Server,
        },
        SessionEvent::QueryStarted { query_id: query_a },
        SessionEvent::QueryCompleted {
            query_id: query_a,
            row_count: 12,
            columns: vec![
                Column::new("region", "VARCHAR"),
                Column::new("sum", "DOUBLE"),
            ],
            elapsed_ms: 38,
            fingerprint: None,
        },
        SessionEvent::QuerySubmitted {
            query_id: query_b,
            sql: SqlQuery::new("SELECT * FROM demo WHERE amount > 100").unwrap(),
            engine: Engine::Local,
        },
        SessionEvent::QueryStarted { query_id: query_b },
        SessionEvent::QueryFailed {
            query_id: query_b,
            error_id: ErrorId(Uuid::new_v4()),
            message: "Binder Error: column amount not found".into(),
        },
        SessionEvent::SessionRenamed {
            title: title("Revenue by region, final"),
        },
    ]
}

/// Stores `events` events, then times the projection rebuild's replay.
/// With `checkpointed`, the WAL is copied into the database first, as the
/// server's checkpointer does while it runs: a start-up after a clean stop
/// reads the database file; after a crash, up to a WAL's worth more.
fn rebuild_rate(events: usize, checkpointed: bool) -> (f64, usize) {
    let (_dir, store, writer) = fresh_store(Durability::Normal);
    let mut conn = writer.0;
    let sessions = events.div_ceil(10);
    let now = store::format_timestamp(store::now());
    {
        let tx = conn.transaction().unwrap();
        let mut insert = tx
            .prepare(
                "INSERT INTO events (id, aggregate_type, aggregate_id, aggregate_sequence, event_type,
                                     event_version, payload, metadata, created_at)
                 VALUES (?1, 'QuerySession', ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        let mut stored = 0;
        'sessions: for _ in 0..sessions {
            let session = Uuid::new_v4().to_string();
            let metadata = json!({ "command_id": Uuid::new_v4() }).to_string();
            let script = session_script(QueryId(Uuid::new_v4()), QueryId(Uuid::new_v4()));
            for (index, event) in script.iter().enumerate() {
                if stored == events {
                    break 'sessions;
                }
                insert
                    .execute(params![
                        Uuid::now_v7().to_string(),
                        session,
                        index + 1,
                        shared_domain::DomainEvent::event_type(event),
                        shared_domain::DomainEvent::event_version(event),
                        serde_json::to_string(event).unwrap(),
                        metadata,
                        now,
                    ])
                    .unwrap();
                stored += 1;
            }
        }
        drop(insert);
        tx.commit().unwrap();
    }
    if checkpointed {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    drop(conn);
    // A cold reader, as at start-up.
    let (rate, count) = store
        .read_blocking(|conn| {
            let mut model = ReadModel::default();
            let started = Instant::now();
            let applied = replay_into(conn, &mut model).expect("replay");
            let elapsed = started.elapsed().as_secs_f64();
            assert_eq!(applied as usize, events);
            Ok((applied as f64 / elapsed, model.sessions.len()))
        })
        .unwrap();
    (rate, count)
}
