//! The sync pipeline.
//!
//! ```text
//! lister(src) ─┐
//!              ├─ differ (merge-join) ─ checker (HEAD when needed) ─ scheduler
//! lister(dst) ─┘                                                     │
//!        committer ◄─ uploaders (PUT / UploadPart) ◄─ fetchers (ranged GET) ◄┘
//! ```
//! Every arrow is a bounded channel; the scheduler takes one permit of the in-flight
//! semaphore per job, so memory is bounded by `concurrency × part size` plus the
//! channel capacities of small listing entries. Deletes (`--delete`) are planned during
//! the diff, spilled to a temp file (memory stays flat), and executed only after every
//! copy has landed, so the destination never loses an object before its replacement
//! exists.
//!
//! Safety rules of a run (each one a mistake an operator makes, or a fault):
//! - Both stores are wrapped by the request layer (`store::layer`): limits, retries
//!   and accounting apply to every request, listings and metadata included.
//! - Absent is not empty: a source location that does not exist or holds nothing is an
//!   error unless `allow_empty_source`.
//! - Deletes never run after any listing or copy error, nor when the source listed no
//!   object, nor beyond `max_delete` (by default half of the destination).
//! - One writer per destination: the run holds the destination's lease
//!   ([`crate::lease`]) from before the stale-upload cleanup to the end; that cleanup
//!   touches only uploads no live run can own.

mod deletes;
pub mod differ;
pub mod lister;
mod options;
mod report;
pub mod resume;
pub mod scheduler;
pub mod snapshot;
pub mod transfer;

pub(crate) use deletes::{delete_guard, run_or_plan_deletes, DeleteSpill};
pub use options::{
    MaxDelete, Pinned, PlanFrom, Role, SnapshotAware, SyncOptions, VerifyDestination,
};
pub use report::{Event, Failure, NoObserver, Observer, Report, MAX_LISTED_FAILURES};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result, Side};
use crate::lease::{Lease, Previous};
use crate::limits::Limits;
use crate::stats::{Counters, Latencies};
use crate::store::layer::{Layered, Policy};
use crate::store::{ObjectMeta, PendingUpload, Presence, PutOptions, Store, VerifiedBy};
use differ::{DiffStats, Joined};
use scheduler::plan_and_schedule;
use transfer::{Commit, Job};

/// How a copy can be verified against its source, with its name in the report's
/// `verified_by` (`None`: nothing to check against).
const VERIFIED_BY: [(Option<VerifiedBy>, &str); 5] = [
    (Some(VerifiedBy::Crc64), "crc64"),
    (Some(VerifiedBy::Crc32), "crc32"),
    (Some(VerifiedBy::Md5), "md5"),
    (Some(VerifiedBy::Lucene), "lucene"),
    (None, "none"),
];

