//! One error type for the whole library, with a stable [`ErrorKind`].
//!
//! Every language binding maps [`ErrorKind`] to its own idiom (C status codes, PHP exception
//! classes, Python exception subclasses, Node `code` strings) using [`ErrorKind::as_str`], so
//! the names below are part of the public contract.

use std::fmt;

/// The stable category of an [`Error`]; the same set exists in every language binding.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A bad argument or configuration value; the message names the field.
    InvalidArgument,
    /// The thing asked for does not exist (node id, session, key where absence is an error).
    NotFound,
    /// An operation did not finish within its deadline.
    Timeout,
    /// No healthy node, no quorum, or the backend is down.
    Unavailable,
    /// Someone else holds the lock, the lock was lost, a duplicate id, a compare failed.
    Conflict,
    /// A handle was used after it was closed.
    Closed,
    /// The backend server answered with an error.
    Backend,
    /// A bug in clusterkit (includes a panic caught at an FFI boundary).
    Internal,
}

impl ErrorKind {
    /// The stable snake_case name of this kind (`"invalid_argument"`, `"not_found"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Closed => "closed",
            ErrorKind::Backend => "backend",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error type of every fallible clusterkit operation.
///
/// Match on [`Error::kind`] rather than on the variants' messages: messages are for people and
/// may be reworded, kinds are stable.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A bad argument or configuration value.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The field, argument or config path that is wrong (for example `pools.app.nodes[1].port`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A deadline passed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// No healthy node, no quorum, or the backend is down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A conflicting state: duplicate id, lock held by someone else, compare failed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A handle was used after close.
    #[error("closed: {0}")]
    Closed(String),
    /// The backend answered with an error.
    #[error("backend error: {0}")]
    Backend(String),
    /// A bug in clusterkit.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Closed(_) => ErrorKind::Closed,
            Error::Backend(_) => ErrorKind::Backend,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Builds an [`Error::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field of an [`Error::InvalidArgument`] with `prefix` (for example the config
    /// path of the node being validated); other kinds are returned unchanged.
    pub fn in_field(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument { field, message } => Error::InvalidArgument {
                field: if field.is_empty() {
                    prefix.to_string()
                } else {
                    format!("{prefix}.{field}")
                },
                message,
            },
            other => other,
        }
    }
}

/// `Result` with clusterkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(
            Error::invalid("port", "0").kind().as_str(),
            "invalid_argument"
        );
        assert_eq!(Error::NotFound("x".into()).kind().as_str(), "not_found");
        assert_eq!(Error::Timeout("x".into()).kind().as_str(), "timeout");
        assert_eq!(
            Error::Unavailable("x".into()).kind().as_str(),
            "unavailable"
        );
        assert_eq!(Error::Conflict("x".into()).kind().as_str(), "conflict");
        assert_eq!(Error::Closed("x".into()).kind().as_str(), "closed");
        assert_eq!(Error::Backend("x".into()).kind().as_str(), "backend");
        assert_eq!(Error::Internal("x".into()).kind().as_str(), "internal");
    }

    #[test]
    fn in_field_prefixes_the_path() {
        let e = Error::invalid("port", "must be 1..=65535").in_field("nodes[2]");
        assert_eq!(e.to_string(), "invalid nodes[2].port: must be 1..=65535");
        let e = Error::Timeout("t".into()).in_field("x");
        assert_eq!(e.kind(), ErrorKind::Timeout);
    }
}
