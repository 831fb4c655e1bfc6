//! The measurements of one level and the scratch objects they need: GETs alone, PUTs
//! alone, a copy through the real sync pipeline, the listing rate, and small objects.
//! Every request goes through the probe's retry policy and is timed.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinSet;

use super::{
    steady_rate, threshold, Completions, CopySummary, Level, Prefixed, Probe, RateSummary,
    Repeated, SourceSize, LIST_OBJECT_SIZE, NO_OPTS, SETUP_CONCURRENCY, WRITE_PART,
};
use crate::error::{Error, Result, Side};
use crate::pipeline::scheduler::{is_multipart, part_ranges, MAX_PARTS};
use crate::pipeline::{NoObserver, Report, SnapshotAware, SyncOptions, SyncRun};
use crate::stats::{Kind, Latencies, LatencySummary};
use crate::store::layer::{Layered, Policy};
use crate::store::{CompletedPart, ObjectMeta, Part, Store};

impl Probe {
    /// One level: GETs alone and PUTs alone (sweep levels, `est` = None), then a copy of
    /// about `copy_time`.
    pub(super) async fn level(
        &self,
        blobs: &[ObjectMeta],
        c: usize,
        part: u64,
        est: Option<f64>,
        copy_time: Duration,
    ) -> Result<Level> {
        let quarter = self.opts.duration / 4;
        let multipart = is_multipart(self.opts.object_size, threshold(part));
        let (get, put, est) = match est {
            Some(e) => (None, None, e),
            None => {
                let g = self
                    .measure_get(blobs, c, part, multipart, quarter)
                    .await
                    .map_err(|e| e.on(Side::Source))?;
                let p = self
                    .measure_put(c, part, multipart, quarter)
                    .await
                    .map_err(|e| e.on(Side::Destination))?;
                let e = g.bytes_per_sec.min(p.bytes_per_sec);
                (Some(g), Some(p), e)
            }
        };
        let copy = self
            .measure_copy(blobs, c, part, multipart, est, copy_time)
            .await?;
        Ok(Level {
            sweep: if get.is_some() {
                "concurrency"
            } else {
                "part_size"
            },
            concurrency: c,
            part_size_bytes: part,
            get,
            put,
            copy,
        })
    }

