//! A fuzz campaign against a real server process: generated requests
//! (methods, paths, headers, credentials, hosts, origins, bodies with
//! envelopes, commands, unicode, huge numbers and deep JSON) from a seeded
//! generator. Every answer must be below 500, the server must not panic,
//! and no refused request may append anything. CI runs a few hundred cases;
//! `SEXTANT_FUZZ_CASES=100000` (or `cargo xtask bench`) runs a campaign.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sextant_tests::ServerProcess;
use uuid::Uuid;

use crate::sync_client::{create, envelope, Api};

/// A small deterministic generator (xorshift64*), so a failing case can be
/// replayed from its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const STRINGS: &[&str] = &[
    "",
    " ",
    "Revenue",
    "ünïcödé ✓ 漢字 🚀",
    "\u{0}",
    "\u{202e}evil",
    "'; DROP TABLE events; --",
    "../../etc/passwd",
    "%00",
    "<script>alert(1)</script>",
    "SELECT 1",
    "bob",
    "owner",
    "viewer",
    "editor",
];

struct World {
    owner_session: Uuid,
    bob_session: Uuid,
    owner_token: String,
    bob_token: String,
}

fn string(g: &mut Gen) -> Value {
    if g.chance(5) {
        // Longer than any limit.
        return json!("x".repeat(g.pick(&[201usize, 100_001, 300_000]).to_owned()));
    }
    json!(*g.pick(STRINGS))
}

fn number(g: &mut Gen) -> Value {
    match g.below(6) {
        0 => json!(u64::MAX),
        1 => json!(-1),
        2 => json!(1.5e300),
        3 => serde_json::from_str("1e400").unwrap_or(json!(0)),
        4 => json!(i64::MIN),
        _ => json!(g.below(5)),
    }
}

