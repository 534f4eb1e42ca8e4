//! Who may talk to this server, checked before any handler runs:
//!
//! 1. **Host** (DNS rebinding): a request whose `Host` is not the bound
//!    address, `localhost`, `127.0.0.1`, `[::1]` or a `--public-host` name
//!    is refused with 421, whatever its path.
//! 2. **Origin** (CSRF): a state-changing request (not GET/HEAD/OPTIONS)
//!    whose `Origin` host is not one of those hosts is refused with 403. Any
//!    port is allowed, so `trunk serve` on another port and test relays work.
//! 3. **Credentials**: every `/api/*` route except `/api/health` needs
//!    `Authorization: Bearer TOKEN` or the login cookie, else 401. The user
//!    is put in the request's extensions ([`Authenticated`]).
//! 4. **Sign-in links**: `GET /any/app/path?token=TOKEN` sets the login
//!    cookie (`HttpOnly; SameSite=Strict`, `Secure` over TLS) and answers
//!    303 to the same path without the token, so it leaves the address bar
//!    and the history.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::accounts::{User, COOKIE_NAME};
use crate::config::Config;
use crate::error::{AppError, ErrorKind};
use crate::state::AppState;

/// The hosts this server answers for.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    allowed: Vec<String>,
    tls: bool,
}

impl HostPolicy {
    /// The bound address, the loopback names and `--public-host` names.
    pub fn new(config: &Config, bound: SocketAddr) -> Self {
        let mut allowed: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            bound.ip().to_string(),
        ];
        allowed.extend(config.public_hosts.iter().filter_map(|h| host_of(h.trim())));
        allowed.sort();
        allowed.dedup();
        HostPolicy {
            allowed,
            tls: config.tls(),
        }
    }

    /// Whether `authority` (`host[:port]`) names an allowed host; any port.
    pub fn allows(&self, authority: &str) -> bool {
        host_of(authority).is_some_and(|host| self.allowed.contains(&host))
    }

    /// Whether an `Origin` header value (`scheme://host[:port]`) is ours.
    /// `null` (sandboxed frames, file URLs) is not.
    pub fn allows_origin(&self, origin: &str) -> bool {
        match origin.split_once("://") {
            Some(("http" | "https", authority)) => {
                !authority.contains('/') && self.allows(authority)
            }
            _ => false,
        }
    }
}

/// The lower-cased host of `host[:port]` (`[v6]:port` too), without the
/// port; `None` when it is not a plausible authority.
pub fn host_of(authority: &str) -> Option<String> {
    if authority.is_empty()
        || authority.contains(['/', '@', '?', '#', ' '])
        || !authority.is_ascii()
    {
        return None;
    }
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return None,
            None => authority,
        }
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The signed-in user of an `/api` request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub User);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(unauthorized)
    }
}

/// The middleware's state: the application and its host policy.
#[derive(Clone)]
pub struct Guard {
    pub state: AppState,
    pub hosts: Arc<HostPolicy>,
}

fn unauthorized() -> AppError {
    AppError::new(
        ErrorKind::Unauthorized,
        "sign in: send Authorization: Bearer TOKEN, or open the sign-in link /?token=TOKEN",
    )
}

fn unauthorized_response(error: AppError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sextant\""),
    );
    response
}

/// The token a request presents: the bearer token if there is an
/// `Authorization` header (even a bad one), else the login cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<Result<String, ()>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| ());
        return Some(text.and_then(|text| match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Ok(token.trim().to_owned())
            }
            _ => Err(()),
        }));
    }
    cookie_token(headers).map(Ok)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().to_owned())
}

/// The layer every request passes (see the module documentation).
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    // 1. Host: HTTP/1.1 sends `Host`; HTTP/2 the URI's authority.
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    if !authority.as_deref().is_some_and(|a| guard.hosts.allows(a)) {
        return AppError::new(
            ErrorKind::MisdirectedRequest,
            format!(
                "this server does not answer for host {:?}; start it with --public-host NAME to allow a name",
                authority.unwrap_or_default().chars().take(100).collect::<String>()
            ),
        )
        .into_response();
    }

    // 2. Origin, for anything that may change state.
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let ok = origin
                .to_str()
                .is_ok_and(|origin| guard.hosts.allows_origin(origin));
            if !ok {
                return AppError::new(
                    ErrorKind::Forbidden,
                    "cross-origin requests may not change anything on this server",
                )
                .into_response();
            }
        }
    }

    let path = request.uri().path();
    let is_api = path == "/api" || path.starts_with("/api/");

    // 3. Credentials for the API.
    if is_api {
        if path == "/api/health" {
            return next.run(request).await;
        }
        let user = match presented_token(request.headers()) {
            Some(Ok(token)) => guard.state.accounts().authenticate(&token),
            _ => None,
        };
        let Some(user) = user else {
            return unauthorized_response(unauthorized());
        };
        if let Err(limited) = guard.state.limits().requests.check(user.id, 1, "requests") {
            return limited.into_response();
        }
        if let Err(mismatch) = check_expected_user(&request, user.id) {
            return unauthorized_response(mismatch);
        }
        request.extensions_mut().insert(Authenticated(user));
        return next.run(request).await;
    }

    // 4. Sign-in links on app paths.
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        if let Some(query) = request.uri().query() {
            if let Some((token, rest)) = take_token(query) {
                return sign_in(&guard, request.headers(), path, &token, &rest);
            }
        }
    }
    next.run(request).await
}