    /// Ranged GETs of the scratch source by `c` workers for `dur`, shaped as sync reads.
    pub(super) async fn measure_get(
        &self,
        blobs: &[ObjectMeta],
        c: usize,
        part: u64,
        multipart: bool,
        dur: Duration,
    ) -> Result<RateSummary> {
        let mut reads: Vec<(String, Range<u64>, Option<String>)> = Vec::new();
        for b in blobs {
            if multipart {
                for r in part_ranges(b.size, part) {
                    reads.push((b.key.clone(), r, b.etag.clone()));
                }
            } else {
                reads.push((b.key.clone(), 0..b.size, b.etag.clone()));
            }
        }
        let reads = Arc::new(reads);
        let lat = Arc::new(Latencies::default());
        let next = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + dur;
        let mut set = JoinSet::new();
        for _ in 0..c {
            let (reads, lat, next, bytes) =
                (reads.clone(), lat.clone(), next.clone(), bytes.clone());
            let src = self.shared.via(Side::Source, self.src_scratch(), &lat);
            set.spawn(async move {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed) % reads.len().max(1);
                    let Some((key, range, etag)) = reads.get(i) else {
                        break;
                    };
                    let d = src.get_range(key, range.clone(), etag.as_deref()).await?;
                    bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            });
        }
        join(set).await?;
        Ok(summary(
            bytes.load(Ordering::Relaxed),
            start.elapsed(),
            &lat,
            Kind::Get,
        ))
    }

    /// Uploads to the destination by `c` workers for `dur`: parts of one multipart
    /// upload (aborted afterwards), or whole objects (deleted afterwards).
    pub(super) async fn measure_put(
        &self,
        c: usize,
        part: u64,
        multipart: bool,
        dur: Duration,
    ) -> Result<RateSummary> {
        let len = if multipart {
            part
        } else {
            self.opts.object_size
        };
        let data = random_bytes(len).await?;
        let crc = crate::checksum::hash(&data, crc32fast::hash).await;
        let key = format!("put-c{c}-p{part}");
        let raw: Arc<dyn Store> = Arc::new(Prefixed::new(self.dst.clone(), &self.scratch));
        let lat = Arc::new(Latencies::default());
        let dst = Arc::new(self.shared.via(Side::Destination, raw.clone(), &lat));
        let upload_id = if multipart {
            Some(dst.create_multipart(&key, &NO_OPTS).await?)
        } else {
            None
        };
        let next = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + dur;
        let cap = self.opts.max_scratch;
        let mut set = JoinSet::new();
        for _ in 0..c {
            let (next, bytes, dst, sh) = (
                next.clone(),
                bytes.clone(),
                dst.clone(),
                self.shared.clone(),
            );
            let (data, key, upload_id) = (data.clone(), key.clone(), upload_id.clone());
            set.spawn(async move {
                while Instant::now() < deadline && bytes.load(Ordering::Relaxed) < cap {
                    let n = next.fetch_add(1, Ordering::Relaxed) + 1;
                    match &upload_id {
                        Some(id) => {
                            if n > MAX_PARTS {
                                break;
                            }
                            dst.upload_part(
                                &key,
                                id,
                                Part {
                                    number: n as u32,
                                    data: data.clone(),
                                    crc32: crc,
                                },
                            )
                            .await?;
                        }
                        None => {
                            let k = format!("{key}/{n:06}");
                            dst.put(&k, data.clone(), crc, &NO_OPTS).await?;
                        }
                    }
                    sh.written.fetch_add(len, Ordering::Relaxed);
                    bytes.fetch_add(len, Ordering::Relaxed);
                }
                Ok(())
            });
        }
        let res = join(set).await;
        let elapsed = start.elapsed();
        // Drop what was uploaded right away: scratch stays bounded.
        let tidy = match &upload_id {
            Some(id) => dst.uncancellable().abort_multipart(&key, id).await,
            None => {
                remove_all(&cleanup(
                    Side::Destination,
                    Arc::new(Prefixed::new(raw, &key)),
                ))
                .await
            }
        };
        res?;
        tidy?;
        let kind = if multipart {
            Kind::UploadPart
        } else {
            Kind::Put
        };
        Ok(summary(bytes.load(Ordering::Relaxed), elapsed, &lat, kind))
    }

    /// A real sync from the scratch source (repeated) to a fresh destination prefix:
    /// about `est × dur` bytes, at least two rounds of parts, at most `max_scratch`.
    pub(super) async fn measure_copy(
        &self,
        blobs: &[ObjectMeta],
        c: usize,
        part: u64,
        multipart: bool,
        est: f64,
        dur: Duration,
    ) -> Result<CopySummary> {
        let o = &self.opts;
        let unit = if multipart {
            part.min(o.object_size)
        } else {
            o.object_size
        };
        let round = c as u64 * unit;
        let want = (est.max(1.0) * dur.as_secs_f64()) as u64;
        let volume = want.max(4 * round).min(o.max_scratch);
        let count = volume
            .div_ceil(o.object_size)
            .min(o.max_scratch / o.object_size)
            .max(1) as usize;
        let landed: Completions = Arc::default();
        let prefix = format!("{}copy-c{c}-p{part}/", self.scratch);
        let dst: Arc<dyn Store> =
            Arc::new(Prefixed::new(self.dst.clone(), &prefix).recording(landed.clone()));
        let src: Arc<dyn Store> =
            Arc::new(Repeated::new(self.src_scratch(), blobs.to_vec(), count)?);
        let start = Instant::now();
        let r = self.sync(src, dst, c, part, "copy").await?;
        let events: Vec<(f64, u64)> = landed
            .lock()
            .map(|v| {
                v.iter()
                    .map(|(t, b)| (t.saturating_duration_since(start).as_secs_f64(), *b))
                    .collect()
            })
            .unwrap_or_default();
        let seconds = r.duration_seconds;
        let rate = steady_rate(&events, round, seconds);
        let overhead = if rate > 0.0 {
            (seconds - r.copied_bytes as f64 / rate).max(0.0)
        } else {
            0.0
        };
        let lat = |k: &str| r.latency_ms.get(k).cloned();
        let get = lat("get");
        let put = if multipart {
            lat("upload_part")
        } else {
            lat("put")
        };
        let (g50, g99) = p50_p99(get.as_ref());
        let (u50, u99) = p50_p99(put.as_ref());
        Ok(CopySummary {
            bytes: r.copied_bytes,
            objects: r.copied_objects,
            seconds,
            bytes_per_sec: rate,
            overhead_seconds: overhead,
            get_p50_ms: g50,
            get_p99_ms: g99,
            put_p50_ms: u50,
            put_p99_ms: u99,
            retries: r.retries,
        })
    }

    /// Writes `list_objects` small objects under `list/` on the source and lists them
    /// three times; the median keys per second.
    pub(super) async fn measure_list(&self) -> Result<f64> {
        let n = self.opts.list_objects;
        let src: Arc<dyn Store> = Arc::new(Prefixed::new(
            self.src.clone(),
            &format!("{}list/", self.scratch),
        ));
        let data = random_bytes(LIST_OBJECT_SIZE as u64).await?;
        let crc = crc32fast::hash(&data);
        let lat = Arc::new(Latencies::default());
        let src = self.shared.via(Side::Source, src, &lat);
        let puts = futures::stream::iter(0..n).map(|i| {
            let (src, data) = (&src, data.clone());
            async move {
                let k = format!("k{i:06}");
                src.put(&k, data.clone(), crc, &NO_OPTS).await?;
                self.shared
                    .written
                    .fetch_add(LIST_OBJECT_SIZE as u64, Ordering::Relaxed);
                Ok::<_, Error>(())
            }
        });
        let mut puts = puts.buffer_unordered(SETUP_CONCURRENCY);
        while let Some(r) = puts.next().await {
            r.map_err(|e| e.on(Side::Source))?;
        }
        let mut rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let mut keys = 0usize;
            let mut l = src.list(None);
            while let Some(page) = l.next().await {
                keys += page.map_err(|e| e.on(Side::Source))?.len();
            }
            let secs = t.elapsed().as_secs_f64().max(1e-6);
            if keys != n {
                return Err(Error::other(format!(
                    "the source lists {keys} of the {n} small scratch objects just written; is the listing consistent?"
                )));
            }
            rates.push(keys as f64 / secs);
        }
        rates.sort_by(f64::total_cmp);
        Ok(rates[rates.len() / 2])
    }

    /// Copies the small objects with the chosen settings: objects per second.
    pub(super) async fn measure_small_objects(&self, c: usize, part: u64) -> Result<f64> {
        let src: Arc<dyn Store> = Arc::new(Prefixed::new(
            self.src.clone(),
            &format!("{}list/", self.scratch),
        ));
        let dst: Arc<dyn Store> = Arc::new(Prefixed::new(
            self.dst.clone(),
            &format!("{}list-copy/", self.scratch),
        ));
        let r = self.sync(src, dst, c, part, "small-object copy").await?;
        Ok(r.copied_objects as f64 / r.duration_seconds.max(1e-6))
    }

    /// Runs a real sync `src` → `dst` with the probe's cancellation, removes what it
    /// wrote, and fails unless every object was copied.
    async fn sync(
        &self,
        src: Arc<dyn Store>,
        dst: Arc<dyn Store>,
        c: usize,
        part: u64,
        what: &str,
    ) -> Result<Report> {
        let opts = SyncOptions {
            concurrency: c,
            part_size: part,
            multipart_threshold: threshold(part),
            snapshot_aware: SnapshotAware::Off,
            retry: self.opts.retry.clone(),
            ..SyncOptions::default()
        };
        opts.validate()?;
        let run = SyncRun::new(src, dst.clone(), opts, Arc::new(NoObserver));
        let handle = run.handle();
        let cancel = self.shared.cancel.clone();
        let forward = tokio::spawn(async move {
            cancel.cancelled().await;
            handle.cancel.cancel();
        });
        let result = run.run().await;
        forward.abort();
        let tidy = remove_all(&cleanup(Side::Destination, dst)).await;
        let r = result?;
        let sh = &self.shared;
        sh.written.fetch_add(r.copied_bytes, Ordering::Relaxed);
        sh.retries.fetch_add(r.retries, Ordering::Relaxed);
        if r.interrupted || sh.cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let failure = r.fatal_error.clone().or_else(|| {
            r.failures
                .first()
                .map(|f| format!("{}: {}", f.key, f.reason))
        });
        if let Some(f) = failure {
            return Err(Error::other(format!(
                "the probe's {what} at concurrency {c} failed: {f}"
            )));
        }
        tidy?;
        Ok(r)
    }

    /// Writes one scratch source object of `size` random bytes the way Elasticsearch's
    /// S3 repository writes a blob (one PUT up to its 100 MiB buffer, else parts of that
    /// size), so that sync's ranged reads line up with the stored parts no better than
    /// they do on a real repository. Aborts the upload if anything fails.
    pub(super) async fn write_object(
        &self,
        side: Side,
        store: &Arc<dyn Store>,
        key: &str,
        size: u64,
    ) -> Result<()> {
        let sh = &self.shared;
        let store = sh.via(side, store.clone(), &Arc::new(Latencies::default()));
        let store = &store;
        let part = WRITE_PART;
        if size <= part {
            let data = random_bytes(size).await?;
            let crc = crate::checksum::hash(&data, crc32fast::hash).await;
            store.put(key, data.clone(), crc, &NO_OPTS).await?;
            sh.written.fetch_add(size, Ordering::Relaxed);
            return Ok(());
        }
        let id = store.create_multipart(key, &NO_OPTS).await?;
        let res = async {
            let ranges: Vec<_> = part_ranges(size, part).enumerate().collect();
            let uploads = futures::stream::iter(ranges).map(|(i, r)| {
                let id = &id;
                async move {
                    let data = random_bytes(r.end - r.start).await?;
                    let crc = crate::checksum::hash(&data, crc32fast::hash).await;
                    let p = store
                        .upload_part(
                            key,
                            id,
                            Part {
                                number: i as u32 + 1,
                                data: data.clone(),
                                crc32: crc,
                            },
                        )
                        .await?;
                    sh.written.fetch_add(r.end - r.start, Ordering::Relaxed);
                    Ok::<CompletedPart, Error>(p)
                }
            });
            let parts: Vec<CompletedPart> = uploads
                .buffered(2)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
            store.complete_multipart(key, &id, &parts, &NO_OPTS).await
        }
        .await;
        if res.is_err() {
            let _ = store.uncancellable().abort_multipart(key, &id).await;
        }
        res
    }
}

