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

pub mod differ;
pub mod lister;
pub mod scheduler;
pub mod snapshot;
pub mod transfer;

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::retry::RetryPolicy;
use crate::stats::{Counters, Kind, Latencies, LatencySummary};
use crate::store::{ObjectMeta, PutOptions, Store};
use differ::{decide, Decision, DiffStats, Joined};
use transfer::{Commit, Job, JobKind, MultiObject};

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
        }
    }
}

impl SyncOptions {
    /// Checks the knobs; the message names the problem and the fix.
    pub fn validate(&self) -> Result<()> {
        use scheduler::{MAX_PART_SIZE, MIN_PART_SIZE};
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(Error::InvalidInput(format!(
                "--concurrency {} is out of range; use 1..=1024",
                self.concurrency
            )));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(Error::InvalidInput(format!(
                "--part-size {} bytes is outside 5MiB..5GiB; choose a part size in that range, e.g. 16MiB",
                self.part_size
            )));
        }
        if self.multipart_threshold < self.part_size {
            return Err(Error::InvalidInput(format!(
                "--multipart-threshold ({} bytes) is below --part-size ({} bytes); raise the threshold to at least the part size",
                self.multipart_threshold, self.part_size
            )));
        }
        if self.multipart_threshold > MAX_PART_SIZE {
            return Err(Error::InvalidInput(format!(
                "--multipart-threshold {} bytes is above 5GiB, the largest single PUT; use at most 5GiB",
                self.multipart_threshold
            )));
        }
        Ok(())
    }
}

