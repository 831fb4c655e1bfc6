//! Snapshot-aware sync: copy an Elasticsearch/OpenSearch repository so that the
//! destination is a consistent repository at every instant.
//!
//! The source generation N is pinned at the start. Blobs are copied in phases, each
//! starting only after the previous one has fully landed: data blobs → shard `snap-*` →
//! shard `index-<gen>` → index `meta-*` → root `meta-*`/`snap-*` → root `index-N` (the
//! commit point: readers take the largest `index-N` they list) → `index.latest`, which
//! snapferry writes itself as N (the source's may already name a newer generation).
//! A phase with any failure stops the run before the commit point. Only blobs the pinned
//! generation references are copied (`tests-*`, `pending-*` and garbage never are).
//! `--delete` removes destination blobs referenced by neither the new generation nor the
//! destination's previous one, and only after `index.latest` is written.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::{pass, run_deletes, Ctx, DeleteSpill, Event, KeyFilter, SnapshotAware};
use crate::error::{Error, Result};
use crate::repo::model::{current_generation, is_transient, BlobKind, Repository};
use crate::stats::Kind;
use crate::store::PutOptions;

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

fn phase_name(k: BlobKind) -> &'static str {
    match k {
        BlobKind::Data => "data",
        BlobKind::ShardSnapshot => "shard-snapshots",
        BlobKind::ShardIndex => "shard-indexes",
        BlobKind::IndexMeta => "index-metadata",
        BlobKind::RootMeta => "root-metadata",
        BlobKind::RootIndex => "root-index",
        BlobKind::IndexLatest => "index.latest",
    }
}

/// One phase in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Phase name.
    pub phase: String,
    /// Objects copied in it.
    pub copied_objects: u64,
}

/// The snapshot-aware part of a sync report.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// The pinned source generation.
    pub source_generation: u64,
    /// Snapshots copied.
    pub snapshots: Vec<String>,
    /// Blobs the pinned generation (and selected snapshots) reference.
    pub referenced_blobs: usize,
    /// Phases run, in order.
    pub phases: Vec<PhaseReport>,
    /// Whether the commit point and index.latest landed.
    pub completed: bool,
    /// The source's generation at the end, when it moved during the copy.
    pub source_generation_moved_to: Option<u64>,
}

/// What `detect` found.
pub struct Plan {
    repo: Repository,
    refs: std::collections::BTreeMap<String, crate::repo::model::Referenced>,
    snapshots: Vec<String>,
}

