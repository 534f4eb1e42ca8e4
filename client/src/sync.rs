//! Best-effort delivery of decided commands to the server (`POST /api/commands`).
//!
//! The walking skeleton decides everything locally first; this module then
//! offers each command envelope to the server, in order, one at a time. A
//! server without the endpoint, or no server at all, leaves the session
//! local-only and keeps the unsent commands for the next attempt. The full
//! offline-first sync (IndexedDB outbox, SSE, rebase on conflict) replaces
//! this in issue 5.

use gloo_net::http::Request;
use serde::Deserialize;
use shared_domain::{CommandEnvelope, SessionCommand};

/// How the server answered the latest delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStatus {
    /// Nothing sent yet.
    Idle,
    /// Commands are on their way.
    Sending { queued: usize },
    /// The server accepted every command so far; its version of the session.
    Synced { version: u64 },
    /// The server cannot take commands now (absent, or lacking the endpoint).
    LocalOnly { reason: String, queued: usize },
    /// The server refused a command; the problem it sent.
    Rejected {
        status: u16,
        detail: String,
        error_id: Option<String>,
    },
}

/// The outcome of offering one envelope to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Accepted {
        version: u64,
    },
    Unreachable(String),
    Rejected {
        status: u16,
        detail: String,
        error_id: Option<String>,
    },
}

#[derive(Deserialize)]
struct Accepted {
    version: u64,
}

#[derive(Deserialize, Default)]
struct Problem {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    error_id: Option<String>,
}

/// Sends one command envelope and classifies the answer.
pub async fn deliver(envelope: &CommandEnvelope<SessionCommand>) -> Delivery {
    let request = match Request::post("/api/commands").json(&envelope.to_json()) {
        Ok(request) => request,
        Err(e) => return Delivery::Unreachable(format!("could not encode the command: {e}")),
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Delivery::Unreachable(format!("server unreachable: {e}")),
    };
    let status = response.status();
    if response.ok() {
        return match response.json::<Accepted>().await {
            Ok(accepted) => Delivery::Accepted {
                version: accepted.version,
            },
            Err(e) => Delivery::Unreachable(format!("unexpected answer from the server: {e}")),
        };
    }
    let problem = response.json::<Problem>().await.unwrap_or_default();
    // 404/405: this server has no command endpoint yet; 5xx: it is unwell. Keep the command.
    if matches!(status, 404 | 405) || status >= 500 {
        return Delivery::Unreachable(format!(
            "server answered {status} {}",
            problem.title.unwrap_or_default()
        ));
    }
    Delivery::Rejected {
        status,
        detail: problem
            .detail
            .or(problem.title)
            .unwrap_or_else(|| format!("HTTP {status}")),
        error_id: problem.error_id,
    }
}