/// Shared state of one run, handed to every stage.
pub struct Ctx {
    /// Source store, through the request layer.
    pub src: Arc<dyn Store>,
    /// Destination store, through the request layer.
    pub dst: Arc<dyn Store>,
    /// The destination for cleanup that must finish after Ctrl-C (aborting uploads).
    dst_cleanup: Arc<dyn Store>,
    /// The destination for the lease: not cancelled (the lease is released after Ctrl-C);
    /// renewals are bounded by the lease's expiry and the release by a short deadline.
    lease_store: Arc<dyn Store>,
    /// Closed once the lease can no longer be counted on; checked right before the
    /// writes that must not race a newer holder (commit point, index.latest, deletes).
    fence: Mutex<crate::lease::Fence>,
    /// The run's options, read by every stage (concurrency, part size, limits, deletes).
    pub opts: SyncOptions,
    /// The part buffers fetches read into, reused once their upload lands.
    pub(crate) buffers: crate::buffers::Pool,
    /// Live counters (the CLI reads them for progress).
    pub counters: Arc<Counters>,
    /// Latencies and request counts.
    pub lat: Arc<Latencies>,
    /// Cancels the run (Ctrl-C): requests in flight end too.
    pub cancel: CancellationToken,
    /// Stops scheduling work (cancelled with `cancel`, or alone when a full destination
    /// stops the run): requests in flight finish, so what they wrote is reported.
    pub halt: CancellationToken,
    /// What preflight found at the destination (a missing directory is not listed).
    dst_presence: Mutex<Option<Presence>>,
    observer: Arc<dyn Observer>,
    failures: Mutex<Vec<Failure>>,
    active_uploads: Mutex<HashMap<String, String>>,
    /// Lucene checksums of whole-file data blobs, and "" for checksummed metadata
    /// envelopes (snapshot-aware runs): entered by the planner for the objects it
    /// schedules, removed when they are decided, so it holds what is in flight.
    lucene: Mutex<HashMap<String, String>>,
    /// Objects copied per verification, in the order of [`VERIFIED_BY`].
    verified_counts: [AtomicU64; VERIFIED_BY.len()],
    /// Copied objects the source offered nothing to verify against (listed up to a bound).
    unverified: Mutex<Vec<String>>,
    /// Uploads a gone run left, kept for resuming: key -> (upload id, record).
    resumable: Mutex<HashMap<String, (String, resume::ResumeRecord)>>,
    /// Request faults by kind, and bytes sent again (shared with the request layer).
    faults: Arc<crate::stats::Faults>,
    /// The error that stopped the run mid-way (a full destination), if one did.
    stopped: Mutex<Option<Error>>,
}

impl Ctx {
    fn put_options(&self, src: &ObjectMeta) -> PutOptions {
        PutOptions {
            metadata: src.as_record().to_metadata(),
            mtime_ms: src.mtime_ms,
            ..Default::default()
        }
    }

    fn observer_event(&self, e: &Event) {
        self.observer.event(e);
    }

    /// `Locked` once this run can no longer count on being the destination's only writer.
    pub(crate) fn fenced(&self) -> Result<()> {
        match self.fence.lock() {
            Ok(f) => f.check(),
            Err(_) => Err(Error::locked("the lease state is unreadable")),
        }
    }

    fn dst_missing(&self) -> bool {
        self.dst_presence
            .lock()
            .map(|p| *p == Some(Presence::Missing))
            .unwrap_or(false)
    }

    fn copied(&self, m: &ObjectMeta) {
        self.forget_lucene(&m.key);
        self.counters.copied_objects.fetch_add(1, Ordering::Relaxed);
        self.counters
            .copied_bytes
            .fetch_add(m.size, Ordering::Relaxed);
        self.observer.event(&Event::Copied {
            key: m.key.clone(),
            size: m.size,
        });
    }

    fn failed(&self, key: &str, e: &Error) {
        self.forget_lucene(key);
        self.counters.failed_objects.fetch_add(1, Ordering::Relaxed);
        let reason = match e.kind() {
            // A full destination stops the run (every further write would fail alike):
            // one error says so, with the place and the cause; the objects name it.
            ErrorKind::StorageFull => {
                if let Ok(mut s) = self.stopped.lock() {
                    s.get_or_insert_with(|| {
                        Error::storage_full(format!("{}: {}", self.dst.describe(), e.message()))
                            .on(e.side().unwrap_or(Side::Destination))
                    });
                }
                self.halt.cancel();
                "not copied: the destination is out of space".to_string()
            }
            ErrorKind::Cancelled if self.stopped.lock().is_ok_and(|s| s.is_some()) => {
                "not copied: the run stopped".to_string()
            }
            ErrorKind::Cancelled => "interrupted before it was copied".to_string(),
            ErrorKind::SourceChanged => format!("{e}; run sync again to copy the new version"),
            _ => e.to_string(),
        };
        self.observer.event(&Event::Failed {
            key: key.to_string(),
            reason: reason.clone(),
        });
        if let Ok(mut f) = self.failures.lock() {
            if f.len() < MAX_LISTED_FAILURES {
                f.push(Failure {
                    key: key.to_string(),
                    reason,
                    kind: e.kind(),
                });
            }
        }
    }

