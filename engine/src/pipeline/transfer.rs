//! Fetchers, uploaders and the committer.
//!
//! Every job carries a permit of the global in-flight semaphore, taken by the scheduler
//! before the job is queued and released when its bytes have been uploaded: at most
//! `concurrency` part buffers exist at once, so peak memory ≈ concurrency × part size.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::Ctx;
use crate::error::{Error, Result};
use crate::store::{CompletedPart, ObjectMeta, PutOptions};

/// A multipart object in flight.
#[derive(Debug)]
pub struct MultiObject {
    /// The source object.
    pub src: ObjectMeta,
    /// Upload id on the destination.
    pub upload_id: String,
    /// Options recorded on the destination object.
    pub opts: PutOptions,
    parts: Mutex<Vec<Option<CompletedPart>>>,
    remaining: AtomicUsize,
    failed: Mutex<Option<Error>>,
    has_failed: AtomicBool,
}

impl MultiObject {
    /// A new in-flight object of `n_parts` parts.
    pub fn new(src: ObjectMeta, upload_id: String, opts: PutOptions, n_parts: usize) -> Self {
        MultiObject {
            src,
            upload_id,
            opts,
            parts: Mutex::new(vec![None; n_parts]),
            remaining: AtomicUsize::new(n_parts),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
        }
    }

