//! The commit of a snapshot-aware round: reading the destination's root, refusing another
//! repository's, writing the root `index-M` (never over an existing one), `index.latest`
//! and the state record, in that order.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;

use super::super::{Ctx, Event};
use super::state::{self, CommitState};
use super::{PhaseReport, SnapshotReport};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::model::{current_generation, RepositoryData};
use crate::store::PutOptions;

/// The destination's current root generation and data, read the cheap way (its
/// `index.latest`, which snapferry always writes), else from a listing.
pub(super) async fn destination_root(ctx: &Ctx) -> Result<Option<(u64, Vec<u8>)>> {
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
pub(super) fn check_identity(
    src: &RepositoryData,
    dst: &RepositoryData,
    replace: bool,
) -> Result<()> {
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

pub(super) async fn write_blob(ctx: &Ctx, key: &str, bytes: &[u8]) -> Result<()> {
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

/// Writes the commit point, `index.latest` and the state record, reporting both phases.
/// Returns the error that must stop the run (the lease lost), if one did; a failed
/// write is counted as a failed object (and stops the rest).
pub(super) async fn commit(
    ctx: &Ctx,
    report: &mut SnapshotReport,
    root: &[u8],
    committed: bool,
) -> Option<Error> {
    let mut target = report.destination_generation;
    // The root.
    let mut n = 0;
    if committed {
        ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
    } else if ctx.opts.dry_run {
        n = 1;
        ctx.observer_event(&Event::PlanCopy {
            key: format!("index-{target}"),
            size: root.len() as u64,
            reason: "the commit point of the new generation".into(),
        });
    } else {
        n = 1;
        match write_root(ctx, target, root).await {
            Ok(g) => {
                target = g;
                report.destination_generation = g;
                ctx.counters.copied_objects.fetch_add(1, Ordering::Relaxed);
                ctx.counters
                    .copied_bytes
                    .fetch_add(root.len() as u64, Ordering::Relaxed);
            }
            Err(e) => return stop(ctx, report, "root-index", &format!("index-{target}"), e),
        }
    }
    report.phases.push(PhaseReport {
        phase: "root-index".into(),
        copied_objects: n,
    });
    // index.latest.
    let mut n = 0;
    if latest_names(ctx, target).await {
        ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
    } else if ctx.opts.dry_run {
        n = 1;
        ctx.observer_event(&Event::PlanCopy {
            key: "index.latest".into(),
            size: 8,
            reason: format!("names generation {target}"),
        });
    } else {
        n = 1;
        let written = match ctx.fenced() {
            Ok(()) => write_blob(ctx, "index.latest", &target.to_be_bytes()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            return stop(ctx, report, "index.latest", "index.latest", e);
        }
        ctx.counters.copied_objects.fetch_add(1, Ordering::Relaxed);
        ctx.counters.copied_bytes.fetch_add(8, Ordering::Relaxed);
    }
    report.phases.push(PhaseReport {
        phase: "index.latest".into(),
        copied_objects: n,
    });
    if !ctx.opts.dry_run {
        report.completed = true;
        // What the next round may trust: only this very root. Failing to record it
        // costs the next round a full listing, nothing else.
        let st = CommitState {
            format: 1,
            generation: target,
            root_sha256: state::root_hash(root),
            source_generation: report.source_generation,
            committed_ms: crate::store::fs::now_ms(),
        };
        let current = state::read(ctx.dst.as_ref()).await.ok().flatten();
        if current
            .as_ref()
            .is_none_or(|c| c.generation != st.generation || c.root_sha256 != st.root_sha256)
        {
            if let Err(e) = state::write(ctx.dst.as_ref(), &st).await {
                tracing::warn!(
                    "cannot record the commit in {} ({e}); the next round will plan from a full listing",
                    state::STATE_KEY
                );
            }
        }
    }
    None
}

fn stop(ctx: &Ctx, report: &mut SnapshotReport, phase: &str, key: &str, e: Error) -> Option<Error> {
    report.phases.push(PhaseReport {
        phase: phase.into(),
        copied_objects: 0,
    });
    if e.kind() == ErrorKind::Locked {
        Some(e)
    } else {
        ctx.failed(key, &e);
        None
    }
}

/// Whether the source moved on while we copied (its index.latest, written after each new
/// root): the generation it moved to. The destination holds the pinned one either way.
pub(super) async fn source_moved(ctx: &Ctx, generation: u64) -> Option<u64> {
    let m = ctx.src.head("index.latest").await.ok()??;
    if m.size != 8 {
        return None;
    }
    let b = ctx.src.get_range("index.latest", 0..8, None).await.ok()?;
    let now = u64::from_be_bytes(<[u8; 8]>::try_from(&b[..]).ok()?);
    (now > generation).then(|| {
        tracing::warn!("the source moved from generation {generation} to {now} during the copy; the destination holds {generation} completely: run again to copy {now}");
        now
    })
}

/// Whether the destination's `index.latest` already names `target`.
pub(super) async fn latest_names(ctx: &Ctx, target: u64) -> bool {
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
    use crate::error::ErrorKind;

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