/// Decides whether this sync is snapshot-aware, and reads the source repository if so.
pub async fn detect(ctx: &Arc<Ctx>) -> Result<Option<Plan>> {
    let mode = ctx.opts.snapshot_aware;
    if mode == SnapshotAware::Off {
        if !ctx.opts.snapshots.is_empty() {
            return Err(Error::InvalidInput(
                "--snapshot needs --snapshot-aware auto or on".into(),
            ));
        }
        return Ok(None);
    }
    if mode == SnapshotAware::Auto && ctx.opts.snapshots.is_empty() {
        // Cheap detection: fs, s3 and oss repositories always carry index.latest.
        if ctx
            .call(Kind::Head, || ctx.src.head("index.latest"))
            .await?
            .is_none()
        {
            return Ok(None);
        }
    }
    let repo = match Repository::load(ctx.src.as_ref()).await {
        Ok(r) => r,
        Err(Error::InvalidInput(m))
            if mode == SnapshotAware::Auto && m.contains("holds no snapshot repository") =>
        {
            tracing::info!("{m}; copying it as plain objects");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let selected = repo.select(&ctx.opts.snapshots)?;
    let snapshots = selected.iter().map(|s| s.name.clone()).collect();
    let (refs, _) = repo.references(ctx.src.as_ref(), &selected).await?;
    tracing::info!(
        "snapshot-aware sync of generation {} ({} snapshots, {} blobs)",
        repo.data.generation,
        repo.data.snapshots.len(),
        refs.len()
    );
    Ok(Some(Plan {
        repo,
        refs,
        snapshots,
    }))
}

/// Runs the phases. Returns (fatal error, report, differ max held, planned deletes).
pub async fn run(
    ctx: &Arc<Ctx>,
    plan: Plan,
) -> Result<(Option<Error>, SnapshotReport, usize, u64)> {
    let generation = plan.repo.data.generation;
    // The destination's previous generation: its blobs must survive --delete.
    let previous: BTreeSet<String> = if ctx.opts.delete {
        match Repository::load(ctx.dst.as_ref()).await {
            Ok(d) => {
                let all: Vec<_> = d.data.snapshots.iter().collect();
                let (r, _) = d.references(ctx.dst.as_ref(), &all).await?;
                r.into_keys().collect()
            }
            Err(Error::InvalidInput(_)) | Err(Error::NotFound(_)) => BTreeSet::new(),
            Err(e) => return Err(e),
        }
    } else {
        BTreeSet::new()
    };
    let refs = Arc::new(plan.refs);
    let mut report = SnapshotReport {
        source_generation: generation,
        snapshots: plan.snapshots,
        referenced_blobs: refs.len(),
        phases: Vec::new(),
        completed: false,
        source_generation_moved_to: None,
    };
    let mut max_held = 0;
    for phase in PHASES {
        let before_copied = ctx.counters.copied_objects.load(Ordering::Relaxed);
        let before_failed = ctx.counters.failed_objects.load(Ordering::Relaxed);
        if phase == BlobKind::IndexLatest {
            // Written, not copied: it must name the pinned generation.
            let want = generation.to_be_bytes();
            let current = match ctx.call(Kind::Head, || ctx.dst.head("index.latest")).await {
                Ok(Some(m)) if m.size == 8 => ctx
                    .call(Kind::Get, || ctx.dst.get_range("index.latest", 0..8, None))
                    .await
                    .ok(),
                _ => None,
            };
            if current.as_deref() == Some(&want[..]) {
                ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
                report.phases.push(PhaseReport {
                    phase: phase_name(phase).into(),
                    copied_objects: 0,
                });
                continue;
            }
            if !ctx.opts.dry_run {
                let data = Bytes::copy_from_slice(&want);
                let crc = crc32fast::hash(&data);
                let opts = PutOptions::default();
                if let Err(e) = ctx
                    .call(Kind::Put, || {
                        ctx.dst.put("index.latest", data.clone(), crc, &opts)
                    })
                    .await
                {
                    ctx.failed("index.latest", &e);
                    return Ok((None, report, max_held, 0));
                }
                ctx.counters.copied_objects.fetch_add(1, Ordering::Relaxed);
                ctx.counters.copied_bytes.fetch_add(8, Ordering::Relaxed);
            }
            report.phases.push(PhaseReport {
                phase: phase_name(phase).into(),
                copied_objects: 1,
            });
            continue;
        }
        let r = refs.clone();
        let filter: KeyFilter =
            Arc::new(move |k: &str| !is_transient(k) && r.get(k).is_some_and(|x| x.kind == phase));
        let out = pass(ctx, Some(filter)).await?;
        max_held = max_held.max(out.max_held);
        report.phases.push(PhaseReport {
            phase: phase_name(phase).into(),
            copied_objects: ctx.counters.copied_objects.load(Ordering::Relaxed) - before_copied,
        });
        if let Some(e) = out.fatal {
            return Ok((Some(e), report, max_held, 0));
        }
        if ctx.cancel.is_cancelled()
            || ctx.counters.failed_objects.load(Ordering::Relaxed) > before_failed
        {
            // Never land the commit point over an incomplete phase.
            return Ok((None, report, max_held, 0));
        }
    }
    report.completed = !ctx.opts.dry_run;

    // Did the source move on while we copied? The destination holds N completely.
    let mut keys = Vec::new();
    let mut pages = ctx.src.list(None);
    while let Some(page) = pages.next().await {
        keys.extend(
            page?
                .into_iter()
                .map(|m| m.key)
                .filter(|k| !k.contains('/')),
        );
    }
    if let Some(now) = current_generation(keys.iter().map(String::as_str)) {
        if now != generation {
            tracing::warn!("the source moved from generation {generation} to {now} during the copy; the destination holds {generation} completely: run again to copy {now}");
            report.source_generation_moved_to = Some(now);
        }
    }

    let mut planned_deletes = 0;
    if ctx.opts.delete {
        let mut spill = DeleteSpill::new()?;
        let mut pages = ctx.dst.list(None);
        while let Some(page) = pages.next().await {
            for m in page? {
                let keep = m.key == "index.latest"
                    || refs.contains_key(&m.key)
                    || previous.contains(&m.key);
                if !keep {
                    spill.push(&m.key)?;
                }
            }
        }
        planned_deletes = spill.count;
        if ctx.opts.dry_run {
            for key in spill.keys()? {
                ctx.observer_event(&Event::PlanDelete { key: key? });
            }
        } else {
            run_deletes(ctx, spill).await?;
        }
    }
    Ok((None, report, max_held, planned_deletes))
}
