//! One public error type for the whole engine: a typed [`ErrorKind`], the [`Side`] it
//! happened on, a one-line message, and the underlying error as its `source()`.
//!
//! Every backend decides the kind at its boundary from the libraries' own error types
//! (SDK error variants, `reqwest::Error::is_connect`, `std::io::ErrorKind`, HTTP status
//! codes and the services' error codes) — never from message text — so that the retry
//! policy, the pipeline and the CLI's exit codes decide on kinds alone. Messages never
//! carry credentials: backends only put keys, buckets, endpoints (without userinfo or
//! query), status codes and the server's error code/message in them.

use std::fmt;
use std::time::Duration;

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as callers decide on it (retry, exit code, report).
///
/// `ErrorKind::iter()` (strum's `IntoEnumIterator`) walks every kind, so the table tests
/// here and in the CLI's exit codes cannot miss one added later.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, strum::EnumIter, strum::EnumCount,
)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object (or upload) does not exist.
    NotFound,
    /// The bucket, directory or prefix named by the URL does not exist (or holds nothing).
    LocationNotFound,
    /// Credentials were refused, missing, or lack permission.
    AccessDenied,
    /// The server refused temporary credentials as expired (`ExpiredToken`,
    /// `SecurityTokenExpired`): retried once with fresh ones from the provider.
    CredentialsExpired,
    /// Bad input from the user (URL, sizes, flags, job file, key names a store cannot hold).
    InvalidInput,
    /// The store or cluster could not be reached (connection refused, DNS, TLS).
    Unreachable,
    /// The server asked us to slow down (429, 503 SlowDown, OSS QPS limits).
    Throttled,
    /// A request took too long, or the connection dropped mid-way.
    Timeout,
    /// A server-side failure (5xx) that may succeed on retry.
    Server,
    /// The server rejected our clock; the store corrected its offset, so a retry may pass.
    ClockSkew,
    /// Bytes did not match their checksum: never report such an object as copied.
    ChecksumMismatch,
    /// The source object changed while it was being copied.
    SourceChanged,
    /// An answer that is not the protocol's: HTML where XML was due, a wrong document
    /// root, a truncated listing without a continuation token, keys out of order.
    Protocol,
    /// An Elasticsearch/OpenSearch cluster refused or failed a request.
    Cluster,
    /// The location holds no snapshot repository (no root `index-N`).
    NoRepository,
    /// A snapshot repository's metadata is unreadable or inconsistent.
    RepositoryFormat,
    /// A write precondition failed (`If-None-Match`/`If-Match`, forbid-overwrite).
    PreconditionFailed,
    /// Another run holds the destination's lease.
    Locked,
    /// The run was cancelled (Ctrl-C / SIGTERM).
    Cancelled,
    /// The destination has no room left: a full disk or quota (`ENOSPC`, `EDQUOT`), an
    /// S3 server's 507 / `XMinioStorageFull`. The run stops at the first one: every
    /// further write would fail the same way.
    StorageFull,
    /// A distributed round is not complete: units without a completion marker, so the
    /// barrier does not commit.
    Incomplete,
    /// A local I/O failure.
    Io,
    /// Anything else that is not retryable.
    Other,
}

impl ErrorKind {
    /// Whether a retry of the same (idempotent) request may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::Timeout
                | ErrorKind::Server
                | ErrorKind::ClockSkew
                | ErrorKind::ChecksumMismatch
                | ErrorKind::Unreachable
                | ErrorKind::CredentialsExpired
        )
    }

    /// Whether the request certainly did not take effect on the server, so that even a
    /// non-idempotent request may be sent again: refused connections, throttling and
    /// clock-skew rejections happen before the server acts.
    pub fn certainly_not_applied(self) -> bool {
        matches!(
            self,
            ErrorKind::Unreachable
                | ErrorKind::Throttled
                | ErrorKind::ClockSkew
                | ErrorKind::CredentialsExpired
        )
    }

    /// The words that open the one line shown for this kind ("" for none).
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::LocationNotFound => "",
            ErrorKind::AccessDenied => "access denied",
            ErrorKind::CredentialsExpired => "credentials expired",
            ErrorKind::InvalidInput => "",
            ErrorKind::Unreachable => "cannot reach",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Timeout => "timeout or connection reset",
            ErrorKind::Server => "server error",
            ErrorKind::ClockSkew => "clock skew",
            ErrorKind::ChecksumMismatch => "checksum mismatch",
            ErrorKind::SourceChanged => "source changed during copy",
            ErrorKind::Protocol => "not a valid answer",
            ErrorKind::Cluster => "cluster error",
            ErrorKind::NoRepository => "",
            ErrorKind::RepositoryFormat => "repository error",
            ErrorKind::PreconditionFailed => "precondition failed",
            ErrorKind::Locked => "destination in use",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::StorageFull => "out of space",
            ErrorKind::Incomplete => "incomplete round",
            ErrorKind::Io => "i/o error",
            ErrorKind::Other => "",
        }
    }
}

