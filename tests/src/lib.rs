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
pub mod postgres;
pub mod power_cut;
pub mod proxy;
pub mod vfs;

/// The owner tokens of the servers this test process started, by origin
/// (`http://127.0.0.1:PORT`). [`ServerProcess::start`] and
/// [`register_token`] fill it; the suite's `Api`, [`http_client`] and
/// [`browser::Browser::goto`] sign in with it, so tests written before
/// accounts existed keep working unchanged.
static TOKENS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// `scheme://host:port` of a URL.
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// Remembers `token` as the owner token of the server at `url`'s origin.
pub fn register_token(url: &str, token: &str) {
    let origin = origin_of(url);
    let mut tokens = TOKENS.lock().unwrap();
    tokens.retain(|(o, _)| *o != origin);
    tokens.push((origin, token.to_owned()));
}

/// The owner token registered for `url`'s origin.
pub fn token_for(url: &str) -> Option<String> {
    let origin = origin_of(url);
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .find(|(o, _)| *o == origin)
        .map(|(_, t)| t.clone())
}

/// `Authorization: Bearer TOKEN`, for a client's default headers.
pub fn bearer_headers(token: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .expect("tokens are header-safe");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    headers
}

/// A reqwest client that sends `Authorization: Bearer TOKEN` on every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(bearer_headers(token))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// A client signed in as the owner of the server at `url` (registered by
/// [`ServerProcess::start`] or [`register_token`]), or an anonymous one.
pub fn http_client(url: &str) -> reqwest::Client {
    match token_for(url) {
        Some(token) => client_with_token(&token),
        None => reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("reqwest client"),
    }
}

/// `GET url` as the owner of that server (like `reqwest::get`, signed in).
pub async fn get(url: &str) -> reqwest::Result<reqwest::Response> {
    http_client(url).get(url).send().await
}

/// Starts an in-process server (`server::start`) and registers its owner
/// token, so `Api::new` and [`http_client`] on its URL are signed in.
pub async fn start_in_process(config: server::Config) -> anyhow::Result<server::RunningServer> {
    let running = server::start(config).await?;
    if let Some(token) = &running.owner_token {
        register_token(&format!("http://{}", running.addr), token);
    }
    Ok(running)
}

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
    /// The admin `owner`'s token, read from `DATA_DIR/owner.token`.
    pub token: String,
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
        server.read_owner_token()?;
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
        server.read_owner_token()?;
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
                // Logged before it is announced: a test that reads the log
                // once the server is up finds the line there.
                {
                    let mut log = stdout_log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(url) = line.strip_prefix("Sextant listening on http://") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        // `Sextant listening on http://ADDR/?token=TOKEN`
        let (addr, line_token): (SocketAddr, Option<String>) =
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(url) => {
                    let (addr, rest) = url.split_once('/').unwrap_or((url.as_str(), ""));
                    (
                        addr.parse()?,
                        rest.strip_prefix("?token=").map(str::to_owned),
                    )
                }
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
            token: line_token.unwrap_or_default(),
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

    /// Reads `DATA_DIR/owner.token`, checks that the listening line carried
    /// the same token, and registers it for this server's URL.
    fn read_owner_token(&mut self) -> anyhow::Result<()> {
        let token = std::fs::read_to_string(self.data_dir.join("owner.token"))
            .context("reading DATA_DIR/owner.token")?
            .trim()
            .to_owned();
        if token != self.token {
            bail!("the listening line does not carry owner.token's token");
        }
        register_token(&self.url(), &token);
        Ok(())
    }

    /// The sign-in link: opening it in a browser sets the login cookie.
    pub fn sign_in_url(&self) -> String {
        format!("{}/?token={}", self.url(), self.token)
    }

    /// An HTTP client signed in as the owner.
    pub fn client(&self) -> reqwest::Client {
        client_with_token(&self.token)
    }

    /// Runs `server users ARGS… --data-dir DATA_DIR` and returns its stdout
    /// (it works while this server runs).
    pub fn users(&self, args: &[&str]) -> anyhow::Result<String> {
        users_command(&self.data_dir, args)
    }

    /// Adds a user with `server users add` and returns its token.
    pub fn add_user(&self, name: &str) -> anyhow::Result<String> {
        let out = self.users(&["add", name])?;
        out.lines()
            .last()
            .map(str::to_owned)
            .context("`users add` printed nothing")
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

/// Runs `server users ARGS… --data-dir DATA_DIR`; its stdout, or an error
/// with its stderr.
pub fn users_command(data_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(server_binary())
        .arg("users")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .output()
        .context("running server users")?;
    if !output.status.success() {
        bail!(
            "server users {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
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
