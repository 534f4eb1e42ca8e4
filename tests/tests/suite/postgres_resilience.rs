//! Several Sextant nodes on one PostgreSQL database while nodes go away:
//! real server binaries, the rig's real cluster, real SSE clients over
//! HTTP. Writers send commands through every node and fail over to the
//! next node with the same command id when theirs gives no answer; SSE
//! clients follow the feed and resume on another node (Last-Event-ID and
//! the hello witness) when their stream ends.
//!
//! - A node is killed with `kill -9` mid-run.
//! - Every node is restarted in turn (SIGTERM, then started again with the
//!   same build and `--database-url`; migrations run again at each start).
//!
//! Then: every acknowledged command is in the log (read through a live
//! node), in its writer's order; the log has no gap in its global
//! sequences; every SSE client saw every event exactly once, in order.
//! The disruptions are placed by counting acknowledged commands (writers
//! hold before their last commands until the disruptions are done), so no
//! check depends on timing.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use sextant_tests::postgres::Node;
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api, Next};

const WRITERS: usize = 3;
const COMMANDS: u64 = 30;
/// A writer waits before this command of its own until the disruptions
/// are done, so they always happen while writers write.
const HOLD_AT: u64 = 22;
const WAIT: Duration = Duration::from_secs(15);

/// How far the writers are, and whether the disruptions are over.
#[derive(Default)]
struct Progress {
    acknowledged: AtomicUsize,
    /// Sends that got no 2xx answer and went to the next node.
    failovers: AtomicUsize,
    disruptions_done: AtomicBool,
}

impl Progress {
    async fn until_acknowledged(&self, count: usize) {
        while self.acknowledged.load(Ordering::SeqCst) < count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the spawned tasks returned, in order (a panic in one fails the test).
async fn joined<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Three nodes on one fresh database (the first created the owner), and
/// the database's URL.
fn three_nodes() -> (Vec<Node>, String) {
    sextant_tests::postgres::nodes_on_a_fresh_database(3)
}

/// `POST /api/commands`; `None` when no answer came (node down, connection
/// broken).
async fn try_command(api: &Api, envelope: &Value) -> Option<(u16, Value)> {
    let response = api
        .http
        .post(format!("{}/api/commands", api.base))
        .json(envelope)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let text = response.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(json!(text))))
}

