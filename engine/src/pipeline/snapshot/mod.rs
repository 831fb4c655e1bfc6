//! Snapshot-aware sync: copy an Elasticsearch/OpenSearch repository so that the
//! destination is a consistent repository at every instant.
//!
//! The source generation N is pinned at the start (its `index.latest`, read without a
//! listing). What to copy is planned from the repository's metadata by default
//! ([`planner`]: only shards whose generation moved are looked at), or from full
//! listings ([`legacy`]: `--snapshot`, `--delete`, `--plan-from listing`). Blobs are
//! copied in phases, each
//! starting only after the previous one has fully landed: data blobs → shard `snap-*` →
//! shard `index-<gen>` → index `meta-*` → root `meta-*`/`snap-*` → root `index-M` (the
//! commit point: readers take the largest `index-M` they list) → `index.latest`, which
//! snapferry writes itself as M. A phase with any failure stops the run before the
//! commit point. Only blobs the pinned generation references are copied (`tests-*`,
//! `pending-*` and garbage never are).
//!
//! The root is written, not copied, so that it is never overwritten: M is N, unless the
//! destination already holds a root at or above N with other bytes (an earlier
//! `--snapshot` round, say), in which case M is one above the destination's current
//! generation. A destination whose current root already has exactly these bytes is
//! committed already.
//!
//! `--snapshot NAME` writes a repository that holds exactly those snapshots, the way
//! Elasticsearch leaves one after deleting the others: a filtered root and, for shards
//! whose generation lists other snapshots, new shard-level `index-<gen>` blobs
//! ([`crate::repo::filter`]).
//!
//! A destination that holds another repository (another repository UUID, or, for
//! repositories written before UUIDs existed, no snapshot in common) is refused unless
//! `replace_repository`: copying over it would silently drop its catalogue.
//!
//! `--delete` removes destination blobs referenced by neither the new generation nor the
//! destination's previous one, only after `index.latest` is written, and only within the
//! run's delete guard (no errors, bounded by `--max-delete`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::differ::{DiffStats, Joined};
use super::{pass_fed, Ctx, PlanFrom, Role, SnapshotAware, VerifyDestination};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::model::{
    read_root_bytes, snapshot_names, BlobKind, Repository, RepositoryData, INCOMPATIBLE_SNAPSHOTS,
};

mod commit;
pub mod distributed;
pub mod legacy;
pub mod planner;
pub mod state;

/// The copy phases, in order.
pub const PHASES: [BlobKind; 7] = [
    BlobKind::Data,
    BlobKind::ShardSnapshot,
    BlobKind::ShardIndex,
    BlobKind::IndexMeta,
    BlobKind::RootMeta,
    BlobKind::RootIndex,
    BlobKind::IndexLatest,
];

/// A phase's name in the report (derived on [`BlobKind`]).
fn phase_name(k: BlobKind) -> &'static str {
    k.into()
}

/// One phase in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase name.
    pub phase: String,
    /// Objects copied (or written) in it.
    pub copied_objects: u64,
}

/// The snapshot-aware part of a sync report.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// The pinned source generation.
    pub source_generation: u64,
    /// The generation the destination's root was written as (usually the source's).
    pub destination_generation: u64,
    /// Snapshots copied.
    pub snapshots: Vec<String>,
    /// Blobs the pinned generation (and selected snapshots) reference, among those this
    /// round looked at (with `planned_from` "metadata", the shards whose generation
    /// moved and the root's metadata).
    pub referenced_blobs: usize,
    /// Phases run, in order.
    pub phases: Vec<PhaseReport>,
    /// Whether the commit point and index.latest landed.
    pub completed: bool,
    /// The source's generation at the end, when it moved during the copy.
    pub source_generation_moved_to: Option<u64>,
    /// How the round found what to copy: "metadata" (shard generations compared with the
    /// root snapferry committed last, changed shards listed by prefix) or "listing" (full
    /// listings of both sides).
    pub planned_from: String,
    /// Why the round was planned from listings, when it was.
    pub planned_from_reason: Option<String>,
    /// Shard (or index) directories examined.
    pub examined_units: u64,
    /// Shard directories the source and the trusted destination hold at the same
    /// generation, skipped without a request.
    pub unchanged_units: u64,
    /// The most units' needs the planner held at once (bounded by its read-ahead, not by
    /// the repository's size).
    pub planner_max_units_held: usize,
    /// The most referenced blob names the planner held at once.
    pub planner_max_names_held: usize,
    /// `snapferry plan`: the changed units weighed, and the destination root planned
    /// against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned: Option<distributed::Planned>,
}