/// What a run did or plans to do, for observers (dry-run listing, verbose logs).
#[derive(Debug, Clone)]
pub enum Event {
    /// A planned copy (printed by `--dry-run`).
    PlanCopy {
        /// Key.
        key: String,
        /// Size in bytes.
        size: u64,
        /// Why it is copied.
        reason: String,
    },
    /// A planned delete.
    PlanDelete {
        /// Key.
        key: String,
    },
    /// A stale multipart upload from an earlier, killed run.
    StaleUpload {
        /// Key.
        key: String,
        /// Whether it was aborted (false in dry-run).
        aborted: bool,
    },
    /// An object copied and verified.
    Copied {
        /// Key.
        key: String,
        /// Size.
        size: u64,
    },
    /// An object failed.
    Failed {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// An object deleted.
    Deleted {
        /// Key.
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
    /// Multipart uploads left by an earlier run, found on the destination and aborted.
    pub aborted_stale_uploads: u64,
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
    /// The most entries the differ held at once (flat-memory evidence).
    pub differ_max_held: usize,
    /// Snapshot-aware sync details, when the source is a snapshot repository.
    pub snapshot: Option<snapshot::SnapshotReport>,
}

/// Shared state of one run, handed to every stage.
pub struct Ctx {
    /// Source store.
    pub src: Arc<dyn Store>,
    /// Destination store.
    pub dst: Arc<dyn Store>,
    /// Knobs.
    pub opts: SyncOptions,
    /// Rate limits.
    pub limits: Limits,
    /// Live counters (the CLI reads them for progress).
    pub counters: Arc<Counters>,
    /// Latencies and request counts.
    pub lat: Arc<Latencies>,
    /// Cancels the run.
    pub cancel: CancellationToken,
    observer: Arc<dyn Observer>,
    failures: Mutex<Vec<Failure>>,
    active_uploads: Mutex<HashMap<String, String>>,
}

impl Ctx {
    /// One request with the run's limits, retries and timing.
    pub async fn call<T, F, Fut>(&self, kind: Kind, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.opts
            .retry
            .run(&self.cancel, &self.counters.retries, || {
                let fut = f();
                async move {
                    self.limits.request().await;
                    let t = Instant::now();
                    let r = fut.await;
                    self.lat.record(kind, t.elapsed());
                    r
                }
            })
            .await
    }

    fn put_options(&self, src: &ObjectMeta) -> PutOptions {
        PutOptions {
            metadata: src.as_record().to_metadata(),
            mtime_ms: src.mtime_ms,
        }
    }

    fn observer_event(&self, e: &Event) {
        self.observer.event(e);
    }

    fn copied(&self, m: &ObjectMeta) {
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
        self.counters.failed_objects.fetch_add(1, Ordering::Relaxed);
        let reason = match e {
            Error::Cancelled => "interrupted before it was copied".to_string(),
            Error::SourceChanged(m) => format!("{m}; run sync again to copy the new version"),
            e => e.to_string(),
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
                });
            }
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

    /// Aborts an upload; runs even after cancellation (that is when it matters most).
    async fn abort_upload(&self, key: &str, upload_id: &str) {
        let policy = RetryPolicy::preflight();
        let never = CancellationToken::new();
        let res = policy
            .run(&never, &self.counters.retries, || async {
                let t = Instant::now();
                let r = self.dst.abort_multipart(key, upload_id).await;
                self.lat.record(Kind::AbortMultipart, t.elapsed());
                r
            })
            .await;
        match res {
            Ok(()) => self.forget_upload(upload_id),
            Err(e) => tracing::warn!(
                "could not abort upload of {key} ({e}); the next run will find and abort it"
            ),
        }
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
}

impl SyncRun {
    /// Prepares a run. Validate options first ([`SyncOptions::validate`]).
    pub fn new(
        src: Arc<dyn Store>,
        dst: Arc<dyn Store>,
        opts: SyncOptions,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let limits = Limits::new(opts.bwlimit, opts.tpslimit);
        SyncRun {
            ctx: Arc::new(Ctx {
                src,
                dst,
                opts,
                limits,
                counters: Arc::new(Counters::default()),
                lat: Arc::new(Latencies::default()),
                cancel: CancellationToken::new(),
                observer,
                failures: Mutex::new(Vec::new()),
                active_uploads: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A handle for progress and cancellation.
    pub fn handle(&self) -> Handle {
        Handle {
            counters: self.ctx.counters.clone(),
            cancel: self.ctx.cancel.clone(),
        }
    }

    /// Checks that both stores are reachable and usable. Errors here mean nothing was
    /// written (exit code 3 for access problems).
    pub async fn preflight(&self) -> Result<()> {
        let p = RetryPolicy::preflight();
        let never = CancellationToken::new();
        let ctx = &self.ctx;
        p.run(&never, &ctx.counters.retries, || ctx.src.preflight())
            .await
            .map_err(|e| side_error("source", e))?;
        p.run(&never, &ctx.counters.retries, || ctx.dst.preflight())
            .await
            .map_err(|e| side_error("destination", e))?;
        Ok(())
    }

    /// Runs the sync to the end (or to cancellation) and returns its report. Errors are
    /// returned only for failures before anything was written; later failures are in the
    /// report (`failed_objects`, `fatal_error`).
    pub async fn run(self) -> Result<Report> {
        let ctx = self.ctx;
        let start = Instant::now();

        // Uploads left by a killed run: abort them before anything else, so that no
        // orphaned upload survives a successful run.
        let stale = ctx
            .call(Kind::ListUploads, || ctx.dst.list_multipart_uploads())
            .await
            .map_err(|e| side_error("destination", e))?;
        let mut aborted_stale = 0;
        for u in &stale {
            if !ctx.opts.dry_run {
                ctx.abort_upload(&u.key, &u.upload_id).await;
                aborted_stale += 1;
            }
            ctx.observer.event(&Event::StaleUpload {
                key: u.key.clone(),
                aborted: !ctx.opts.dry_run,
            });
        }

        let mut diff_max_held = 0;
        let mut planned_deletes = 0;
        let mut snapshot_info = None;
        let fatal: Option<Error> = match snapshot::detect(&ctx).await {
            Err(e) => Some(e),
            Ok(None) => {
                // A plain sync: one pass over everything.
                let out = pass(&ctx, None).await?;
                diff_max_held = out.max_held;
                planned_deletes = out.deletes.count;
                match out.fatal {
                    Some(e) => Some(e),
                    None if ctx.opts.delete && !ctx.cancel.is_cancelled() => {
                        if ctx.opts.dry_run {
                            for key in out.deletes.keys()? {
                                ctx.observer.event(&Event::PlanDelete { key: key? });
                            }
                        } else {
                            run_deletes(&ctx, out.deletes).await?;
                        }
                        None
                    }
                    None => None,
                }
            }
            Ok(Some(plan)) => {
                let (fatal, info, held, deletes) = snapshot::run(&ctx, plan).await?;
                diff_max_held = held;
                planned_deletes = deletes;
                snapshot_info = Some(info);
                fatal
            }
        };
        let interrupted = ctx.cancel.is_cancelled();

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
            planned_delete_objects: planned_deletes,
            aborted_stale_uploads: aborted_stale,
            retries: c.retries.load(Ordering::Relaxed),
            requests: ctx.lat.request_counts(),
            latency_ms: ctx.lat.summaries(),
            interrupted,
            fatal_error: fatal.map(|e| e.to_string()),
            differ_max_held: diff_max_held,
            snapshot: snapshot_info,
        })
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
}

/// Key filter of a pass: only keys for which it returns true are listed on either side.
pub(crate) type KeyFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// One pass of the pipeline: list both sides (filtered), diff, copy, and wait until every
/// copy has landed (or failed).
pub(crate) async fn pass(ctx: &Arc<Ctx>, filter: Option<KeyFilter>) -> Result<PassOutcome> {
    let src_rx = lister::spawn(ctx.clone(), ctx.src.clone(), filter.clone());
    let dst_rx = lister::spawn(ctx.clone(), ctx.dst.clone(), filter);
    let (join_tx, join_rx) = mpsc::channel::<Joined>(lister::LIST_CHANNEL);
    let diff_stats = Arc::new(DiffStats::default());
    let ds = diff_stats.clone();
    let differ =
        tokio::spawn(async move { differ::merge_join(src_rx, dst_rx, join_tx, &ds).await });

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
    let plan_result =
        plan_and_schedule(ctx, join_rx, &job_tx, &commit_tx, &permits, &mut deletes).await;
    drop(job_tx);
    drop(commit_tx);
    let differ_result = differ
        .await
        .unwrap_or_else(|e| Err(Error::Other(format!("differ task failed: {e}"))));
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
        fatal: plan_result.err().or(differ_result.err()),
        deletes,
        max_held: diff_stats.max_held(),
    })
}

fn side_error(side: &str, e: Error) -> Error {
    match e {
        Error::AccessDenied(m) => Error::AccessDenied(format!(
            "{side}: {m}; check the {side} credentials (SNAPFERRY_{}_ACCESS_KEY_ID / _SECRET_ACCESS_KEY)",
            if side == "source" { "SRC" } else { "DST" }
        )),
        Error::Unreachable(m) => Error::Unreachable(format!(
            "{side}: {m}; check the {side} endpoint URL and that the server is up"
        )),
        Error::Timeout(m) => Error::Unreachable(format!(
            "{side}: {m}; check the {side} endpoint URL and the network"
        )),
        Error::NoSuchBucket(m) => Error::NoSuchBucket(format!("{side}: {m}")),
        other => other,
    }
}

/// Consumes the merge-join: decides (HEADing when needed), counts skips, spills
/// deletes, and schedules copies.
async fn plan_and_schedule(
    ctx: &Arc<Ctx>,
    join_rx: mpsc::Receiver<Joined>,
    job_tx: &async_channel::Sender<Job>,
    commit_tx: &mpsc::Sender<Commit>,
    permits: &Arc<Semaphore>,
    deletes: &mut DeleteSpill,
) -> Result<()> {
    let dst_records = ctx.dst.listing_has_records();
    let joined =
        futures::stream::unfold(
            join_rx,
            |mut rx| async move { rx.recv().await.map(|j| (j, rx)) },
        );
    // The checker: decisions that need a HEAD run concurrently, in bounded number.
    let decided = joined
        .map(|j| {
            let ctx = ctx.clone();
            async move {
                match j {
                    Joined::DestOnly(d) => Ok((None, Some(d), None)),
                    Joined::Source(s, d) => {
                        ctx.counters.listed_objects.fetch_add(1, Ordering::Relaxed);
                        let mut dec = decide(&s, d.as_ref(), dst_records);
                        if dec == Decision::NeedHead {
                            let head = ctx.call(Kind::Head, || ctx.dst.head(&s.key)).await?;
                            dec = decide(&s, head.as_ref(), true);
                        }
                        Ok::<_, Error>((Some(s), None, Some(dec)))
                    }
                }
            }
        })
        .buffered(ctx.opts.concurrency.max(4));
    futures::pin_mut!(decided);
    while let Some(item) = decided.next().await {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let (src, dest_only, dec) = item?;
        if let Some(d) = dest_only {
            if ctx.opts.delete {
                deletes.push(&d.key)?;
            }
            continue;
        }
        let (Some(src), Some(dec)) = (src, dec) else {
            continue;
        };
        match dec {
            Decision::Skip(_) => {
                ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
            }
            Decision::NeedHead => unreachable!("decide(.., true) never asks for a HEAD"),
            Decision::Copy(reason) => {
                ctx.counters.planned_objects.fetch_add(1, Ordering::Relaxed);
                ctx.counters
                    .planned_bytes
                    .fetch_add(src.size, Ordering::Relaxed);
                if ctx.opts.dry_run {
                    ctx.observer.event(&Event::PlanCopy {
                        key: src.key.clone(),
                        size: src.size,
                        reason,
                    });
                    continue;
                }
                schedule(ctx, src, job_tx, commit_tx, permits).await;
            }
        }
    }
    Ok(())
}

/// The scheduler stage for one object.
async fn schedule(
    ctx: &Arc<Ctx>,
    src: ObjectMeta,
    job_tx: &async_channel::Sender<Job>,
    commit_tx: &mpsc::Sender<Commit>,
    permits: &Arc<Semaphore>,
) {
    let acquire = || async {
        tokio::select! {
            p = permits.clone().acquire_owned() => p.ok(),
            _ = ctx.cancel.cancelled() => None,
        }
    };
    if !scheduler::is_multipart(src.size, ctx.opts.multipart_threshold) {
        let Some(permit) = acquire().await else {
            ctx.failed(&src.key, &Error::Cancelled);
            return;
        };
        let _ = job_tx
            .send(Job {
                kind: JobKind::Single(src),
                permit,
            })
            .await;
        return;
    }
    let opts = ctx.put_options(&src);
    let upload_id = match ctx
        .call(Kind::CreateMultipart, || {
            ctx.dst.create_multipart(&src.key, &opts)
        })
        .await
    {
        Ok(id) => id,
        Err(e) => {
            ctx.failed(&src.key, &e);
            return;
        }
    };
    ctx.track_upload(&upload_id, &src.key);
    let ranges: Vec<_> = scheduler::part_ranges(src.size, ctx.opts.part_size).collect();
    let total = ranges.len();
    let obj = Arc::new(MultiObject::new(src, upload_id, opts, total));
    for (i, range) in ranges.into_iter().enumerate() {
        let number = i as u32 + 1;
        let Some(permit) = acquire().await else {
            // Cancelled: the parts never scheduled count as finished, failed, so that
            // the committer aborts the upload and reports the object.
            obj.abandon_parts(total - i);
            if obj.remaining() == 0 {
                let _ = commit_tx.send(Commit::Multi(obj.clone())).await;
            }
            return;
        };
        let job = Job {
            kind: JobKind::Part {
                obj: obj.clone(),
                number,
                range,
            },
            permit,
        };
        if job_tx.send(job).await.is_err() {
            // The workers are gone (cancelled): this part and the rest never run.
            obj.abandon_parts(total - i);
            if obj.remaining() == 0 {
                let _ = commit_tx.send(Commit::Multi(obj.clone())).await;
            }
            return;
        }
    }
}

pub(crate) async fn run_deletes(ctx: &Arc<Ctx>, deletes: DeleteSpill) -> Result<()> {
    let keys = deletes.keys()?;
    let stream = futures::stream::iter(keys).map(|key| {
        let ctx = ctx.clone();
        async move {
            let key = match key {
                Ok(k) => k,
                Err(e) => return Err(e),
            };
            match ctx.call(Kind::Delete, || ctx.dst.delete(&key)).await {
                Ok(()) => {
                    ctx.counters.deleted_objects.fetch_add(1, Ordering::Relaxed);
                    ctx.observer.event(&Event::Deleted { key });
                }
                Err(e) => ctx.failed(&key, &e),
            }
            Ok(())
        }
    });
    let mut s = stream.buffer_unordered(ctx.opts.concurrency);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}

/// Keys planned for deletion, spilled to a temp file as JSON strings (one per line,
/// so any key, newlines included, round-trips) to keep memory flat.
pub(crate) struct DeleteSpill {
    file: Option<std::io::BufWriter<tempfile::NamedTempFile>>,
    pub(crate) count: u64,
}

impl DeleteSpill {
    pub(crate) fn new() -> Result<Self> {
        Ok(DeleteSpill {
            file: None,
            count: 0,
        })
    }

    pub(crate) fn push(&mut self, key: &str) -> Result<()> {
        if self.file.is_none() {
            self.file = Some(std::io::BufWriter::new(tempfile::NamedTempFile::new()?));
        }
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(key).map_err(|e| Error::Other(e.to_string()))?;
            writeln!(f, "{line}")?;
        }
        self.count += 1;
        Ok(())
    }

    pub(crate) fn keys(self) -> Result<Box<dyn Iterator<Item = Result<String>> + Send>> {
        let Some(f) = self.file else {
            return Ok(Box::new(std::iter::empty()));
        };
        let tmp = f.into_inner().map_err(|e| Error::Io(e.to_string()))?;
        let reader = std::io::BufReader::new(tmp.reopen()?);
        // Keep the temp file alive for as long as the iterator.
        let lines = reader.lines().map(move |l| {
            let _keep = &tmp;
            let l = l?;
            serde_json::from_str::<String>(&l).map_err(|e| Error::Other(e.to_string()))
        });
        Ok(Box::new(lines))
    }
}

#[cfg(test)]
mod tests;
