//! Value objects with smart constructors.
//!
//! Each type can only hold a valid value: construction goes through `new`
//! (or `TryFrom` during deserialization), so a command carrying an invalid
//! title or URL never gets past parsing.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// Why a value object was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    #[error("session title must not be empty")]
    EmptyTitle,
    #[error("session title is {0} characters long; at most {max} are allowed", max = SessionTitle::MAX_CHARS)]
    TitleTooLong(usize),
    #[error("SQL must not be empty")]
    EmptySql,
    #[error("SQL is {0} bytes long; at most {max} are allowed", max = SqlQuery::MAX_BYTES)]
    SqlTooLong(usize),
    #[error("dataset name {0:?} is not a plain identifier (letters, digits and _, not starting with a digit, at most 128 characters)")]
    InvalidDatasetName(String),
    #[error("local file name {0:?} is invalid (1 to 255 characters, no path separators or control characters)")]
    InvalidFileName(String),
    #[error("URL {0:?} is invalid: {1}")]
    InvalidUrl(String, String),
    #[error("URL scheme {0:?} is not allowed; use http or https")]
    UrlScheme(String),
    #[error("user name {0:?} is invalid: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidUserName(String),
}

/// The title of a query session: trimmed, 1 to 200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionTitle(String);

impl SessionTitle {
    /// The longest title accepted, in characters (not bytes).
    pub const MAX_CHARS: usize = 200;

    /// Trims `raw` and checks its length.
    pub fn new(raw: impl AsRef<str>) -> Result<Self, ValueError> {
        let trimmed = raw.as_ref().trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err(ValueError::EmptyTitle);
        }
        if chars > Self::MAX_CHARS {
            return Err(ValueError::TitleTooLong(chars));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// What deserialization accepts, in a command or a stored event: any
    /// non-blank title. The length limit is a rule of deciding
    /// ([`SessionTitle::check_length`], applied by `QuerySession::decide`),
    /// so stored events stay readable whatever the limit becomes.
    fn from_wire(raw: String) -> Result<Self, ValueError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValueError::EmptyTitle);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The length rule, checked when a command is decided.
    pub fn check_length(&self) -> Result<(), ValueError> {
        let chars = self.0.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(ValueError::TitleTooLong(chars));
        }
        Ok(())
    }

    /// The title text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SQL text: not blank, at most 100 000 bytes. Whether it is a *safe*
/// statement is for the engine that runs it to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SqlQuery(String);

impl SqlQuery {
    /// The longest SQL text accepted, in bytes.
    pub const MAX_BYTES: usize = 100_000;

    /// Checks that `raw` is not blank and not too long. The text is kept as
    /// written (no trimming) so that error positions stay meaningful.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValueError> {
        let raw = raw.into();
        if raw.trim().is_empty() {
            return Err(ValueError::EmptySql);
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(ValueError::SqlTooLong(raw.len()));
        }
        Ok(Self(raw))
    }

    /// What deserialization accepts: any non-blank text; the size limit is
    /// checked when a command is decided ([`SqlQuery::check_length`]).
    fn from_wire(raw: String) -> Result<Self, ValueError> {
        if raw.trim().is_empty() {
            return Err(ValueError::EmptySql);
        }
        Ok(Self(raw))
    }

    /// The size rule, checked when a command is decided.
    pub fn check_length(&self) -> Result<(), ValueError> {
        if self.0.len() > Self::MAX_BYTES {
            return Err(ValueError::SqlTooLong(self.0.len()));
        }
        Ok(())
    }

    /// The SQL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a dataset in the server's catalog: a plain SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetName(String);

impl DatasetName {
    /// Accepts `[A-Za-z_][A-Za-z0-9_]{0,127}`.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValueError> {
        let raw = raw.into();
        let mut chars = raw.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if first_ok && rest_ok && raw.len() <= 128 {
            Ok(Self(raw))
        } else {
            Err(ValueError::InvalidDatasetName(raw))
        }
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a file that lives only in the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalFileName(String);

impl LocalFileName {
    /// 1 to 255 characters, no `/`, `\` or control characters.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValueError> {
        let raw = raw.into();
        let chars = raw.chars().count();
        let ok = (1..=255).contains(&chars)
            && !raw.chars().any(|c| c == '/' || c == '\\' || c.is_control());
        if ok {
            Ok(Self(raw))
        } else {
            Err(ValueError::InvalidFileName(raw))
        }
    }

    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An http or https URL of a remote dataset (fetched by the browser).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetUrl(String);

impl DatasetUrl {
    /// Parses `raw` and accepts only the http and https schemes.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValueError> {
        let raw = raw.into();
        let parsed = url::Url::parse(&raw)
            .map_err(|e| ValueError::InvalidUrl(raw.clone(), e.to_string()))?;
        match parsed.scheme() {
            "http" | "https" => Ok(Self(parsed.to_string())),
            other => Err(ValueError::UrlScheme(other.to_owned())),
        }
    }