    /// The Lucene checksum the snapshot recorded for a data blob that is a whole file.
    fn lucene(&self, key: &str) -> Option<String> {
        self.lucene.lock().ok().and_then(|m| m.get(key).cloned())
    }

    /// Records what a planned object is checked against (see `lucene`).
    pub(crate) fn expect_lucene(&self, key: &str, checksum: String) {
        if let Ok(mut m) = self.lucene.lock() {
            m.insert(key.to_string(), checksum);
        }
    }

    /// Forgets it once the object is decided (copied, failed, skipped or planned).
    fn forget_lucene(&self, key: &str) {
        if let Ok(mut m) = self.lucene.lock() {
            if !m.is_empty() {
                m.remove(key);
            }
        }
    }

    /// Counts how a copied object was verified against its source.
    fn verified(&self, key: &str, by: Option<VerifiedBy>) {
        if let Some(i) = VERIFIED_BY.iter().position(|(b, _)| *b == by) {
            self.verified_counts[i].fetch_add(1, Ordering::Relaxed);
        }
        if by.is_none() {
            if let Ok(mut u) = self.unverified.lock() {
                if u.len() < MAX_LISTED_FAILURES {
                    u.push(key.to_string());
                }
            }
        }
    }

    /// After a failed write whose verification failed once the destination had taken the
    /// bytes: removes the object under the key if it is this very write (it carries the
    /// source version being copied), so that no unverified object stays behind with a
    /// copy record a later run would trust. An older object there (the write was
    /// refused) is left alone.
    async fn remove_if_ours(&self, src: &ObjectMeta, e: &Error) {
        if e.kind() != ErrorKind::ChecksumMismatch || e.side() == Some(Side::Source) {
            return;
        }
        let mine = src.as_record();
        match self.dst_cleanup.head(&src.key).await {
            Ok(Some(m)) if m.record.as_ref().is_some_and(|r| r.same_version(&mine)) => {
                match self.dst_cleanup.delete(&src.key).await {
                    Ok(()) => tracing::warn!(
                        "removed {} from the destination: its bytes failed verification",
                        src.key
                    ),
                    Err(de) => tracing::warn!(
                        "{} failed verification and could not be removed ({de}); the next run copies it again",
                        src.key
                    ),
                }
            }
            _ => {}
        }
    }

    fn track_upload(&self, upload_id: &str, key: &str) {
        if let Ok(mut a) = self.active_uploads.lock() {
            a.insert(upload_id.to_string(), key.to_string());
        }
    }

    fn forget_upload(&self, upload_id: &str) {
        if let Ok(mut a) = self.active_uploads.lock() {
            a.remove(upload_id);
        }
    }

    /// Aborts an upload and removes its resume record; runs even after cancellation
    /// (that is when it matters most).
    async fn abort_upload(&self, key: &str, upload_id: &str) {
        match self.dst_cleanup.abort_multipart(key, upload_id).await {
            Ok(()) => {
                self.forget_upload(upload_id);
                self.forget_record(upload_id).await;
            }
            Err(e) => tracing::warn!(
                "could not abort upload of {key} ({e}); the next run will find and abort it"
            ),
        }
    }

    /// Writes the resume record of a new upload (best effort: without it a killed run's
    /// upload is aborted rather than resumed, nothing worse).
    async fn record_upload(&self, rec: &resume::ResumeRecord) {
        let Ok(body) = serde_json::to_vec(rec) else {
            return;
        };
        let data = bytes::Bytes::from(body);
        let crc = crc32fast::hash(&data);
        let key = resume::record_key(&rec.upload_id);
        if let Err(e) = self.dst.put(&key, data, crc, &PutOptions::default()).await {
            tracing::warn!(
                "could not write the resume record of {} ({e}); a killed run would start it over",
                rec.key
            );
        }
    }

    async fn forget_record(&self, upload_id: &str) {
        let _ = self
            .dst_cleanup
            .delete(&resume::record_key(upload_id))
            .await;
    }

