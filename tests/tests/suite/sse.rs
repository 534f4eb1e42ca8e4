//! `GET /api/events` with real SSE clients: resuming from every cursor while
//! writers append, `Last-Event-ID` over `?after=`, session scoping, progress
//! frames, and catching up after falling behind the bus.

use std::time::Duration;

use serde_json::json;
use server::bus::ProgressFrame;
use server::Config;
use sextant_tests::ServerProcess;
use shared_domain::QueryId;
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api};

const WAIT: Duration = Duration::from_secs(10);

/// Every stored event's global sequence, in order, read through the API.
async fn stored_sequences(api: &Api, sessions: &[Uuid]) -> Vec<u64> {
    let mut all = Vec::new();
    for session in sessions {
        for event in api.session_events(*session).await {
            all.push(event["global_sequence"].as_u64().unwrap());
        }
    }
    all.sort_unstable();
    all
}

/// Appends `per_session` renames to each session, concurrently.
async fn write_load(api: Api, sessions: Vec<Uuid>, per_session: u64) {
    let mut writers = Vec::new();
    for session in sessions {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            for version in 1..=per_session {
                api.accept(&envelope(session, version, rename(&format!("v{version}"))))
                    .await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

#[tokio::test]
async fn reconnecting_from_every_cursor_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let api = Api::new(server.url());
    let sessions: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for session in &sessions {
        api.accept(&envelope(*session, 0, create("sse"))).await;
    }
    let writers = tokio::spawn(write_load(api.clone(), sessions.clone(), 60));

    // A client that drops its connection every few events and resumes with
    // the last id it saw, as a browser's EventSource does.
    let resuming = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last: Option<u64> = None;
            let mut burst = 1;
            loop {
                let mut stream = api.sse(last, "").await;
                let mut got = 0;
                while got < burst {
                    match stream.next_event(Duration::from_millis(1500)).await {
                        Some(frame) => {
                            let id = frame.id.unwrap();
                            assert_eq!(frame.json()["global_sequence"], id);
                            seen.push(id);
                            last = Some(id);
                            got += 1;
                        }
                        None => return seen, // quiet: the writers are done
                    }
                }
                burst = burst % 7 + 1;
            }
        })
    };

    // Meanwhile, connections from every cursor up to what exists so far.
    let mut probes: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut cursor = 0;
    while !writers.is_finished() {
        let mut stream = api.sse(None, &format!("?after={cursor}")).await;
        let mut ids = Vec::new();
        while ids.len() < 5 {
            match stream.next_event(WAIT).await {
                Some(frame) => ids.push(frame.id.unwrap()),
                None => break,
            }
        }
        probes.push((cursor, ids));
        cursor += 1;
    }
    writers.await.unwrap();
    let seen = resuming.await.unwrap();

    let all = stored_sequences(&api, &sessions).await;
    assert_eq!(all.len(), 4 * 61);
    assert_eq!(
        seen, all,
        "the resuming client saw every event exactly once, in order"
    );
    for (cursor, ids) in &probes {
        let expected: Vec<u64> = all
            .iter()
            .copied()
            .filter(|s| s > cursor)
            .take(ids.len())
            .collect();
        assert_eq!(ids, &expected, "stream from cursor {cursor}");
    }
    // After the writes, every possible Last-Event-ID resumes exactly after it.
    for &cursor in std::iter::once(&0).chain(all.iter()) {
        let mut stream = api.sse(Some(cursor), "").await;
        let expected: Vec<u64> = all
            .iter()
            .copied()
            .filter(|s| *s > cursor)
            .take(3)
            .collect();
        let mut ids = Vec::new();
        while ids.len() < expected.len() {
            ids.push(stream.next_event(WAIT).await.expect("frame").id.unwrap());
        }
        assert_eq!(ids, expected, "Last-Event-ID {cursor}");
    }
}

