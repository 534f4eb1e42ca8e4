//! The plain-HTTP listener, which takes long-lived SSE connections off hyper.
//!
//! An idle `GET /api/events` stream through hyper holds a 16 KiB read
//! buffer and an 8 KiB header buffer for as long as the stream is open
//! (hyper offers no way to shrink them), three times the whole cost of the
//! stream itself. So each accepted connection is sniffed first: when its
//! first request is a plain `GET /api/events` (HTTP/1.1, no body, no
//! upgrade), the request goes through the same router (host policy, auth,
//! limits, tracing: nothing is skipped) and the answer is written here,
//! the stream with chunked framing, from buffers that live only while a
//! frame is written. Every other connection goes to `axum::serve` untouched
//! (sniffing only peeks): an SSE request later on a keep-alive connection
//! is served by hyper, the same stream at hyper's price.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, Version};
use axum::Router;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// The longest request head sniffed; larger heads go to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may take to send its first request head (hyper's
/// own header timeout is 30 s).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between two looks at a head still arriving.
const MAX_SNIFF_WAIT: Duration = Duration::from_millis(100);
/// The largest non-streaming answer written here (problem JSON): larger
/// bodies are cut off with the connection.
const MAX_PLAIN_BODY: usize = 1024 * 1024;
/// At most this many bytes of ready frames go out in one write.
const MAX_BATCH: usize = 64 * 1024;
/// The path this listener serves itself.
const EVENTS_PATH: &[u8] = b"/api/events";

/// The listener `axum::serve` accepts from: connections the sniffer did
/// not keep.
pub struct StreamListener {
    others: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local_addr: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl StreamListener {
    /// Starts accepting on `listener`; event streams are served with `router`.
    pub fn new(listener: TcpListener, router: Router) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (to_hyper, others) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(listener, router, to_hyper));
        Ok(StreamListener {
            others,
            local_addr,
            accepting,
        })
    }
}

impl Drop for StreamListener {
    fn drop(&mut self) {
        // Stop accepting with the server (graceful shutdown drops us).
        self.accepting.abort();
    }
}

impl axum::serve::Listener for StreamListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.others.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when we are dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    router: Router,
    to_hyper: mpsc::Sender<(TcpStream, SocketAddr)>,
) {
    loop {
        // axum's accept: retries connection errors, backs off on EMFILE.
        let (tcp, addr) = axum::serve::Listener::accept(&mut listener).await;
        // No Nagle: an SSE frame or a command answer must leave at once, not
        // wait for the ACK of the previous small write (up to 40 ms).
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let to_hyper = to_hyper.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HEAD_TIMEOUT, sniff(&tcp)).await {
                Ok(Ok(Sniffed::EventStream { head_len, request })) => {
                    serve_event_stream(tcp, head_len, *request, router).await
                }
                Ok(Ok(Sniffed::Other)) => {
                    let _ = to_hyper.send((tcp, addr)).await;
                }
                // Closed, failed, or silent for too long: hyper would drop it too.
                Ok(Err(_)) | Err(_) => {}
            }
        });
    }
}

/// What the first request on a connection is.
enum Sniffed {
    /// A plain `GET /api/events`, head of `head_len` bytes, parsed.
    EventStream {
        head_len: usize,
        request: Box<Request<Body>>,
    },
    /// Anything else: hyper's.
    Other,
}

/// Peeks (never reads) the first request head.
async fn sniff(tcp: &TcpStream) -> io::Result<Sniffed> {
    const PREFIX: &[u8] = b"GET /api/events";
    // While more of the head is on its way, peeking again at once would spin
    // on the same bytes: wait, longer each time (a slow sender costs little).
    let mut wait = Duration::from_millis(1);
    let mut backoff = || {
        let now = wait;
        wait = (wait * 2).min(MAX_SNIFF_WAIT);
        tokio::time::sleep(now)
    };
    // The prefix first, on the stack: a connection that has sent nothing yet,
    // or anything else, costs no head buffer.
    let mut start = [0u8; PREFIX.len()];
    loop {
        let peeked = tcp.peek(&mut start).await?;
        if peeked == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if start[..peeked] != PREFIX[..peeked] {
            return Ok(Sniffed::Other);
        }
        if peeked == PREFIX.len() {
            break;
        }
        backoff().await;
    }
    let mut buffer = vec![0u8; MAX_HEAD];
    loop {
        let peeked = tcp.peek(&mut buffer).await?;
        if peeked == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buffer[..peeked]) {
            Ok(httparse::Status::Complete(head_len)) => {
                return Ok(match event_stream_request(&parsed) {
                    Some(request) => Sniffed::EventStream {
                        head_len,
                        request: Box::new(request),
                    },
                    None => Sniffed::Other,
                });
            }
            // Let hyper answer what it cannot take either (400, 431).
            Err(_) => return Ok(Sniffed::Other),
            Ok(httparse::Status::Partial) if peeked == buffer.len() => return Ok(Sniffed::Other),
            Ok(httparse::Status::Partial) => backoff().await,
        }
    }
}