    /// The resume record of a pending upload, when there is a readable one for its key.
    async fn read_record(&self, u: &PendingUpload) -> Option<resume::ResumeRecord> {
        let key = resume::record_key(&u.upload_id);
        let (_, b) = crate::store::read_whole(self.dst.as_ref(), &key)
            .await
            .ok()??;
        let rec: resume::ResumeRecord = serde_json::from_slice(&b).ok()?;
        (rec.upload_id == u.upload_id && rec.key == u.key).then_some(rec)
    }

    /// Takes the kept upload of `key` for resuming, if there is one.
    fn take_resumable(&self, key: &str) -> Option<(String, resume::ResumeRecord)> {
        self.resumable.lock().ok()?.remove(key)
    }
}

/// A handle for watching a run from outside (progress display).
#[derive(Clone)]
pub struct Handle {
    /// Live counters.
    pub counters: Arc<Counters>,
    /// Cancels the run (Ctrl-C).
    pub cancel: CancellationToken,
}

/// Everything needed to start a sync.
pub struct SyncRun {
    ctx: Arc<Ctx>,
    /// The request policy of the run (for stores added after `new`).
    policy: Policy,
    /// A unit's own lease store ([`Role::Unit`]), instead of the destination's.
    unit_lease: Option<Arc<dyn Store>>,
}

impl SyncRun {
    /// Prepares a run over raw backends: both are wrapped in the request layer here, with
    /// one policy (limits, retries, accounting, cancellation) for the whole run. Validate
    /// options first ([`SyncOptions::validate`]).
    pub fn new(
        src: Arc<dyn Store>,
        dst: Arc<dyn Store>,
        opts: SyncOptions,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let lat = Arc::new(Latencies::default());
        let cancel = CancellationToken::new();
        let faults = Arc::new(crate::stats::Faults::default());
        let policy = Policy {
            retry: opts.retry.clone(),
            limits: Arc::new(Limits::new(opts.bwlimit, opts.tpslimit)),
            lat: lat.clone(),
            retries: counters.retries.clone(),
            faults: faults.clone(),
            cancel: Some(cancel.clone()),
        };
        let src = Layered::new(src, Side::Source, policy.clone());
        let dst = Layered::new(dst, Side::Destination, policy.clone());
        SyncRun {
            policy,
            unit_lease: None,
            ctx: Arc::new(Ctx {
                src: Arc::new(src),
                dst_cleanup: Arc::new(dst.uncancellable()),
                lease_store: Arc::new(dst.uncancellable()),
                fence: Mutex::new(crate::lease::Fence::open()),
                dst: Arc::new(dst),
                buffers: transfer::buffer_pool(&opts),
                opts,
                counters,
                lat,
                halt: cancel.child_token(),
                cancel,
                dst_presence: Mutex::new(None),
                observer,
                failures: Mutex::new(Vec::new()),
                active_uploads: Mutex::new(HashMap::new()),
                lucene: Mutex::new(HashMap::new()),
                verified_counts: Default::default(),
                unverified: Mutex::new(Vec::new()),
                resumable: Mutex::new(HashMap::new()),
                faults,
                stopped: Mutex::new(None),
            }),
        }
    }

    /// A unit of a distributed round ([`Role::Unit`]) holds the lease of `store` (the
    /// unit's place beside the plan) instead of the destination's, which the units of
    /// one round would otherwise contend for.
    pub fn with_unit_lease(mut self, store: Arc<dyn Store>) -> Self {
        let layered = Layered::new(store, Side::Destination, self.policy.clone());
        self.unit_lease = Some(Arc::new(layered.uncancellable()));
        self
    }

    /// A handle for progress and cancellation.
    pub fn handle(&self) -> Handle {
        Handle {
            counters: self.ctx.counters.clone(),
            cancel: self.ctx.cancel.clone(),
        }
    }