/// The browser names the user whose local data a request writes or fills
/// (`X-Sextant-User`, or `as_user=` on the feed, which cannot send
/// headers). When another user signed in meanwhile (the cookie changed in
/// another tab), the request is refused: the first user's pending commands
/// are never sent as the second, nor the second's events stored as the
/// first's. The client keeps its commands and reopens the right data.
fn check_expected_user(request: &Request, signed_in: uuid::Uuid) -> Result<(), AppError> {
    let from_header = request
        .headers()
        .get(EXPECTED_USER_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let from_query = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("as_user="))
            .map(str::to_owned)
    });
    let Some(expected) = from_header.or(from_query) else {
        return Ok(());
    };
    match uuid::Uuid::parse_str(expected.trim()) {
        Ok(expected) if expected == signed_in => Ok(()),
        Ok(expected) => Err(AppError::new(
            ErrorKind::Unauthorized,
            format!(
                "this page holds the local data of user {expected}, but another user is signed in; \
                 reload the page (its pending changes are kept for that user)"
            ),
        )
        .with("signed_in_user", signed_in.to_string())),
        Err(_) => Err(AppError::new(
            ErrorKind::Unauthorized,
            format!("{EXPECTED_USER_HEADER} must be a user id"),
        )),
    }
}

/// The header that names the user a request is made for.
pub const EXPECTED_USER_HEADER: &str = "x-sextant-user";

/// Splits `token=…` out of a query string: the token and the remaining query.
fn take_token(query: &str) -> Option<(String, String)> {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("token=") {
            Some(value) if token.is_none() => token = Some(percent_decode(value)),
            _ if !pair.is_empty() => rest.push(pair),
            _ => {}
        }
    }
    token.map(|token| (token, rest.join("&")))
}

/// Tokens are base64url, but a pasted link may have them percent-encoded.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&value[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sign_in(guard: &Guard, headers: &HeaderMap, path: &str, token: &str, rest: &str) -> Response {
    let Some(user) = guard.state.accounts().authenticate(token) else {
        return unauthorized_response(AppError::new(
            ErrorKind::Unauthorized,
            "this sign-in link's token is not valid (mistyped, or the user was revoked); ask an admin for a new one",
        ));
    };
    // `//host/…` would be read as another site: keep the redirect on ours.
    let path = format!("/{}", path.trim_start_matches('/'));
    let location = if rest.is_empty() {
        path
    } else {
        format!("{path}?{rest}")
    };
    let secure = guard.hosts.tls
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000{}",
        if secure { "; Secure" } else { "" }
    );
    tracing::info!(user = %user.name, "signed in with a sign-in link");
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let (Ok(location), Ok(cookie)) = (
        HeaderValue::from_str(&location),
        HeaderValue::from_str(&cookie),
    ) {
        headers.insert(header::LOCATION, location);
        headers.insert(header::SET_COOKIE, cookie);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    } else {
        AppError::bad_request("the sign-in link is malformed").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_without_ports() {
        assert_eq!(host_of("LocalHost:8080").as_deref(), Some("localhost"));
        assert_eq!(host_of("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_of("[::1]").as_deref(), Some("::1"));
        assert_eq!(host_of("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host_of("a:b"), None);
        assert_eq!(host_of("evil.com/x"), None);
        assert_eq!(host_of("user@127.0.0.1"), None);
        assert_eq!(host_of(""), None);
        let mut config = Config::for_data_dir("x");
        config.public_hosts = vec!["Sextant.Example".into()];
        let policy = HostPolicy::new(&config, "127.0.0.1:9".parse().unwrap());
        assert!(policy.allows("localhost:8081"));
        assert!(policy.allows("sextant.example"));
        assert!(!policy.allows("attacker.example"));
        assert!(!policy.allows("127.0.0.1.attacker.example"));
        assert!(policy.allows_origin("http://127.0.0.1:8081"));
        assert!(policy.allows_origin("https://sextant.example"));
        assert!(!policy.allows_origin("null"));
        assert!(!policy.allows_origin("http://attacker.example"));
        assert!(!policy.allows_origin("ftp://localhost"));
    }

    #[test]
    fn sign_in_links_keep_the_rest_of_the_query() {
        assert_eq!(
            take_token("a=1&token=abc&b=2"),
            Some(("abc".into(), "a=1&b=2".into()))
        );
        assert_eq!(
            take_token("token=a%2Db"),
            Some(("a-b".into(), String::new()))
        );
        assert_eq!(take_token("tokens=1"), None);
    }

    #[test]
    fn bearer_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; sextant_token=c"),
        );
        assert_eq!(presented_token(&headers), Some(Ok("c".into())));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(presented_token(&headers), Some(Ok("b".into())));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic b"));
        assert_eq!(presented_token(&headers), Some(Err(())));
    }
}
