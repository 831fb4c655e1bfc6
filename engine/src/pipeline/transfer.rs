//! Fetchers, uploaders and the committer.
//!
//! Every job carries a permit of the global in-flight semaphore, taken by the scheduler
//! before the job is queued and released when its bytes have been uploaded: at most
//! `concurrency` part buffers exist at once, so peak memory ≈ concurrency × part size.
//! The buffers come from the run's [`crate::buffers::Pool`] (fetches run in its scope)
//! and go back to it when the uploaded bytes are dropped: after the first
//! `concurrency` parts, a copy reuses memory instead of faulting in a part's worth anew.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::Ctx;
use crate::error::{Error, ErrorKind, Result};
use crate::store::{CompletedPart, ObjectMeta, Part, PutOptions, SourceRecord, Stored, VerifiedBy};

/// Whether a Lucene file whose bytes but the last 8 have CRC32 `computed` and whose last 8
/// bytes are `footer` carries the checksum the snapshot recorded (base 36): the check a
/// restore makes, here at no extra read.
/// An empty `recorded` means a checksummed metadata envelope: its footer must hold the
/// CRC32 of its own bytes, with nothing recorded elsewhere to compare.
pub(crate) fn lucene_matches(
    key: &str,
    computed: u32,
    footer: &[u8; 8],
    recorded: &str,
) -> Result<()> {
    let stored = u64::from_be_bytes(*footer);
    let ok = stored == computed as u64
        && (recorded.is_empty() || crate::repo::blob::base36(stored) == recorded);
    if ok {
        return Ok(());
    }
    Err(Error::checksum(format!(
        "{key}: the file read has Lucene checksum {} (footer {}), the snapshot recorded {recorded}",
        crate::repo::blob::base36(computed as u64),
        crate::repo::blob::base36(stored)
    )))
}

/// Which checksums to compute of a fetched buffer beyond its CRC32.
#[derive(Debug, Clone, Copy, Default)]
struct Wanted {
    /// CRC-64/XZ (OSS's).
    crc64: bool,
    /// CRC-64/NVME (S3's default).
    nvme: bool,
    /// The Lucene footer: CRC32 of all but the last 8 bytes, and those bytes.
    tail: bool,
}

/// The checksums of one fetched buffer, computed in one pass off the reactor
/// ([`crate::checksum::hash`]): its CRC32 always, the others as [`Wanted`].
#[derive(Debug, Clone, Copy)]
struct Sums {
    crc32: u32,
    crc64: Option<u64>,
    nvme: Option<u64>,
    /// CRC32 of all but the last 8 bytes, their length, and those 8 bytes.
    tail: Option<(u32, u64, [u8; 8])>,
}

impl Sums {
    async fn of(data: &Bytes, want: Wanted) -> Sums {
        crate::checksum::hash(data, move |d| {
            let tail = (want.tail && d.len() >= 16).then(|| {
                let (body, last) = d.split_at(d.len() - 8);
                let mut footer = [0u8; 8];
                footer.copy_from_slice(last);
                (crc32fast::hash(body), body.len() as u64, footer)
            });
            // With a tail, the whole's CRC32 continues it over the last 8 bytes.
            let crc32 = match tail {
                Some((c, n, footer)) => {
                    let mut h = crc32fast::Hasher::new_with_initial_len(c, n);
                    h.update(&footer);
                    h.finalize()
                }
                None => crc32fast::hash(d),
            };
            Sums {
                crc32,
                crc64: want.crc64.then(|| crate::store::oss::crc64(d)),
                nvme: want
                    .nvme
                    .then(|| crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, d)),
                tail,
            }
        })
        .await
    }
}

/// What one part of a multipart copy holds: its length and the checksums known of it
/// (each only where something is checked against it).
#[derive(Debug, Clone, Copy)]
struct PartSeen {
    len: u64,
    /// Unknown for a part kept from an OSS upload (OSS lists CRC-64s only).
    crc32: Option<u32>,
    crc64: Option<u64>,
    nvme: Option<u64>,
}