    /// Checks that both stores are reachable and usable, and that the source holds
    /// something (absent is not empty). Errors here mean nothing was written.
    pub async fn preflight(&self) -> Result<()> {
        let ctx = &self.ctx;
        // Both stores reachable and authenticated first; then what the source holds.
        let src = ctx.src.preflight().await?;
        let dst = ctx.dst.preflight().await?;
        if src != Presence::NotEmpty && !ctx.opts.allow_empty_source {
            return Err(Error::location_not_found(format!(
                "{} {}; check the URL and prefix for a typo (pass --allow-empty-source if an empty source is intended)",
                ctx.src.describe(),
                if src == Presence::Missing {
                    "does not exist"
                } else {
                    "holds no object"
                }
            ))
            .on(Side::Source));
        }
        if let Ok(mut p) = ctx.dst_presence.lock() {
            *p = Some(dst);
        }
        Ok(())
    }

    /// Runs the sync to the end (or to cancellation) and returns its report. Errors are
    /// returned only for failures before anything was written (including another run
    /// holding the destination: [`ErrorKind::Locked`]); later failures are in the report
    /// (`failed_objects`, `fatal_error`).
    pub async fn run(self) -> Result<Report> {
        let ctx = self.ctx.clone();
        let start = Instant::now();
        if ctx.dst_presence.lock().map(|p| p.is_none()).unwrap_or(true) {
            // Callers preflight first; a run without one does it now.
            SyncRun {
                ctx: ctx.clone(),
                policy: self.policy.clone(),
                unit_lease: None,
            }
            .preflight()
            .await?;
        }

        // Read-only: whether the source is a repository, and its pinned generation. A
        // `--snapshot` without a repository is refused here, before anything is written.
        let detected = snapshot::detect(&ctx).await?;
        if detected.is_none() && !matches!(ctx.opts.role, Role::Whole) {
            // A step of a distributed round is a repository's: never a plain copy.
            return Err(Error::invalid_input(format!(
                "{} holds no snapshot repository (no index.latest or root index-N); plan splits repositories by shard, so copy other data with a plain sync",
                ctx.src.describe()
            )));
        }

        // One writer per destination: from before the stale-upload cleanup to the end
        // (a unit of a distributed round: one writer per unit; a plan writes nothing).
        let lease_store = match (&ctx.opts.role, &self.unit_lease) {
            (Role::Unit(..), Some(s)) => s.clone(),
            (Role::Unit(..), None) => {
                return Err(Error::other("a unit run needs a lease of its own"));
            }
            _ => ctx.lease_store.clone(),
        };
        let lease = if ctx.opts.dry_run || matches!(ctx.opts.role, Role::Plan) {
            if let Some(h) = crate::lease::peek(lease_store.as_ref()).await? {
                tracing::warn!(
                    "another snapferry run is writing to the destination ({}); a real run would stop here",
                    h.describe(crate::store::fs::now_ms())
                );
            }
            None
        } else {
            let (l, prev) =
                Lease::acquire(lease_store, ctx.opts.lease_ttl, ctx.cancel.clone()).await?;
            if let Ok(mut f) = ctx.fence.lock() {
                *f = l.fence();
            }
            Some((l, prev))
        };
        let previous = lease
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or(Previous::None);
        // Checks that need the lease held (what the destination holds cannot change under
        // us from here on), then the work.
        let checked = match detected {
            Some(plan) => snapshot::check_destination(&ctx, plan).await.map(Some),
            None => Ok(None),
        };
        let outcome = match checked {
            Ok(plan) => {
                ctx.observer.event(&Event::Started);
                body(&ctx, &previous, plan).await
            }
            Err(e) => Err(e),
        };
        let lost = lease.as_ref().and_then(|(l, _)| l.lost());
        if let Some((l, _)) = lease {
            l.release().await;
        }
        let mut body = outcome?;
        if let Some(why) = lost {
            body.fatal = Some(
                Error::locked(format!(
                    "the run stopped: it lost the destination lease ({why})"
                ))
                .on(Side::Destination),
            );
        }
        if body.fatal.is_none() {
            body.fatal = ctx.stopped.lock().ok().and_then(|mut s| s.take());
        }
        let interrupted = ctx.cancel.is_cancelled() && body.fatal.is_none();

        let duration = start.elapsed().as_secs_f64();
        let c = &ctx.counters;
        let copied_bytes = c.copied_bytes.load(Ordering::Relaxed);
        let failures = ctx.failures.lock().map(|f| f.clone()).unwrap_or_default();
        Ok(Report {
            source: ctx.src.describe(),
            destination: ctx.dst.describe(),
            dry_run: ctx.opts.dry_run,
            copied_objects: c.copied_objects.load(Ordering::Relaxed),
            copied_bytes,
            skipped_objects: c.skipped_objects.load(Ordering::Relaxed),
            deleted_objects: c.deleted_objects.load(Ordering::Relaxed),
            failed_objects: c.failed_objects.load(Ordering::Relaxed),
            duration_seconds: duration,
            throughput_bytes_per_second: if duration > 0.0 {
                copied_bytes as f64 / duration
            } else {
                0.0
            },
            failures,
            source_objects: c.listed_objects.load(Ordering::Relaxed),
            planned_copy_objects: c.planned_objects.load(Ordering::Relaxed),
            planned_copy_bytes: c.planned_bytes.load(Ordering::Relaxed),
            planned_delete_objects: body.planned_deletes,
            deletes_refused: body.deletes_refused,
            aborted_stale_uploads: body.aborted_stale,
            young_uploads_left: body.young_left,
            resumed_uploads: c.resumed_uploads.load(Ordering::Relaxed),
            resumed_parts: c.resumed_parts.load(Ordering::Relaxed),
            resumed_bytes: c.resumed_bytes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            requests: ctx.lat.request_counts(),
            latency_ms: ctx.lat.summaries(),
            interrupted,
            fatal_error_kind: body.fatal.as_ref().map(Error::kind),
            fatal_error: body.fatal.map(|e| e.to_string()),
            differ_max_held: body.max_held,
            snapshot: body.snapshot,
            verified_by: VERIFIED_BY
                .iter()
                .zip(&ctx.verified_counts)
                .map(|((_, k), v)| (k.to_string(), v.load(Ordering::Relaxed)))
                .collect(),
            unverified_objects: ctx.unverified.lock().map(|u| u.clone()).unwrap_or_default(),
            transferred_bytes: c.transferred_bytes.load(Ordering::Relaxed),
            resent_bytes: ctx.faults.resent_bytes.load(Ordering::Relaxed),
            faults: ctx.faults.summary(),
        })
    }
}