fn deep(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn any_value(g: &mut Gen, world: &World) -> Value {
    match g.below(8) {
        0 => string(g),
        1 => number(g),
        2 => json!(null),
        3 => json!(true),
        4 => json!([string(g), number(g)]),
        5 => json!({"type": string(g)}),
        6 => json!(world.owner_session),
        _ => json!(Uuid::new_v4()),
    }
}

fn command(g: &mut Gen, world: &World) -> Value {
    let kinds = [
        "CreateSession",
        "RenameSession",
        "AttachDataset",
        "SubmitQuery",
        "StartQuery",
        "CompleteQuery",
        "FailQuery",
        "CancelQuery",
        "CloseSession",
        "ShareSession",
        "UnshareSession",
        "Explode",
    ];
    let mut command = json!({ "type": g.pick(&kinds) });
    let fields = [
        "title",
        "dataset",
        "query_id",
        "sql",
        "engine",
        "row_count",
        "columns",
        "elapsed_ms",
        "error_id",
        "message",
        "user",
        "role",
        "actor",
    ];
    for _ in 0..g.below(5) {
        let field = *g.pick(&fields);
        let value = match field {
            // Not "server": the executor would append asynchronously, and
            // this campaign checks that refused requests append nothing.
            "engine" => json!(g.pick(&["local", "local", "quantum"])),
            "role" => json!(g.pick(&["viewer", "editor", "owner", "admin"])),
            "user" => json!(g.pick(&["bob", "owner", "nobody", ""])),
            "dataset" => {
                json!({"kind": g.pick(&["server", "local", "url"]), "name": string(g), "url": string(g), "size_bytes": number(g)})
            }
            "query_id" | "error_id" => json!(Uuid::new_v4()),
            _ => any_value(g, world),
        };
        command[field] = value;
    }
    command
}

fn envelope_value(g: &mut Gen, world: &World) -> Value {
    let aggregate = match g.below(4) {
        0 => json!(world.owner_session),
        1 => json!(world.bob_session),
        2 => json!(Uuid::new_v4()),
        _ => any_value(g, world),
    };
    let mut envelope = json!({
        "command_id": if g.chance(90) { json!(Uuid::new_v4()) } else { any_value(g, world) },
        "aggregate_type": if g.chance(90) { json!("QuerySession") } else { string(g) },
        "aggregate_id": aggregate,
        "expected_version": if g.chance(70) { json!(g.below(4)) } else { number(g) },
        "command": command(g, world),
    });
    if g.chance(10) {
        envelope["actor"] = json!(world.owner_session);
    }
    if g.chance(5) {
        envelope.as_object_mut().unwrap().remove("command_id");
    }
    envelope
}

/// One generated request: method, path, headers, body.
struct Case {
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    changes_state: bool,
}

fn case(g: &mut Gen, world: &World) -> Case {
    let methods = [
        "GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
    ];
    let method: reqwest::Method = g.pick(&methods).parse().unwrap();
    let junk = ["%", "%ff", "ü", "..", "%2e%2e", "a b", "{id}", ""];
    let path = match g.below(12) {
        0..=2 => "/api/commands".to_owned(),
        3 => "/api/commands/batch".to_owned(),
        4 => format!(
            "/api/sessions/{}",
            g.pick(&[world.owner_session, world.bob_session, Uuid::new_v4()])
        ),
        5 => format!(
            "/api/aggregates/{}/{}/events?after_version={}",
            g.pick(&["QuerySession", "Nope"]),
            g.pick(&[world.owner_session.to_string(), "x".into()]),
            g.pick(&["0", "-1", "18446744073709551616", "x"])
        ),
        6 => format!(
            "/api/events?after={}",
            g.pick(&["x", "-1", "99999999999999999999"])
        ),
        // Never the owner: the campaign observes the store as the owner.
        7 => format!("/api/users/{}", g.pick(&["bob", "nobody", "%00", "ü"])),
        8 => "/api/users".to_owned(),
        9 => format!(
            "/api/queries/{}/result?limit={}",
            Uuid::new_v4(),
            g.pick(&["1", "x", "99999999999"])
        ),
        10 => format!("/api/datasets/{}/download", g.pick(&junk)),
        _ => format!(
            "/{}/{}?token={}",
            g.pick(&junk),
            g.pick(&junk),
            g.pick(&["x", ""])
        ),
    };
    let mut headers = Vec::new();
    match g.below(6) {
        0 => {}
        1 => headers.push((
            "authorization".into(),
            format!("Bearer {}", world.bob_token),
        )),
        2 => headers.push(("authorization".into(), "Bearer ünïcödé".into())),
        3 => headers.push(("authorization".into(), "Basic Ym9iOmJvYg==".into())),
        4 => headers.push((
            "cookie".into(),
            format!("sextant_token={}; x=y", world.owner_token),
        )),
        _ => headers.push((
            "authorization".into(),
            format!("Bearer {}", world.owner_token),
        )),
    }
    if g.chance(15) {
        headers.push((
            "host".into(),
            g.pick(&["attacker.example", "localhost:1", "[::1]", "x:y:z", ""])
                .to_string(),
        ));
    }
    if g.chance(15) {
        headers.push((
            "origin".into(),
            g.pick(&[
                "http://attacker.example",
                "null",
                "http://localhost:3",
                "garbage",
            ])
            .to_string(),
        ));
    }
    if g.chance(85) {
        headers.push((
            "content-type".into(),
            g.pick(&[
                "application/json",
                "application/json",
                "text/plain",
                "application/problem+json",
            ])
            .to_string(),
        ));
    }
    if g.chance(10) {
        headers.push((
            "last-event-id".into(),
            g.pick(&["x", "-5", "ü"]).to_string(),
        ));
    }
    let body = match g.below(10) {
        0 => None,
        1 => Some(deep(g.pick(&[64usize, 200, 5000]).to_owned())),
        2 => Some(g.pick(&["{", "null", "[]", "\"\"", "{\"commands\": 5}", "\u{feff}{}"]).to_string()),
        3 => Some(json!({"commands": (0..g.below(4)).map(|_| envelope_value(g, world)).collect::<Vec<_>>()}).to_string()),
        4 => Some(json!({"name": string(g), "admin": any_value(g, world)}).to_string()),
        _ => Some(envelope_value(g, world).to_string()),
    };
    let changes_state = method == reqwest::Method::POST || method == reqwest::Method::DELETE;
    Case {
        method,
        path,
        headers,
        body,
        changes_state,
    }
}

async fn global_sequence(owner: &Api) -> u64 {
    let (status, body) = owner.get("/api/sessions").await;
    assert_eq!(status, 200, "{body}");
    body["global_sequence"].as_u64().unwrap()
}

#[tokio::test]
async fn generated_requests_never_get_a_5xx_panic_or_a_refused_append() {
    let cases: usize = std::env::var("SEXTANT_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("SEXTANT_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x05EC_7A57);
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--no-demo",
            "--rate-limit",
            "1000000",
            "--query-rate-limit",
            "1000000",
            "--query-burst",
            "1000000",
        ],
    )
    .unwrap();
    let owner = Api::new(server.url());
    let bob_token = server.add_user("bob").unwrap();
    // Wait until the server knows bob (it re-reads users every 250 ms).
    let bob = Api::with_token(server.url(), &bob_token);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bob.get("/api/me").await.0 != 200 {
        assert!(Instant::now() < deadline, "bob never became known");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let world = World {
        owner_session: Uuid::new_v4(),
        bob_session: Uuid::new_v4(),
        owner_token: server.token.clone(),
        bob_token,
    };
    owner
        .accept(&envelope(world.owner_session, 0, create("owner's")))
        .await;
    bob.accept(&envelope(world.bob_session, 0, create("bob's")))
        .await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut g = Gen(seed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let started = Instant::now();
    for index in 0..cases {
        let case = case(&mut g, &world);
        let before = if case.changes_state {
            Some(global_sequence(&owner).await)
        } else {
            None
        };
        let mut request = http.request(
            case.method.clone(),
            format!("{}{}", server.url(), case.path),
        );
        for (name, value) in &case.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(body) = &case.body {
            request = request.body(body.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            // A stream that stays open (a valid /api/events) ends by timeout.
            Err(error) if error.is_timeout() => continue,
            // reqwest itself refuses some header values; nothing was sent.
            Err(error) if error.is_builder() => continue,
            // hyper's HTTP/1 parser closes the connection on a header it
            // will not read (raw UTF-8 in `Last-Event-ID`): no handler ran.
            // Counted as status 0; the server must still be healthy.
            Err(error) if error.is_request() => {
                *statuses.entry(0).or_default() += 1;
                assert_eq!(
                    owner.get("/api/health").await.0,
                    200,
                    "case {index}: still healthy"
                );
                continue;
            }
            Err(error) => panic!(
                "case {index} (seed {seed}): {error:?}: {} {} {:?} {:?}",
                case.method,
                case.path,
                case.headers,
                case.body
                    .as_deref()
                    .map(|b| b.chars().take(300).collect::<String>())
            ),
        };
        let status = response.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        let body = if case.path == "/api/events" || case.path.starts_with("/api/events?") {
            String::new()
        } else {
            tokio::time::timeout(Duration::from_secs(5), response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        assert!(
            status < 500,
            "case {index} (seed {seed}): {} {} {:?} {:?} -> {status} {body}",
            case.method,
            case.path,
            case.headers,
            case.body
                .as_deref()
                .map(|b| b.chars().take(300).collect::<String>())
        );
        if let Some(before) = before {
            let refused = status >= 400;
            let whole_batch_refused =
                case.path == "/api/commands/batch" && !body.contains("\"status\":200");
            if refused || whole_batch_refused {
                let after = global_sequence(&owner).await;
                assert_eq!(
                    before, after,
                    "case {index} (seed {seed}): a refused request appended events: {} {} -> {status} {body}",
                    case.method, case.path
                );
            }
        }
    }
    let elapsed = started.elapsed();
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    assert_eq!(owner.get("/api/health").await.0, 200, "still healthy");
    eprintln!(
        "fuzz: {cases} cases (seed {seed}) in {:.1} s, statuses {statuses:?}",
        elapsed.as_secs_f64()
    );
}