/// What `detect` found: the pinned source repository and what the copy writes.
pub struct Plan {
    generation: u64,
    /// The parsed root; `None` until a round needs more than its snapshot names.
    data: Option<RepositoryData>,
    /// The root `index-N` to write (the source's, or filtered to `--snapshot`).
    root: Vec<u8>,
    snapshots: Vec<String>,
    /// `Some` when the round is planned from listings.
    listing: Option<legacy::ListingPlan>,
}

/// Decides whether this sync is snapshot-aware, and reads the source repository if so.
/// Read-only: runs before anything is written, so its refusals change nothing.
pub async fn detect(ctx: &Arc<Ctx>) -> Result<Option<Plan>> {
    let mode = ctx.opts.snapshot_aware;
    let selecting = !ctx.opts.snapshots.is_empty();
    if mode == SnapshotAware::Off {
        if selecting {
            return Err(Error::invalid_input(
                "--snapshot needs --snapshot-aware auto or on",
            ));
        }
        return Ok(None);
    }
    let by_listing = selecting || ctx.opts.delete || ctx.opts.plan_from == PlanFrom::Listing;
    if by_listing && !matches!(ctx.opts.role, Role::Whole) {
        return Err(Error::invalid_input(
            "a distributed round is planned from the repository's metadata: --snapshot, --delete and --plan-from listing do not work with plan, --unit or commit yet; run a whole sync for those",
        ));
    }
    if let Role::Unit(pinned, _) | Role::Commit(pinned, _) = &ctx.opts.role {
        // A step of a distributed round: the root its plan pinned, whatever the source
        // holds now.
        return Ok(Some(Plan {
            generation: pinned.generation,
            data: None,
            root: pinned.root.clone(),
            snapshots: snapshot_names(pinned.generation, &pinned.root)?,
            listing: None,
        }));
    }
    let mut latest = None;
    if mode == SnapshotAware::Auto && !selecting {
        // Cheap detection: fs, s3 and oss repositories always carry index.latest.
        latest = ctx.src.head("index.latest").await?;
        if latest.is_none() {
            return Ok(None);
        }
    }
    if !by_listing {
        if let Some((generation, root)) = read_root_bytes(ctx.src.as_ref(), latest).await? {
            // Only the names for now: a destination that already holds this very root,
            // committed by snapferry, needs nothing more (and a 50M-blob root is big).
            let snapshots = snapshot_names(generation, &root)?;
            tracing::info!(
                "snapshot-aware sync of generation {generation} ({} snapshots)",
                snapshots.len()
            );
            return Ok(Some(Plan {
                generation,
                data: None,
                root,
                snapshots,
                listing: None,
            }));
        }
    }
    let repo = match Repository::load(ctx.src.as_ref()).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NoRepository && mode == SnapshotAware::Auto => {
            if selecting {
                return Err(Error::invalid_input(format!(
                    "--snapshot {} needs a snapshot repository at the source, and {}",
                    ctx.opts.snapshots.join(", "),
                    e.message()
                )));
            }
            tracing::info!("{}; copying it as plain objects", e.message());
            return Ok(None);
        }
        Err(e) if e.kind() == ErrorKind::NoRepository => {
            return Err(Error::invalid_input(format!(
                "--snapshot-aware on, but {}",
                e.message()
            )))
        }
        Err(e) => return Err(e),
    };
    let generation = repo.data.generation;
    let selected = repo.select(&ctx.opts.snapshots)?;
    let snapshots = selected.iter().map(|s| s.name.clone()).collect();
    if !by_listing {
        // index.latest lags or is missing: the root was found by listing.
        let root = repo.root_bytes.clone();
        return Ok(Some(Plan {
            generation,
            data: Some(repo.data),
            root,
            snapshots,
            listing: None,
        }));
    }
    let (mut refs, root, written) = if selecting {
        let f = crate::repo::filter::filter(ctx.src.as_ref(), &repo, &selected).await?;
        (f.refs, f.root, f.shard_indexes)
    } else {
        (Default::default(), repo.root_bytes.clone(), Vec::new())
    };
    // The Lucene checksum the snapshots record for every data file held in one blob: each
    // copied data blob is checked against it as its bytes stream by (what a restore
    // checks), at no extra read.
    let (all_refs, data_files) = repo.references(ctx.src.as_ref(), &selected).await?;
    if !selecting {
        refs = all_refs;
    }
    let mut lucene: HashMap<String, String> = data_files
        .into_iter()
        .filter(|f| f.blobs.len() == 1)
        .filter_map(|f| Some((f.blobs.into_iter().next()?.0, f.checksum?)))
        .collect();
    // Metadata blobs are checksummed envelopes: their own footer checks them ("").
    for (k, r) in refs.iter().filter(|(k, _)| *k != INCOMPATIBLE_SNAPSHOTS) {
        if matches!(
            r.kind,
            BlobKind::ShardSnapshot
                | BlobKind::ShardIndex
                | BlobKind::IndexMeta
                | BlobKind::RootMeta
        ) {
            lucene.entry(k.clone()).or_default();
        }
    }
    // The root is written by the commit phase, never copied.
    refs.retain(|_, r| r.kind != BlobKind::RootIndex && r.kind != BlobKind::IndexLatest);
    tracing::info!(
        "snapshot-aware sync of generation {generation} ({} of {} snapshots, {} blobs, planned from listings)",
        selected.len(),
        repo.data.snapshots.len(),
        refs.len()
    );
    Ok(Some(Plan {
        generation,
        data: Some(repo.data),
        root,
        snapshots,
        listing: Some(legacy::ListingPlan {
            refs,
            written,
            lucene,
        }),
    }))
}

