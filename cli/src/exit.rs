//! Exit codes, a contract with scripts, and the one mapping from error kinds to them.
//!
//! - `0` everything in sync (or the command's check passed);
//! - `1` some objects failed, the run was interrupted, or a check found problems;
//! - `2` bad usage or configuration (also: a location that holds no repository where one
//!   is needed, another repository at the destination, overlapping locations);
//! - `3` cannot reach or authenticate to a store or cluster, the bucket or source
//!   location does not exist, or the endpoint does not answer as the API does;
//! - `4` another snapferry run holds the destination's lease.

use snapferry_engine::error::{Error, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// Objects failed, the run was interrupted, or a check found problems.
pub const FAILED: u8 = 1;
/// Bad usage or configuration.
pub const USAGE: u8 = 2;
/// Cannot reach or authenticate to a store or cluster.
pub const STORE: u8 = 3;
/// Another run holds the destination.
pub const LOCKED: u8 = 4;

/// The exit code for an error kind.
pub fn code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput | ErrorKind::NoRepository => USAGE,
        ErrorKind::AccessDenied
        | ErrorKind::CredentialsExpired
        | ErrorKind::Unreachable
        | ErrorKind::LocationNotFound
        | ErrorKind::Protocol
        | ErrorKind::Timeout => STORE,
        ErrorKind::Locked => LOCKED,
        _ => FAILED,
    }
}

/// The exit code for an error.
pub fn for_error(e: &Error) -> u8 {
    code(e.kind())
}

/// The exit code of a finished sync: a fatal error's kind decides (a protocol violation
/// mid-run is 3, a lost lease 4); else failures, an interruption or refused deletes are 1.
pub fn for_report(r: &snapferry_engine::pipeline::Report) -> u8 {
    for_outcome(
        r.fatal_error_kind,
        r.interrupted || r.failed_objects > 0 || r.deletes_refused.is_some(),
    )
}

/// [`for_report`]'s rule: a fatal error's kind decides (never below 1: the run did not
/// finish); else anything short of "in sync" is 1.
fn for_outcome(fatal: Option<ErrorKind>, incomplete: bool) -> u8 {
    match fatal {
        Some(k) => code(k).max(FAILED),
        None if incomplete => FAILED,
        None => OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::EnumCount;

    #[test]
    fn every_kind_has_its_documented_code() {
        let table = [
            (ErrorKind::NotFound, FAILED),
            (ErrorKind::LocationNotFound, STORE),
            (ErrorKind::AccessDenied, STORE),
            (ErrorKind::CredentialsExpired, STORE),
            (ErrorKind::InvalidInput, USAGE),
            (ErrorKind::Unreachable, STORE),
            (ErrorKind::Throttled, FAILED),
            (ErrorKind::Timeout, STORE),
            (ErrorKind::Server, FAILED),
            (ErrorKind::ClockSkew, FAILED),
            (ErrorKind::ChecksumMismatch, FAILED),
            (ErrorKind::SourceChanged, FAILED),
            (ErrorKind::Protocol, STORE),
            (ErrorKind::Cluster, FAILED),
            (ErrorKind::NoRepository, USAGE),
            (ErrorKind::RepositoryFormat, FAILED),
            (ErrorKind::PreconditionFailed, FAILED),
            (ErrorKind::Locked, LOCKED),
            (ErrorKind::Cancelled, FAILED),
            (ErrorKind::StorageFull, FAILED),
            (ErrorKind::Incomplete, FAILED),
            (ErrorKind::Io, FAILED),
            (ErrorKind::Other, FAILED),
        ];
        assert_eq!(table.len(), ErrorKind::COUNT, "every kind is in the table");
        for (k, want) in table {
            assert_eq!(code(k), want, "{k:?}");
        }
    }

    #[test]
    fn a_finished_sync_exits_by_its_fatal_error_else_by_what_is_left() {
        let table = [
            (None, false, OK),
            (None, true, FAILED),
            // A protocol violation mid-run is 3, a lost lease 4, whatever else is left.
            (Some(ErrorKind::Protocol), false, STORE),
            (Some(ErrorKind::Locked), true, LOCKED),
            // A fatal error whose kind maps to 0 or 1 still ends a run that did not finish.
            (Some(ErrorKind::Cancelled), false, FAILED),
            (Some(ErrorKind::InvalidInput), false, USAGE),
        ];
        for (fatal, incomplete, want) in table {
            assert_eq!(
                for_outcome(fatal, incomplete),
                want,
                "{fatal:?} {incomplete}"
            );
        }
    }
}
