//! A small client of the sync API for the store, API, SSE and crash tests:
//! command envelopes, `POST /api/commands`, and a real SSE reader over HTTP.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

/// A command envelope as a client sends it.
pub fn envelope(session: Uuid, expected_version: u64, command: Value) -> Value {
    json!({
        "command_id": Uuid::new_v4(),
        "aggregate_type": "QuerySession",
        "aggregate_id": session,
        "expected_version": expected_version,
        "command": command,
    })
}

pub fn create(title: &str) -> Value {
    json!({"type": "CreateSession", "title": title})
}

pub fn rename(title: &str) -> Value {
    json!({"type": "RenameSession", "title": title})
}

/// An HTTP client bound to one server.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// A client signed in as the owner of the server at `base` (the
    /// fixtures register its token), or anonymous for an unknown server.
    pub fn new(base: impl Into<String>) -> Self {
        let base = base.into();
        Self {
            http: sextant_tests::http_client(&base),
            base,
        }
    }

    /// A client signed in with `token`.
    pub fn with_token(base: impl Into<String>, token: &str) -> Self {
        Self {
            base: base.into(),
            http: sextant_tests::client_with_token(token),
        }
    }

    /// A client without credentials.
    pub fn anonymous(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// POSTs JSON to `path`; returns the status and the parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = content_type(&response);
        let body: Value = response.json().await.unwrap();
        if status >= 400 {
            assert_eq!(content_type, "application/problem+json", "{body}");
        }
        (status, body)
    }

    /// GETs `path` (optionally with an `Accept` header); returns the status,
    /// the content type and the raw body (Arrow, CSV, Parquet downloads).
    pub async fn get_raw(&self, path: &str, accept: Option<&str>) -> (u16, String, Vec<u8>) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = content_type(&response);
        (
            status,
            content_type,
            response.bytes().await.unwrap().to_vec(),
        )
    }

    pub async fn command(&self, envelope: &Value) -> (u16, Value) {
        self.post("/api/commands", envelope).await
    }

    /// Sends a command that must succeed and returns its body.
    pub async fn accept(&self, envelope: &Value) -> Value {
        let (status, body) = self.command(envelope).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Every stored event of a session.
    pub async fn session_events(&self, session: Uuid) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/aggregates/QuerySession/{session}/events"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().unwrap().clone()
    }

    /// Opens `GET /api/events` with an optional `Last-Event-ID` header and query.
    pub async fn sse(&self, last_event_id: Option<u64>, query: &str) -> SseStream {
        let response = self.sse_request(last_event_id, query).send().await.unwrap();
        assert_eq!(response.status(), 200);
        SseStream::of(response)
    }

    /// Like [`Api::sse`], but a server that is down or refuses the stream
    /// is an error (the status or the transport error), not a panic: for
    /// clients that fail over to another node.
    pub async fn try_sse(
        &self,
        last_event_id: Option<u64>,
        query: &str,
    ) -> Result<SseStream, String> {
        let response = self
            .sse_request(last_event_id, query)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("status {}", response.status()));
        }
        Ok(SseStream::of(response))
    }

    fn sse_request(&self, last_event_id: Option<u64>, query: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .get(format!("{}/api/events{query}", self.base))
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        request
    }
}

/// One parsed SSE frame (comments are skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// A real SSE connection, parsed frame by frame.
pub struct SseStream {
    body: ByteStream,
    buffer: String,
}

/// What waiting for the next frame gave.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// The server ended the stream or the connection broke.
    Ended,
    TimedOut,
}

impl SseStream {
    fn of(response: reqwest::Response) -> SseStream {
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseStream {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            buffer: String::new(),
        }
    }

    /// The next frame, telling an ended stream from a quiet one.
    pub async fn next_or_end(&mut self, timeout: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse_frame(&block) {
                    return Next::Frame(frame);
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Some(Err(_)) | None) => return Next::Ended,
                Err(_) => return Next::TimedOut,
            }
        }
    }

    /// The next frame, or `None` after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse_frame(&block) {
                    return Some(frame);
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Whether the server ends the stream within `timeout` (frames before
    /// the end are skipped).
    pub async fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// The next event frame (with an id), skipping progress frames.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Frame> {
        loop {
            let frame = self.next(timeout).await?;
            if frame.id.is_some() {
                return Some(frame);
            }
        }
    }
}

fn parse_frame(block: &str) -> Option<Frame> {
    let mut frame = Frame {
        id: None,
        event: None,
        data: String::new(),
    };
    let mut any = false;
    for line in block.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "id" => frame.id = Some(value.parse().expect("numeric SSE id")),
            "event" => frame.event = Some(value.to_owned()),
            "data" => {
                if !frame.data.is_empty() {
                    frame.data.push('\n');
                }
                frame.data.push_str(value);
            }
            _ => {}
        }
    }
    any.then_some(frame)
}

/// The response's `Content-Type`, or "" without one.
fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