/// What a snapshot-aware run did.
pub(crate) struct Outcome {
    pub fatal: Option<Error>,
    pub report: SnapshotReport,
    pub max_held: usize,
    pub planned_deletes: u64,
    pub deletes_refused: Option<String>,
}

/// Whether the run stops after a phase: a fatal error (kept in `out`), a halt, or an
/// object of the phase that failed. The commit point never lands over an incomplete
/// phase.
fn stops(ctx: &Ctx, before_failed: u64, fatal: Option<Error>, out: &mut Outcome) -> bool {
    if let Some(e) = fatal {
        out.fatal = Some(e);
        return true;
    }
    ctx.halt.is_cancelled() || ctx.counters.failed_objects.load(Ordering::Relaxed) > before_failed
}

impl Outcome {
    fn new(report: SnapshotReport) -> Self {
        Outcome {
            fatal: None,
            report,
            max_held: 0,
            planned_deletes: 0,
            deletes_refused: None,
        }
    }
}

/// A plan checked against the destination (with the lease held): where the root goes.
pub struct Checked {
    plan: Plan,
    /// The generation the root is written as.
    target: u64,
    /// The destination's current root already has these bytes.
    committed: bool,
    /// Whether the destination holds a repository at all.
    has_root: bool,
    /// The destination's root, when it is the one snapferry committed last (and the
    /// round may trust it; `None`: it is the very root this round commits, so nothing
    /// is missing); else why not, when it has one.
    trusted: std::result::Result<Option<RepositoryData>, Option<String>>,
}

