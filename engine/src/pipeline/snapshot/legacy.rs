//! The listing planner: every blob the pinned generation references, found by listing
//! both sides in full and reading every shard snapshot of the source, copied phase by
//! phase with one filtered pass each. It costs O(repository) per round; it serves
//! `--snapshot` (whose filtered shard generations are computed from the whole selection),
//! `--delete` (which must see every destination blob), and `--plan-from listing` (a
//! cross-check of the metadata planner).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;

use super::super::{delete_guard, pass, run_or_plan_deletes, Ctx, DeleteSpill, Event, KeyFilter};
use super::{commit, Outcome, PhaseReport, SnapshotReport, PHASES};
use crate::error::{ErrorKind, Result};
use crate::repo::model::{is_transient, BlobKind, Referenced, Repository};

/// What the listing planner copies.
pub struct ListingPlan {
    /// Blobs copied from the source, by kind.
    pub refs: BTreeMap<String, Referenced>,
    /// Shard-level index blobs snapferry writes itself (`--snapshot`), with their bytes.
    pub written: Vec<(String, Vec<u8>)>,
    /// Data blob key -> the Lucene checksum the snapshot recorded (whole-file blobs).
    pub lucene: HashMap<String, String>,
}

/// Runs the phases of a listing-planned round.
pub(super) async fn run(
    ctx: &Arc<Ctx>,
    mut report: SnapshotReport,
    plan: ListingPlan,
    root: Vec<u8>,
    committed: bool,
    has_root: bool,
) -> Result<Outcome> {
    for (k, v) in plan.lucene {
        ctx.expect_lucene(&k, v);
    }
    // The destination's previous generation: its blobs must survive --delete.
    let previous: BTreeSet<String> = if ctx.opts.delete && has_root {
        match Repository::load(ctx.dst.as_ref()).await {
            Ok(d) => {
                let all: Vec<_> = d.data.snapshots.iter().collect();
                let (r, _) = d.references(ctx.dst.as_ref(), &all).await?;
                let mut keep: BTreeSet<String> = r.into_keys().collect();
                keep.insert(format!("index-{}", d.data.generation));
                keep
            }
            Err(e) if matches!(e.kind(), ErrorKind::NoRepository | ErrorKind::NotFound) => {
                BTreeSet::new()
            }
            Err(e) => return Err(e),
        }
    } else {
        BTreeSet::new()
    };
    let refs = Arc::new(plan.refs);
    let written: BTreeMap<String, Vec<u8>> = plan.written.into_iter().collect();
    report.referenced_blobs = refs.len() + written.len() + 1;
    let mut out = Outcome::new(report.clone());
    for phase in PHASES {
        if matches!(phase, BlobKind::RootIndex | BlobKind::IndexLatest) {
            break; // the commit, below
        }
        let before_copied = ctx.counters.copied_objects.load(Ordering::Relaxed);
        let before_failed = ctx.counters.failed_objects.load(Ordering::Relaxed);
        let r = refs.clone();
        let filter: KeyFilter =
            Arc::new(move |k: &str| !is_transient(k) && r.get(k).is_some_and(|x| x.kind == phase));
        let pass_out = pass(ctx, Some(filter)).await?;
        out.max_held = out.max_held.max(pass_out.max_held);
        let mut phase_copied = ctx.counters.copied_objects.load(Ordering::Relaxed) - before_copied;
        if phase == BlobKind::ShardIndex && pass_out.fatal.is_none() {
            phase_copied += write_shard_indexes(ctx, &written).await;
        }
        report.phases.push(PhaseReport {
            phase: super::phase_name(phase).into(),
            copied_objects: phase_copied,
        });
        if super::stops(ctx, before_failed, pass_out.fatal, &mut out) {
            out.report = report;
            return Ok(out);
        }
    }
    let before_failed = ctx.counters.failed_objects.load(Ordering::Relaxed);
    if let Some(e) = commit::commit(ctx, &mut report, &root, committed).await {
        out.fatal = Some(e);
    }
    if out.fatal.is_some() || ctx.counters.failed_objects.load(Ordering::Relaxed) > before_failed {
        out.report = report;
        return Ok(out);
    }
    report.source_generation_moved_to = commit::source_moved(ctx, report.source_generation).await;
    let root_key = format!("index-{}", report.destination_generation);

    if ctx.opts.delete {
        let mut spill = DeleteSpill::new()?;
        let mut dst_objects = 0u64;
        if !ctx.dst_missing() {
            let mut pages = ctx.dst.list(None);
            while let Some(page) = pages.next().await {
                for m in page? {
                    if crate::store::is_reserved(&m.key) {
                        continue;
                    }
                    dst_objects += 1;
                    let keep = m.key == "index.latest"
                        || m.key == root_key
                        || refs.contains_key(&m.key)
                        || written.contains_key(&m.key)
                        || previous.contains(&m.key);
                    if !keep {
                        spill.push(&m.key)?;
                    }
                }
            }
        }
        out.planned_deletes = spill.count;
        out.deletes_refused = delete_guard(ctx, spill.count, dst_objects);
        if out.deletes_refused.is_none() {
            if let Err(e) = run_or_plan_deletes(ctx, spill).await {
                out.fatal = Some(e);
            }
        }
    }
    out.report = report;
    Ok(out)
}

/// Writes the shard generations snapferry computes itself (`--snapshot`); returns how
/// many it wrote.
async fn write_shard_indexes(ctx: &Ctx, written: &BTreeMap<String, Vec<u8>>) -> u64 {
    let mut n = 0;
    for (key, bytes) in written {
        let same = match ctx.dst.head(key).await {
            Ok(Some(m)) if m.size == bytes.len() as u64 => ctx
                .dst
                .get_range(key, 0..m.size, None)
                .await
                .is_ok_and(|b| b[..] == bytes[..]),
            _ => false,
        };
        if same {
            ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if ctx.opts.dry_run {
            ctx.observer_event(&Event::PlanCopy {
                key: key.clone(),
                size: bytes.len() as u64,
                reason: "shard generation holding only the selected snapshots".into(),
            });
            continue;
        }
        match commit::write_blob(ctx, key, bytes).await {
            Ok(()) => {
                n += 1;
                ctx.counters.copied_objects.fetch_add(1, Ordering::Relaxed);
                ctx.counters
                    .copied_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => ctx.failed(key, &e),
        }
    }
    n
}