/// Waits for every worker; the first error stops the others.
pub(super) async fn join(mut set: JoinSet<Result<()>>) -> Result<()> {
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| Err(Error::other(format!("a probe worker failed: {e}"))));
        if let Err(e) = r {
            set.abort_all();
            while set.join_next().await.is_some() {}
            return Err(e);
        }
    }
    Ok(())
}

pub(super) fn p50_p99(s: Option<&LatencySummary>) -> (f64, f64) {
    s.map(|s| (s.p50_ms, s.p99_ms)).unwrap_or((0.0, 0.0))
}

pub(super) fn summary(bytes: u64, elapsed: Duration, lat: &Latencies, kind: Kind) -> RateSummary {
    let seconds = elapsed.as_secs_f64().max(1e-6);
    let s = lat.summaries();
    let (p50_ms, p99_ms) = p50_p99(s.get(kind.name()));
    RateSummary {
        bytes,
        seconds,
        bytes_per_sec: bytes as f64 / seconds,
        requests: lat.request_counts().get(kind.name()).copied().unwrap_or(0),
        p50_ms,
        p99_ms,
    }
}

/// `n` random (incompressible) bytes, generated off the reactor.
pub(super) async fn random_bytes(n: u64) -> Result<Bytes> {
    let n = usize::try_from(n)
        .map_err(|_| Error::invalid_input(format!("{n} bytes do not fit in memory here")))?;
    tokio::task::spawn_blocking(move || {
        use rand::RngCore;
        let mut v = vec![0u8; n];
        rand::rng().fill_bytes(&mut v);
        Bytes::from(v)
    })
    .await
    .map_err(|e| Error::other(format!("generating scratch data failed: {e}")))
}