/// Reads the destination's current root: refuses another repository's, decides the
/// generation the new root is written as (never over an existing one), and whether the
/// root can be trusted to say what the destination holds.
pub(crate) async fn check_destination(ctx: &Arc<Ctx>, mut plan: Plan) -> Result<Checked> {
    let generation = plan.generation;
    let dst_root = commit::destination_root(ctx).await?;
    let mut target = generation;
    let mut committed = false;
    let mut trusted = Err(None);
    if let Some((n, bytes)) = &dst_root {
        let same = *bytes == plan.root;
        let recorded = state::read(ctx.dst.as_ref()).await?;
        let distrust = state::distrust(recorded.as_ref(), *n, bytes);
        if same && distrust.is_none() && ctx.opts.verify_destination == VerifyDestination::Changed {
            // The very root this round would commit, committed by snapferry: every blob
            // it references is there (the commit point is written last).
            return Ok(Checked {
                plan,
                target: *n,
                committed: true,
                has_root: true,
                trusted: Ok(None),
            });
        }
        if plan.data.is_none() {
            plan.data = Some(RepositoryData::parse(generation, &plan.root)?);
        }
        match RepositoryData::parse(*n, bytes) {
            Ok(d) => {
                if let Some(src) = &plan.data {
                    commit::check_identity(src, &d, ctx.opts.replace_repository)?;
                }
                trusted = match distrust {
                    None if ctx.opts.verify_destination == VerifyDestination::Full => Err(Some(
                        "--verify-destination full".to_string(),
                    )),
                    None => Ok(Some(d)),
                    Some(why) => Err(Some(why)),
                };
            }
            // Its catalogue cannot be read, so it cannot be shown to be ours either.
            Err(e) if !ctx.opts.replace_repository => {
                return Err(Error::invalid_input(format!(
                    "the destination's root index-{n} cannot be read ({}); pass --replace-repository to write over it, or choose another destination",
                    e.message()
                )))
            }
            Err(e) => trusted = Err(Some(format!("its root cannot be read ({})", e.message()))),
        }
        if same {
            target = *n;
            committed = true;
        } else if *n >= generation {
            target = n + 1;
        }
    }
    Ok(Checked {
        plan,
        target,
        committed,
        has_root: dst_root.is_some(),
        trusted,
    })
}

/// Phase 1, data: planned unit by unit, copied as found; the later phases' blobs are
/// spilled. `None`: the run stops here (`out` holds why, with the report).
async fn data_phase(
    ctx: &Arc<Ctx>,
    src: &Arc<RepositoryData>,
    units: Vec<planner::Unit>,
    by_prefix: bool,
    held: &Arc<planner::Held>,
    report: &mut SnapshotReport,
    out: &mut Outcome,
) -> Result<Option<planner::Found>> {
    let (tx, rx) = mpsc::channel::<Joined>(super::lister::LIST_CHANNEL);
    let stats = Arc::new(DiffStats::default());
    let work = planner::unit_stream(ctx.clone(), src.clone(), units, by_prefix, held.clone());
    let (ctx2, src2, stats2) = (ctx.clone(), src.clone(), stats.clone());
    let (found_tx, found_rx) = tokio::sync::oneshot::channel();
    let feed = tokio::spawn(async move {
        let r = if by_prefix {
            planner::by_prefix(ctx2, work, tx).await
        } else {
            planner::by_full_listing(ctx2, work, src2, tx, stats2).await
        };
        match r {
            Ok(f) => {
                let _ = found_tx.send(f);
                Ok(())
            }
            Err(e) => Err(e),
        }
    });
    let before_failed = ctx.counters.failed_objects.load(Ordering::Relaxed);
    let before_copied = ctx.counters.copied_objects.load(Ordering::Relaxed);
    let pass_out = pass_fed(ctx, rx, feed).await?;
    report.phases.push(PhaseReport {
        phase: phase_name(BlobKind::Data).into(),
        copied_objects: ctx.counters.copied_objects.load(Ordering::Relaxed) - before_copied,
    });
    out.max_held = stats.max_held();
    report.planner_max_units_held = held.max_units();
    report.planner_max_names_held = held.max_names();
    if stops(ctx, before_failed, pass_out.fatal, out) {
        out.report = report.clone();
        return Ok(None);
    }
    match found_rx.await {
        Ok(f) => {
            report.examined_units = f.units;
            report.referenced_blobs = f.referenced as usize;
            Ok(Some(f))
        }
        Err(_) => {
            out.fatal = Some(Error::other("the planner stopped without a result"));
            out.report = report.clone();
            Ok(None)
        }
    }
}