/// What the body of a run produced, for the report.
#[derive(Default)]
struct Body {
    fatal: Option<Error>,
    planned_deletes: u64,
    deletes_refused: Option<String>,
    aborted_stale: u64,
    young_left: u64,
    max_held: usize,
    snapshot: Option<snapshot::SnapshotReport>,
}

/// The run between taking and releasing the lease.
async fn body(
    ctx: &Arc<Ctx>,
    previous: &Previous,
    detected: Option<snapshot::Checked>,
) -> Result<Body> {
    let mut out = Body::default();
    // A plan writes nothing; a unit shares the destination with the round's other units,
    // whose uploads it must not take for a gone run's: neither cleans up.
    let shared = matches!(ctx.opts.role, Role::Plan | Role::Unit(..));
    // Resume records listed before the uploads: a record written after this listing is
    // not looked at, and one listed here whose upload is listed next is kept.
    let records = if ctx.opts.dry_run || shared {
        Vec::new()
    } else {
        ctx.dst
            .list_reserved(resume::RESUME_DIR)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(
                    "cannot list the resume records ({e}); leaving them for the next run"
                );
                Vec::new()
            })
    };
    // Uploads left by a killed run: aborted before anything else, so that no orphaned
    // upload survives a successful run; but only those no live run can own.
    let stale = if shared {
        Vec::new()
    } else {
        ctx.dst.list_multipart_uploads().await?
    };
    // Records of no pending upload (their upload completed or was aborted, and removing
    // the record failed, or the run was killed in between) are removed.
    let pending: std::collections::HashSet<String> = stale
        .iter()
        .map(|u| resume::record_key(&u.upload_id))
        .collect();
    for key in records.iter().filter(|k| !pending.contains(*k)) {
        if let Err(e) = ctx.dst_cleanup.delete(key).await {
            tracing::warn!("cannot remove the stale resume record {key} ({e})");
        }
    }
    let cutoff = crate::store::fs::now_ms() - ctx.opts.stale_upload_age.as_millis() as i64;
    for u in &stale {
        if !abortable(u, previous, cutoff) {
            out.young_left += 1;
            tracing::info!(
                "leaving the upload of {} alone: younger than the stale-upload age, and its writer may be alive",
                u.key
            );
            continue;
        }
        if !ctx.opts.dry_run {
            // Its writer is gone: resume it if it says what it was cut from, else abort.
            if let Some(rec) = ctx.read_record(u).await {
                // The guard is dropped before any await (the lock is std's).
                let displaced = ctx
                    .resumable
                    .lock()
                    .ok()
                    .and_then(|mut r| r.insert(u.key.clone(), (u.upload_id.clone(), rec)));
                if let Some((older, _)) = displaced {
                    // Two kept uploads of one key: the one not kept is aborted.
                    ctx.abort_upload(&u.key, &older).await;
                    out.aborted_stale += 1;
                }
                continue;
            }
            ctx.abort_upload(&u.key, &u.upload_id).await;
            out.aborted_stale += 1;
        }
        ctx.observer.event(&Event::StaleUpload {
            key: u.key.clone(),
            aborted: !ctx.opts.dry_run,
        });
    }

    match detected {
        None => {
            // A plain sync: one pass over everything.
            let pass = pass(ctx, None).await?;
            out.max_held = pass.max_held;
            out.planned_deletes = pass.deletes.count;
            out.fatal = pass.fatal;
            if ctx.opts.delete && out.fatal.is_none() && !ctx.halt.is_cancelled() {
                out.deletes_refused = delete_guard(ctx, pass.deletes.count, pass.dst_objects);
                if out.deletes_refused.is_none() {
                    run_or_plan_deletes(ctx, pass.deletes).await?;
                }
            }
        }
        Some(plan) => {
            let r = snapshot::run(ctx, plan).await?;
            out.fatal = r.fatal;
            out.max_held = r.max_held;
            out.planned_deletes = r.planned_deletes;
            out.deletes_refused = r.deletes_refused;
            out.snapshot = Some(r.report);
        }
    }
    // Kept uploads this run did not resume (the key is in sync now, or gone): aborted.
    let left: Vec<(String, String)> = ctx
        .resumable
        .lock()
        .map(|mut r| r.drain().map(|(k, (id, _))| (k, id)).collect())
        .unwrap_or_default();
    for (key, id) in left {
        ctx.abort_upload(&key, &id).await;
        out.aborted_stale += 1;
    }
    Ok(out)
}

