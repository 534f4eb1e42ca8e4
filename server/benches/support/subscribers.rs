//! The SSE subscribers of the store bench, in a process of their own (the
//! bench binary run again with [`CHILD_ENV`] set), so that the server's RSS
//! is measured without them and the two sides do not share one file table
//! (the hard open-file limit here is 20,000).
//!
//! The bench appends `RenameSession` commands whose title is `t<unix nanos>`
//! taken just before the append; each subscriber parses it out of the frame
//! and keeps `receipt - append` (both processes read the same wall clock).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `addr,token,subscribers,events` for the child.
pub const CHILD_ENV: &str = "SEXTANT_BENCH_SSE_CHILD";

pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// What the child reports when every subscriber got every event (or the
/// deadline passed).
#[derive(Debug)]
pub struct Delivery {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub received: usize,
}

/// The child's entry point: connects, prints `ready`, collects, prints
/// `result <p50> <p99> <max> <received>`.
pub fn run_child(spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let addr: std::net::SocketAddr = parts[0].parse().unwrap();
    let token = parts[1].to_owned();
    let subscribers: usize = parts[2].parse().unwrap();
    let events: usize = parts[3].parse().unwrap();
    // One thread: the server under test gets the other core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let request = Arc::new(format!(
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ));
        let ready = Arc::new(AtomicUsize::new(0));
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::with_capacity(subscribers);
        for batch in 0..subscribers.div_ceil(100) {
            let mut sockets = Vec::new();
            for _ in (batch * 100)..((batch + 1) * 100).min(subscribers) {
                sockets.push(tokio::spawn(async move {
                    tokio::net::TcpStream::connect(addr).await.unwrap()
                }));
            }
            for socket in sockets {
                let socket = socket.await.unwrap();
                readers.push(tokio::spawn(read_frames(
                    socket,
                    request.clone(),
                    ready.clone(),
                    latencies.clone(),
                    events,
                )));
            }
        }
        while ready.load(Ordering::Relaxed) < subscribers {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("ready");
        std::io::stdout().flush().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        for reader in readers {
            let _ = tokio::time::timeout_at(deadline, reader).await;
        }
        let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
        latencies.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if latencies.is_empty() {
                return f64::NAN;
            }
            latencies[((p / 100.0) * (latencies.len() - 1) as f64).round() as usize]
        };
        println!(
            "result {} {} {} {}",
            at(50.0),
            at(99.0),
            at(100.0),
            latencies.len()
        );
        std::io::stdout().flush().unwrap();
        // Exiting closes every socket at once.
        std::process::exit(0);
    });
}

/// One subscriber: sends the request, waits for the response head, then
/// parses `"title":"t<nanos>"` out of every frame until `events` arrived.
async fn read_frames(
    mut socket: tokio::net::TcpStream,
    request: Arc<String>,
    ready: Arc<AtomicUsize>,
    latencies: Arc<Mutex<Vec<f64>>>,
    events: usize,
) {
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut head_seen = false;
    let mut local = Vec::with_capacity(events);
    while !head_seen || local.len() < events {
        let read = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let now = unix_nanos();
        buffer.extend_from_slice(&chunk[..read]);
        if !head_seen {
            let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            assert!(
                buffer.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&buffer)
            );
            buffer.drain(..end + 4);
            head_seen = true;
            ready.fetch_add(1, Ordering::Relaxed);
        }
        let Some(last_newline) = buffer.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        for line in buffer[..last_newline].split(|b| *b == b'\n') {
            const MARK: &[u8] = b"\"title\":\"t";
            let Some(at) = line.windows(MARK.len()).position(|w| w == MARK) else {
                continue;
            };
            let digits = &line[at + MARK.len()..];
            let end = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            let sent: u128 = std::str::from_utf8(&digits[..end])
                .unwrap()
                .parse()
                .unwrap();
            local.push(now.saturating_sub(sent) as f64 / 1e6);
        }
        buffer.drain(..=last_newline);
    }
    latencies.lock().unwrap().extend(local);
}

/// The parent's handle on the child process.
pub struct Subscribers {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Subscribers {
    /// Starts the child and waits until every subscriber has its response
    /// head (the stream is open and idle on the bus).
    pub fn start(
        addr: std::net::SocketAddr,
        token: &str,
        subscribers: usize,
        events: usize,
    ) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, format!("{addr},{token},{subscribers},{events}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("child output").unwrap();
        assert_eq!(line, "ready");
        Self { child, lines }
    }

    /// Waits for the child's result.
    pub fn finish(mut self) -> Delivery {
        let line = self.lines.next().expect("child result").unwrap();
        let _ = self.child.wait();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], "result", "{line}");
        Delivery {
            p50_ms: fields[1].parse().unwrap(),
            p99_ms: fields[2].parse().unwrap(),
            max_ms: fields[3].parse().unwrap(),
            received: fields[4].parse().unwrap(),
        }
    }
}

/// Bytes this process has allocated and not freed (glibc's `mallinfo2`:
/// arena plus mmapped chunks); 0 where that is not available. Beside the
/// RSS it tells allocations from allocator overhead and touched pages.
pub fn heap_in_use() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[repr(C)]
        struct Mallinfo2 {
            arena: usize,
            ordblks: usize,
            smblks: usize,
            hblks: usize,
            hblkhd: usize,
            usmblks: usize,
            fsmblks: usize,
            uordblks: usize,
            fordblks: usize,
            keepcost: usize,
        }
        extern "C" {
            fn mallinfo2() -> Mallinfo2;
        }
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { mallinfo2() };
        (info.uordblks + info.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// This process's resident set size in bytes (`VmRSS`).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}
