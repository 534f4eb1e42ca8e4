//! Fixtures shared by the test suite: real server processes on ephemeral
//! ports with their own data directories, and in-process servers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub mod browser;
pub mod power_cut;
pub mod proxy;
pub mod vfs;

/// The `server` binary built from the code under test. The first call in a
/// test process runs `cargo build -p server` (through escargot, in the same
/// profile and target directory as this test binary) and every later call
/// reuses that path, so the suite can never start a stale binary left in
/// `target/` by an earlier build.
pub fn server_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let built = escargot::CargoBuild::new()
                .manifest_path(repo_root().join("Cargo.toml"))
                .package("server")
                .bin("server")
                .current_release()
                .target_dir(target_dir())
                .run()
                .unwrap_or_else(|e| panic!("building the server binary failed: {e}"));
            built.path().to_path_buf()
        })
        .clone()
}

/// The cargo target directory this test binary was built in
/// (`<target>/<profile>/deps/suite-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The repository root (for `dist/`, fixtures, …).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A real `server` process with its own data directory, killed on drop.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts the server on 127.0.0.1 with an ephemeral port and waits until
    /// `/api/health` answers 200.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(data_dir, "127.0.0.1:0", extra_args)
    }

    /// Like [`ServerProcess::start`] on a fixed address (to restart on the same port).
    pub fn start_on(data_dir: &Path, bind: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(server_binary());
        command
            .arg("--bind")
            .arg(bind)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            // A small demo dataset keeps start-up fast (a flag still wins).
            .env("SEXTANT_DEMO_ROWS", "20000")
            // No fsync per commit: these tests do not test power cuts (the
            // power-cut tests do, and a `--durability` flag still wins).
            .env("SEXTANT_DURABILITY", "normal")
            .current_dir(repo_root());
        let mut server = Self::spawn(command)?;
        server.data_dir = data_dir.to_path_buf();
        server.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        Ok(server)
    }

    /// Starts the server exactly as a user would: in `working_dir`, with
    /// `args` only, every `SEXTANT_*` variable of the test environment
    /// removed, so the binary's own defaults apply. `data_dir` is where the
    /// given arguments put the data (for [`ServerProcess::data_dir`]).
    pub fn start_as_user(
        working_dir: &Path,
        args: &[&str],
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(server_binary());
        command.args(args).current_dir(working_dir);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SEXTANT_") {
                command.env_remove(name);
            }
        }
        let mut server = Self::spawn(command)?;
        server.data_dir = data_dir.to_path_buf();
        Ok(server)
    }

    /// Spawns `command` with piped, logged output and waits for the
    /// listening line and a healthy `/api/health`.
    fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning the server")?;
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
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("Sextant listening on http://") {
                    let _ = tx.send(url.trim().to_owned());
                }
                let mut log = stdout_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => addr.parse()?,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "server did not print its address; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let server = ServerProcess {
            child,
            addr,
            data_dir: PathBuf::new(),
            extra_args: Vec::new(),
            log,
        };
        server.wait_healthy(Duration::from_secs(120))?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether `needle` shows up in the log within `timeout`: a log line may
    /// trail the HTTP response that reported it by a moment.
    pub fn log_eventually_contains(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let health = format!("{}/api/health", self.url());
        while Instant::now() < deadline {
            if let Ok(response) = probe::blocking_get(&health) {
                if response == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("server never became healthy; log:\n{}", self.log())
    }

    /// SIGKILL: no graceful shutdown, no flush.
    pub fn kill9(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }

    /// SIGTERM and wait for the graceful exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        Ok(self.child.wait()?)
    }

    /// Stops this process and starts a new one on the same data dir and port.
    pub fn restart(self) -> anyhow::Result<Self> {
        let addr = self.addr;
        let data_dir = self.data_dir.clone();
        let args = self.extra_args.clone();
        self.stop()?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_on(&data_dir, &addr.to_string(), &args)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod probe {
    //! A tiny blocking GET for readiness polling, so fixtures need no runtime.
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// The HTTP status of `GET url` (http only), or an error. Reads only the
    /// status line: some servers (chromedriver) keep the connection open
    /// despite `Connection: close`.
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = TcpStream::connect(host)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut status_line = String::new();
        BufReader::new(stream).read_line(&mut status_line)?;
        status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))
    }
}
