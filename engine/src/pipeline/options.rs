//! The knobs of a sync ([`SyncOptions`]) and the enums of its flags.

use std::time::Duration;

use std::sync::Arc;

use super::snapshot::planner::Unit;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// The knobs of a sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Parts (or whole small objects) in flight at once; also the number of fetchers and
    /// of uploaders. Peak buffer memory ≈ concurrency × part size.
    pub concurrency: usize,
    /// Multipart part size (5 MiB ..= 5 GiB).
    pub part_size: u64,
    /// Objects strictly larger than this go multipart (>= part size, <= 5 GiB).
    pub multipart_threshold: u64,
    /// Bytes per second, all workers together.
    pub bwlimit: Option<u64>,
    /// Requests per second, all workers together.
    pub tpslimit: Option<u32>,
    /// Remove destination objects the source does not have.
    pub delete: bool,
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// Retry policy of every request.
    pub retry: RetryPolicy,
    /// Treat the source as an Elasticsearch snapshot repository.
    pub snapshot_aware: SnapshotAware,
    /// Only what these snapshots need (snapshot-aware mode).
    pub snapshots: Vec<String>,
    /// Accept a source location that does not exist or holds nothing.
    pub allow_empty_source: bool,
    /// A plain sync lists both sides fanned out over their directories (one level per
    /// request, up to `concurrency` LIST requests in flight) instead of one flat listing
    /// each. Off by default: it costs one request per directory instead of one per 1,000
    /// keys, and on MinIO it was not faster (bench/RESULTS.md, "Listing fan-out").
    pub list_fan_out: bool,
    /// The most objects one run may delete from the destination.
    pub max_delete: MaxDelete,
    /// Write over a destination that holds another repository (another repository
    /// UUID or snapshot lineage).
    pub replace_repository: bool,
    /// Time to live of the destination lease.
    pub lease_ttl: Duration,
    /// Uploads younger than this on the destination may belong to a live run and are
    /// left alone, unless the lease shows their writer is gone.
    pub stale_upload_age: Duration,
    /// How much of a snapshot-aware destination is checked before blobs are skipped.
    pub verify_destination: VerifyDestination,
    /// How a snapshot-aware round finds what to copy.
    pub plan_from: PlanFrom,
    /// Snapshot-aware rounds: before the commit point, confirm that the destination holds
    /// every blob of the changed shards and new snapshots with its recorded size (the
    /// cutover round of `migrate`).
    pub confirm_before_commit: bool,
    /// Which part of a round this run is: all of it, or one step of a distributed round
    /// (plan, one unit, commit; see [`crate::distributed`]).
    pub role: Role,
}

/// Which part of a snapshot-aware round a run is.
#[derive(Debug, Clone, Default)]
pub enum Role {
    /// The whole round: plan, copy, commit.
    #[default]
    Whole,
    /// Plan only: pin the source, find the shard directories that changed and weigh what
    /// each needs copied; nothing is written.
    Plan,
    /// Copy these shard directories of the pinned root: data blobs, then shard
    /// `snap-*`, then shard `index-*`. No root is written; the destination lease is not
    /// taken (units run at once), the caller gives a lease of the unit's own.
    Unit(Arc<Pinned>, Vec<Unit>),
    /// The barrier: index and root metadata, confirmation of every unit's blobs at the
    /// destination, then the commit point, of the pinned root.
    Commit(Arc<Pinned>, Vec<Unit>),
}

/// A source root pinned by a plan: its generation and exact bytes (kept beside the plan,
/// so that the round does not depend on the source still holding it).
#[derive(Debug)]
pub struct Pinned {
    /// The generation N of the source's root `index-N`.
    pub generation: u64,
    /// Its bytes.
    pub root: Vec<u8>,
    /// The destination's root the plan was made against: the barrier refuses to commit
    /// over any other.
    pub destination_root: Option<super::snapshot::distributed::RootId>,
}

