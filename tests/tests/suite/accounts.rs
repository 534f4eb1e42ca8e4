//! Accounts, sharing and exposure against real server processes: the first
//! start's owner, tokens and cookies, the `users` commands beside a running
//! server, the admin API, Host and Origin checks, TLS, two users with
//! viewer and editor roles, forged actors, replayed command ids, feed
//! filtering and revocation while streaming.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{create, envelope, rename, Api};

/// How long the running server may take to notice `server users …` (it
/// re-reads the users every 250 ms; the contract says within a second).
const NOTICE: Duration = Duration::from_secs(1);

fn start() -> (tempfile::TempDir, ServerProcess, Api) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--no-demo"]).unwrap();
    let api = Api::new(server.url());
    (dir, server, api)
}

/// Polls `GET /api/me` with `token` until it answers `status`; the time it took.
async fn wait_for_status(server: &ServerProcess, token: &str, status: u16) -> Duration {
    let api = Api::with_token(server.url(), token);
    let started = Instant::now();
    loop {
        let (got, _) = api.get("/api/me").await;
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "GET /api/me never answered {status} (last {got})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_first_start_creates_owner_with_a_private_token_kept_across_restarts() {
    let (_dir, server, api) = start();
    let path = server.data_dir.join("owner.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner.token must be private");
    }
    assert!(server.log().contains(&format!(
        "Sextant listening on http://{}/?token={}",
        server.addr, server.token
    )));
    let (status, me) = api.get("/api/me").await;
    assert_eq!(
        (status, me["name"].as_str(), me["admin"].as_bool()),
        (200, Some("owner"), Some(true))
    );
    let token = server.token.clone();
    let server = server.restart().unwrap();
    assert_eq!(server.token, token, "the owner keeps its token");
    let listed = server.users(&["list"]).unwrap();
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("owner ")).count(),
        1,
        "{listed}"
    );
}

