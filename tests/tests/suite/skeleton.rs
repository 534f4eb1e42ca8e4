//! The walking skeleton: the real binary starts, reports health, serves the client.

use sextant_tests::ServerProcess;

#[tokio::test]
async fn server_binary_reports_health_with_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).unwrap();
    let body: serde_json::Value = sextant_tests::get(&format!("{}/api/health", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let missing = sextant_tests::get(&format!("{}/api/nope", server.url()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = missing.json().await.unwrap();
    assert!(problem["error_id"].as_str().is_some());
    let error_id = problem["error_id"].as_str().unwrap();
    assert!(
        server.log_eventually_contains(error_id, std::time::Duration::from_secs(5)),
        "error id {error_id} not in the server log"
    );
    let status = server.stop().unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}
