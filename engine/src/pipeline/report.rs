//! What a run tells the outside: [`Event`]s as they happen, and the [`Report`] at the end.

use serde::Serialize;

use crate::error::ErrorKind;
use crate::stats::LatencySummary;

use super::snapshot;

/// What a run did or plans to do, for observers (dry-run listing, verbose logs).
#[derive(Debug, Clone)]
pub enum Event {
    /// Every check passed and the destination's lease is held: the run starts writing
    /// (or, in a dry run, planning). Refusals come before it.
    Started,
    /// A planned copy (printed by `--dry-run`).
    PlanCopy {
        /// Object key, relative to the source root.
        key: String,
        /// Size in bytes.
        size: u64,
        /// Why it is copied.
        reason: String,
    },
    /// A planned delete.
    PlanDelete {
        /// Object key, relative to the destination root.
        key: String,
    },
    /// A stale multipart upload from an earlier, killed run.
    StaleUpload {
        /// Object key the upload was started for.
        key: String,
        /// Whether it was aborted (false in dry-run).
        aborted: bool,
    },
    /// An object copied and verified.
    Copied {
        /// Object key, relative to the destination root.
        key: String,
        /// Bytes copied and verified.
        size: u64,
    },
    /// An object failed.
    Failed {
        /// Object key, relative to the source root.
        key: String,
        /// The one-line error that made the object fail.
        reason: String,
    },
    /// An object deleted.
    Deleted {
        /// Object key, relative to the destination root.
        key: String,
    },
}

/// Receives [`Event`]s as they happen (from many tasks; keep it cheap).
pub trait Observer: Send + Sync {
    /// One event.
    fn event(&self, e: &Event);
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {
    fn event(&self, _: &Event) {}
}

/// One failed object in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// The object key (relative to the roots).
    pub key: String,
    /// Why it failed.
    pub reason: String,
    /// The kind of the failure (`ChecksumMismatch`, `Timeout`, `Cancelled`, ...).
    pub kind: ErrorKind,
}

/// The most failures listed one by one in a report (all are counted).
pub const MAX_LISTED_FAILURES: usize = 10_000;

/// The JSON report of a sync. Field names are a contract with scripts.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Source description (no secrets).
    pub source: String,
    /// Destination description (no secrets).
    pub destination: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Objects copied and verified.
    pub copied_objects: u64,
    /// Bytes of those objects.
    pub copied_bytes: u64,
    /// Objects already in sync.
    pub skipped_objects: u64,
    /// Objects deleted from the destination.
    pub deleted_objects: u64,
    /// Objects that failed (see `failures`).
    pub failed_objects: u64,
    /// Wall time.
    pub duration_seconds: f64,
    /// copied_bytes / duration.
    pub throughput_bytes_per_second: f64,
    /// Failed objects with their reasons (at most 10,000 listed).
    pub failures: Vec<Failure>,
    /// Objects seen in the source listing.
    pub source_objects: u64,
    /// Objects planned for copy (what a dry run would copy).
    pub planned_copy_objects: u64,
    /// Bytes planned for copy.
    pub planned_copy_bytes: u64,
    /// Objects planned for deletion.
    pub planned_delete_objects: u64,
    /// Why the planned deletes were not made, when they were not (errors in the run, an
    /// empty source listing, or more than `--max-delete` allows).
    pub deletes_refused: Option<String>,
    /// Multipart uploads left by an earlier run, found on the destination and aborted.
    pub aborted_stale_uploads: u64,
    /// Uploads found at the start but left alone: younger than the stale-upload age,
    /// and their writer may still be alive (a later run aborts them).
    pub young_uploads_left: u64,
    /// Uploads a killed run left that were continued (their parts listed and kept)
    /// instead of aborted and started over.
    pub resumed_uploads: u64,
    /// Parts of uploads a killed run left that were kept instead of sent again.
    pub resumed_parts: u64,
    /// Their bytes.
    pub resumed_bytes: u64,
    /// Retries made (all request kinds).
    pub retries: u64,
    /// Requests issued, by kind (attempts, including retries).
    pub requests: std::collections::BTreeMap<String, u64>,
    /// Per-request latency by kind (ms).
    pub latency_ms: std::collections::BTreeMap<String, LatencySummary>,
    /// The run stopped early (Ctrl-C / SIGTERM).
    pub interrupted: bool,
    /// A failure that stopped the whole run (a listing error, for example).
    pub fatal_error: Option<String>,
    /// Its kind (`Protocol`, `Locked`, `AccessDenied`, ...), which decides the exit code.
    pub fatal_error_kind: Option<ErrorKind>,
    /// The most entries the differ held at once (flat-memory evidence).
    pub differ_max_held: usize,
    /// Snapshot-aware sync details, when the source is a snapshot repository.
    pub snapshot: Option<snapshot::SnapshotReport>,
    /// Copied objects by how they were checked against the source's own record of them:
    /// `crc64`, `crc32`, `md5`, `lucene`, `none`.
    pub verified_by: std::collections::BTreeMap<String, u64>,
    /// Copied objects the source offered nothing to check against (up to 10,000 listed).
    pub unverified_objects: Vec<String>,
    /// Bytes uploaded to the destination by this run (each part counted once).
    pub transferred_bytes: u64,
    /// Bytes uploaded again because an attempt failed (a retried PUT or part).
    pub resent_bytes: u64,
    /// Request faults by kind (`Network`, `Timeout`, `Throttled`, `ChecksumMismatch`, ...):
    /// attempts retried, requests a retry recovered, requests that gave up.
    pub faults: std::collections::BTreeMap<String, crate::stats::FaultCount>,
}
