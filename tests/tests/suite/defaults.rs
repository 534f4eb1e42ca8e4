//! The README's defaults, run the way a newcomer runs them: the binary's own
//! flags only, a relative data directory, a working directory of its own
//! (never the repository's `./data`), and the suite runs the server built
//! from the code under test.

use std::path::Path;
use std::time::SystemTime;

use serde_json::json;
use sextant_tests::ServerProcess;

use crate::query::{page, run_to_end, session_on};
use crate::sync_client::Api;

/// `cargo xtask dev` runs `server --bind 127.0.0.1:8080 --data-dir data
/// --static-dir <repo>/dist` from the repository root; here the port is
/// ephemeral and the working directory a fresh temporary one.
#[tokio::test]
async fn the_readme_defaults_run_a_query_on_the_demo_dataset() {
    let work = tempfile::tempdir().unwrap();
    let dist = sextant_tests::browser::dist_dir();
    let dist = dist.to_str().unwrap();
    let server = ServerProcess::start_as_user(
        work.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--static-dir",
            dist,
        ],
        &work.path().join("data"),
    )
    .unwrap();
    let api = Api::new(server.url());

    // The page a newcomer opens.
    let (status, _, body) = api.get_raw("/", None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("<html"));

    let (status, body) = api.get("/api/datasets").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["datasets"][0]["name"],
        "demo",
        "the demo dataset is listed; server log:\n{}",
        server.log()
    );
    assert!(
        work.path().join("data/datasets/demo.parquet").is_file(),
        "the relative data dir lives in the working directory"
    );

    let (session, _) = session_on(&api, "demo").await;
    let (query_id, record) = run_to_end(&api, session, "SELECT count(*) AS trips FROM demo").await;
    assert_eq!(
        record["state"],
        "completed",
        "{record}; server log:\n{}",
        server.log()
    );
    let (status, result) = page(&api, query_id, "").await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        result["rows"],
        json!([[server::query::DEFAULT_DEMO_ROWS]]),
        "the default demo has the documented size"
    );
}

/// The binary the suite starts is at least as new as every source it is
/// built from, so an edit to the server is what the next `cargo test` runs.
#[test]
fn the_suite_runs_a_server_built_from_the_current_sources() {
    let binary = sextant_tests::server_binary();
    let built = modified(&binary);
    let root = sextant_tests::repo_root();
    let mut newest = (SystemTime::UNIX_EPOCH, root.clone());
    for dir in ["server/src", "shared-domain/src", "migrations"] {
        newest_source(&root.join(dir), &mut newest);
    }
    for file in [
        "server/build.rs",
        "server/Cargo.toml",
        "shared-domain/Cargo.toml",
    ] {
        let path = root.join(file);
        if path.exists() && modified(&path) > newest.0 {
            newest = (modified(&path), path);
        }
    }
    assert!(
        built >= newest.0,
        "{} is older than {}: the suite would test a stale server",
        binary.display(),
        newest.1.display()
    );
    let version = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("server {}", env!("CARGO_PKG_VERSION"))
    );
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn newest_source(dir: &Path, newest: &mut (SystemTime, std::path::PathBuf)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            newest_source(&path, newest);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "sql")
        ) && modified(&path) > newest.0
        {
            *newest = (modified(&path), path);
        }
    }
}