#[tokio::test]
async fn last_event_id_wins_and_session_scoping_filters() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let api = Api::new(server.url());
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    api.accept(&envelope(a, 0, create("A"))).await; // 1
    api.accept(&envelope(b, 0, create("B"))).await; // 2
    api.accept(&envelope(a, 1, rename("A1"))).await; // 3

    // The header (a reconnecting browser) wins over the query string.
    let mut stream = api.sse(Some(2), "?after=0").await;
    assert_eq!(stream.next_event(WAIT).await.unwrap().id, Some(3));

    let mut scoped = api.sse(None, &format!("?session={a}")).await;
    let mut everything = api.sse(None, "?after=0").await;
    api.accept(&envelope(b, 1, rename("B1"))).await; // 4
    api.accept(&envelope(a, 2, rename("A2"))).await; // 5
    let mut scoped_ids = Vec::new();
    while let Some(frame) = scoped.next_event(Duration::from_millis(800)).await {
        assert_eq!(frame.json()["aggregate_id"], json!(a));
        scoped_ids.push(frame.id.unwrap());
    }
    assert_eq!(scoped_ids, vec![1, 3, 5]);
    let mut all_ids = Vec::new();
    while let Some(frame) = everything.next_event(Duration::from_millis(800)).await {
        all_ids.push(frame.id.unwrap());
    }
    assert_eq!(all_ids, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn progress_frames_carry_no_id_and_follow_session_scope() {
    let dir = tempfile::tempdir().unwrap();
    let running = sextant_tests::start_in_process(Config::for_data_dir(dir.path()))
        .await
        .unwrap();
    let api = Api::new(format!("http://{}", running.addr));
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    api.accept(&envelope(a, 0, create("A"))).await;
    let mut scoped = api.sse(None, &format!("?session={a}")).await;
    assert_eq!(scoped.next(WAIT).await.unwrap().id, Some(1));

    let query = QueryId(Uuid::new_v4());
    for (session, percent) in [(b, 10.0), (a, 50.0)] {
        running.state.bus().publish_progress(ProgressFrame::new(
            session,
            query,
            Some(percent),
            120,
        ));
    }
    let frame = scoped.next(WAIT).await.unwrap();
    assert_eq!(frame.id, None);
    assert_eq!(frame.event.as_deref(), Some("progress"));
    assert_eq!(
        frame.json(),
        json!({"query_id": query, "percent": 50.0, "elapsed_ms": 120})
    );
    // Graceful shutdown ends open streams.
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_that_falls_behind_the_bus_catches_up_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let running = sextant_tests::start_in_process(Config::for_data_dir(dir.path()))
        .await
        .unwrap();
    let api = Api::new(format!("http://{}", running.addr));
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("lag"))).await;
    // Connected but not reading: far more frames than the bus holds go by.
    let mut slow = api.sse(None, "").await;
    let bus = running.state.bus().clone();
    let query = QueryId(Uuid::new_v4());
    for version in 1..=40u64 {
        for _ in 0..2_500 {
            bus.publish_progress(ProgressFrame::new(session, query, Some(1.0), 1));
        }
        api.accept(&envelope(session, version, rename(&format!("v{version}"))))
            .await;
    }
    let mut ids = Vec::new();
    let mut progress = 0usize;
    while let Some(frame) = slow.next(Duration::from_secs(2)).await {
        match frame.id {
            Some(id) => ids.push(id),
            None => progress += 1,
        }
    }
    let expected: Vec<u64> = api
        .session_events(session)
        .await
        .iter()
        .map(|e| e["global_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, expected, "no event lost or repeated");
    assert!(
        progress < 100_000,
        "the stream lagged and skipped ephemeral frames ({progress} of 100000 arrived)"
    );
    // Operators see it: the lag is counted, and commits are timed.
    let (_, _, metrics) = api.get_raw("/api/metrics", None).await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(
        value("sextant_sse_lag_catch_ups_total ") >= 1.0,
        "{metrics}"
    );
    assert!(value("sextant_commit_seconds_count ") >= 41.0, "{metrics}");
    drop(slow);
    running.stop().await.unwrap();
}
