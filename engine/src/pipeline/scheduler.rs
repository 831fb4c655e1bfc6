//! The scheduler: turns each object to copy into transfer jobs. Objects above the
//! multipart threshold are split into byte ranges of the part size (grown when needed
//! so that no object exceeds 10,000 parts).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};

use super::deletes::DeleteSpill;
use super::differ::{decide, Decision, Joined};
use super::transfer::{Commit, Job, JobKind, MultiObject};
use super::{resume, Ctx, Event};
use crate::error::{Error, Result, Side};
use crate::store::ObjectMeta;

/// The most parts one multipart upload may have (S3 and OSS).
pub const MAX_PARTS: u64 = 10_000;
/// The smallest part size S3 accepts (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// The largest part size and the largest single PUT.
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// Whether an object of `size` bytes goes multipart: strictly above the threshold.
pub fn is_multipart(size: u64, threshold: u64) -> bool {
    size > threshold
}

/// The part size actually used for an object: the configured one, grown in whole MiB
/// when the object would otherwise need more than [`MAX_PARTS`] parts.
pub fn effective_part_size(size: u64, part_size: u64) -> u64 {
    if size.div_ceil(part_size.max(1)) <= MAX_PARTS {
        return part_size;
    }
    let need = size.div_ceil(MAX_PARTS);
    need.div_ceil(1 << 20) * (1 << 20)
}

/// The byte ranges of an object's parts, in order (part number = index + 1).
pub fn part_ranges(size: u64, part_size: u64) -> impl Iterator<Item = Range<u64>> {
    let ps = effective_part_size(size, part_size).max(1);
    (0..size.div_ceil(ps)).map(move |i| i * ps..((i + 1) * ps).min(size))
}