/// Each part's checksum of one kind with its length, for combining; `None` when a part
/// is missing or lacks it.
fn pieces<T>(
    parts: &[Option<PartSeen>],
    f: impl Fn(&PartSeen) -> Option<T>,
) -> Option<Vec<(T, u64)>> {
    parts
        .iter()
        .map(|p| p.as_ref().and_then(|p| Some((f(p)?, p.len))))
        .collect()
}

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
    /// What the source says of the whole object and what the parts read hold, to check
    /// the assembled object against the source's own checksum before completing.
    source: Mutex<SourceCheck>,
}

/// The source-side check of a multipart copy, filled part by part.
#[derive(Debug, Default)]
struct SourceCheck {
    /// The whole object's CRC-64 as the source's GETs reported it.
    crc64: Option<u64>,
    /// The whole object's CRC32 (base64) as the source's GETs (or its HEAD) reported it.
    crc32: Option<String>,
    /// The whole object's CRC-64/NVME (base64) as the source's HEAD reported it.
    crc64nvme: Option<String>,
    /// What each part (by number - 1) holds, once read or kept.
    parts: Vec<Option<PartSeen>>,
    /// The last part's CRC32 without its last 8 bytes, and those 8 bytes (the Lucene
    /// footer's checksum), for data blobs whose recorded checksum is known.
    lucene_tail: Option<(u32, u64, [u8; 8])>,
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
            source: Mutex::new(SourceCheck {
                parts: vec![None; n_parts],
                ..SourceCheck::default()
            }),
        }
    }

    /// What the source's HEAD said of the whole object (for sources whose ranged GETs say
    /// nothing): the parts are checked against it before the object completes.
    pub fn expect_whole(&self, stored: &Stored) {
        if let Ok(mut s) = self.source.lock() {
            if stored.crc32.is_some() {
                s.crc32 = stored.crc32.clone();
            }
            s.crc64nvme = stored.crc64nvme.clone();
        }
    }

    /// Which checksums a part's bytes must be summed for, given what its GET said of the
    /// whole object: the CRC-64 when the source reports one, the CRC-64/NVME when its
    /// HEAD did, the Lucene tail for the last part of a data blob with a recorded checksum.
    fn wanted(&self, stored: &Stored, last: bool, lucene: bool) -> Wanted {
        Wanted {
            crc64: stored.crc64.is_some(),
            nvme: self
                .source
                .lock()
                .map(|s| s.crc64nvme.is_some())
                .unwrap_or(false),
            tail: last && lucene,
        }
    }

    /// Records what one part's GET said and what its bytes hold (`sums`, as
    /// [`MultiObject::wanted`] asked). A source whose reported checksum changes between
    /// parts changed under the copy.
    fn saw_part(&self, number: u32, len: u64, sums: &Sums, stored: &Stored) -> Result<()> {
        let Ok(mut s) = self.source.lock() else {
            return Ok(());
        };
        let i = number as usize - 1;
        for (seen, now) in [
            (
                s.crc64.map(|c| c.to_string()),
                stored.crc64.map(|c| c.to_string()),
            ),
            (s.crc32.clone(), stored.crc32.clone()),
        ] {
            if let (Some(a), Some(b)) = (seen, now) {
                if a != b {
                    return Err(Error::source_changed(format!(
                        "{}: the source's stored checksum changed between parts ({a}, then {b})",
                        self.src.key
                    )));
                }
            }
        }
        if stored.crc64.is_some() {
            s.crc64 = stored.crc64;
        }
        if stored.crc32.is_some() {
            s.crc32 = stored.crc32.clone();
        }
        if let Some(slot) = s.parts.get_mut(i) {
            *slot = Some(PartSeen {
                len,
                crc32: Some(sums.crc32),
                crc64: sums.crc64,
                nvme: sums.nvme,
            });
        }
        if sums.tail.is_some() {
            s.lucene_tail = sums.tail;
        }
        Ok(())
    }

    /// A part kept from an upload a killed run left: it counts as landed. Its checksum is
    /// the one the store computed of the bytes it received from that source version.
    /// True when it was the last part outstanding.
    pub fn resume_part(&self, p: CompletedPart) -> bool {
        if let Ok(mut s) = self.source.lock() {
            if let Some(slot) = s.parts.get_mut(p.number as usize - 1) {
                *slot = Some(PartSeen {
                    len: p.size,
                    // OSS lists CRC-64s only; then the part's CRC32 is not known.
                    crc32: p.crc64.is_none().then_some(p.crc32),
                    crc64: p.crc64,
                    // Ours only, of bytes read: a kept part has none (then no check).
                    nvme: None,
                });
            }
        }
        let n = p.number;
        self.finish_part(n, Some(p))
    }

    /// Checks the whole object, as read part by part, against the source's checksum (and
    /// the Lucene footer recorded for it): how it was verified, `None` when the source
    /// offers nothing to check against, or the mismatch.
    fn check_source(&self, lucene: Option<&str>) -> Result<Option<VerifiedBy>> {
        let Ok(s) = self.source.lock() else {
            return Ok(None);
        };
        let key = &self.src.key;
        let mismatch = |what: &str, got: String, want: &str| {
            Err(Error::checksum(format!(
                "{key}: the parts read have {what} {got}, the source stores {want}"
            )))
        };
        let mut by = None;
        if let (Some(want), Some(p)) = (s.crc64, pieces(&s.parts, |p| p.crc64)) {
            let got = crate::checksum::crc64_concat(p);
            if got != want {
                return mismatch("CRC-64", got.to_string(), &want.to_string());
            }
            by = Some(VerifiedBy::Crc64);
        }
        if let (Some(want), Some(p)) = (&s.crc32, pieces(&s.parts, |p| p.crc32)) {
            let got = crate::checksum::crc32_b64(crate::checksum::crc32_concat(p));
            if &got != want {
                return mismatch("CRC32", got, want);
            }
            by = by.or(Some(VerifiedBy::Crc32));
        }
        if let (Some(want), Some(p)) = (&s.crc64nvme, pieces(&s.parts, |p| p.nvme)) {
            use base64::Engine as _;
            let got = base64::engine::general_purpose::STANDARD
                .encode(crate::checksum::crc64nvme_concat(p).to_be_bytes());
            if &got != want {
                return mismatch("CRC64NVME", got, want);
            }
            by = by.or(Some(VerifiedBy::Crc64));
        }
        if let (Some(recorded), Some((tail_crc, tail_len, footer))) = (lucene, &s.lucene_tail) {
            // The footer's CRC32 covers the whole file but its last 8 bytes.
            let n = s.parts.len();
            let Some(head) = pieces(&s.parts[..n.saturating_sub(1)], |p| p.crc32) else {
                return Ok(by);
            };
            let got =
                crate::checksum::crc32_concat(head.into_iter().chain([(*tail_crc, *tail_len)]));
            lucene_matches(key, got, footer, recorded)?;
            by = by.or(Some(VerifiedBy::Lucene));
        }
        Ok(by)
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

/// The pool of a run's read buffers: one per part in flight and a little slack (the
/// committer's repair reads, a buffer whose last reference is dropped just after its
/// permit), of the part size, none pooled above the larger of part size and multipart
/// threshold (what a single GET may read).
pub(crate) fn buffer_pool(opts: &super::SyncOptions) -> crate::buffers::Pool {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    crate::buffers::Pool::new(
        opts.concurrency + 2,
        size(opts.part_size),
        size(opts.part_size.max(opts.multipart_threshold)),
    )
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

/// A fetched job: bytes, their CRC32, and how a whole object was verified at the source.
pub struct Fetched {
    job: Job,
    data: Bytes,
    sums: Sums,
    verified_by: Option<VerifiedBy>,
}

/// What the committer receives.
pub enum Commit {
    /// A single-PUT object finished (Ok = stored and verified), with how its source was
    /// verified.
    Single(Box<ObjectMeta>, Result<()>, Option<VerifiedBy>),
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
            JobKind::Single(m) => {
                if ctx.halt.is_cancelled() {
                    // Queued before the run stopped: never started.
                    ctx.failed(&m.key, &Error::cancelled());
                    continue;
                }
                (m.key.clone(), 0..m.size, m.etag.clone())
            }
            JobKind::Part { obj, range, .. } => {
                if obj.is_failed() || ctx.halt.is_cancelled() {
                    part_done(&commit, &job.kind, None).await;
                    continue;
                }
                (obj.src.key.clone(), range.clone(), obj.src.etag.clone())
            }
        };
        let res = ctx
            .buffers
            .scope(
                ctx.src
                    .get_range_stored(&key, range.clone(), etag.as_deref()),
            )
            .await;
        match res {
            Ok((data, stored)) => {
                let lucene = ctx.lucene(&key);
                let want = match &job.kind {
                    // The CRC-64 goes into the copy record; a recorded Lucene checksum
                    // (not an envelope's empty one) is checked against the tail.
                    JobKind::Single(_) => Wanted {
                        crc64: true,
                        nvme: false,
                        tail: lucene.as_deref().is_some_and(|r| !r.is_empty()),
                    },
                    JobKind::Part { obj, .. } => {
                        obj.wanted(&stored, range.end == obj.src.size, lucene.is_some())
                    }
                };
                let sums = Sums::of(&data, want).await;
                let checked = match &job.kind {
                    JobKind::Single(_) => {
                        check_single(&key, &data, &sums, &stored, lucene.as_deref())
                    }
                    JobKind::Part { obj, number, .. } => obj
                        .saw_part(*number, data.len() as u64, &sums, &stored)
                        .map(|()| None),
                };
                let verified_by = match checked {
                    Ok(by) => by,
                    Err(e) => {
                        fail_job(&commit, job, e.on(crate::error::Side::Source)).await;
                        continue;
                    }
                };
                let f = Fetched {
                    job,
                    data,
                    sums,
                    verified_by,
                };
                if out.send(f).await.is_err() {
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
        let Some(Fetched {
            job,
            data,
            sums,
            verified_by,
        }) = next
        else {
            return;
        };
        let len = data.len() as u64;
        match &job.kind {
            JobKind::Single(m) => {
                let mut opts = ctx.put_options(m);
                // The content is known before its metadata is sent: record its
                // checksums, so that a later run can tell when the destination holds
                // other bytes under this record (see `SourceRecord::content_mismatch`).
                let content = SourceRecord {
                    crc32: Some(sums.crc32),
                    crc64: sums.crc64,
                    ..Default::default()
                };
                opts.metadata.extend(content.to_metadata());
                let res = ctx.dst.put(&m.key, data.clone(), sums.crc32, &opts).await;
                if res.is_ok() {
                    ctx.counters
                        .transferred_bytes
                        .fetch_add(len, Ordering::Relaxed);
                }
                drop(data);
                let m = m.clone();
                drop(job); // releases the permit before we wait on the committer
                let _ = commit
                    .send(Commit::Single(Box::new(m), res, verified_by))
                    .await;
            }
            JobKind::Part { obj, number, .. } => {
                if obj.is_failed() {
                    part_done(&commit, &job.kind, None).await;
                    continue;
                }
                let res = ctx
                    .dst
                    .upload_part(
                        &obj.src.key,
                        &obj.upload_id,
                        Part {
                            number: *number,
                            data: data.clone(),
                            crc32: sums.crc32,
                        },
                    )
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

/// How a whole object read in one GET is known to be what the source holds: the
/// store's own check (done in its GET), else the Lucene footer the snapshot recorded.
fn check_single(
    key: &str,
    data: &Bytes,
    sums: &Sums,
    stored: &Stored,
    lucene: Option<&str>,
) -> Result<Option<VerifiedBy>> {
    let mut by = stored.verified_by;
    if lucene == Some("") {
        // A metadata envelope: magic, algorithm and the CRC32 of the rest.
        crate::repo::blob::check_footer(key, data)?;
        return Ok(by.or(Some(VerifiedBy::Lucene)));
    }
    if let (Some(recorded), Some((crc, _, footer))) = (lucene, &sums.tail) {
        lucene_matches(key, *crc, footer, recorded)?;
        by = by.or(Some(VerifiedBy::Lucene));
    }
    Ok(by)
}

async fn fail_job(commit: &mpsc::Sender<Commit>, job: Job, e: Error) {
    match &job.kind {
        JobKind::Single(m) => {
            let m = m.clone();
            drop(job);
            let _ = commit.send(Commit::Single(Box::new(m), Err(e), None)).await;
        }
        JobKind::Part { obj, number, .. } => {
            obj.fail(e.context(format!("part {number}")));
            part_done(commit, &job.kind, None).await;
        }
    }
}

/// Rounds of reading a multipart copy's parts again when, assembled, they do not match
/// the source's checksum of the whole object ("a few tries", as for any corruption).
const REPAIR_ROUNDS: u32 = 3;

/// Checks a multipart copy against the source's checksum of the whole object; on a
/// mismatch (a bit flipped on the way), reads every part again and sends again the ones
/// whose bytes differ from what was sent, up to [`REPAIR_ROUNDS`] times. The source
/// gives one checksum for the whole object, so the corrupted part is found by reading
/// again, not told. Runs in the committer: one part in memory at a time, and rare.
async fn verify_or_repair(
    ctx: &Ctx,
    obj: &MultiObject,
    parts: &mut [CompletedPart],
    lucene: Option<&str>,
) -> Result<Option<VerifiedBy>> {
    let mut rounds = 0;
    loop {
        let checked = obj.check_source(lucene);
        let mismatch = match checked {
            Err(e) if e.kind() == ErrorKind::ChecksumMismatch && rounds < REPAIR_ROUNDS => e,
            done => {
                // Counted like a request's retries: each round a retried attempt.
                if rounds > 0 {
                    let retried = vec![ErrorKind::ChecksumMismatch; rounds as usize];
                    ctx.faults
                        .record(&retried, done.as_ref().err().map(Error::kind));
                }
                return done;
            }
        };
        rounds += 1;
        // A retry of the object's verification (counted like a request's).
        ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::info!("{mismatch}; reading its parts again ({rounds}/{REPAIR_ROUNDS})");
        let n = parts.len();
        let mut offset = 0u64;
        for (i, p) in parts.iter_mut().enumerate() {
            let range = offset..offset + p.size;
            offset += p.size;
            let (data, stored) = ctx
                .buffers
                .scope(
                    ctx.src
                        .get_range_stored(&obj.src.key, range, obj.src.etag.as_deref()),
                )
                .await?;
            let sums = Sums::of(&data, obj.wanted(&stored, i + 1 == n, lucene.is_some())).await;
            let len = data.len() as u64;
            obj.saw_part(p.number, len, &sums, &stored)?;
            if sums.crc32 != p.crc32 || len != p.size {
                *p = ctx
                    .dst
                    .upload_part(
                        &obj.src.key,
                        &obj.upload_id,
                        Part {
                            number: p.number,
                            data,
                            crc32: sums.crc32,
                        },
                    )
                    .await?;
                ctx.counters
                    .transferred_bytes
                    .fetch_add(len, Ordering::Relaxed);
                ctx.faults.resent_bytes.fetch_add(len, Ordering::Relaxed);
            }
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
            Commit::Single(m, Ok(()), by) => {
                ctx.verified(&m.key, by);
                ctx.copied(&m);
            }
            Commit::Single(m, Err(e), _) => {
                ctx.remove_if_ours(&m, &e).await;
                ctx.failed(&m.key, &e);
            }
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
                let Some(mut parts) = parts else {
                    ctx.abort_upload(&obj.src.key, &obj.upload_id).await;
                    ctx.failed(&obj.src.key, &Error::other("a part is missing"));
                    continue;
                };
                // What was read must be what the source holds before the object may appear:
                // a mismatch aborts the upload, so no unverified object ever gets its key.
                let lucene = ctx.lucene(&obj.src.key);
                let by = match verify_or_repair(&ctx, &obj, &mut parts, lucene.as_deref()).await {
                    Ok(by) => by,
                    Err(e) => {
                        ctx.abort_upload(&obj.src.key, &obj.upload_id).await;
                        ctx.failed(&obj.src.key, &e.on(crate::error::Side::Source));
                        continue;
                    }
                };
                let res = ctx
                    .dst
                    .complete_multipart(&obj.src.key, &obj.upload_id, &parts, &obj.opts)
                    .await;
                match res {
                    Ok(()) => {
                        ctx.forget_upload(&obj.upload_id);
                        ctx.forget_record(&obj.upload_id).await;
                        ctx.verified(&obj.src.key, by);
                        ctx.copied(&obj.src);
                    }
                    Err(e) => {
                        ctx.abort_upload(&obj.src.key, &obj.upload_id).await;
                        ctx.remove_if_ours(&obj.src, &e).await;
                        ctx.failed(&obj.src.key, &e);
                    }
                }
            }
        }
    }
    tracing::debug!(buffers = ?ctx.buffers.stats(), "read buffers");
}
