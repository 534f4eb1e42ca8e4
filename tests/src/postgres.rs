//! A throwaway PostgreSQL cluster for the tests, from Debian's `postgresql`
//! package (`/usr/lib/postgresql/<version>/bin`; `.ci/run` installs it).
//!
//! One cluster per test process ([`cluster`]), one fresh database per test
//! ([`PgCluster::database`]). `initdb` refuses to run as root (CI runs as
//! root), so as root the cluster runs as the `postgres` user (`runuser`) in
//! a directory that user owns. It listens on loopback with an ephemeral
//! port (and a socket in its directory), never as a system service.
//!
//! The cluster is started by a small shell that stops it and removes its
//! directory when its standard input closes: when the fixture is dropped,
//! or when the test process ends in any way (a static is never dropped).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A running throwaway cluster.
pub struct PgCluster {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Closing it stops the cluster (see the module doc).
    stdin: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

/// How the cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync = off`: for tests, which never cut the power.
    Fast,
    /// PostgreSQL's defaults (fsync, synchronous commit): for benches.
    Durable,
}

/// The test process's cluster, started on first use.
pub fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        PgCluster::start(Durability::Fast)
            .unwrap_or_else(|e| panic!("starting the test PostgreSQL cluster failed: {e:#}"))
    })
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
pub fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL is not installed (/usr/lib/postgresql is missing): \
             apt-get install postgresql (.ci/run does)",
        )?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free loopback port (a moment's race with other processes is possible).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PgCluster {
    /// Runs `initdb` and starts `postgres` in a fresh directory, and waits
    /// until it accepts connections.
    pub fn start(durability: Durability) -> anyhow::Result<PgCluster> {
        let bin = postgres_bin()?;
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("sextant-pg-")
            .tempdir()?
            .keep();
        if root {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown postgres {}", dir.display());
        }
        let port = free_port()?;
        let settings = match durability {
            Durability::Fast => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            Durability::Durable => "",
        };
        // Stops the cluster and removes the directory once stdin closes.
        let script = format!(
            r#"set -e
"{bin}/initdb" -D "{dir}/data" -U postgres --auth=trust -E UTF8 --no-sync >"{dir}/initdb.log" 2>&1
"{bin}/postgres" -D "{dir}/data" -k "{dir}" -p {port} -c listen_addresses=127.0.0.1 \
    -c max_connections=400 -c shared_buffers=64MB {settings} >"{dir}/postgres.log" 2>&1 &
pid=$!
echo started
cat >/dev/null || true
kill -INT $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
rm -rf "{dir}"
"#,
            bin = bin.display(),
            dir = dir.display(),
        );
        let mut command = if root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", "sh", "-c", &script]);
            command
        } else {
            let mut command = Command::new("sh");
            command.args(["-c", &script]);
            command
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the PostgreSQL cluster's shell")?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
        let cluster = PgCluster {
            port,
            dir,
            bin,
            stdin: Mutex::new(stdin),
            child: Mutex::new(child),
        };
        if line.trim() != "started" {
            bail!(
                "initdb failed: {}",
                std::fs::read_to_string(cluster.dir.join("initdb.log")).unwrap_or_default()
            );
        }
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "PostgreSQL did not start; its log:\n{}",
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The cluster's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (its log is `postgres.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!(
            "sextant_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let output = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U"])
            .args(["postgres", &name])
            .output()
            .expect("running createdb");
        assert!(
            output.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        drop(self.stdin.lock().unwrap().take());
        let _ = self.child.lock().unwrap().wait();
    }
}

/// A Sextant node (the real server binary) on the PostgreSQL database
/// `url`, with a data directory of its own (DuckDB's work files, its copy
/// of `owner.token`).
pub struct Node {
    pub server: crate::ServerProcess,
    pub data_dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node on `url`. The first node of a database creates the
    /// owner; pass its data directory as `owner_from` to start the others
    /// with the same `owner.token`, as a deployment copies it.
    pub fn start(
        url: &str,
        owner_from: Option<&Path>,
        extra_args: &[&str],
    ) -> anyhow::Result<Node> {
        let data_dir = tempfile::tempdir()?;
        if let Some(first) = owner_from {
            std::fs::copy(
                first.join("owner.token"),
                data_dir.path().join("owner.token"),
            )
            .context("copying owner.token")?;
        }
        let mut args = vec!["--database-url", url, "--no-demo"];
        args.extend_from_slice(extra_args);
        let server = crate::ServerProcess::start(data_dir.path(), &args)?;
        Ok(Node { server, data_dir })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

/// `count` nodes on one fresh database of the test cluster (the first
/// created the owner; the others start with its `owner.token`), and the
/// database's URL.
pub fn nodes_on_a_fresh_database(count: usize) -> (Vec<Node>, String) {
    let url = cluster().database();
    let first = Node::start(&url, None, &[]).unwrap();
    let owner = first.data_dir.path().to_path_buf();
    let mut nodes = vec![first];
    for _ in 1..count {
        nodes.push(Node::start(&url, Some(&owner), &[]).unwrap());
    }
    (nodes, url)
}

/// `server users ARGS… --database-url URL --data-dir DIR`: its stdout.
pub fn users_command(url: &str, data_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--database-url", url]);
    crate::users_command(data_dir, &all)
}
