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

/// Sends `request` (a request head for the server at `addr`) on `tcp` and
/// reads until `until` appears in what came back, or `WAIT` passes.
async fn exchange(tcp: &mut tokio::net::TcpStream, request: &str, until: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !String::from_utf8_lossy(&seen).contains(until) {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_stream_opens_on_a_new_or_a_kept_alive_connection_and_a_closed_one_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--no-demo", "--sse-per-user", "1"]).unwrap();
    let api = Api::new(server.url());
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("raw"))).await;
    let token = sextant_tests::token_for(&server.url()).unwrap();
    let host = server.url().trim_start_matches("http://").to_owned();
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    let addr = host.clone();

    // A kept-alive connection that asked something else first: the stream
    // comes on the same connection.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let me = exchange(&mut kept, &get("/api/me"), "\"owner\"").await;
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    let stream = exchange(&mut kept, &get("/api/events"), &session.to_string()).await;
    assert!(stream.contains("text/event-stream"), "{stream}");
    assert!(stream.contains(&session.to_string()), "{stream}");
    drop(kept);

    // New connections, one after another: each closed stream frees the one
    // stream this user may hold, so the next is admitted (not 429).
    for attempt in 0..3 {
        let mut opened = None;
        for _ in 0..50 {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let answer = exchange(&mut tcp, &get("/api/events?after=0"), "\r\n\r\n").await;
            if answer.starts_with("HTTP/1.1 429") {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            opened = Some((tcp, answer));
            break;
        }
        let (mut tcp, head) = opened.unwrap_or_else(|| panic!("stream {attempt} stayed refused"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("x-sextant-store"),
            "{head}"
        );
        // The first frames may have come with the head.
        let mut seen = head.clone();
        if !seen.contains(&session.to_string()) {
            seen.push_str(&exchange(&mut tcp, "", &session.to_string()).await);
        }
        assert!(seen.contains(&session.to_string()), "{seen}");
        // While it is open, a second stream is refused with a problem.
        let mut second = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let refused = exchange(&mut second, &get("/api/events"), "error_id").await;
        assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
        assert!(refused.contains("error_id"), "{refused}");
        drop(tcp);
    }

    // A head that arrives in pieces, slowly, is still a stream (once the
    // stream just closed has freed its slot).
    let request = get("/api/events");
    let mut streamed = String::new();
    for _ in 0..50 {
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        for piece in [&request[..7], &request[7..30], &request[30..]] {
            tokio::io::AsyncWriteExt::write_all(&mut slow, piece.as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        streamed = exchange(&mut slow, "", &session.to_string()).await;
        if !streamed.starts_with("HTTP/1.1 429") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(streamed.starts_with("HTTP/1.1 200"), "{streamed}");
    assert!(streamed.contains(&session.to_string()), "{streamed}");

    // Without credentials: the same 401 problem as every other route.
    let mut anonymous = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let refused = exchange(
        &mut anonymous,
        &format!("GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        "error_id",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}