/// Which side of a run an error belongs to (named in the message and its hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Side {
    /// The source store.
    Source,
    /// The destination store.
    Destination,
    /// The store of a `repo` command.
    Repository,
    /// The source cluster (`migrate`).
    #[strum(serialize = "source cluster")]
    SourceCluster,
    /// The destination cluster (`migrate`).
    #[strum(serialize = "destination cluster")]
    DestinationCluster,
}

impl Side {
    /// How the side is named in messages.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The environment prefix of this side's credentials.
    fn env(self) -> &'static str {
        match self {
            Side::Source | Side::Repository | Side::SourceCluster => "SRC",
            Side::Destination | Side::DestinationCluster => "DST",
        }
    }

    fn is_cluster(self) -> bool {
        matches!(self, Side::SourceCluster | Side::DestinationCluster)
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An engine error: kind, side, message and source.
pub struct Error {
    kind: ErrorKind,
    side: Option<Side>,
    key: Option<String>,
    message: String,
    retry_after: Option<Duration>,
    source: Option<Source>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("side", &self.side)
            .field("key", &self.key)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.side {
            write!(f, "{}: ", s.name())?;
        }
        let label = self.kind.label();
        if !label.is_empty() {
            match (self.kind, self.side) {
                (ErrorKind::Unreachable, Some(s)) if s.is_cluster() => {
                    write!(f, "cannot reach cluster: ")?
                }
                (ErrorKind::Unreachable, _) => write!(f, "cannot reach store: ")?,
                _ => write!(f, "{label}: ")?,
            }
        }
        f.write_str(&self.message)?;
        if let Some(h) = self.hint() {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

macro_rules! constructors {
    ($($fn:ident => $kind:ident),* $(,)?) => {
        $(
            #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
            pub fn $fn(message: impl Into<String>) -> Self {
                Error::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            side: None,
            key: None,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    constructors! {
        not_found => NotFound,
        location_not_found => LocationNotFound,
        access_denied => AccessDenied,
        credentials_expired => CredentialsExpired,
        invalid_input => InvalidInput,
        unreachable => Unreachable,
        timeout => Timeout,
        server => Server,
        clock_skew => ClockSkew,
        checksum => ChecksumMismatch,
        source_changed => SourceChanged,
        protocol => Protocol,
        cluster => Cluster,
        no_repository => NoRepository,
        repository => RepositoryFormat,
        precondition => PreconditionFailed,
        locked => Locked,
        storage_full => StorageFull,
        incomplete => Incomplete,
        io => Io,
        other => Other,
    }

    /// Throttled, with the server's wait hint when it gave one.
    pub fn throttled(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        let mut e = Error::new(ErrorKind::Throttled, message);
        e.retry_after = retry_after;
        e
    }

    /// The run was cancelled.
    pub fn cancelled() -> Self {
        Error::new(ErrorKind::Cancelled, "interrupted")
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The side, when known.
    pub fn side(&self) -> Option<Side> {
        self.side
    }

    /// The object key (or blob) the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Names the key the error is about (the message names it too).
    pub fn at_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The message alone (no side, kind label or hint).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Names the side, unless a side is named already (the innermost knows best).
    pub fn on(mut self, side: Side) -> Self {
        self.side.get_or_insert(side);
        self
    }

    /// Keeps `source` as the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with what was being done (`"job file x.toml"`).
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Whether retrying the same idempotent request may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_transient()
    }

    /// The server's wait hint, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// What to do about it, by kind and side (shown after the message).
    pub fn hint(&self) -> Option<String> {
        let side = self.side?;
        let name = side.name();
        let env = side.env();
        Some(match (self.kind, side.is_cluster()) {
            (ErrorKind::AccessDenied, false) => format!(
                "check the {name} credentials (SNAPFERRY_{env}_ACCESS_KEY_ID / _SECRET_ACCESS_KEY)"
            ),
            (ErrorKind::CredentialsExpired, _) => format!(
                "the {name}'s temporary credentials expired and fresh ones were refused too; check their provider (STS role, credential process, metadata endpoint)"
            ),
            (ErrorKind::AccessDenied, true) => format!(
                "check the {name}'s user and password (SNAPFERRY_{env}_CLUSTER_PASSWORD), or its API key / AWS credentials"
            ),
            (ErrorKind::Unreachable | ErrorKind::Timeout, false) => {
                format!("check the {name} endpoint URL and that the server is up")
            }
            (ErrorKind::Unreachable | ErrorKind::Timeout, true) => {
                format!("check the {name}'s url in the job file and that it is up")
            }
            (ErrorKind::StorageFull, false) => format!(
                "free space on the {name} (or raise its quota) and run sync again: what was copied is kept"
            ),
            (ErrorKind::Protocol, false) => format!(
                "check the {name} endpoint: it did not answer as the store's API does"
            ),
            _ => return None,
        })
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::AccessDenied,
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                ErrorKind::StorageFull
            }
            _ => ErrorKind::Io,
        };
        Error::new(kind, e.to_string()).with_source(e)
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

/// The first error of type `T` in `err`'s source chain (itself included).
pub fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// The kind of a transport failure from the `std::io::Error` in its source chain:
/// refused or unroutable connections are `Unreachable`, resets and timeouts `Timeout`.
pub fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    use std::io::ErrorKind as K;
    let io = find_source::<std::io::Error>(err)?;
    Some(match io.kind() {
        K::ConnectionRefused | K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable => {
            ErrorKind::Unreachable
        }
        _ => ErrorKind::Timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn every_kind_reads_as_one_line_with_its_side_and_hint() {
        for k in ErrorKind::iter() {
            let e = Error::new(k, "get s3://b/k").on(Side::Source);
            let s = e.to_string();
            assert!(!s.contains('\n'), "{k:?}: {s}");
            assert!(s.starts_with("source: "), "{k:?}: {s}");
            assert!(s.contains("get s3://b/k"), "{k:?}: {s}");
        }
        let e = Error::unreachable("GET / at http://x").on(Side::SourceCluster);
        assert!(e.to_string().contains("cannot reach cluster"), "{e}");
        assert!(!e.to_string().contains("store"), "{e}");
        let e = Error::access_denied("list").on(Side::Destination);
        assert!(e.to_string().contains("SNAPFERRY_DST_ACCESS_KEY_ID"), "{e}");
        // The innermost side wins.
        let e = Error::timeout("x").on(Side::Source).on(Side::Destination);
        assert_eq!(e.side(), Some(Side::Source));
    }

    #[test]
    fn side_names_are_the_message_names() {
        let names = [
            Side::Source,
            Side::Destination,
            Side::Repository,
            Side::SourceCluster,
            Side::DestinationCluster,
        ]
        .map(Side::name);
        assert_eq!(
            names,
            [
                "source",
                "destination",
                "repository",
                "source cluster",
                "destination cluster"
            ]
        );
    }

    #[test]
    fn transient_kinds_are_exactly_the_retryable_ones() {
        let transient: Vec<ErrorKind> = ErrorKind::iter().filter(|k| k.is_transient()).collect();
        assert_eq!(
            transient,
            [
                ErrorKind::CredentialsExpired,
                ErrorKind::Unreachable,
                ErrorKind::Throttled,
                ErrorKind::Timeout,
                ErrorKind::Server,
                ErrorKind::ClockSkew,
                ErrorKind::ChecksumMismatch,
            ]
        );
        for k in ErrorKind::iter() {
            assert!(!k.certainly_not_applied() || k.is_transient(), "{k:?}");
        }
    }

    #[test]
    fn io_errors_map_by_their_kind() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_kind(&refused), Some(ErrorKind::Unreachable));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(io_kind(&reset), Some(ErrorKind::Timeout));
        let e: Error = std::io::Error::from(std::io::ErrorKind::NotFound).into();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        // ENOSPC and EDQUOT, as the OS reports them.
        for errno in [28, 122] {
            let e: Error = std::io::Error::from_raw_os_error(errno).into();
            assert_eq!(e.kind(), ErrorKind::StorageFull, "errno {errno}");
            assert!(!e.kind().is_transient());
        }
    }
}
