//! Durability: kill -9 the server during a write load; after a restart every
//! acknowledged command's events are there, the log is consistent, and
//! resending an acknowledged command still gets its original answer.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api};

/// POSTs a command; `None` when the server is gone mid-request.
async fn try_command(api: &Api, command: &Value) -> Option<(u16, Value)> {
    let response = api
        .http
        .post(format!("{}/api/commands", api.base))
        .json(command)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test]
async fn acknowledged_commands_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let api = Api::new(server.url());

    // Writers on their own sessions, recording every acknowledged command.
    let mut writers = Vec::new();
    for _ in 0..12 {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            let session = Uuid::new_v4();
            let mut acknowledged: Vec<(Value, Value)> = Vec::new();
            let mut version = 0;
            loop {
                let command = if version == 0 {
                    envelope(session, 0, create("crash"))
                } else {
                    envelope(session, version, rename(&format!("v{version}")))
                };
                match try_command(&api, &command).await {
                    Some((200, body)) => {
                        version = body["version"].as_u64().unwrap();
                        acknowledged.push((command, body));
                    }
                    Some((status, body)) => panic!("unexpected {status}: {body}"),
                    None => return (session, acknowledged),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir_path = tokio::task::spawn_blocking(move || server.kill9())
        .await
        .unwrap();
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.await.unwrap());
    }
    let total: usize = results.iter().map(|(_, acked)| acked.len()).sum();
    assert!(
        total > 50,
        "the load was too light to mean anything ({total})"
    );

    let server = ServerProcess::start(&dir_path, &[]).unwrap();
    let api = Api::new(server.url());
    let mut globals = Vec::new();
    for (session, acknowledged) in &results {
        let stored = api.session_events(*session).await;
        // Gapless aggregate sequences.
        for (index, event) in stored.iter().enumerate() {
            assert_eq!(event["aggregate_sequence"], index as u64 + 1);
            globals.push(event["global_sequence"].as_u64().unwrap());
        }
        let by_id: HashMap<&Value, &Value> = stored.iter().map(|e| (&e["id"], e)).collect();
        for (command, body) in acknowledged {
            for event in body["events"].as_array().unwrap() {
                assert_eq!(
                    by_id.get(&event["id"]).copied(),
                    Some(event),
                    "lost {event}"
                );
            }
            // The processed-command record survived with its events.
            let (status, again) = try_command(&api, command).await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(&again, body);
        }
        // At most the one in-flight command may be stored beyond what was acknowledged.
        assert!(stored.len() <= acknowledged.len() + 1);
    }
    globals.sort_unstable();
    globals.dedup();
    let (_, list) = api.get("/api/sessions").await;
    assert_eq!(list["global_sequence"], *globals.last().unwrap());
}
