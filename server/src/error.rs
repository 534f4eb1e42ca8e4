//! The server's one error type. Every failure a client sees is an
//! `application/problem+json` body (RFC 9457) carrying an `error_id`; the
//! same id is in the log line, with a backtrace for internal errors.

use std::backtrace::Backtrace;
use std::fmt;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use shared_domain::ErrorId;
use uuid::Uuid;

/// What kind of failure, which decides the HTTP status and the problem `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed JSON, unknown command, invalid value (400).
    BadRequest,
    /// No valid credentials: no token, an unknown one, or a revoked one (401).
    Unauthorized,
    /// The caller may not do this: a role too weak, not an admin, an
    /// executor-only command, a foreign `Origin` (403).
    Forbidden,
    /// No such resource (404).
    NotFound,
    /// The endpoint exists but not with this method (405).
    MethodNotAllowed,
    /// Stale or future `expected_version`, or a resource not in the needed state (409).
    Conflict,
    /// Body larger than the configured limit (413).
    PayloadTooLarge,
    /// Missing or wrong Content-Type (415).
    UnsupportedMediaType,
    /// The request names a host this server does not answer for (421).
    MisdirectedRequest,
    /// The resource existed but is gone for good (410): a result whose data changed.
    Gone,
    /// The domain refused the command, or a command id was reused (422).
    Unprocessable,
    /// The caller's rate limit or connection cap is reached (429).
    TooManyRequests,
    /// The server is not ready yet (503).
    Unavailable,
    /// A bug or an I/O failure on our side (500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not-found",
            ErrorKind::MethodNotAllowed => "method-not-allowed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Gone => "gone",
            ErrorKind::PayloadTooLarge => "payload-too-large",
            ErrorKind::UnsupportedMediaType => "unsupported-media-type",
            ErrorKind::MisdirectedRequest => "misdirected-request",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::TooManyRequests => "too-many-requests",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad request",
            ErrorKind::Unauthorized => "Sign-in required",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NotFound => "Not found",
            ErrorKind::MethodNotAllowed => "Method not allowed",
            ErrorKind::Conflict => "Version conflict",
            ErrorKind::Gone => "Gone",
            ErrorKind::PayloadTooLarge => "Payload too large",
            ErrorKind::UnsupportedMediaType => "Unsupported media type",
            ErrorKind::MisdirectedRequest => "Unknown host",
            ErrorKind::Unprocessable => "Command rejected",
            ErrorKind::TooManyRequests => "Too many requests",
            ErrorKind::Unavailable => "Not ready",
            ErrorKind::Internal => "Internal server error",
        }
    }
}

/// A tracked error: a kind, a message for the user, a UUID error id, and a
/// backtrace captured where it was made (shown in the log, never to clients).
pub struct AppError {
    pub id: ErrorId,
    pub kind: ErrorKind,
    pub detail: String,
    /// Extra problem members, such as `current_version` for conflicts.
    pub extensions: Map<String, Value>,
    pub backtrace: Backtrace,
}

impl AppError {
    /// A new error with a fresh id and a captured backtrace.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            id: ErrorId(Uuid::new_v4()),
            kind,
            detail: detail.into(),
            extensions: Map::new(),
            backtrace: Backtrace::capture(),
        }
    }

    /// Adds a member to the problem body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, detail.to_string())
    }

    /// The RFC 9457 problem body.
    pub fn problem(&self) -> Value {
        let mut body = json!({
            "type": format!("https://sextant.dev/problems/{}", self.kind.slug()),
            "title": self.kind.title(),
            "status": self.kind.status().as_u16(),
            "detail": self.detail,
            "error_id": self.id,
        });
        let object = body.as_object_mut().expect("problem is an object");
        for (key, value) in &self.extensions {
            object.insert(key.clone(), value.clone());
        }
        body
    }

    /// Writes the log line that carries this error's id.
    pub fn log(&self) {
        match self.kind {
            ErrorKind::Internal | ErrorKind::Unavailable => tracing::error!(
                error_id = %self.id,
                status = self.kind.status().as_u16(),
                detail = %self.detail,
                backtrace = %self.backtrace,
                "request failed"
            ),
            _ => tracing::warn!(
                error_id = %self.id,
                status = self.kind.status().as_u16(),
                detail = %self.detail,
                "request refused"
            ),
        }
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppError")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .finish()
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (error id {})", self.detail, self.id)
    }
}

impl std::error::Error for AppError {}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let mut response = problem_response(self.kind.status(), self.problem());
        if let Some(seconds) = self.extensions.get("retry_after").and_then(Value::as_u64) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// The 404 detail for a session the caller may not read: the same words
/// whether it does not exist or was never (or no longer) shared with the
/// caller, so existence does not leak, and a replica whose share was
/// revoked tells its user why the pending edits were refused.
pub fn not_readable(session: uuid::Uuid) -> String {
    format!("session {session} does not exist or is not shared with you")
}

/// A response with a problem body and the problem content type.
pub fn problem_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_carries_the_error_id_and_extensions() {
        let error = AppError::new(ErrorKind::Conflict, "stale").with("current_version", 3);
        let body = error.problem();
        assert_eq!(body["status"], 409);
        assert_eq!(body["current_version"], 3);
        assert_eq!(body["error_id"], serde_json::to_value(error.id).unwrap());
    }
}
