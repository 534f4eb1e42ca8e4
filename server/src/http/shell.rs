//! The built client (`--static-dir`) as static files: every non-API path
//! that names no file answers `index.html` (the client routes itself), and
//! every answer carries the cross-origin isolation headers unless
//! `--no-cross-origin-isolation` turns them off.
//!
//! Isolation (`Cross-Origin-Opener-Policy: same-origin` with
//! `Cross-Origin-Embedder-Policy: require-corp`) gives the page
//! `SharedArrayBuffer`, which duckdb-wasm's threaded build needs. Under
//! `require-corp` the page may load only same-origin or CORS-approved
//! resources: everything the app loads is ours, and duckdb-wasm fetches URL
//! datasets in CORS mode, which CORS-enabled servers already answer. The
//! worker scripts carry the same headers, as a dedicated worker of an
//! isolated page must.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::Config;

/// The headers that make a page cross-origin isolated, and say that our
/// files are for our own origin only.
pub const ISOLATION_HEADERS: [(&str, &str); 3] = [
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-embedder-policy", "require-corp"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Whether the app shell is served cross-origin isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isolation(pub bool);

impl Isolation {
    pub fn from_config(config: &Config) -> Self {
        Isolation(!config.no_cross_origin_isolation)
    }
}

/// The static files of the client, with `index.html` for unknown paths.
pub fn files(config: &Config) -> ServeDir<ServeFile> {
    let index = config.static_dir.join("index.html");
    ServeDir::new(&config.static_dir).fallback(ServeFile::new(index))
}

/// Middleware for the non-API paths: stamps the isolation headers on the
/// answer (a header the handler set itself is left alone).
pub async fn stamp_isolation(
    State(isolation): State<Isolation>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if isolation.0 {
        let headers = response.headers_mut();
        for (name, value) in ISOLATION_HEADERS {
            headers
                .entry(HeaderName::from_static(name))
                .or_insert(HeaderValue::from_static(value));
        }
    }
    response
}