/// The request, when it is one this listener serves: `GET /api/events`
/// (with or without a query), HTTP/1.1, no body and no upgrade.
fn event_stream_request(parsed: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    let path = parsed.path?;
    let rest = path.as_bytes().strip_prefix(EVENTS_PATH)?;
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    if !(rest.is_empty() || rest.starts_with(b"?")) {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let body_or_upgrade = name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT;
        if body_or_upgrade {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    request.body(Body::empty()).ok()
}

/// Reads the sniffed head off the connection, asks the router, and writes
/// its answer: an event stream with chunked framing until the stream ends or
/// the client goes away, anything else (a problem) whole. The connection is
/// closed afterwards either way.
async fn serve_event_stream(
    mut tcp: TcpStream,
    head_len: usize,
    request: Request<Body>,
    router: Router,
) {
    let mut head = vec![0u8; head_len];
    if tcp.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let result = if streaming {
        write_stream(&mut tcp, response).await
    } else {
        write_whole(&mut tcp, response).await
    };
    if result.is_ok() {
        let _ = tcp.shutdown().await;
    }
}

/// The status line and headers, plus the framing headers given.
fn response_head(response: &Response<Body>, framing: &str) -> Vec<u8> {
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(framing.as_bytes());
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

async fn write_whole(tcp: &mut TcpStream, response: Response<Body>) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_PLAIN_BODY)
        .await
        .map_err(io::Error::other)?;
    let response = Response::from_parts(parts, Body::empty());
    let mut bytes = response_head(&response, &format!("content-length: {}\r\n", body.len()));
    bytes.extend_from_slice(&body);
    tcp.write_all(&bytes).await
}

async fn write_stream(tcp: &mut TcpStream, response: Response<Body>) -> io::Result<()> {
    tcp.write_all(&response_head(&response, "transfer-encoding: chunked\r\n"))
        .await?;
    let mut frames = response.into_body().into_data_stream();
    let (mut reader, mut writer) = tcp.split();
    // The client sends nothing more; a read that ends means it went away
    // (hyper notices the same way), which ends the stream and frees its slot.
    let mut ignored = [0u8; 64];
    loop {
        let frame: Option<Bytes> = tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(frame)) => Some(frame),
                Some(Err(_)) => return Err(io::ErrorKind::Other.into()),
                None => None,
            },
            read = reader.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return Err(io::ErrorKind::ConnectionAborted.into()),
                Ok(_) => continue,
            },
        };
        let Some(first) = frame else {
            return writer.write_all(b"0\r\n\r\n").await;
        };
        // Frames that are ready now go out in the same write, as hyper does:
        // a stream that fell behind catches up in one system call, not one
        // per frame (at 10,000 streams the difference is what keeps up).
        let mut size = first.len();
        let mut batch = vec![first];
        let mut ended = false;
        while size < MAX_BATCH {
            match frames.next().now_or_never() {
                Some(Some(Ok(frame))) => {
                    size += frame.len();
                    batch.push(frame);
                }
                Some(Some(Err(_))) => return Err(io::ErrorKind::Other.into()),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        // (A chunk of size zero would end the body.)
        if size > 0 {
            writer.write_all(&chunk(&batch, size)).await?;
        }
        if ended {
            return writer.write_all(b"0\r\n\r\n").await;
        }
    }
}

/// One chunk of chunked transfer coding holding `frames` (`size` bytes in
/// all), in one buffer: one write, as few segments as possible.
fn chunk(frames: &[Bytes], size: usize) -> Vec<u8> {
    let head = format!("{size:x}\r\n");
    let mut chunk = Vec::with_capacity(head.len() + size + 2);
    chunk.extend_from_slice(head.as_bytes());
    for frame in frames {
        chunk.extend_from_slice(frame);
    }
    chunk.extend_from_slice(b"\r\n");
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> Option<Request<Body>> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(head).unwrap().is_complete());
        event_stream_request(&parsed)
    }

    #[test]
    fn only_plain_event_stream_requests_are_taken() {
        let taken = parse(b"GET /api/events?after=3&hello=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n\r\n")
            .unwrap();
        assert_eq!(taken.uri(), "/api/events?after=3&hello=1");
        assert_eq!(taken.headers()["authorization"], "Bearer t");
        assert!(parse(b"GET /api/events HTTP/1.1\r\nHost: a\r\n\r\n").is_some());
        for other in [
            &b"GET /api/eventsx HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /api/events/x HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /api/events HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /api/events HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /api/events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(parse(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_chunk_is_its_hex_size_the_frames_and_a_line_end() {
        let frame = Bytes::from_static(b"id: 1\n\n");
        assert_eq!(
            chunk(std::slice::from_ref(&frame), 7),
            b"7\r\nid: 1\n\n\r\n"
        );
        assert_eq!(
            chunk(&[frame.clone(), frame], 14),
            b"e\r\nid: 1\n\nid: 1\n\n\r\n"
        );
        assert_eq!(
            &chunk(&[Bytes::from(vec![b'x'; 300])], 300)[..5],
            b"12c\r\n"
        );
    }
}