    /// The normalized URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_value_impls {
    ($($ty:ident: $decode:ident),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = ValueError;
            fn try_from(raw: String) -> Result<Self, ValueError> {
                Self::$decode(raw)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
string_value_impls!(
    SessionTitle: from_wire,
    SqlQuery: from_wire,
    DatasetName: new,
    LocalFileName: new,
    DatasetUrl: new
);

/// The data a session queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DatasetRef {
    /// A dataset in the server's catalog, queried by its view name.
    Server { name: DatasetName },
    /// A remote file the browser fetches itself.
    Url { url: DatasetUrl },
    /// A file the user opened in the browser; its content never leaves it.
    Local {
        name: LocalFileName,
        size_bytes: u64,
    },
}

impl DatasetRef {
    /// Whether a query on this dataset may run on `engine`. Only server
    /// datasets can be read by the server; the others live in the browser.
    pub fn allows(&self, engine: Engine) -> bool {
        matches!(
            (self, engine),
            (DatasetRef::Server { .. }, _) | (_, Engine::Local)
        )
    }
}

/// Where a query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// duckdb-wasm in the browser.
    Local,
    /// Native DuckDB on the server.
    Server,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Local => "local",
            Engine::Server => "server",
        })
    }
}

/// A result column: its name and DuckDB type name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

impl Column {
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_type: data_type.into(),
        }
    }
}

/// Identifies one query, chosen by the client that submits it. Unique across sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueryId(pub Uuid);

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id shown to a user for an error, and found in the log line that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorId(pub Uuid);

impl fmt::Display for ErrorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_is_trimmed_and_bounded() {
        assert_eq!(SessionTitle::new("  Sales  ").unwrap().as_str(), "Sales");
        assert_eq!(SessionTitle::new("   "), Err(ValueError::EmptyTitle));
        assert!(SessionTitle::new("é".repeat(200)).is_ok());
        assert_eq!(
            SessionTitle::new("x".repeat(201)),
            Err(ValueError::TitleTooLong(201))
        );
    }

    #[test]
    fn sql_is_bounded() {
        assert_eq!(SqlQuery::new(" \n"), Err(ValueError::EmptySql));
        assert!(SqlQuery::new("x".repeat(SqlQuery::MAX_BYTES)).is_ok());
        assert_eq!(
            SqlQuery::new("x".repeat(SqlQuery::MAX_BYTES + 1)),
            Err(ValueError::SqlTooLong(SqlQuery::MAX_BYTES + 1))
        );
    }

    #[test]
    fn dataset_names_are_identifiers() {
        assert!(DatasetName::new("lineitem").is_ok());
        assert!(DatasetName::new("_t2").is_ok());
        for bad in ["", "2x", "a-b", "a b", "x;drop", &"a".repeat(129)] {
            assert!(DatasetName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_must_be_http() {
        assert!(DatasetUrl::new("https://example.org/a.csv").is_ok());
        assert!(matches!(
            DatasetUrl::new("file:///etc/passwd"),
            Err(ValueError::UrlScheme(_))
        ));
        assert!(matches!(
            DatasetUrl::new("not a url"),
            Err(ValueError::InvalidUrl(..))
        ));
    }

    #[test]
    fn local_file_names_have_no_paths() {
        assert!(LocalFileName::new("trips.csv").is_ok());
        assert!(LocalFileName::new("../etc/passwd").is_err());
        assert!(LocalFileName::new("").is_err());
    }

    #[test]
    fn invalid_values_fail_deserialization() {
        let err = serde_json::from_str::<DatasetRef>(r#"{"kind":"url","url":"ftp://x/y"}"#);
        assert!(err.is_err());
        let ok: DatasetRef =
            serde_json::from_str(r#"{"kind":"local","name":"a.csv","size_bytes":10}"#).unwrap();
        assert!(ok.allows(Engine::Local) && !ok.allows(Engine::Server));
    }
}