#[tokio::test]
async fn every_api_route_but_health_needs_credentials() {
    let (_dir, server, _api) = start();
    let anonymous = Api::anonymous(server.url());
    let (status, health) = anonymous.get("/api/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    for path in [
        "/api/sessions",
        "/api/events",
        "/api/datasets",
        "/api/me",
        "/api/nope",
    ] {
        let response = reqwest::get(format!("{}{path}", server.url()))
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.unwrap();
        assert!(
            Uuid::parse_str(body["error_id"].as_str().unwrap()).is_ok(),
            "{body}"
        );
    }
    let (status, _) = anonymous
        .command(&envelope(Uuid::new_v4(), 0, create("x")))
        .await;
    assert_eq!(status, 401);
    let (status, _) = Api::with_token(server.url(), "not-a-token")
        .get("/api/sessions")
        .await;
    assert_eq!(status, 401);
    // The login cookie is the other way in.
    let response = reqwest::Client::new()
        .get(format!("{}/api/sessions", server.url()))
        .header("cookie", format!("sextant_token={}", server.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_sign_in_link_sets_a_strict_http_only_cookie_and_drops_the_token() {
    let (_dir, server, _api) = start();
    let client = no_redirects();
    let response = client
        .get(format!(
            "{}/sessions/abc?x=1&token={}&y=2",
            server.url(),
            server.token
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/sessions/abc?x=1&y=2");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with(&format!("sextant_token={};", server.token)),
        "{cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: {cookie}"
    );

    // The redirect never leaves the site, whatever the path looks like.
    let response = client
        .get(format!(
            "{}//attacker.example/?token={}",
            server.url(),
            server.token
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/attacker.example/");

    // A wrong token sets nothing.
    let response = client
        .get(format!("{}/?token=wrong", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(!response.headers().contains_key("set-cookie"));
}

#[tokio::test]
async fn users_added_and_revoked_beside_a_running_server_take_effect_within_a_second() {
    let (_dir, server, _api) = start();
    let out = server.users(&["add", "bob"]).unwrap();
    let token = out.lines().last().unwrap().to_owned();
    assert!(token.len() >= 43, "a 256-bit token: {out}");
    let noticed = wait_for_status(&server, &token, 200).await;
    assert!(
        noticed < NOTICE,
        "the server noticed a new user after {noticed:?}"
    );
    let bob = Api::with_token(server.url(), &token);
    let (_, me) = bob.get("/api/me").await;
    assert_eq!(
        (me["name"].as_str(), me["admin"].as_bool()),
        (Some("bob"), Some(false))
    );

    let listed = server.users(&["list"]).unwrap();
    assert!(listed.lines().any(|l| l.starts_with("bob ")), "{listed}");
    assert!(!listed.contains(&token), "tokens are never shown again");
    // Names are unique among active users.
    assert!(server.users(&["add", "bob"]).is_err());

    let mut stream = bob.sse(None, "").await;
    server.users(&["revoke", "bob"]).unwrap();
    let noticed = wait_for_status(&server, &token, 401).await;
    assert!(
        noticed < NOTICE,
        "the server noticed a revocation after {noticed:?}"
    );
    assert!(
        stream.ends_within(Duration::from_secs(5)).await,
        "the revoked user's stream ends"
    );

    // A user re-added under the old name is someone else.
    let again = server.add_user("bob").unwrap();
    wait_for_status(&server, &again, 200).await;
    let (_, me_again) = Api::with_token(server.url(), &again).get("/api/me").await;
    assert_ne!(me_again["id"], me["id"]);
}

#[tokio::test]
async fn only_admins_manage_users_over_the_api_and_revocation_is_immediate() {
    let (_dir, server, owner) = start();
    let (status, body) = owner.post("/api/users", &json!({"name": "carol"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "carol");
    let carol_token = body["token"].as_str().unwrap().to_owned();
    let carol = Api::with_token(server.url(), &carol_token);
    assert_eq!(carol.get("/api/me").await.0, 200, "known at once");

    let (status, body) = carol.post("/api/users", &json!({"name": "mallory"})).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = owner.post("/api/users", &json!({"name": "carol"})).await;
    assert_eq!(status, 409);
    let (status, _) = owner
        .post("/api/users", &json!({"name": "no spaces"}))
        .await;
    assert_eq!(status, 400);

    let mut stream = carol.sse(None, "").await;
    let response = carol
        .http
        .delete(format!("{}/api/users/owner", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = owner
        .http
        .delete(format!("{}/api/users/carol", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(carol.get("/api/me").await.0, 401, "revoked at once");
    assert!(stream.ends_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &["--no-demo", "--public-host", "sextant.example"],
    )
    .unwrap();
    let api = Api::new(server.url());
    let http = server.client();
    // DNS rebinding: a stranger's name pointing at us.
    let api_sessions = format!("{}/api/sessions", server.url());
    let app = format!("{}/", server.url());
    for host in [
        "attacker.example",
        "attacker.example:80",
        "127.0.0.1.attacker.example",
    ] {
        let status = status_of(http.get(&api_sessions).header("host", host)).await;
        assert_eq!(status, 421, "{host}");
        let status = status_of(http.get(&app).header("host", host)).await;
        assert_eq!(status, 421, "the app itself too: {host}");
    }
    for host in [
        "localhost:1234",
        "sextant.example",
        "SEXTANT.example:8443",
        "[::1]:80",
    ] {
        let status = status_of(http.get(&api_sessions).header("host", host)).await;
        assert_eq!(status, 200, "{host}");
    }

    // CSRF: a state change from another site's page.
    let session = Uuid::new_v4();
    for origin in [
        "http://attacker.example",
        "null",
        "http://localhost.attacker.example:8080",
    ] {
        let post = http
            .post(format!("{}/api/commands", server.url()))
            .header("origin", origin)
            .json(&envelope(session, 0, create("csrf")));
        assert_eq!(status_of(post).await, 403, "{origin}");
    }
    let (status, _) = api.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 404, "nothing was appended");
    // Our own origins, on any port (trunk serve, relays).
    let post = http
        .post(format!("{}/api/commands", server.url()))
        .header("origin", "http://127.0.0.1:8081")
        .json(&envelope(session, 0, create("same site")));
    assert_eq!(status_of(post).await, 200);
}

/// Sends `request` and returns its status code.
async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn off_loopback_needs_tls_or_an_explicit_allowance_and_tls_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new(sextant_tests::server_binary())
        .args(["--bind", "0.0.0.0:0", "--no-demo", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--tls-cert") && stderr.contains("--allow-remote"),
        "{stderr}"
    );

    // A self-signed certificate for localhost, made by openssl.
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(sextant_tests::server_binary())
        .args(["--bind", "127.0.0.1:0", "--no-demo", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find(|l| l.starts_with("Sextant listening on "))
        .unwrap();
    let url = line
        .strip_prefix("Sextant listening on ")
        .unwrap()
        .to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let port = url
        .trim_start_matches("https://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let token = std::fs::read_to_string(data.join("owner.token")).unwrap();
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .expect("curl is installed")
    };
    let me = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", token.trim()),
        &format!("https://localhost:{port}/api/me"),
    ]);
    let _ = child.kill();
    let _ = child.wait();
    let body: Value = serde_json::from_slice(&me.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&me.stderr)));
    assert_eq!(body["name"], "owner");
}

/// Adds `name` over the admin API; returns a client signed in as it.
async fn add_user(server: &ServerProcess, owner: &Api, name: &str) -> (Api, String) {
    let (status, body) = owner.post("/api/users", &json!({ "name": name })).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    (Api::with_token(server.url(), &token), token)
}

fn share(user: &str, role: &str) -> Value {
    json!({"type": "ShareSession", "user": user, "role": role})
}

fn unshare(user: &str) -> Value {
    json!({"type": "UnshareSession", "user": user})
}

fn listed(sessions: &Value) -> Vec<String> {
    sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn viewers_read_editors_edit_and_strangers_learn_nothing() {
    let (_dir, server, owner) = start();
    let (bob, _) = add_user(&server, &owner, "bob").await;
    let session = Uuid::new_v4();
    owner.accept(&envelope(session, 0, create("Revenue"))).await;

    // A stranger: not listed, 404 everywhere, and commands 404 too.
    assert!(listed(&bob.get("/api/sessions").await.1).is_empty());
    assert_eq!(bob.get(&format!("/api/sessions/{session}")).await.0, 404);
    assert_eq!(
        bob.get(&format!("/api/aggregates/QuerySession/{session}/events"))
            .await
            .0,
        404
    );
    let (status, body) = bob.command(&envelope(session, 1, rename("mine"))).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        !body.to_string().contains("version"),
        "no version leaks: {body}"
    );
    // An unknown session looks the same.
    assert_eq!(
        bob.command(&envelope(Uuid::new_v4(), 1, rename("x")))
            .await
            .0,
        404
    );

    // Viewer: reads, may not change.
    let shared = owner
        .accept(&envelope(session, 1, share("bob", "viewer")))
        .await;
    assert_eq!(shared["events"][0]["event_type"], "SessionShared");
    assert_eq!(shared["events"][0]["payload"]["name"], "bob");
    assert_eq!(
        listed(&bob.get("/api/sessions").await.1),
        vec![session.to_string()]
    );
    let (status, view) = bob.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["members"][0]["role"], "viewer");
    assert_eq!(bob.session_events(session).await.len(), 2);
    let (status, body) = bob.command(&envelope(session, 2, rename("mine"))).await;
    assert_eq!(status, 403, "{body}");

    // Editor: renames and submits, may not close or share.
    owner
        .accept(&envelope(session, 2, share("bob", "editor")))
        .await;
    bob.accept(&envelope(session, 3, rename("Revenue, Q3")))
        .await;
    let submit = json!({"type": "SubmitQuery", "query_id": Uuid::new_v4(), "sql": "SELECT 1", "engine": "local"});
    bob.accept(&envelope(session, 4, submit)).await;
    assert_eq!(
        bob.command(&envelope(session, 5, json!({"type": "CloseSession"})))
            .await
            .0,
        403
    );
    assert_eq!(
        bob.command(&envelope(session, 5, share("owner", "viewer")))
            .await
            .0,
        403
    );
    // The owner cannot be given a share, nor can "owner" be a shared role.
    assert_eq!(
        owner
            .command(&envelope(session, 5, share("bob", "owner")))
            .await
            .0,
        422
    );
    assert_eq!(
        owner
            .command(&envelope(session, 5, share("nobody", "viewer")))
            .await
            .0,
        422
    );

    // Unshared: gone again.
    owner.accept(&envelope(session, 5, unshare("bob"))).await;
    assert!(listed(&bob.get("/api/sessions").await.1).is_empty());
    assert_eq!(bob.get(&format!("/api/sessions/{session}")).await.0, 404);
    // Admins are not readers: the owner's own list shows only its sessions.
    let bobs = Uuid::new_v4();
    bob.accept(&envelope(bobs, 0, create("bob's"))).await;
    assert_eq!(
        listed(&owner.get("/api/sessions").await.1),
        vec![session.to_string()]
    );
    assert_eq!(owner.get(&format!("/api/sessions/{bobs}")).await.0, 404);
}

#[tokio::test]
async fn forged_actors_are_ignored_and_replayed_command_ids_reveal_nothing() {
    let (_dir, server, owner) = start();
    let (bob, _) = add_user(&server, &owner, "bob").await;
    let (_, me) = owner.get("/api/me").await;
    let session = Uuid::new_v4();
    let created = envelope(session, 0, create("private"));
    owner.accept(&created).await;

    // Claiming to be the owner in the envelope changes nothing.
    let mut forged = envelope(session, 1, rename("pwned"));
    forged["actor"] = me["id"].clone();
    let (status, body) = bob.command(&forged).await;
    assert!(status == 404 || status == 400, "{status} {body}");
    let mut forged_create = envelope(Uuid::new_v4(), 0, create("as owner"));
    forged_create["actor"] = me["id"].clone();
    let (status, body) = bob.command(&forged_create).await;
    if status == 200 {
        let id = forged_create["aggregate_id"].as_str().unwrap();
        let (_, view) = bob.get(&format!("/api/sessions/{id}")).await;
        assert_ne!(
            view["owner"], me["id"],
            "the session belongs to bob, not the forged actor"
        );
    } else {
        assert_eq!(status, 400, "{body}");
    }

    // Replaying the owner's command id: refused, without its events.
    let (status, body) = bob.command(&created).await;
    assert_eq!(status, 422, "{body}");
    assert!(!body.to_string().contains("private"), "{body}");
    assert!(body.get("events").is_none());
    // The owner's own resend is still answered from the record.
    let again = owner.accept(&created).await;
    assert_eq!(again["events"][0]["payload"]["title"], "private");
}

#[tokio::test]
async fn the_feed_carries_only_readable_sessions_and_shares_arrive_live() {
    let (_dir, server, owner) = start();
    let (bob, _) = add_user(&server, &owner, "bob").await;
    let mine = Uuid::new_v4();
    bob.accept(&envelope(mine, 0, create("bob's own"))).await;
    let mut feed = bob.sse(None, "").await;
    let wait = Duration::from_secs(10);
    let first = feed.next_event(wait).await.unwrap().json();
    assert_eq!(first["aggregate_id"], json!(mine));

    let hidden = Uuid::new_v4();
    owner.accept(&envelope(hidden, 0, create("hidden"))).await;
    owner
        .accept(&envelope(hidden, 1, rename("still hidden")))
        .await;
    let session = Uuid::new_v4();
    owner
        .accept(&envelope(session, 0, create("to share")))
        .await;
    owner
        .accept(&envelope(session, 1, share("bob", "viewer")))
        .await;
    // Without a reconnect: the share itself arrives first, nothing of `hidden`.
    let shared = feed.next_event(wait).await.unwrap().json();
    assert_eq!(shared["event_type"], "SessionShared", "{shared}");
    assert_eq!(shared["aggregate_id"], json!(session));
    owner
        .accept(&envelope(session, 2, rename("shared, renamed")))
        .await;
    let renamed = feed.next_event(wait).await.unwrap().json();
    assert_eq!(renamed["event_type"], "SessionRenamed");
    owner.accept(&envelope(session, 3, unshare("bob"))).await;
    let unshared = feed.next_event(wait).await.unwrap().json();
    assert_eq!(unshared["event_type"], "SessionUnshared");
    owner
        .accept(&envelope(session, 4, rename("after unshare")))
        .await;
    owner
        .accept(&envelope(hidden, 2, rename("hidden again")))
        .await;
    bob.accept(&envelope(mine, 1, rename("bob's, renamed")))
        .await;
    let next = feed.next_event(wait).await.unwrap().json();
    assert_eq!(
        next["aggregate_id"],
        json!(mine),
        "only bob's own session: {next}"
    );

    // A replay from the start is filtered the same way.
    let mut replay = bob.sse(Some(0), "").await;
    let mut seen = Vec::new();
    while let Some(frame) = replay.next_event(Duration::from_millis(800)).await {
        seen.push(frame.json());
    }
    assert!(
        seen.iter().all(|e| e["aggregate_id"] != json!(hidden)),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| e["event_type"] == "SessionUnshared"));
}

#[tokio::test]
async fn rates_and_stream_caps_answer_429_with_retry_after_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--no-demo",
            "--rate-limit",
            "5",
            "--query-rate-limit",
            "1",
            "--query-burst",
            "2",
            "--sse-per-user",
            "1",
        ],
    )
    .unwrap();
    let api = Api::new(server.url());
    // Requests: a burst of 10, then 429 with Retry-After.
    let mut limited = None;
    for _ in 0..30 {
        let response = api
            .http
            .get(format!("{}/api/me", server.url()))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the request rate is limited");
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = limited.json().await.unwrap();
    assert!(body["error_id"].is_string(), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Query submissions have their own, lower limit.
    let session = Uuid::new_v4();
    api.accept(&envelope(session, 0, create("q"))).await;
    let submit = || json!({"type": "SubmitQuery", "query_id": Uuid::new_v4(), "sql": "SELECT 1", "engine": "local"});
    let cancel_last = |events: &Value| json!({"type": "CancelQuery", "query_id": events["events"][0]["payload"]["query_id"]});
    let first = api.accept(&envelope(session, 1, submit())).await;
    api.accept(&envelope(session, 2, cancel_last(&first))).await;
    let second = api.accept(&envelope(session, 3, submit())).await;
    api.accept(&envelope(session, 4, cancel_last(&second)))
        .await;
    let (status, body) = api.command(&envelope(session, 5, submit())).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        api.session_events(session).await.len(),
        5,
        "nothing appended"
    );

    // Streams: one per user here.
    let _open = api.sse(None, "").await;
    let second_stream = api
        .http
        .get(format!("{}/api/events", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(second_stream.status(), 429);
}

#[tokio::test]
async fn the_default_limits_let_a_browser_resync_1000_pending_commands_at_once() {
    let (_dir, server, api) = start();
    // Two batches of 500, as the client sends them: 500 sessions, each
    // created and given a local query.
    let sessions: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
    let mut commands = Vec::new();
    for session in &sessions {
        commands.push(envelope(*session, 0, create("resync")));
        commands.push(envelope(
            *session,
            1,
            json!({"type": "SubmitQuery", "query_id": Uuid::new_v4(), "sql": "SELECT 1", "engine": "local"}),
        ));
    }
    let started = Instant::now();
    for batch in commands.chunks(500) {
        let (status, body) = api
            .post("/api/commands/batch", &json!({ "commands": batch }))
            .await;
        assert_eq!(status, 200, "{body}");
        for result in body["results"].as_array().unwrap() {
            assert_eq!(result["status"], 200, "{result}");
        }
    }
    eprintln!(
        "1000 pending commands resynced in {:?} (not asserted)",
        started.elapsed()
    );
    let _ = server;
}

/// A server serving the built app, with a second user `bob` (signed in
/// already): its data dir, the server and bob's token.
async fn start_with_app_and_bob() -> (tempfile::TempDir, ServerProcess, String) {
    let data = tempfile::tempdir().unwrap();
    let dist = sextant_tests::browser::dist_dir();
    let server = ServerProcess::start(
        data.path(),
        &["--no-demo", "--static-dir", dist.to_str().unwrap()],
    )
    .unwrap();
    let bob = server.add_user("bob").unwrap();
    wait_for_status(&server, &bob, 200).await;
    (data, server, bob)
}

/// Runs a browser scenario and panics with the profile and the server log
/// when it fails.
async fn in_browser<F, Fut>(server: &ServerProcess, scenario: F)
where
    F: FnOnce(sextant_tests::browser::Browser) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<sextant_tests::browser::Browser>>,
{
    in_browser_returning(server, |b| async move { Ok((scenario(b).await?, ())) }).await
}

#[tokio::test]
async fn sign_in_links_reach_the_server_while_the_service_worker_controls_the_page() {
    use sextant_tests::browser::testid;
    let (_data, server, bob) = start_with_app_and_bob().await;
    let base = server.url();
    in_browser(&server, |b| async move {
        // Signed in as the owner by the fixture; the worker takes control.
        b.goto(&base).await?;
        b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
            .await?;
        // Signed out (as after a revocation or a cleared cookie), then a
        // sign-in link as bob: the worker must let it reach the server.
        b.client.delete_all_cookies().await?;
        b.client
            .goto(&format!("{base}/?from=link&token={bob}"))
            .await?;
        let url = b.client.current_url().await?;
        anyhow::ensure!(
            !url.as_str().contains("token="),
            "the token stayed in the address bar: {url}"
        );
        anyhow::ensure!(
            url.path() == "/" && url.query() == Some("from=link"),
            "redirected to {url}"
        );
        let cookie = b.client.get_named_cookie("sextant_token").await?;
        anyhow::ensure!(cookie.value() == bob, "the cookie is bob's");
        anyhow::ensure!(cookie.http_only() == Some(true), "HttpOnly");
        b.wait_for_attr(&testid("app-ready"), "data-sw", "controlled")
            .await?;
        // The app is signed in: the API answers it.
        let me = b
            .eval_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/api/me').then(r => r.json()).then(done, e => done(String(e)));",
                vec![],
            )
            .await?;
        anyhow::ensure!(me["name"] == "bob", "GET /api/me from the page: {me}");
        Ok(b)
    })
    .await;
}

#[tokio::test]
async fn a_viewer_sees_a_share_appear_live_and_no_rename_controls() {
    use sextant_tests::browser::testid;
    let (_data, server, bob) = start_with_app_and_bob().await;
    let owner = Api::new(server.url());
    let session = Uuid::new_v4();
    owner
        .accept(&envelope(session, 0, create("Shared revenue")))
        .await;
    let base = server.url();
    let share_later = {
        let owner = owner.clone();
        async move {
            owner
                .accept(&envelope(session, 1, share("bob", "viewer")))
                .await;
        }
    };
    in_browser(&server, |b| async move {
        b.sign_in(&base, &bob).await?;
        b.wait_for_text(&testid("signed-in-user"), "bob").await?;
        b.wait_for(&testid("new-session")).await?;
        anyhow::ensure!(
            b.texts(&testid("session-link")).await?.is_empty(),
            "bob sees nothing before the share"
        );
        // Shared while bob's page is open: it appears without a reload.
        share_later.await;
        b.wait_for_text(&testid("session-link"), "Shared revenue").await?;
        b.wait_for_absent(&testid("row-rename")).await?;
        b.wait_for_absent(&testid("row-close")).await?;
        b.click(&testid("session-link")).await?;
        b.wait_for_text(&testid("session-title"), "Shared revenue").await?;
        b.wait_for_text(&testid("my-role"), "viewer").await?;
        b.wait_for_text(&testid("member-name"), "bob").await?;
        b.wait_for_absent(&testid("rename-input")).await?;
        b.wait_for_absent(&testid("close-session")).await?;
        b.wait_for_absent(&testid("share-session")).await?;
        // And the server refuses the rename the page does not offer.
        let answer = b
            .eval_async(
                "const [id, done] = arguments;
                 fetch('/api/commands', {method: 'POST', headers: {'content-type': 'application/json'},
                   body: JSON.stringify({command_id: crypto.randomUUID(), aggregate_type: 'QuerySession',
                     aggregate_id: id, expected_version: 2, command: {type: 'RenameSession', title: 'mine'}})})
                   .then(r => done(r.status), e => done(String(e)));",
                vec![json!(session)],
            )
            .await?;
        anyhow::ensure!(answer == json!(403), "a viewer's rename: {answer}");
        Ok(b)
    })
    .await;
    let (_, view) = owner.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["title"], "Shared revenue");
}

#[tokio::test]
async fn a_request_for_another_users_local_data_is_refused_and_appends_nothing() {
    let (_dir, server, owner) = start();
    let (_, bob_token) = add_user(&server, &owner, "bob").await;
    let (_, me) = owner.get("/api/me").await;
    let owner_id = me["id"].as_str().unwrap().to_owned();
    let session = Uuid::new_v4();
    owner.accept(&envelope(session, 0, create("owner's"))).await;
    let (_, before) = owner.get("/api/sessions").await;
    let http = sextant_tests::client_with_token(&bob_token);

    // A page holding the owner's local data while bob's cookie is current.
    let batch = json!({ "commands": [envelope(Uuid::new_v4(), 0, create("sent as bob"))] });
    let response = http
        .post(format!("{}/api/commands/batch", server.url()))
        .header("x-sextant-user", &owner_id)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["error_id"].is_string(), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("reload"),
        "{problem}"
    );
    for path in [
        format!("/api/events?hello=1&after=0&as_user={owner_id}"),
        format!("/api/aggregates/QuerySession/{session}/events?as_user={owner_id}"),
    ] {
        let status = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{path}");
    }
    let (_, after) = owner.get("/api/sessions").await;
    assert_eq!(before, after, "nothing was appended");

    // Naming the signed-in user itself is fine, and so is naming nobody.
    let (_, bob_me) = Api::with_token(server.url(), &bob_token)
        .get("/api/me")
        .await;
    let response = http
        .post(format!("{}/api/commands/batch", server.url()))
        .header("x-sextant-user", bob_me["id"].as_str().unwrap())
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn local_data_is_per_user_and_pending_work_is_never_sent_as_another_user() {
    use sextant_tests::browser::testid;
    use sextant_tests::proxy::Relay;
    let (_data, server, bob) = start_with_app_and_bob().await;
    let owner = Api::new(server.url());
    let relay = Relay::start(server.addr).await.expect("relay starts");
    let base = relay.url();
    let owner_token = server.token.clone();
    let server_url = server.url();
    let session = in_browser_returning(&server, |b| async move {
        b.goto(&base).await?;
        b.wait_for_text(&testid("signed-in-user"), "owner").await?;
        let session = crate::workbench::create_session(&b, "Owner's draft").await?;
        crate::workbench::wait_synced(&b).await?;
        // Offline, the owner renames: one pending command.
        relay.go_offline();
        b.wait_for_attr(&testid("sync-status"), "data-sync", "offline")
            .await?;
        b.fill(&testid("rename-input"), "Owner's offline rename")
            .await?;
        b.click(&testid("rename-session")).await?;
        b.wait_for_attr(&testid("sync-status"), "data-pending", "1")
            .await?;
        // Meanwhile bob signs in in another tab of this browser.
        let owner_tab = b.client.window().await?;
        let bob_tab = b.client.new_window(true).await?.handle;
        b.client.switch_to_window(bob_tab.clone()).await?;
        b.client
            .goto(&format!("{}/?token={bob}", server_url))
            .await?;
        b.wait_for_text(&testid("signed-in-user"), "bob").await?;
        b.client.close_window().await?;
        b.client.switch_to_window(owner_tab).await?;
        relay.go_online().await?;
        // The page notices bob and reloads into bob's data: nothing of the
        // owner's, on this session's page nor in the list.
        b.wait_for_text(&testid("signed-in-user"), "bob").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        for title in b.texts(&testid("session-title")).await? {
            anyhow::ensure!(!title.contains("Owner"), "bob sees {title:?}");
        }
        b.client.goto(&base).await?;
        b.wait_for(&testid("new-session")).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::ensure!(
            b.texts(&testid("session-link")).await?.is_empty(),
            "bob sees the owner's sessions"
        );
        // The owner signs in again: the pending rename is still there and lands.
        b.client
            .goto(&format!("{base}/?token={owner_token}"))
            .await?;
        b.wait_for_text(&testid("signed-in-user"), "owner").await?;
        crate::workbench::wait_synced(&b).await?;
        Ok((b, session))
    })
    .await;
    let (_, view) = owner.get(&format!("/api/sessions/{session}")).await;
    assert_eq!(view["title"], "Owner's offline rename", "{view}");
    assert!(
        !server.log().contains("not shared with you"),
        "nothing was sent as bob:\n{}",
        server.log()
    );
}

/// [`in_browser`] for a scenario that also returns a value.
async fn in_browser_returning<T, F, Fut>(server: &ServerProcess, scenario: F) -> T
where
    F: FnOnce(sextant_tests::browser::Browser) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(sextant_tests::browser::Browser, T)>>,
{
    let browser = sextant_tests::browser::Browser::launch()
        .await
        .expect("headless Chromium starts");
    let profile = browser.profile_dir().to_path_buf();
    match scenario(browser).await {
        Ok((browser, value)) => {
            let _ = browser.close().await;
            value
        }
        Err(error) => panic!(
            "{error:#}\n(profile {}; server log:\n{})",
            profile.display(),
            server.log()
        ),
    }
}