    /// Records the first failure of any part (as the object's reason).
    fn fail(&self, e: Error) {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(e);
        }
        self.has_failed.store(true, Ordering::Release);
    }

    fn is_failed(&self) -> bool {
        self.has_failed.load(Ordering::Acquire)
    }

    /// Parts not yet finished.
    pub fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Acquire)
    }

    /// Marks `n` parts that will never be scheduled as finished and the object failed.
    pub fn abandon_parts(&self, n: usize) {
        self.fail(Error::cancelled());
        self.remaining.fetch_sub(n, Ordering::AcqRel);
    }

    /// Marks one part finished (stored or failed); true when it was the last one.
    fn finish_part(&self, number: u32, part: Option<CompletedPart>) -> bool {
        if let Some(p) = part {
            if let Ok(mut parts) = self.parts.lock() {
                if let Some(slot) = parts.get_mut(number as usize - 1) {
                    *slot = Some(p);
                }
            }
        }
        self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// What a job moves.
#[derive(Debug)]
pub enum JobKind {
    /// A whole object in one PUT.
    Single(ObjectMeta),
    /// One part of a multipart object.
    Part {
        /// The object.
        obj: Arc<MultiObject>,
        /// 1-based part number.
        number: u32,
        /// Byte range of the source.
        range: Range<u64>,
    },
}

/// A unit of transfer, holding its in-flight permit.
#[derive(Debug)]
pub struct Job {
    /// What to move.
    pub kind: JobKind,
    /// Released when the job's bytes have been uploaded (or the job dropped).
    pub permit: OwnedSemaphorePermit,
}

/// A fetched job: bytes and their CRC32.
pub struct Fetched {
    job: Job,
    data: Bytes,
    crc32: u32,
}

/// What the committer receives.
pub enum Commit {
    /// A single-PUT object finished (Ok = stored and verified).
    Single(Box<ObjectMeta>, Result<()>),
    /// Every part of a multipart object finished (some may have failed).
    Multi(Arc<MultiObject>),
}

/// One fetcher worker: ranged GETs, checksums, hands bytes to the uploaders.
pub async fn fetcher(
    ctx: Arc<Ctx>,
    jobs: async_channel::Receiver<Job>,
    out: mpsc::Sender<Fetched>,
    commit: mpsc::Sender<Commit>,
) {
    while let Ok(job) = jobs.recv().await {
        let (key, range, etag) = match &job.kind {
            JobKind::Single(m) => (m.key.clone(), 0..m.size, m.etag.clone()),
            JobKind::Part { obj, range, .. } => {
                if obj.is_failed() || ctx.cancel.is_cancelled() {
                    part_done(&commit, &job.kind, None).await;
                    continue;
                }
                (obj.src.key.clone(), range.clone(), obj.src.etag.clone())
            }
        };
        let res = ctx
            .src
            .get_range(&key, range.clone(), etag.as_deref())
            .await;
        match res {
            Ok(data) => {
                let crc32 = crate::checksum::hash(&data, crc32fast::hash).await;
                if out.send(Fetched { job, data, crc32 }).await.is_err() {
                    return;
                }
            }
            Err(e) => fail_job(&commit, job, e).await,
        }
    }
}

/// One uploader worker: single PUTs and UploadParts, verified by the store.
pub async fn uploader(
    ctx: Arc<Ctx>,
    input: Arc<tokio::sync::Mutex<mpsc::Receiver<Fetched>>>,
    commit: mpsc::Sender<Commit>,
) {
    loop {
        let next = { input.lock().await.recv().await };
        let Some(Fetched { job, data, crc32 }) = next else {
            return;
        };
        let len = data.len() as u64;
        match &job.kind {
            JobKind::Single(m) => {
                let opts = ctx.put_options(m);
                let res = ctx.dst.put(&m.key, data.clone(), crc32, &opts).await;
                if res.is_ok() {
                    ctx.counters
                        .transferred_bytes
                        .fetch_add(len, Ordering::Relaxed);
                }
                drop(data);
                let m = m.clone();
                drop(job); // releases the permit before we wait on the committer
                let _ = commit.send(Commit::Single(Box::new(m), res)).await;
            }
            JobKind::Part { obj, number, .. } => {
                if obj.is_failed() {
                    part_done(&commit, &job.kind, None).await;
                    continue;
                }
                let res = ctx
                    .dst
                    .upload_part(&obj.src.key, &obj.upload_id, *number, data.clone(), crc32)
                    .await;
                drop(data);
                match res {
                    Ok(p) => {
                        ctx.counters
                            .transferred_bytes
                            .fetch_add(len, Ordering::Relaxed);
                        part_done(&commit, &job.kind, Some(p)).await;
                    }
                    Err(e) => fail_job(&commit, job, e).await,
                }
            }
        }
    }
}

async fn fail_job(commit: &mpsc::Sender<Commit>, job: Job, e: Error) {
    match &job.kind {
        JobKind::Single(m) => {
            let m = m.clone();
            drop(job);
            let _ = commit.send(Commit::Single(Box::new(m), Err(e))).await;
        }
        JobKind::Part { obj, number, .. } => {
            obj.fail(e.context(format!("part {number}")));
            part_done(commit, &job.kind, None).await;
        }
    }
}

async fn part_done(commit: &mpsc::Sender<Commit>, kind: &JobKind, part: Option<CompletedPart>) {
    if let JobKind::Part { obj, number, .. } = kind {
        if part.is_none() && !obj.is_failed() {
            obj.fail(Error::cancelled());
        }
        if obj.finish_part(*number, part) {
            let _ = commit.send(Commit::Multi(obj.clone())).await;
        }
    }
}

/// The committer: completes multipart uploads (or aborts failed ones) and records
/// every object's outcome. Nothing is counted as copied before the store verified it.
pub async fn committer(ctx: Arc<Ctx>, mut input: mpsc::Receiver<Commit>) {
    while let Some(c) = input.recv().await {
        match c {
            Commit::Single(m, Ok(())) => ctx.copied(&m),
            Commit::Single(m, Err(e)) => ctx.failed(&m.key, &e),
            Commit::Multi(obj) => {
                let failure = obj.failed.lock().ok().and_then(|mut f| f.take());
                if let Some(e) = failure {
                    ctx.abort_upload(&obj.src.key, &obj.upload_id).await;
                    ctx.failed(&obj.src.key, &e);
                    continue;
                }
                let parts: Option<Vec<CompletedPart>> = obj
                    .parts
                    .lock()
                    .ok()
                    .and_then(|p| p.iter().cloned().collect());
                let Some(parts) = parts else {
                    ctx.abort_upload(&obj.src.key, &obj.upload_id).await;
                    ctx.failed(&obj.src.key, &Error::other("a part is missing"));
                    continue;
                };
                let res = ctx
                    .dst
                    .complete_multipart(&obj.src.key, &obj.upload_id, &parts, &obj.opts)
                    .await;
                match res {
                    Ok(()) => {
                        ctx.forget_upload(&obj.upload_id);
                        ctx.copied(&obj.src);
                    }
                    Err(e) => {
                        ctx.abort_upload(&obj.src.key, &obj.upload_id).await;
                        ctx.failed(&obj.src.key, &e);
                    }
                }
            }
        }
    }
}