/// Sends `envelope` to the nodes in turn from `*next`, the same envelope
/// (same command id) again to the next node while none answers 2xx: no
/// answer or a 5xx means "try elsewhere"; any other answer is a failure.
/// Returns the accepted answer.
async fn send_with_failover(
    apis: &[Api],
    next: &mut usize,
    envelope: &Value,
    failovers: &AtomicUsize,
) -> Value {
    for _attempt in 0..500 {
        let api = &apis[*next % apis.len()];
        *next += 1;
        match try_command(api, envelope).await {
            Some((status, body)) if (200..300).contains(&status) => return body,
            Some((status, _)) if status >= 500 => {}
            None => {}
            Some((status, body)) => panic!("{} answered {status}: {body}\n{envelope}", api.base),
        }
        failovers.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no node accepted {envelope}")
}

/// One writer: its own session, `COMMANDS` commands in order, each to the
/// next node in turn (with failover). Returns the session and the command
/// ids that were acknowledged, in order.
async fn write(apis: Arc<Vec<Api>>, writer: usize, progress: Arc<Progress>) -> (Uuid, Vec<Uuid>) {
    let session = Uuid::new_v4();
    let mut next = writer;
    let mut acknowledged = Vec::new();
    for version in 0..COMMANDS {
        if version == HOLD_AT {
            while !progress.disruptions_done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let command = if version == 0 {
            create(&format!("writer {writer}"))
        } else {
            rename(&format!("writer {writer} r{version}"))
        };
        let envelope = envelope(session, version, command);
        let answer = send_with_failover(&apis, &mut next, &envelope, &progress.failovers).await;
        assert_eq!(answer["version"], json!(version + 1), "{answer}");
        acknowledged.push(envelope["command_id"].as_str().unwrap().parse().unwrap());
        progress.acknowledged.fetch_add(1, Ordering::SeqCst);
    }
    (session, acknowledged)
}

/// What an SSE client saw.
struct Followed {
    ids: Vec<u64>,
    resumes: usize,
}

/// A real SSE client: follows node `start` from the beginning of the log;
/// when its stream ends it resumes on the next node that answers, with
/// `Last-Event-ID` and the hello witness (its last event's sequence and
/// id), which that node must confirm. Stops once it has seen `last`, and
/// then checks that no further event arrives for a moment.
async fn follow(apis: Arc<Vec<Api>>, start: usize, last: u64, store_id: String) -> Followed {
    let mut seen = Followed {
        ids: Vec::new(),
        resumes: 0,
    };
    let mut witness: Option<(u64, String)> = None;
    let mut node = start;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    'connect: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client from node {start} never finished: {:?}",
            seen.ids
        );
        let api = &apis[node % apis.len()];
        let query = match &witness {
            Some((sequence, id)) => {
                format!("?hello=1&store={store_id}&witness_sequence={sequence}&witness_id={id}")
            }
            None => String::new(),
        };
        let Ok(mut stream) = api.try_sse(witness.as_ref().map(|w| w.0), &query).await else {
            node += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if witness.is_some() {
            match stream.next_or_end(WAIT).await {
                Next::Frame(hello) => {
                    assert_eq!(hello.event.as_deref(), Some("hello"), "{hello:?}");
                    assert_eq!(hello.json()["status"], "confirmed", "{}", hello.data);
                }
                Next::Ended => {
                    node += 1;
                    continue 'connect;
                }
                Next::TimedOut => panic!("no hello from {}", api.base),
            }
            seen.resumes += 1;
        }
        loop {
            match stream.next_or_end(WAIT).await {
                Next::Frame(frame) => {
                    let Some(id) = frame.id else { continue };
                    let event = frame.json();
                    assert_eq!(event["global_sequence"], json!(id), "{}", frame.data);
                    seen.ids.push(id);
                    witness = Some((id, event["id"].as_str().unwrap().to_owned()));
                    if id >= last {
                        break 'connect;
                    }
                }
                Next::Ended => {
                    node += 1;
                    continue 'connect;
                }
                Next::TimedOut => panic!(
                    "client from node {start}: nothing for {WAIT:?} on {} after {:?}",
                    api.base, seen.ids
                ),
            }
        }
    }
    seen
}

/// The whole log as a fresh SSE client reads it from `api`: (global
/// sequence, command id) of each event, and that nothing follows.
async fn read_log(api: &Api, total: u64) -> Vec<(u64, Uuid)> {
    let mut feed = api.sse(None, "").await;
    let mut log = Vec::new();
    while log.len() < total as usize {
        let frame = feed
            .next_event(WAIT)
            .await
            .unwrap_or_else(|| panic!("the log stopped after {log:?}"));
        let event = frame.json();
        let command_id = event["metadata"]["command_id"].as_str().unwrap();
        log.push((frame.id.unwrap(), command_id.parse().unwrap()));
    }
    assert!(
        feed.next_event(Duration::from_millis(300)).await.is_none(),
        "the log holds more than the {total} acknowledged commands"
    );
    log
}

/// The checks both scenarios end with.
async fn check_outcome(
    live: &Api,
    written: &[(Uuid, Vec<Uuid>)],
    extra: &[Uuid],
    followed: &[Followed],
) {
    let total = (written.len() * COMMANDS as usize + extra.len()) as u64;
    let log = read_log(live, total).await;
    // No gap: exactly 1..=total.
    let sequences: Vec<u64> = log.iter().map(|(sequence, _)| *sequence).collect();
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
    // Every acknowledged command is there (once: the log is as long as
    // the acknowledged commands and each command makes one event).
    let in_log: HashSet<Uuid> = log.iter().map(|(_, command)| *command).collect();
    assert_eq!(in_log.len(), log.len(), "a command appears twice: {log:?}");
    for (session, commands) in written {
        for command in commands {
            assert!(in_log.contains(command), "acknowledged {command} missing");
        }
        // In its writer's order, as its session's events.
        let events = live.session_events(*session).await;
        let stored: Vec<Uuid> = events
            .iter()
            .map(|e| {
                e["metadata"]["command_id"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(&stored, commands, "session {session}");
    }
    for command in extra {
        assert!(in_log.contains(command), "acknowledged {command} missing");
    }
    // Every client saw every event exactly once, in order, across resumes.
    for (index, client) in followed.iter().enumerate() {
        assert_eq!(
            client.ids,
            (1..=total).collect::<Vec<_>>(),
            "client {index} ({} resumes)",
            client.resumes
        );
    }
}

fn store_id_of(health: &Value) -> String {
    health["store_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_with_sigkill_loses_no_acknowledged_command_and_no_sse_event() {
    let (mut nodes, _url) = three_nodes();
    let apis: Arc<Vec<Api>> = Arc::new(nodes.iter().map(|n| Api::new(n.url())).collect());
    let (_, health) = apis[1].get("/api/health").await;
    let store_id = store_id_of(&health);
    let total = WRITERS as u64 * COMMANDS;
    // Two clients on the node that will die, one on another.
    let clients: Vec<_> = [0, 0, 1]
        .into_iter()
        .map(|start| tokio::spawn(follow(apis.clone(), start, total, store_id.clone())))
        .collect();
    let progress = Arc::new(Progress::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(apis.clone(), w, progress.clone())))
        .collect();

    // A third of the way in, node 0 dies mid-stream and mid-write.
    progress
        .until_acknowledged(WRITERS * COMMANDS as usize / 3)
        .await;
    let victim = nodes.remove(0);
    tokio::task::spawn_blocking(move || victim.server.kill9())
        .await
        .unwrap();
    progress.disruptions_done.store(true, Ordering::SeqCst);

    let written = joined(writers).await;
    let followed: Vec<Followed> = joined(clients).await;
    // The clients on the killed node had to resume elsewhere, and writers
    // sent to the dead node (each writes through every node in turn after
    // the kill) had to fail over.
    assert!(followed[0].resumes >= 1 && followed[1].resumes >= 1);
    let failovers = progress.failovers.load(Ordering::SeqCst);
    assert!(failovers >= WRITERS, "{failovers} failovers");
    eprintln!(
        "kill -9: {failovers} failovers, resumes {:?}",
        followed.iter().map(|f| f.resumes).collect::<Vec<_>>()
    );
    check_outcome(&apis[1], &written, &[], &followed).await;
    // The log as node 2 serves it is the same.
    check_outcome(&apis[2], &written, &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_node_loses_no_acknowledged_command_and_no_sse_event() {
    let (nodes, url) = three_nodes();
    let apis: Arc<Vec<Api>> = Arc::new(nodes.iter().map(|n| Api::new(n.url())).collect());
    let (_, health) = apis[0].get("/api/health").await;
    let store_id = store_id_of(&health);
    // A session for the writes sent while a node is down.
    let probe_session = Uuid::new_v4();
    let mut probes = vec![envelope(probe_session, 0, create("probe"))];
    apis[0].accept(&probes[0]).await;
    let restarts = nodes.len();
    let total = WRITERS as u64 * COMMANDS + 1 + (restarts * (restarts - 1)) as u64;
    let clients: Vec<_> = [0, 2]
        .into_iter()
        .map(|start| tokio::spawn(follow(apis.clone(), start, total, store_id.clone())))
        .collect();
    let progress = Arc::new(Progress::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(apis.clone(), w, progress.clone())))
        .collect();

    let mut servers: Vec<Option<ServerProcess>> = Vec::new();
    let mut data_dirs = Vec::new();
    for node in nodes {
        servers.push(Some(node.server));
        data_dirs.push(node.data_dir);
    }
    for index in 0..restarts {
        progress.until_acknowledged(15 + 20 * index).await;
        let server = servers[index].take().unwrap();
        let addr = server.addr.to_string();
        let status = tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "node {index} stopped with {status}");
        // While it is down, the other nodes answer writes.
        for other in (0..restarts).filter(|other| *other != index) {
            let version = probes.len() as u64;
            let probe = envelope(probe_session, version, rename(&format!("probe {version}")));
            let answer = apis[other].accept(&probe).await;
            assert_eq!(answer["version"], json!(version + 1));
            probes.push(probe);
        }
        // The same build and database URL again: migrations run again.
        let data_dir: PathBuf = data_dirs[index].path().to_path_buf();
        let url = url.clone();
        let server = tokio::task::spawn_blocking(move || {
            ServerProcess::start_on(&data_dir, &addr, &["--database-url", &url, "--no-demo"])
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("node {index} did not come back: {e:#}"));
        servers[index] = Some(server);
        let (status, health) = apis[index].get("/api/health").await;
        assert_eq!(status, 200, "{health}");
        assert_eq!(store_id_of(&health), store_id);
    }
    progress.disruptions_done.store(true, Ordering::SeqCst);

    let written = joined(writers).await;
    let followed: Vec<Followed> = joined(clients).await;
    // Each client's node was restarted under it.
    assert!(followed.iter().all(|client| client.resumes >= 1));
    eprintln!(
        "rolling restart: {} failovers, resumes {:?}",
        progress.failovers.load(Ordering::SeqCst),
        followed.iter().map(|f| f.resumes).collect::<Vec<_>>()
    );
    let probe_ids: Vec<Uuid> = probes
        .iter()
        .map(|p| p["command_id"].as_str().unwrap().parse().unwrap())
        .collect();
    check_outcome(&apis[1], &written, &probe_ids, &followed).await;
}