/// `--verify-destination`: what a snapshot-aware round checks of the destination before
/// it skips a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyDestination {
    /// The shard directories whose generation changed are listed; what the destination's
    /// last committed generation references elsewhere is trusted.
    #[default]
    Changed,
    /// The whole destination is listed once, and every blob the source generation
    /// references is checked against it (catches loss outside snapferry).
    Full,
}

/// `--plan-from`: how a snapshot-aware round finds what to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlanFrom {
    /// From the repository's metadata: the root `index-N` and the shard generations.
    #[default]
    Metadata,
    /// From full listings of both sides and every shard snapshot of the source (the
    /// planner of earlier versions; kept as a cross-check, and used by `--snapshot`).
    Listing,
}

/// `--max-delete`: a bound on the deletes of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDelete {
    /// At most this many objects.
    Count(u64),
    /// At most this percentage of the objects the destination holds.
    Percent(f64),
}

impl MaxDelete {
    /// Parses `N` or `P%`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        let bad = || {
            Error::invalid_input(format!(
                "--max-delete {s:?} is neither a count nor a percentage; write e.g. 1000 or 50% (100% allows any)"
            ))
        };
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) || !v.is_finite() {
                return Err(bad());
            }
            return Ok(MaxDelete::Percent(v));
        }
        t.parse().map(MaxDelete::Count).map_err(|_| bad())
    }

    /// The most deletes allowed on a destination of `dst_objects` objects.
    pub fn limit(&self, dst_objects: u64) -> u64 {
        match *self {
            MaxDelete::Count(n) => n,
            MaxDelete::Percent(p) => ((dst_objects as f64) * p / 100.0).floor() as u64,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            MaxDelete::Count(n) => format!("{n}"),
            MaxDelete::Percent(p) => format!("{p}%"),
        }
    }
}

/// `--snapshot-aware`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotAware {
    /// When the source holds a repository (a root `index-N`).
    #[default]
    Auto,
    /// Always; fail when the source holds no repository.
    On,
    /// Never: a plain object sync.
    Off,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            concurrency: 16,
            part_size: 16 << 20,
            multipart_threshold: 64 << 20,
            bwlimit: None,
            tpslimit: None,
            delete: false,
            dry_run: false,
            retry: RetryPolicy::default(),
            snapshot_aware: SnapshotAware::Auto,
            snapshots: Vec::new(),
            allow_empty_source: false,
            list_fan_out: false,
            max_delete: MaxDelete::Percent(50.0),
            replace_repository: false,
            lease_ttl: crate::lease::DEFAULT_TTL,
            stale_upload_age: Duration::from_secs(3600),
            verify_destination: VerifyDestination::default(),
            plan_from: PlanFrom::default(),
            confirm_before_commit: false,
            role: Role::Whole,
        }
    }
}

impl SyncOptions {
    /// Checks the knobs; the message names the problem and the fix.
    pub fn validate(&self) -> Result<()> {
        use super::scheduler::{MAX_PART_SIZE, MIN_PART_SIZE};
        if self.lease_ttl < crate::lease::MIN_TTL {
            return Err(Error::invalid_input(format!(
                "--lease-ttl {:?} is too short; use at least 1s (the default is 2m)",
                self.lease_ttl
            )));
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(Error::invalid_input(format!(
                "--concurrency {} is out of range; use 1..=1024",
                self.concurrency
            )));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(Error::invalid_input(format!(
                "--part-size {} bytes is outside 5MiB..5GiB; choose a part size in that range, e.g. 16MiB",
                self.part_size
            )));
        }
        if self.multipart_threshold < self.part_size {
            return Err(Error::invalid_input(format!(
                "--multipart-threshold ({} bytes) is below --part-size ({} bytes); raise the threshold to at least the part size",
                self.multipart_threshold, self.part_size
            )));
        }
        if self.multipart_threshold > MAX_PART_SIZE {
            return Err(Error::invalid_input(format!(
                "--multipart-threshold {} bytes is above 5GiB, the largest single PUT; use at most 5GiB",
                self.multipart_threshold
            )));
        }
        Ok(())
    }
}
