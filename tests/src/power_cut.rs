//! One power-cut cycle, shared by the suite (a few cycles) and the bench
//! (`cargo bench -p sextant-tests --bench power_cut`, 100 per mode).
//!
//! A cycle starts `power-cut-server` (the real server on the power-cut VFS,
//! [`crate::vfs`]) on a fresh data directory, sends commands from several
//! concurrent issuers over HTTP and records every acknowledged (200) one,
//! until the server cuts its power at a random write or sync and exits. Then
//! it opens what the "disk" holds with plain SQLite (recovering the WAL as
//! after a reboot) and lists every violation: an acknowledged command or
//! event missing or different, a gap in the global sequence or in a
//! session's sequence, a failed integrity check.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use shared_domain::{Aggregate, CommandEnvelope, QuerySession, SessionCommand, SessionTitle};
use uuid::Uuid;

/// The exit code of `power-cut-server` after its power cut.
pub const POWER_CUT_EXIT: i32 = 86;

/// What one cycle found.
#[derive(Debug, Default)]
pub struct CycleReport {
    /// Commands answered 200 before the cut.
    pub acknowledged: usize,
    /// Events found in the store after the cut.
    pub stored_events: u64,
    /// Whether the server exited by its power cut (not by the deadline).
    pub power_was_cut: bool,
    pub violations: Vec<String>,
}

/// One acknowledged command: its id and its events' (global sequence, id).
struct Acknowledged {
    command_id: Uuid,
    events: Vec<(u64, String)>,
}

/// Runs one cycle: `durability` is `full` or `normal`; the power goes at
/// the `ops`-th write or sync after the server is up.
pub async fn run_cycle(
    binary: &Path,
    durability: &str,
    ops: u64,
    issuers: usize,
) -> anyhow::Result<CycleReport> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(binary)
        .arg(dir.path())
        .arg(durability)
        .arg(ops.to_string())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr_log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = stderr_log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let Some(addr) = line.trim().strip_prefix("Sextant listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "power-cut-server did not start: {line:?}; log:\n{}",
            log.lock().unwrap()
        );
    };
    // `http://ADDR/?token=TOKEN`: the owner's sign-in URL.
    let (addr, token) = addr.split_once("/?token=").unwrap_or((addr, ""));
    let url = format!("{addr}/api/commands");

    let client = reqwest::Client::builder()
        .default_headers(crate::bearer_headers(token))
        .timeout(Duration::from_secs(10))
        .build()?;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..issuers {
        let client = client.clone();
        let url = url.clone();
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            let session = Uuid::new_v4();
            // Until the power goes (or a generous bound on the work).
            for index in 0..100_000u64 {
                let envelope = scripted(session, index);
                let command_id = envelope.command_id;
                let Ok(response) = client.post(&url).json(&envelope.to_json()).send().await else {
                    return;
                };
                if response.status() != 200 {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                let events = body["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        (
                            e["global_sequence"].as_u64().unwrap_or(0),
                            e["id"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                acknowledged
                    .lock()
                    .unwrap()
                    .push(Acknowledged { command_id, events });
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if status.is_none() {
        // No cut within the deadline: kill -9 loses the unsynced images too.
        let _ = child.kill();
        let _ = child.wait();
    }
    for task in tasks {
        let _ = task.await;
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    let mut report = check_store(&dir.path().join("sextant.sqlite3"), &acknowledged)?;
    report.power_was_cut = status.and_then(|s| s.code()) == Some(POWER_CUT_EXIT);
    Ok(report)
}

/// The `index`-th command of one session: create, then renames.
fn scripted(session: Uuid, index: u64) -> CommandEnvelope<SessionCommand> {
    let command = if index == 0 {
        SessionCommand::CreateSession {
            title: SessionTitle::new("power cut").unwrap(),
        }
    } else {
        SessionCommand::RenameSession {
            title: SessionTitle::new(format!("title {index}")).unwrap(),
        }
    };
    CommandEnvelope {
        command_id: Uuid::new_v4(),
        aggregate_type: QuerySession::TYPE.into(),
        aggregate_id: session,
        expected_version: index,
        // Each issuer owns its session: the number alone is an exact base.
        base_command: None,
        command,
    }
}

/// Opens the store as a reboot would (default VFS, WAL recovery) and lists
/// what an acknowledged write lost.
fn check_store(path: &Path, acknowledged: &[Acknowledged]) -> anyhow::Result<CycleReport> {
    let mut report = CycleReport {
        acknowledged: acknowledged.len(),
        ..CycleReport::default()
    };
    let conn = rusqlite::Connection::open(path)?;
    let has_events: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'events'",
        [],
        |r| r.get(0),
    )?;
    if !has_events {
        if !acknowledged.is_empty() {
            report.violations.push(format!(
                "the events table is gone, with {} acknowledged commands",
                acknowledged.len()
            ));
        }
        return Ok(report);
    }
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        report
            .violations
            .push(format!("integrity check: {integrity}"));
    }
    let mut stored: HashMap<u64, String> = HashMap::new();
    {
        let mut select =
            conn.prepare("SELECT global_sequence, id FROM events ORDER BY global_sequence")?;
        let rows = select.query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?)))?;
        for (expected, row) in (1u64..).zip(rows) {
            let (sequence, id) = row?;
            if sequence != expected && report.violations.len() < 20 {
                report.violations.push(format!(
                    "gap in the global sequence: {sequence} follows {}",
                    expected - 1
                ));
            }
            stored.insert(sequence, id);
        }
    }
    report.stored_events = stored.len() as u64;
    let gaps: i64 = conn.query_row(
        "SELECT count(*) FROM (SELECT aggregate_id FROM events GROUP BY aggregate_id
                               HAVING count(*) != max(aggregate_sequence))",
        [],
        |r| r.get(0),
    )?;
    if gaps > 0 {
        report
            .violations
            .push(format!("{gaps} sessions with a gap in their sequence"));
    }
    let mut processed = conn.prepare("SELECT 1 FROM processed_commands WHERE command_id = ?1")?;
    let mut lost = 0;
    for ack in acknowledged {
        let events_kept = ack
            .events
            .iter()
            .all(|(sequence, id)| stored.get(sequence) == Some(id));
        let recorded = processed.exists([ack.command_id.to_string()])?;
        if !(events_kept && recorded) {
            lost += 1;
            if lost <= 3 {
                report.violations.push(format!(
                    "acknowledged command {} lost (events kept: {events_kept}, recorded: {recorded}; events {:?})",
                    ack.command_id, ack.events
                ));
            }
        }
    }
    if lost > 3 {
        report
            .violations
            .push(format!("{lost} acknowledged commands lost in all"));
    }
    Ok(report)
}

/// A random number in `range` (uuid's RNG: the tests crate has no `rand`).
pub fn random_in(range: std::ops::Range<u64>) -> u64 {
    let bits = Uuid::new_v4().as_u128() as u64;
    range.start + bits % (range.end - range.start)
}