/// Phases 2-5, all of them.
const ALL_METADATA: [BlobKind; 4] = [
    BlobKind::ShardSnapshot,
    BlobKind::ShardIndex,
    BlobKind::IndexMeta,
    BlobKind::RootMeta,
];

/// The spilled metadata of the phases `kinds` (a subset of [`ALL_METADATA`], in its
/// order: the order that keeps the destination restorable). True: the run stops here
/// (`out` holds why, with the report).
async fn metadata_phases(
    ctx: &Arc<Ctx>,
    deferred: planner::Deferred,
    kinds: &[BlobKind],
    report: &mut SnapshotReport,
    out: &mut Outcome,
) -> Result<bool> {
    let planner::Deferred {
        shard_snapshots,
        shard_indexes,
        index_meta,
        root_meta,
    } = deferred;
    for (kind, spill) in [
        (BlobKind::ShardSnapshot, shard_snapshots),
        (BlobKind::ShardIndex, shard_indexes),
        (BlobKind::IndexMeta, index_meta),
        (BlobKind::RootMeta, root_meta),
    ] {
        if !kinds.contains(&kind) {
            continue;
        }
        let before_copied = ctx.counters.copied_objects.load(Ordering::Relaxed);
        let before_failed = ctx.counters.failed_objects.load(Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Joined>(super::lister::LIST_CHANNEL);
        let feed = spill.feed(ctx.clone(), tx);
        let pass_out = pass_fed(ctx, rx, feed).await?;
        report.phases.push(PhaseReport {
            phase: phase_name(kind).into(),
            copied_objects: ctx.counters.copied_objects.load(Ordering::Relaxed) - before_copied,
        });
        if stops(ctx, before_failed, pass_out.fatal, out) {
            out.report = report.clone();
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs the phases.
pub(crate) async fn run(ctx: &Arc<Ctx>, checked: Checked) -> Result<Outcome> {
    let Checked {
        plan,
        target,
        committed,
        has_root,
        trusted,
    } = checked;
    let mut report = SnapshotReport {
        source_generation: plan.generation,
        destination_generation: target,
        snapshots: plan.snapshots,
        referenced_blobs: 0,
        phases: Vec::new(),
        completed: false,
        source_generation_moved_to: None,
        planned_from: "listing".into(),
        planned_from_reason: None,
        examined_units: 0,
        unchanged_units: 0,
        planner_max_units_held: 0,
        planner_max_names_held: 0,
        planned: None,
    };
    if let Some(listing) = plan.listing {
        report.planned_from_reason = Some(
            if !ctx.opts.snapshots.is_empty() {
                "--snapshot"
            } else if ctx.opts.delete {
                "--delete"
            } else {
                "--plan-from listing"
            }
            .into(),
        );
        return legacy::run(ctx, report, listing, plan.root, committed, has_root).await;
    }
    let src = Arc::new(match plan.data {
        Some(d) => d,
        None => RepositoryData::parse(plan.generation, &plan.root)?,
    });
    let held = Arc::new(planner::Held::default());
    if let Role::Unit(_, units) = &ctx.opts.role {
        return distributed::unit(ctx, report, src, units.clone(), held).await;
    }
    let committing = match &ctx.opts.role {
        Role::Commit(pinned, units) => {
            distributed::unchanged_since_plan(ctx, &pinned.destination_root, &pinned.root).await?;
            Some(units.clone())
        }
        _ => None,
    };
    let (units, by_prefix) = match &trusted {
        // The barrier of a distributed round: the units copied the shards already.
        _ if committing.is_some() => {
            report.planned_from = "metadata".into();
            (Vec::new(), true)
        }
        Ok(d) => {
            let all: usize = src
                .indices
                .iter()
                .map(|i| i.shard_generations.iter().flatten().count().max(1))
                .sum();
            let units = match d {
                Some(d) => planner::units(&src, Some(d)),
                None => Vec::new(),
            };
            report.unchanged_units = all.saturating_sub(units.len()) as u64;
            report.planned_from = "metadata".into();
            (units, true)
        }
        Err(why) => {
            if let Some(why) = why {
                // One line: the round costs a full listing of both sides.
                tracing::warn!(
                    "the destination's root is not the one snapferry committed last ({why}); planning this round from a full listing of both sides"
                );
                report.planned_from_reason = Some(why.clone());
            } else {
                report.planned_from_reason = Some("the destination holds no repository".into());
            }
            (planner::units(&src, None), false)
        }
    };
    if matches!(ctx.opts.role, Role::Plan) {
        return distributed::weigh(ctx, report, src, &plan.root, units, held).await;
    }
    let mut out = Outcome::new(report.clone());
    let confirm_units = match &committing {
        Some(units) => units.clone(),
        None if ctx.opts.confirm_before_commit => units.clone(),
        None => Vec::new(),
    };
    let Some(found) = data_phase(ctx, &src, units, by_prefix, &held, &mut report, &mut out).await?
    else {
        return Ok(out);
    };
    let mut deferred = found.deferred;
    // What the destination's root already references: a trusted root; at a barrier over
    // a destination without one, nothing (every metadata blob is looked up).
    let nothing;
    let dst_data = match &trusted {
        Ok(Some(d)) => Some(d),
        Err(_) if committing.is_some() => {
            nothing = RepositoryData::empty();
            Some(&nothing)
        }
        _ => None,
    };
    if let Some(d) = dst_data {
        let n = planner::metadata_not_held(ctx, &src, d, &mut deferred).await?;
        report.referenced_blobs += n as usize;
    }
    if metadata_phases(ctx, deferred, &ALL_METADATA, &mut report, &mut out).await? {
        return Ok(out);
    }
    // The barrier confirms unless the destination's root is already this very root and
    // trusted (committed by snapferry: every blob it references landed before it). The
    // same bytes put there by anything else prove nothing. The confirmation only reads,
    // so a dry run of the barrier does it too.
    let trusted_already = committed && matches!(trusted, Ok(None));
    let confirming = ctx.opts.confirm_before_commit || (committing.is_some() && !trusted_already);
    if confirming && (!ctx.opts.dry_run || committing.is_some()) {
        // The cutover round, and the barrier of a distributed one: every blob of what
        // changed is confirmed at the destination, with its size, before the root that
        // references it is written.
        let metadata = match dst_data {
            Some(d) => planner::new_metadata(&src, d),
            None => Vec::new(),
        };
        let bad = planner::confirm(ctx, src.clone(), confirm_units, metadata).await?;
        for (key, why) in &bad {
            ctx.failed(
                key,
                &Error::other(format!("not committing: {why}")).at_key(key),
            );
        }
        if !bad.is_empty() {
            out.report = report;
            return Ok(out);
        }
    }
    let before_failed = ctx.counters.failed_objects.load(Ordering::Relaxed);
    if let Some(e) = commit::commit(ctx, &mut report, &plan.root, committed).await {
        out.fatal = Some(e);
    }
    if out.fatal.is_none() && ctx.counters.failed_objects.load(Ordering::Relaxed) == before_failed {
        report.source_generation_moved_to =
            commit::source_moved(ctx, report.source_generation).await;
    }
    out.report = report;
    Ok(out)
}