/// Whether a pending upload found at the start may be aborted: older than the safety
/// age, or left by a holder this host knows to be gone (then everything before now).
fn abortable(u: &PendingUpload, previous: &Previous, cutoff_ms: i64) -> bool {
    match (u.initiated_ms, previous) {
        (_, Previous::Dead(_)) => true,
        // No start time: it cannot be shown to be old.
        (None, _) => false,
        (Some(t), _) => t < cutoff_ms,
    }
}

/// What one pass over (a filtered part of) the listings produced.
pub(crate) struct PassOutcome {
    /// A failure that stopped the pass (listing or differ error).
    pub fatal: Option<Error>,
    /// Destination keys the source lacks (collected only when `--delete`).
    pub deletes: DeleteSpill,
    /// The most entries the differ held.
    pub max_held: usize,
    /// Objects the destination listing held (the base of `--max-delete` percentages).
    pub dst_objects: u64,
}

/// Key filter of a pass: only keys for which it returns true are listed on either side.
pub(crate) type KeyFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One pass of the pipeline: list both sides (filtered), diff, copy, and wait until every
/// copy has landed (or failed).
pub(crate) async fn pass(ctx: &Arc<Ctx>, filter: Option<KeyFilter>) -> Result<PassOutcome> {
    // A plain sync (no filter) lists both sides fanned out over their directories when
    // asked to; a snapshot-aware pass lists flat, as it always has.
    let fan_out = filter.is_none() && ctx.opts.list_fan_out;
    let src_rx = lister::spawn(ctx.clone(), ctx.src.clone(), filter.clone(), false, fan_out);
    let dst_rx = lister::spawn(
        ctx.clone(),
        ctx.dst.clone(),
        filter,
        ctx.dst_missing(),
        fan_out,
    );
    let (join_tx, join_rx) = mpsc::channel::<Joined>(lister::LIST_CHANNEL);
    let diff_stats = Arc::new(DiffStats::default());
    let ds = diff_stats.clone();
    let differ =
        tokio::spawn(async move { differ::merge_join(src_rx, dst_rx, join_tx, &ds).await });
    let mut out = pass_fed(ctx, join_rx, differ).await?;
    out.max_held = diff_stats.max_held();
    Ok(out)
}

