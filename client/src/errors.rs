//! The client's tracked error: every error the UI reports carries an error
//! id, shown to the user and logged to the browser console with the same id.
//!
//! Domain errors stay plain comparable kinds in shared-domain; this shell
//! wraps them here. (There is no `std::backtrace` worth capturing in wasm;
//! the console log line carries the id and the message.)

use std::fmt;

use shared_domain::{ErrorId, ValueError};
use uuid::Uuid;

/// What went wrong, which decides how the UI words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input was not a valid value (blank title, empty SQL, …).
    Invalid,
    /// The aggregate refused the command (a query is still active, …).
    Refused,
    /// The server answered with a problem, or could not be reached.
    Server,
}

impl ErrorKind {
    /// A short label for the error banner.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "Invalid input",
            ErrorKind::Refused => "Command refused",
            ErrorKind::Server => "Server",
        }
    }
}

/// An error as reported to the user: kind, message and an id to quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub error_id: ErrorId,
    pub kind: ErrorKind,
    pub message: String,
}

impl ClientError {
    pub fn new(error_id: Uuid, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            error_id: ErrorId(error_id),
            kind,
            message: message.into(),
        }
    }

    /// A value the user typed was rejected by a smart constructor.
    pub fn invalid(error_id: Uuid, error: ValueError) -> Self {
        Self::new(error_id, ErrorKind::Invalid, error.to_string())
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (error id {})",
            self.kind.label(),
            self.message,
            self.error_id
        )
    }
}

impl std::error::Error for ClientError {}
