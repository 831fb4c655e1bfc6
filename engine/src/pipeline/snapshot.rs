//! Snapshot-aware sync: copy an Elasticsearch/OpenSearch repository so that the
//! destination is a consistent repository at every instant.
//!
//! The source generation N is pinned at the start. Blobs are copied in phases, each
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::{delete_guard, pass, run_or_plan_deletes, Ctx, DeleteSpill, KeyFilter, SnapshotAware};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::model::{
    current_generation, is_transient, BlobKind, Referenced, Repository, RepositoryData,
};
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
    /// Blobs the pinned generation (and selected snapshots) reference.
    pub referenced_blobs: usize,
    /// Phases run, in order.
    pub phases: Vec<PhaseReport>,
    /// Whether the commit point and index.latest landed.
    pub completed: bool,
    /// The source's generation at the end, when it moved during the copy.
    pub source_generation_moved_to: Option<u64>,
}

/// What `detect` found: the pinned source repository and what the copy writes.
pub struct Plan {
    generation: u64,
    data: RepositoryData,
    /// Blobs copied from the source, by kind.
    refs: BTreeMap<String, Referenced>,
    /// The root `index-N` to write (the source's, or filtered to `--snapshot`).
    root: Vec<u8>,
    /// Shard-level index blobs snapferry writes itself (`--snapshot`), with their bytes.
    written: Vec<(String, Vec<u8>)>,
    snapshots: Vec<String>,
    /// Data blob key -> the Lucene checksum the snapshot recorded (whole-file blobs).
    lucene: HashMap<String, String>,
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
    if mode == SnapshotAware::Auto && !selecting {
        // Cheap detection: fs, s3 and oss repositories always carry index.latest.
        if ctx.src.head("index.latest").await?.is_none() {
            return Ok(None);
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
    let (mut refs, root, written) = if selecting {
        let f = crate::repo::filter::filter(ctx.src.as_ref(), &repo, &selected).await?;
        (f.refs, f.root, f.shard_indexes)
    } else {
        (BTreeMap::new(), repo.root_bytes.clone(), Vec::new())
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
    for (k, r) in &refs {
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
        "snapshot-aware sync of generation {generation} ({} of {} snapshots, {} blobs)",
        selected.len(),
        repo.data.snapshots.len(),
        refs.len()
    );
    Ok(Some(Plan {
        generation,
        data: repo.data,
        refs,
        root,
        written,
        snapshots,
        lucene,
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

/// The destination's current root generation and data, read the cheap way (its
/// `index.latest`, which snapferry always writes), else from a listing.
async fn destination_root(ctx: &Ctx) -> Result<Option<(u64, Vec<u8>)>> {
    if ctx.dst_missing() {
        return Ok(None);
    }
    let dst = ctx.dst.as_ref();
    let from_latest = match dst.head("index.latest").await? {
        Some(m) if m.size == 8 => {
            let b = dst.get_range("index.latest", 0..8, None).await?;
            let n = u64::from_be_bytes(b[..].try_into().map_err(|_| {
                Error::protocol("index.latest: the store returned another length than it listed")
            })?);
            match dst.head(&format!("index-{n}")).await? {
                // The named root exists, and none newer (a reader takes the largest).
                Some(r) if dst.head(&format!("index-{}", n + 1)).await?.is_none() => {
                    Some((n, r.size))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let (n, size) = match from_latest {
        Some(v) => v,
        None => {
            let mut keys = Vec::new();
            let mut pages = dst.list(None);
            while let Some(page) = pages.next().await {
                keys.extend(
                    page?
                        .into_iter()
                        .filter(|m| !m.key.contains('/'))
                        .map(|m| (m.key, m.size)),
                );
            }
            let Some(n) = current_generation(keys.iter().map(|(k, _)| k.as_str())) else {
                return Ok(None);
            };
            let size = keys
                .iter()
                .find(|(k, _)| *k == format!("index-{n}"))
                .map(|(_, s)| *s)
                .unwrap_or(0);
            (n, size)
        }
    };
    let bytes = dst.get_range(&format!("index-{n}"), 0..size, None).await?;
    Ok(Some((n, bytes.to_vec())))
}

/// Refuses to write over another repository's catalogue.
fn check_identity(src: &RepositoryData, dst: &RepositoryData, replace: bool) -> Result<()> {
    if replace {
        return Ok(());
    }
    if dst.snapshots.is_empty() {
        return Ok(()); // an empty catalogue loses nothing
    }
    let uuid = |d: &RepositoryData| d.uuid.clone().filter(|u| !u.is_empty() && u != "_na_");
    let (su, du) = (uuid(src), uuid(dst));
    let differs = match (&su, &du) {
        (Some(a), Some(b)) => a != b,
        // Before repository UUIDs (7.12): the same lineage shares snapshots.
        _ => {
            let ours: BTreeSet<&str> = src.snapshots.iter().map(|s| s.uuid.as_str()).collect();
            !dst.snapshots.is_empty()
                && !src.snapshots.is_empty()
                && !dst.snapshots.iter().any(|s| ours.contains(s.uuid.as_str()))
        }
    };
    if !differs {
        return Ok(());
    }
    let names: Vec<&str> = dst
        .snapshots
        .iter()
        .map(|s| s.name.as_str())
        .take(5)
        .collect();
    Err(Error::invalid_input(format!(
        "the destination holds another repository (uuid {}, {} snapshots: {}{}) than the source (uuid {}); copying would drop its catalogue; choose another destination, or pass --replace-repository to replace it",
        du.as_deref().unwrap_or("none"),
        dst.snapshots.len(),
        names.join(", "),
        if dst.snapshots.len() > names.len() { ", ..." } else { "" },
        su.as_deref().unwrap_or("none"),
    )))
}

async fn write_blob(ctx: &Ctx, key: &str, bytes: &[u8]) -> Result<()> {
    let data = Bytes::copy_from_slice(bytes);
    let crc = crc32fast::hash(&data);
    ctx.dst.put(key, data, crc, &PutOptions::default()).await
}

/// Writes the commit point as `index-{target}`, created only if absent, so that no root
/// is ever overwritten (whatever another writer did since the destination was read).
/// When the name is taken: by these very bytes it is committed already; by other bytes,
/// the next free generation is tried. Returns the generation written.
async fn write_root(ctx: &Ctx, mut target: u64, bytes: &[u8]) -> Result<u64> {
    for _ in 0..8 {
        ctx.fenced()?;
        let key = format!("index-{target}");
        let data = Bytes::copy_from_slice(bytes);
        let crc = crc32fast::hash(&data);
        let once = PutOptions {
            if_none_match: true,
            ..Default::default()
        };
        match ctx.dst.put(&key, data, crc, &once).await {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                let Some((_, there)) = crate::store::read_whole(ctx.dst.as_ref(), &key).await?
                else {
                    continue; // removed meanwhile: try the same name again
                };
                if there[..] == bytes[..] {
                    return Ok(target);
                }
                tracing::warn!(
                    "{key} exists with other bytes; writing the root one generation higher"
                );
                target += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::other(format!(
        "could not find a free root generation above index-{target}; another writer keeps adding roots"
    )))
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
}

/// Reads the destination's current root: refuses another repository's, and decides the
/// generation the new root is written as (never over an existing one).
pub(crate) async fn check_destination(ctx: &Arc<Ctx>, plan: Plan) -> Result<Checked> {
    let generation = plan.generation;
    let dst_root = destination_root(ctx).await?;
    let mut target = generation;
    let mut committed = false;
    if let Some((n, bytes)) = &dst_root {
        match RepositoryData::parse(*n, bytes) {
            Ok(d) => check_identity(&plan.data, &d, ctx.opts.replace_repository)?,
            // Its catalogue cannot be read, so it cannot be shown to be ours either.
            Err(e) if !ctx.opts.replace_repository => {
                return Err(Error::invalid_input(format!(
                    "the destination's root index-{n} cannot be read ({}); pass --replace-repository to write over it, or choose another destination",
                    e.message()
                )))
            }
            Err(_) => {}
        }
        if *bytes == plan.root {
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
    })
}

/// Runs the phases.
pub(crate) async fn run(ctx: &Arc<Ctx>, checked: Checked) -> Result<Outcome> {
    let Checked {
        mut plan,
        target,
        committed,
        has_root,
    } = checked;
    let generation = plan.generation;
    if let Ok(mut l) = ctx.lucene.lock() {
        *l = Some(Arc::new(std::mem::take(&mut plan.lucene)));
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
    let mut target = target;
    let mut root_key = format!("index-{target}");
    let refs = Arc::new(plan.refs);
    let written: BTreeMap<String, Vec<u8>> = plan.written.into_iter().collect();
    let mut report = SnapshotReport {
        source_generation: generation,
        destination_generation: target,
        snapshots: plan.snapshots,
        referenced_blobs: refs.len() + written.len() + 1,
        phases: Vec::new(),
        completed: false,
        source_generation_moved_to: None,
    };
    let mut out = Outcome {
        fatal: None,
        report: report.clone(),
        max_held: 0,
        planned_deletes: 0,
        deletes_refused: None,
    };
    let done = |out: &mut Outcome, report: SnapshotReport| {
        out.report = report;
    };
    for phase in PHASES {
        let before_copied = ctx.counters.copied_objects.load(Ordering::Relaxed);
        let before_failed = ctx.counters.failed_objects.load(Ordering::Relaxed);
        match phase {
            BlobKind::RootIndex | BlobKind::IndexLatest => {
                let (key, bytes) = if phase == BlobKind::RootIndex {
                    (root_key.clone(), plan.root.clone())
                } else {
                    ("index.latest".to_string(), target.to_be_bytes().to_vec())
                };
                let present = if phase == BlobKind::RootIndex {
                    committed
                } else {
                    latest_names(ctx, target).await
                };
                let mut n = 0;
                if present {
                    ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
                } else {
                    n = 1;
                    if !ctx.opts.dry_run {
                        let written = if phase == BlobKind::RootIndex {
                            write_root(ctx, target, &bytes).await.map(|g| {
                                target = g;
                                root_key = format!("index-{g}");
                                report.destination_generation = g;
                            })
                        } else {
                            match ctx.fenced() {
                                Ok(()) => write_blob(ctx, &key, &bytes).await,
                                Err(e) => Err(e),
                            }
                        };
                        if let Err(e) = written {
                            if e.kind() == ErrorKind::Locked {
                                out.fatal = Some(e);
                            } else {
                                ctx.failed(&key, &e);
                            }
                            report.phases.push(PhaseReport {
                                phase: phase_name(phase).into(),
                                copied_objects: 0,
                            });
                            done(&mut out, report);
                            return Ok(out);
                        }
                        ctx.counters.copied_objects.fetch_add(1, Ordering::Relaxed);
                        ctx.counters
                            .copied_bytes
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    } else {
                        ctx.observer_event(&super::Event::PlanCopy {
                            key: key.clone(),
                            size: bytes.len() as u64,
                            reason: if phase == BlobKind::RootIndex {
                                "the commit point of the new generation".into()
                            } else {
                                format!("names generation {target}")
                            },
                        });
                    }
                }
                report.phases.push(PhaseReport {
                    phase: phase_name(phase).into(),
                    copied_objects: n,
                });
                continue;
            }
            _ => {}
        }
        let r = refs.clone();
        let filter: KeyFilter =
            Arc::new(move |k: &str| !is_transient(k) && r.get(k).is_some_and(|x| x.kind == phase));
        let pass_out = pass(ctx, Some(filter)).await?;
        out.max_held = out.max_held.max(pass_out.max_held);
        let mut phase_copied = ctx.counters.copied_objects.load(Ordering::Relaxed) - before_copied;
        if phase == BlobKind::ShardIndex && pass_out.fatal.is_none() {
            // The shard generations snapferry writes itself (`--snapshot`).
            for (key, bytes) in &written {
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
                    ctx.observer_event(&super::Event::PlanCopy {
                        key: key.clone(),
                        size: bytes.len() as u64,
                        reason: "shard generation holding only the selected snapshots".into(),
                    });
                    continue;
                }
                match write_blob(ctx, key, bytes).await {
                    Ok(()) => {
                        phase_copied += 1;
                        ctx.counters.copied_objects.fetch_add(1, Ordering::Relaxed);
                        ctx.counters
                            .copied_bytes
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => ctx.failed(key, &e),
                }
            }
        }
        report.phases.push(PhaseReport {
            phase: phase_name(phase).into(),
            copied_objects: phase_copied,
        });
        if let Some(e) = pass_out.fatal {
            out.fatal = Some(e);
            done(&mut out, report);
            return Ok(out);
        }
        if ctx.halt.is_cancelled()
            || ctx.counters.failed_objects.load(Ordering::Relaxed) > before_failed
        {
            // Never land the commit point over an incomplete phase.
            done(&mut out, report);
            return Ok(out);
        }
    }
    report.completed = !ctx.opts.dry_run;

    // Did the source move on while we copied? (Its index.latest, written after each
    // new root.) The destination holds the pinned generation completely either way.
    if let Ok(Some(m)) = ctx.src.head("index.latest").await {
        if m.size == 8 {
            if let Ok(b) = ctx.src.get_range("index.latest", 0..8, None).await {
                if let Ok(raw) = <[u8; 8]>::try_from(&b[..]) {
                    let now = u64::from_be_bytes(raw);
                    if now > generation {
                        tracing::warn!("the source moved from generation {generation} to {now} during the copy; the destination holds {generation} completely: run again to copy {now}");
                        report.source_generation_moved_to = Some(now);
                    }
                }
            }
        }
    }

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
    done(&mut out, report);
    Ok(out)
}

/// Whether the destination's `index.latest` already names `target`.
async fn latest_names(ctx: &Ctx, target: u64) -> bool {
    match ctx.dst.head("index.latest").await {
        Ok(Some(m)) if m.size == 8 => ctx
            .dst
            .get_range("index.latest", 0..8, None)
            .await
            .is_ok_and(|b| b[..] == target.to_be_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(uuid: Option<&str>, snaps: &[&str]) -> RepositoryData {
        let snaps: Vec<String> = snaps
            .iter()
            .map(|u| format!(r#"{{"name":"n{u}","uuid":"{u}"}}"#))
            .collect();
        let json = format!(
            r#"{{"uuid":{},"snapshots":[{}],"indices":{{}}}}"#,
            uuid.map(|u| format!("\"{u}\"")).unwrap_or("null".into()),
            snaps.join(",")
        );
        RepositoryData::parse(1, json.as_bytes()).unwrap()
    }

    #[test]
    fn identity_by_uuid_then_by_lineage() {
        let a = data(Some("A"), &["s1", "s2"]);
        assert!(check_identity(&a, &data(Some("A"), &["s1"]), false).is_ok());
        let e = check_identity(&a, &data(Some("B"), &["x"]), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("--replace-repository"), "{e}");
        assert!(check_identity(&a, &data(Some("B"), &["x"]), true).is_ok());
        // No uuids: shared snapshots mean the same lineage.
        assert!(check_identity(
            &data(None, &["s1", "s2"]),
            &data(Some("_na_"), &["s1"]),
            false
        )
        .is_ok());
        assert!(check_identity(&data(None, &["s1"]), &data(None, &["x"]), false).is_err());
        // An empty destination catalogue conflicts with nothing, whatever its uuid.
        assert!(check_identity(&data(None, &["s1"]), &data(None, &[]), false).is_ok());
        assert!(check_identity(&a, &data(Some("B"), &[]), false).is_ok());
    }
}