/// The stages after the merge-join: decide, schedule, copy, and wait until every copy
/// has landed (or failed). `feed` is the task sending the joined entries (the differ,
/// or a planner's stage in front of it); its error is the pass's.
pub(crate) async fn pass_fed(
    ctx: &Arc<Ctx>,
    join_rx: mpsc::Receiver<Joined>,
    feed: tokio::task::JoinHandle<Result<()>>,
) -> Result<PassOutcome> {
    let differ = feed;
    let conc = ctx.opts.concurrency;
    let (commit_tx, commit_rx) = mpsc::channel::<Commit>(conc * 2);
    let (job_tx, job_rx) = async_channel::bounded::<Job>(conc);
    let (fetched_tx, fetched_rx) = mpsc::channel(conc);
    let fetched_rx = Arc::new(tokio::sync::Mutex::new(fetched_rx));
    let mut workers = tokio::task::JoinSet::new();
    if !ctx.opts.dry_run {
        for _ in 0..conc {
            workers.spawn(transfer::fetcher(
                ctx.clone(),
                job_rx.clone(),
                fetched_tx.clone(),
                commit_tx.clone(),
            ));
            workers.spawn(transfer::uploader(
                ctx.clone(),
                fetched_rx.clone(),
                commit_tx.clone(),
            ));
        }
    }
    drop(job_rx);
    drop(fetched_tx);
    let committer = tokio::spawn(transfer::committer(ctx.clone(), commit_rx));

    let mut deletes = DeleteSpill::new()?;
    let permits = Arc::new(Semaphore::new(conc));
    let dst_objects = AtomicU64::new(0);
    let plan_result = plan_and_schedule(
        ctx,
        join_rx,
        &job_tx,
        &commit_tx,
        &permits,
        &mut deletes,
        &dst_objects,
    )
    .await;
    drop(job_tx);
    drop(commit_tx);
    let differ_result = differ
        .await
        .unwrap_or_else(|e| Err(Error::other(format!("differ task failed: {e}"))));
    while workers.join_next().await.is_some() {}
    let _ = committer.await;

    // Anything still registered was interrupted mid-way: abort it.
    let leftover: Vec<(String, String)> = ctx
        .active_uploads
        .lock()
        .map(|a| a.iter().map(|(id, k)| (id.clone(), k.clone())).collect())
        .unwrap_or_default();
    for (id, key) in leftover {
        ctx.abort_upload(&key, &id).await;
    }
    Ok(PassOutcome {
        // A cancelled run is reported as interrupted, not as a failure of its listing.
        fatal: plan_result
            .err()
            .or(differ_result.err())
            .filter(|e| e.kind() != ErrorKind::Cancelled),
        deletes,
        max_held: 0,
        dst_objects: dst_objects.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests;
