//! One public error type for the whole engine.
//!
//! Every backend maps its own failures into [`Error`] at its boundary, so that the
//! pipeline, the retry policy and the CLI's exit codes decide on typed kinds, never by
//! downcasting SDK errors. Messages never carry credentials: backends only put keys,
//! buckets, endpoints, status codes and the server's error code/message in them.

use std::time::Duration;

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, typed so that callers can decide (retry, exit code, report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object (or upload) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The bucket / directory named by the URL does not exist.
    #[error("{0}")]
    NoSuchBucket(String),
    /// Credentials were refused or lack permission.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The store could not be reached (connection refused, DNS, TLS).
    #[error("cannot reach store: {0}")]
    Unreachable(String),
    /// The store asked us to slow down (429, 503 SlowDown).
    #[error("throttled: {message}")]
    Throttled {
        /// The server's message.
        message: String,
        /// A server-provided hint of how long to wait, if any.
        retry_after: Option<Duration>,
    },
    /// A request took too long or the connection dropped mid-way.
    #[error("timeout or connection reset: {0}")]
    Timeout(String),
    /// The server rejected our clock (OSS `RequestTimeTooSkewed`); the store has corrected
    /// its clock offset, so a retry is expected to succeed.
    #[error("clock skew: {0}")]
    ClockSkew(String),
    /// A server-side failure (5xx) that may succeed on retry.
    #[error("server error: {0}")]
    Server(String),
    /// Bytes did not match their checksum: never report such an object as copied.
    #[error("checksum mismatch: {0}")]
    ChecksumMismatch(String),
    /// The source object changed while it was being copied.
    #[error("source changed during copy: {0}")]
    SourceChanged(String),
    /// Bad input from the user (URL, sizes, key names that a store cannot hold).
    #[error("{0}")]
    InvalidInput(String),
    /// The run was cancelled (Ctrl-C / SIGTERM).
    #[error("cancelled")]
    Cancelled,
    /// A local I/O failure.
    #[error("i/o error: {0}")]
    Io(String),
    /// Anything else the store reported that is not retryable.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. }
                | Error::Timeout(_)
                | Error::Server(_)
                | Error::ClockSkew(_)
                | Error::ChecksumMismatch(_)
                | Error::Unreachable(_)
        )
    }

    /// Whether this error means the store itself is unusable (exit code 3 territory).
    pub fn is_store_access(&self) -> bool {
        matches!(
            self,
            Error::AccessDenied(_) | Error::Unreachable(_) | Error::NoSuchBucket(_)
        )
    }

    /// The server's wait hint, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(e.to_string()),
            std::io::ErrorKind::PermissionDenied => Error::AccessDenied(e.to_string()),
            _ => Error::Io(e.to_string()),
        }
    }
}

/// The innermost error's message ("Connection refused (os error 111)"): the useful part
/// of a transport failure, without the nested wrappers of HTTP stacks.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