/// Consumes the merge-join: decides (HEADing when needed), counts skips, spills
/// deletes, and schedules copies.
pub(crate) async fn plan_and_schedule(
    ctx: &Arc<Ctx>,
    join_rx: mpsc::Receiver<Joined>,
    job_tx: &async_channel::Sender<Job>,
    commit_tx: &mpsc::Sender<Commit>,
    permits: &Arc<Semaphore>,
    deletes: &mut DeleteSpill,
    dst_objects: &AtomicU64,
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
                    Joined::DestOnly(d) => {
                        dst_objects.fetch_add(1, Ordering::Relaxed);
                        Ok((None, Some(d), None))
                    }
                    Joined::Source(s, d) => {
                        ctx.counters.listed_objects.fetch_add(1, Ordering::Relaxed);
                        if d.is_some() {
                            dst_objects.fetch_add(1, Ordering::Relaxed);
                        }
                        let mut dec = decide(&s, d.as_ref(), dst_records);
                        if dec == Decision::NeedHead {
                            let head = ctx.dst.head(&s.key).await?;
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
        if ctx.halt.is_cancelled() {
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
                ctx.forget_lucene(&src.key);
                ctx.counters.skipped_objects.fetch_add(1, Ordering::Relaxed);
            }
            Decision::NeedHead => unreachable!("decide(.., true) never asks for a HEAD"),
            Decision::Copy(reason) => {
                ctx.counters.planned_objects.fetch_add(1, Ordering::Relaxed);
                ctx.counters
                    .planned_bytes
                    .fetch_add(src.size, Ordering::Relaxed);
                if ctx.opts.dry_run {
                    ctx.forget_lucene(&src.key);
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
pub(crate) async fn schedule(
    ctx: &Arc<Ctx>,
    src: ObjectMeta,
    job_tx: &async_channel::Sender<Job>,
    commit_tx: &mpsc::Sender<Commit>,
    permits: &Arc<Semaphore>,
) {
    let acquire = || async {
        tokio::select! {
            p = permits.clone().acquire_owned() => p.ok(),
            _ = ctx.halt.cancelled() => None,
        }
    };
    if !is_multipart(src.size, ctx.opts.multipart_threshold) {
        let Some(permit) = acquire().await else {
            ctx.failed(&src.key, &Error::cancelled());
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
    // The source's own checksum of the whole object, where its ranged GETs carry none
    // (S3): the parts read are checked against it before the object may complete.
    let whole = match ctx.src.whole_checksums(&src.key, src.etag.as_deref()).await {
        Ok(w) => w,
        Err(e) => {
            ctx.failed(&src.key, &e.on(Side::Source));
            return;
        }
    };
    // An upload a killed run left for this very version: keep its parts.
    let mut kept: Vec<crate::store::CompletedPart> = Vec::new();
    let mut resumed = None;
    if let Some((id, rec)) = ctx.take_resumable(&src.key) {
        if rec.matches(&src) {
            match ctx.dst.list_parts(&src.key, &id).await {
                Ok(parts) => {
                    kept = parts;
                    ctx.counters.resumed_uploads.fetch_add(1, Ordering::Relaxed);
                    resumed = Some((id, rec.part_size));
                }
                Err(e) => {
                    tracing::info!(
                        "cannot resume the upload of {} ({e}); starting over",
                        src.key
                    );
                    ctx.abort_upload(&src.key, &id).await;
                }
            }
        } else {
            tracing::info!(
                "the source of {} changed since its upload began; starting over",
                src.key
            );
            ctx.abort_upload(&src.key, &id).await;
        }
    }
    let (upload_id, part_size) = match resumed {
        Some(r) => r,
        None => {
            let part_size = effective_part_size(src.size, ctx.opts.part_size);
            match ctx.dst.create_multipart(&src.key, &opts).await {
                Ok(id) => {
                    ctx.record_upload(&resume::ResumeRecord::new(&src, &id, part_size))
                        .await;
                    (id, part_size)
                }
                Err(e) => {
                    ctx.failed(&src.key, &e);
                    return;
                }
            }
        }
    };
    ctx.track_upload(&upload_id, &src.key);
    let ranges: Vec<_> = part_ranges(src.size, part_size).collect();
    let total = ranges.len();
    let obj = Arc::new(MultiObject::new(src, upload_id, opts, total));
    obj.expect_whole(&whole);
    for (i, range) in ranges.into_iter().enumerate() {
        let number = i as u32 + 1;
        let len = range.end - range.start;
        if let Some(p) = kept.iter().find(|p| p.number == number && p.size == len) {
            // Landed before the kill, from this very version of the source.
            ctx.counters.resumed_parts.fetch_add(1, Ordering::Relaxed);
            ctx.counters.resumed_bytes.fetch_add(len, Ordering::Relaxed);
            if obj.resume_part(p.clone()) {
                let _ = commit_tx.send(Commit::Multi(obj.clone())).await;
            }
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_table() {
        const MIB: u64 = 1 << 20;
        // (size, threshold, part size) -> (multipart?, parts, last part length)
        let cases = [
            (0, 8 * MIB, 8 * MIB, false, 0, 0),
            (8 * MIB - 1, 8 * MIB, 8 * MIB, false, 1, 8 * MIB - 1),
            (8 * MIB, 8 * MIB, 8 * MIB, false, 1, 8 * MIB),
            (8 * MIB + 1, 8 * MIB, 8 * MIB, true, 2, 1),
            (200 * MIB, 64 * MIB, 16 * MIB, true, 13, 8 * MIB),
        ];
        for (size, thr, ps, multi, parts, last) in cases {
            assert_eq!(is_multipart(size, thr), multi, "size {size}");
            let r: Vec<_> = part_ranges(size, ps).collect();
            assert_eq!(r.len() as u64, parts, "size {size}");
            if let Some(l) = r.last() {
                assert_eq!(l.end - l.start, last, "size {size}");
                assert_eq!(l.end, size);
            }
            // Contiguous, no gaps or overlaps.
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
        }
    }

    #[test]
    fn five_tib_fits_in_ten_thousand_parts() {
        let size = 5u64 << 40;
        let ps = effective_part_size(size, 8 << 20);
        assert!(size.div_ceil(ps) <= MAX_PARTS);
        assert!(ps <= MAX_PART_SIZE);
        assert_eq!(ps % (1 << 20), 0);
        assert_eq!(part_ranges(size, 8 << 20).count() as u64, size.div_ceil(ps));
    }
}