/// Removes every object under a view and aborts its pending uploads. Runs to the end
/// even after cancellation (that is when it matters).
/// `store` for cleanup: through the request layer, with no cancellation.
pub(super) fn cleanup(side: Side, store: Arc<dyn Store>) -> Layered {
    Layered::new(
        store,
        side,
        Policy::standalone(crate::retry::RetryPolicy::default()),
    )
}

pub(super) async fn remove_all(view: &Layered) -> Result<()> {
    // `view` ignores cancellation (a standalone policy), so cleanup after Ctrl-C runs.
    for u in view.list_multipart_uploads().await? {
        view.abort_multipart(&u.key, &u.upload_id).await?;
    }
    loop {
        // Deleting while listing would shift the listing under our feet: collect a
        // page, delete it, list again from the start until nothing is left.
        let mut keys = Vec::new();
        let mut l = view.list(None);
        while let Some(page) = l.next().await {
            let page = match page {
                // A directory that was never created holds nothing to remove.
                Err(e) if e.kind() == crate::error::ErrorKind::LocationNotFound => break,
                p => p?,
            };
            keys.extend(page.into_iter().map(|m| m.key));
            if keys.len() >= 1000 {
                break;
            }
        }
        drop(l);
        if keys.is_empty() {
            return Ok(());
        }
        let mut dels = futures::stream::iter(keys)
            .map(|k| async move { view.delete(&k).await })
            .buffer_unordered(SETUP_CONCURRENCY);
        while let Some(r) = dels.next().await {
            r?;
        }
    }
}

/// Sums the source listing (everything but the scratch prefix).
pub(super) async fn source_size(
    src: &dyn Store,
    scratch: &str,
    threshold: u64,
) -> Result<SourceSize> {
    let mut s = SourceSize {
        objects: 0,
        bytes: 0,
        small_objects: 0,
    };
    let mut l = src.list(None);
    while let Some(page) = l.next().await {
        for m in page? {
            if m.key.starts_with(scratch) {
                continue;
            }
            s.objects += 1;
            s.bytes += m.size;
            if !is_multipart(m.size, threshold) {
                s.small_objects += 1;
            }
        }
    }
    Ok(s)
}
