//! `bench probe`: what a sync between two stores will achieve, measured before a migration.
//!
//! The probe writes scratch objects under a temporary prefix on each side and, at
//! increasing concurrency (1, 2, 4, ... up to `max_concurrency`), measures ranged GETs
//! of the source, part uploads to the destination, and an actual copy through the real
//! sync pipeline ([`SyncRun`]) from scratch source objects to scratch destination keys.
//! The copy is what predicts a sync because it *is* one: the same fetchers, uploaders,
//! checksums, part sizes and permits. The sweep stops at the knee (a level gaining less
//! than 10% over the best so far); the recommendation is the smallest concurrency within
//! 5% of the best, and part sizes around the default are then tried at that concurrency.
//!
//! The copy rate is that of a final copy at the chosen setting, run for a whole level
//! budget after the sweep has kept both stores busy: the sustained rate, not a fresh
//! start's burst. It is the *steady* rate: bytes that landed after the first round of
//! parts filled the pipeline, over the time they took (uploads are timed as they land
//! through a recording view of the destination). What the run cost beyond that
//! (listing, start-up, the tail) is kept as a fixed overhead, so a prediction is
//! `overhead + bytes / copy_rate`, plus `objects / small_object_rate` for the objects a
//! source listing shows at or below the multipart threshold (each costs a round trip
//! more than its bytes), and never less than listing the source at the measured rate.
//!
//! Invariants:
//! - Nothing is written outside the scratch prefix, and the probe refuses to start when
//!   the location (or an explicit scratch prefix) already holds objects, so that removing
//!   everything under the scratch prefix afterwards cannot touch anyone's data.
//! - Scratch objects are removed and scratch uploads aborted on success, on failure and
//!   on cancellation; a level's copies are removed right after the level, so at most
//!   about `max_scratch` bytes of scratch exist on either side at once.
//! - The scratch source is small (a couple of objects): each level reads it many times
//!   over under virtual keys ([`Repeated`]), so the copy volume is not bounded by it.

mod measure;
mod report;
mod views;

pub use report::{CopySummary, Level, ProbeEvent, ProbeReport, RateSummary, SourceSize};
pub use views::{Completions, Prefixed, Repeated};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result, Side};
use crate::pipeline::scheduler::{is_multipart, MAX_PART_SIZE, MIN_PART_SIZE};
use crate::pipeline::{NoObserver, SyncOptions, SyncRun};
use crate::retry::RetryPolicy;
use crate::stats::Latencies;
use crate::store::layer::{Layered, Policy};
use crate::store::{PutOptions, Store};
use measure::{remove_all, source_size};

const MIB: u64 = 1 << 20;
/// The part size of the concurrency sweep when none is given (sync's default).
const DEFAULT_PART: u64 = 16 * MIB;
/// Part sizes tried at the chosen concurrency (at most sync's default threshold, so the
/// recommendation needs no `--multipart-threshold`).
const PART_TRIALS: [u64; 3] = [8 * MIB, 32 * MIB, 64 * MIB];
/// A level must beat the best so far by this factor for the sweep to go on.
const KNEE_GAIN: f64 = 1.10;
/// The recommendation is the cheapest setting within this fraction of the best.
const NEAR_BEST: f64 = 0.95;
/// Real scratch objects on the source; levels read them over and over.
const SOURCE_OBJECTS: u64 = 2;
/// How the scratch source objects are written: Elasticsearch's S3 repository default
/// `buffer_size` (one PUT up to it, parts of it above).
const WRITE_PART: u64 = 100 * MIB;
/// Size of each listing-probe object (metadata-blob sized).
const LIST_OBJECT_SIZE: usize = 512;
/// Requests in flight while writing and removing scratch objects.
const SETUP_CONCURRENCY: usize = 16;
/// Scratch objects carry no metadata.
static NO_OPTS: PutOptions = PutOptions {
    metadata: Vec::new(),
    mtime_ms: None,
    if_none_match: false,
    if_match: None,
};

/// The knobs of a probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Use only this part size; `None` sweeps with 16 MiB, then tries 8, 32 and 64 MiB.
    pub part_size: Option<u64>,
    /// Size of the scratch source objects: what the data blobs to move look like.
    pub object_size: u64,
    /// Highest concurrency tried.
    pub max_concurrency: usize,
    /// Time budget of one level: a quarter each for GETs and PUTs, half for the copy
    /// (the final confirmation of the chosen setting copies for the whole budget).
    pub duration: Duration,
    /// Most scratch bytes on either side at once (also caps a level's copy volume and
    /// the part buffers in flight).
    pub max_scratch: u64,
    /// Small objects written to measure listing and per-object costs (0: skip that).
    pub list_objects: usize,
    /// Retry policy of every request.
    pub retry: RetryPolicy,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            part_size: None,
            object_size: 128 * MIB,
            max_concurrency: 64,
            duration: Duration::from_secs(4),
            max_scratch: 1 << 30,
            list_objects: 1000,
            retry: RetryPolicy::default(),
        }
    }
}

impl ProbeOptions {
    /// Checks the knobs; the message names the problem and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_input(m));
        if self.max_concurrency == 0 || self.max_concurrency > 1024 {
            return bad(format!(
                "--max-concurrency {} is out of range; use 1..=1024",
                self.max_concurrency
            ));
        }
        if let Some(p) = self.part_size {
            if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&p) {
                return bad(format!(
                    "--part-size {p} bytes is outside 5MiB..5GiB; choose a part size in that range, e.g. 16MiB"
                ));
            }
        }
        if self.object_size == 0 {
            return bad("--object-size must be at least 1 byte, e.g. 128MiB".into());
        }
        let first_part = self.part_size.unwrap_or(DEFAULT_PART);
        let need = self.object_size.max(first_part.min(self.object_size));
        if need > self.max_scratch {
            return bad(format!(
                "--object-size ({} bytes) does not fit in --max-scratch ({} bytes); raise --max-scratch or lower --object-size",
                self.object_size, self.max_scratch
            ));
        }
        if self.duration < Duration::from_millis(200) || self.duration > Duration::from_secs(600) {
            return bad(format!(
                "--duration {:?} is out of range; use 200ms..10m (a few seconds is typical)",
                self.duration
            ));
        }
        if self.list_objects > 100_000 {
            return bad(format!(
                "--list-objects {} is too many; use at most 100000 (1000 is one listing page)",
                self.list_objects
            ));
        }
        Ok(())
    }
}

/// How much data the prediction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    /// Only measure rates.
    None,
    /// This many bytes, in objects shaped like the probe's scratch objects.
    Bytes(u64),
    /// What the source location holds (its listing is summed).
    FromSource,
}

/// What every probe request shares: the retry policy and cancellation of the request
/// layer, and the counters of the report.
pub(crate) struct Shared {
    retry: RetryPolicy,
    pub(crate) cancel: CancellationToken,
    pub(crate) retries: Arc<AtomicU64>,
    pub(crate) written: AtomicU64,
}

impl Shared {
    /// `store` through the request layer, its requests timed into `lat`.
    pub(crate) fn via(&self, side: Side, store: Arc<dyn Store>, lat: &Arc<Latencies>) -> Layered {
        Layered::new(
            store,
            side,
            Policy {
                retry: self.retry.clone(),
                limits: Arc::new(crate::limits::Limits::default()),
                lat: lat.clone(),
                retries: self.retries.clone(),
                faults: Default::default(),
                cancel: Some(self.cancel.clone()),
            },
        )
    }
}

/// A prepared probe: both stores reachable, the scratch prefix chosen and empty.
pub struct Probe {
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    scratch: String,
    opts: ProbeOptions,
    size: SizeSpec,
    shared: Arc<Shared>,
}

/// The first key a store lists, if any (a directory not created yet holds none).
async fn first_key(s: &dyn Store) -> Result<Option<String>> {
    let mut list = s.list(None);
    while let Some(page) = list.next().await {
        let page = match page {
            Err(e) if e.kind() == crate::error::ErrorKind::LocationNotFound => return Ok(None),
            p => p?,
        };
        if let Some(m) = page
            .into_iter()
            .find(|m| !crate::store::is_reserved(&m.key))
        {
            return Ok(Some(m.key));
        }
    }
    Ok(None)
}

/// `--scratch-prefix` as a relative prefix ending in `/`.
fn normalize_scratch(p: &str) -> Result<String> {
    let t = p.trim_matches('/');
    let bad_segment = t.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if t.is_empty() || bad_segment || t.contains('\\') {
        return Err(Error::invalid_input(format!(
            "--scratch-prefix {p:?} is not a usable prefix; give a relative path such as tmp/snapferry-probe"
        )));
    }
    Ok(format!("{t}/"))
}

/// The multipart threshold a sync with this part size uses (sync's default, or the part
/// size when larger).
fn threshold(part: u64) -> u64 {
    SyncOptions::default().multipart_threshold.max(part)
}

impl Probe {
    /// Checks the options, preflights both stores and chooses the scratch prefix: a fresh
    /// `snapferry-probe-<random>/` when both locations are empty, else `scratch` (which
    /// must be empty on both sides). Refusals are [`Error::InvalidInput`]; nothing has
    /// been written when this fails.
    pub async fn prepare(
        src: Arc<dyn Store>,
        dst: Arc<dyn Store>,
        scratch: Option<&str>,
        opts: ProbeOptions,
        size: SizeSpec,
    ) -> Result<Probe> {
        opts.validate()?;
        SyncRun::new(
            src.clone(),
            dst.clone(),
            SyncOptions {
                // The probe writes its own source objects.
                allow_empty_source: true,
                ..SyncOptions::default()
            },
            Arc::new(NoObserver),
        )
        .preflight()
        .await?;
        let shared = Arc::new(Shared {
            retry: opts.retry.clone(),
            cancel: CancellationToken::new(),
            retries: Arc::new(AtomicU64::new(0)),
            written: AtomicU64::new(0),
        });
        let lat = Arc::new(Latencies::default());
        let sides = [
            ("source", Side::Source, &src),
            ("destination", Side::Destination, &dst),
        ];
        let scratch = match scratch {
            None => {
                for (side, tag, s) in sides {
                    let s = shared.via(tag, s.clone(), &lat);
                    if let Some(k) = first_key(&s).await? {
                        return Err(Error::invalid_input(format!(
                            "the {side} {} already holds objects (e.g. {k:?}); probe an empty location, or pass --scratch-prefix P to put the probe's scratch objects under P (empty on both sides)",
                            s.describe()
                        )));
                    }
                }
                format!("snapferry-probe-{:08x}/", rand::random::<u32>())
            }
            Some(p) => {
                let p = normalize_scratch(p)?;
                for (side, tag, s) in sides {
                    let view = shared.via(tag, Arc::new(Prefixed::new(s.clone(), &p)), &lat);
                    if let Some(k) = first_key(&view).await? {
                        return Err(Error::invalid_input(format!(
                            "--scratch-prefix {p} already holds objects on the {side} (e.g. {p}{k}); choose a prefix that is empty on both sides"
                        )));
                    }
                }
                p
            }
        };
        Ok(Probe {
            src,
            dst,
            scratch,
            opts: opts.clone(),
            size,
            shared,
        })
    }

    /// The scratch prefix (relative to each location).
    pub fn scratch_prefix(&self) -> &str {
        &self.scratch
    }

    /// Cancelling it stops the probe; scratch objects are still removed.
    pub fn cancel_token(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }

    /// Runs the probe and removes its scratch objects, whatever happened. A failure to
    /// remove them is an error naming the prefix to remove by hand.
    pub async fn run(self, on: &(dyn Fn(ProbeEvent<'_>) + Sync)) -> Result<ProbeReport> {
        let started = Instant::now();
        let result = self.measure(on).await;
        on(ProbeEvent::CleaningUp);
        let mut cleanup = Ok(());
        for (side, tag, s) in [
            ("source", Side::Source, &self.src),
            ("destination", Side::Destination, &self.dst),
        ] {
            let view = Layered::new(
                Arc::new(Prefixed::new(s.clone(), &self.scratch)),
                tag,
                Policy::standalone(self.opts.retry.clone()),
            );
            if let Err(e) = remove_all(&view).await {
                cleanup = Err(Error::other(format!(
                    "could not remove the probe's scratch objects under {} on the {side} ({e}); delete them by hand",
                    self.scratch
                )));
                break;
            }
        }
        let mut report = result?;
        cleanup?;
        report.duration_seconds = started.elapsed().as_secs_f64();
        report.retries = self.shared.retries.load(Ordering::Relaxed);
        report.scratch_bytes_written = self.shared.written.load(Ordering::Relaxed);
        Ok(report)
    }

    fn src_scratch(&self) -> Arc<dyn Store> {
        Arc::new(Prefixed::new(self.src.clone(), &self.scratch))
    }

    async fn measure(&self, on: &(dyn Fn(ProbeEvent<'_>) + Sync)) -> Result<ProbeReport> {
        let o = &self.opts;
        let p0 = o.part_size.unwrap_or(DEFAULT_PART);
        let source_listing = match self.size {
            SizeSpec::FromSource => Some(
                source_size(self.src.as_ref(), &self.scratch, threshold(p0))
                    .await
                    .map_err(|e| e.on(Side::Source))?,
            ),
            _ => None,
        };

        // 1. Scratch source: a couple of objects of the assumed shape.
        let n_src = SOURCE_OBJECTS.min(o.max_scratch / o.object_size).max(1);
        on(ProbeEvent::Writing {
            bytes: n_src * o.object_size,
        });
        let src = self.src_scratch();
        for i in 0..n_src {
            self.write_object(Side::Source, &src, &format!("blob-{i:03}"), o.object_size)
                .await
                .map_err(|e| e.on(Side::Source))?;
        }
        let mut blobs = Vec::new();
        let mut l = src.list(None);
        while let Some(page) = l.next().await {
            blobs.extend(page?.into_iter().filter(|m| m.key.starts_with("blob-")));
        }
        drop(l);
        if blobs.len() as u64 != n_src {
            return Err(Error::other(format!(
                "the source lists {} of the {n_src} scratch objects just written; is the listing consistent?",
                blobs.len()
            )));
        }

        // 2. Listing rate, on a page of small objects.
        let list_rate = if o.list_objects > 0 {
            let r = self.measure_list().await?;
            on(ProbeEvent::Listed {
                keys: o.list_objects,
                keys_per_sec: r,
            });
            Some(r)
        } else {
            None
        };

        // 3. The concurrency sweep, up to the knee.
        let mut levels: Vec<Level> = Vec::new();
        let mut best = 0.0f64;
        let mut c = 1usize;
        let knee = loop {
            if c as u64 * p0.min(o.object_size) > o.max_scratch {
                break format!(
                    "stopped at concurrency {}: --max-scratch cannot hold more parts in flight",
                    c / 2
                );
            }
            let lvl = self.level(&blobs, c, p0, None, o.duration / 2).await?;
            on(ProbeEvent::Level(&lvl));
            let rate = lvl.copy.bytes_per_sec;
            levels.push(lvl);
            if best > 0.0 && rate < best * KNEE_GAIN {
                break format!("gain below 10% at concurrency {c}");
            }
            best = best.max(rate);
            if c >= o.max_concurrency {
                break format!("reached --max-concurrency {}", o.max_concurrency);
            }
            c = (c * 2).min(o.max_concurrency);
        };
        let best = levels
            .iter()
            .map(|l| l.copy.bytes_per_sec)
            .fold(0.0, f64::max);
        let chosen_c = levels
            .iter()
            .find(|l| l.copy.bytes_per_sec >= NEAR_BEST * best)
            .map(|l| l.concurrency)
            .unwrap_or(1);
        let sweep_level = levels
            .iter()
            .find(|l| l.concurrency == chosen_c)
            .cloned()
            .ok_or_else(|| Error::other("no level was measured"))?;

        // 4. Part sizes around the default, at the chosen concurrency (only when the
        // objects go multipart and the user did not fix the part size).
        let mut chosen = sweep_level.clone();
        let multipart = is_multipart(o.object_size, threshold(p0));
        if o.part_size.is_none() && multipart {
            let mut trials = vec![PART_TRIALS[0], PART_TRIALS[1]];
            let mut i = 0;
            while i < trials.len() {
                let p = trials[i];
                i += 1;
                if p >= o.object_size || chosen_c as u64 * p > o.max_scratch {
                    continue;
                }
                let est = sweep_level.copy.bytes_per_sec;
                let lvl = self
                    .level(&blobs, chosen_c, p, Some(est), o.duration / 2)
                    .await?;
                on(ProbeEvent::Level(&lvl));
                let rate = lvl.copy.bytes_per_sec;
                // Larger parts keep helping: try the next size up.
                if p == PART_TRIALS[1] && rate > sweep_level.copy.bytes_per_sec / NEAR_BEST {
                    trials.push(PART_TRIALS[2]);
                }
                // Another part size wins only when clearly better than the default.
                let bar = chosen
                    .copy
                    .bytes_per_sec
                    .max(sweep_level.copy.bytes_per_sec / NEAR_BEST);
                if rate > bar {
                    chosen = lvl.clone();
                }
                levels.push(lvl);
            }
        }
        let part = chosen.part_size_bytes;

        // 5. Small objects: per-object cost at the chosen settings.
        let small_rate = if o.list_objects > 0 {
            let r = self.measure_small_objects(chosen_c, part).await?;
            on(ProbeEvent::SmallObjects { objects_per_sec: r });
            Some(r)
        } else {
            None
        };

        // 6. The chosen setting once more, last and for the whole level budget: after the
        // sweep has kept both stores busy, this is the sustained rate (an early level can
        // ride on a fresh start: idle servers, warm caches, a scheduler's idle credit),
        // and it is the measurement closest to the sync that follows.
        let confirm = Level {
            sweep: "confirm",
            ..self
                .level(
                    &blobs,
                    chosen_c,
                    part,
                    Some(chosen.copy.bytes_per_sec),
                    o.duration,
                )
                .await?
        };
        on(ProbeEvent::Level(&confirm));
        let copy_rate = confirm.copy.bytes_per_sec;
        let overhead = confirm.copy.overhead_seconds;
        levels.push(confirm);

        // 7. The prediction.
        let (size_bytes, size_from) = match (self.size, source_listing) {
            (SizeSpec::Bytes(b), _) => (Some(b), Some("argument")),
            (SizeSpec::FromSource, Some(s)) => (Some(s.bytes), Some("source")),
            _ => (None, None),
        };
        let predicted_seconds = size_bytes.map(|b| {
            predict(
                b,
                copy_rate,
                overhead,
                source_listing,
                small_rate,
                list_rate,
            )
        });
        let threshold_bytes = threshold(part);
        let mut args = vec![
            "--concurrency".to_string(),
            chosen_c.to_string(),
            "--part-size".to_string(),
            size_arg(part),
        ];
        if threshold_bytes != SyncOptions::default().multipart_threshold {
            args.push("--multipart-threshold".into());
            args.push(size_arg(threshold_bytes));
        }
        Ok(ProbeReport {
            source: self.src.describe(),
            destination: self.dst.describe(),
            scratch_prefix: self.scratch.clone(),
            object_size_bytes: o.object_size,
            recommended_concurrency: chosen_c,
            recommended_part_size_bytes: part,
            multipart_threshold_bytes: threshold_bytes,
            recommended_sync_args: args,
            knee,
            copy_rate_bytes_per_sec: copy_rate,
            copy_overhead_seconds: overhead,
            get_rate_bytes_per_sec: sweep_level.get.as_ref().map(|g| g.bytes_per_sec),
            put_rate_bytes_per_sec: sweep_level.put.as_ref().map(|p| p.bytes_per_sec),
            list_rate_keys_per_sec: list_rate,
            small_object_rate_objects_per_sec: small_rate,
            size_bytes,
            size_from,
            source_listing,
            predicted_seconds,
            levels,
            scratch_bytes_written: 0,
            retries: 0,
            duration_seconds: 0.0,
        })
    }
}

/// The steady rate of a copy from its upload completions `(seconds since start, bytes)`:
/// the bytes that landed after the first `round` bytes (the pipeline full) over the time
/// they took. Falls back to the overall rate when the copy was too short to tell.
pub fn steady_rate(events: &[(f64, u64)], round: u64, total_seconds: f64) -> f64 {
    let total: u64 = events.iter().map(|e| e.1).sum();
    let overall = if total_seconds > 0.0 {
        total as f64 / total_seconds
    } else {
        0.0
    };
    let mut ev = events.to_vec();
    ev.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cum = 0u64;
    let mut first = None;
    for (t, b) in &ev {
        cum += b;
        if cum >= round {
            first = Some((*t, cum));
            break;
        }
    }
    let (Some((t_a, b_a)), Some(&(t_z, _))) = (first, ev.last()) else {
        return overall;
    };
    let span = t_z - t_a;
    // Too little after the first round to measure a rate: use the whole run.
    if span <= 0.0 || span < 0.25 * total_seconds || total <= b_a {
        return overall;
    }
    (total - b_a) as f64 / span
}

/// Predicted seconds to sync `bytes` at `rate` after `overhead`: plus the per-object cost
/// of a listed source's small objects, and never faster than listing it.
pub fn predict(
    bytes: u64,
    rate: f64,
    overhead: f64,
    listing: Option<SourceSize>,
    small_rate: Option<f64>,
    list_rate: Option<f64>,
) -> f64 {
    let mut t = overhead + bytes as f64 / rate.max(1.0);
    if let Some(l) = listing {
        if let Some(r) = small_rate.filter(|r| *r > 0.0) {
            t += l.small_objects as f64 / r;
        }
        if let Some(r) = list_rate.filter(|r| *r > 0.0) {
            t = t.max(l.objects as f64 / r);
        }
    }
    t
}

/// A size as sync's `--part-size` takes it: whole MiB when it is one.
fn size_arg(b: u64) -> String {
    if b % MIB == 0 {
        format!("{}MiB", b / MIB)
    } else {
        b.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn steady_rate_ignores_the_first_round_and_falls_back_when_short() {
        // 4 in flight, 1 MiB parts: the first round lands together at 1 s, then one
        // part every 0.25 s (4 MiB/s) until 20 parts.
        let mut ev = vec![(1.0, MIB); 4];
        for i in 1..=16 {
            ev.push((1.0 + 0.25 * i as f64, MIB));
        }
        let r = steady_rate(&ev, 4 * MIB, 5.2);
        assert!((r / MIB as f64 - 4.0).abs() < 0.01, "{r}");
        // Too short after the first round: the overall rate.
        let ev = vec![(1.0, MIB); 4];
        assert_eq!(steady_rate(&ev, 4 * MIB, 2.0), 2.0 * MIB as f64);
        assert_eq!(steady_rate(&[], 4 * MIB, 0.0), 0.0);
    }

    #[test]
    fn prediction_adds_overhead_small_objects_and_respects_listing() {
        let gib = 1u64 << 30;
        assert_eq!(predict(gib, gib as f64, 0.5, None, None, None), 1.5);
        let l = SourceSize {
            objects: 10_000,
            bytes: gib,
            small_objects: 1000,
        };
        assert_eq!(
            predict(gib, gib as f64, 0.0, Some(l), Some(500.0), None),
            3.0
        );
        assert_eq!(
            predict(gib, gib as f64, 0.0, Some(l), Some(500.0), Some(100.0)),
            100.0
        );
    }

    #[test]
    fn scratch_prefixes_are_relative_and_clean() {
        assert_eq!(normalize_scratch("tmp/probe").unwrap(), "tmp/probe/");
        assert_eq!(normalize_scratch("/tmp/probe/").unwrap(), "tmp/probe/");
        for bad in ["", "/", "a//b", "../x", "a/./b", "a\\b"] {
            assert!(normalize_scratch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(ProbeOptions::default().validate().is_ok());
        let cases = [
            ProbeOptions {
                max_concurrency: 0,
                ..Default::default()
            },
            ProbeOptions {
                part_size: Some(1 << 20),
                ..Default::default()
            },
            ProbeOptions {
                object_size: 2 << 30,
                ..Default::default()
            },
            ProbeOptions {
                duration: Duration::from_millis(10),
                ..Default::default()
            },
        ];
        for o in cases {
            let e = o.validate().unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput, "{e}");
        }
    }

    #[tokio::test]
    async fn probe_between_directories_recommends_and_leaves_nothing() {
        use crate::store::fs::FsStore;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src: Arc<dyn Store> = Arc::new(FsStore::new(a.path().to_path_buf()));
        let dst: Arc<dyn Store> = Arc::new(FsStore::new(b.path().to_path_buf()));
        let opts = ProbeOptions {
            object_size: 12 * MIB,
            part_size: Some(5 * MIB),
            max_concurrency: 2,
            duration: Duration::from_millis(400),
            max_scratch: 64 * MIB,
            list_objects: 20,
            ..Default::default()
        };
        let p = Probe::prepare(
            src.clone(),
            dst.clone(),
            None,
            opts.clone(),
            SizeSpec::Bytes(1 << 30),
        )
        .await
        .unwrap();
        assert!(p.scratch_prefix().starts_with("snapferry-probe-"));
        let r = p.run(&|_| {}).await.unwrap();
        assert!(r.copy_rate_bytes_per_sec > 0.0);
        assert!(r.predicted_seconds.unwrap() > 0.0);
        assert!((1..=2).contains(&r.recommended_concurrency));
        assert_eq!(r.recommended_part_size_bytes, 5 * MIB);
        assert!(first_key(src.as_ref()).await.unwrap().is_none());
        assert!(first_key(dst.as_ref()).await.unwrap().is_none());
        assert!(dst.list_multipart_uploads().await.unwrap().is_empty());

        // A location holding data is refused unless a (free) scratch prefix is given.
        let d = Bytes::from_static(b"data");
        src.put("index.latest", d.clone(), crc32fast::hash(&d), &NO_OPTS)
            .await
            .unwrap();
        let e = Probe::prepare(src.clone(), dst.clone(), None, opts.clone(), SizeSpec::None)
            .await
            .err()
            .unwrap();
        assert!(
            e.kind() == crate::error::ErrorKind::InvalidInput
                && e.message().contains("--scratch-prefix"),
            "{e}"
        );
        let e = Probe::prepare(
            src.clone(),
            dst.clone(),
            Some("index.latest"),
            opts.clone(),
            SizeSpec::None,
        )
        .await;
        assert!(e.is_ok(), "a prefix is not the object of the same name");
        src.put("tmp/x", d.clone(), crc32fast::hash(&d), &NO_OPTS)
            .await
            .unwrap();
        let e = Probe::prepare(
            src.clone(),
            dst.clone(),
            Some("tmp"),
            opts.clone(),
            SizeSpec::None,
        )
        .await
        .err()
        .unwrap();
        assert!(
            e.kind() == crate::error::ErrorKind::InvalidInput
                && e.message().contains("already holds"),
            "{e}"
        );
        let p = Probe::prepare(
            src.clone(),
            dst.clone(),
            Some("probe"),
            opts,
            SizeSpec::FromSource,
        )
        .await
        .unwrap();
        let r = p.run(&|_| {}).await.unwrap();
        assert_eq!(r.size_bytes, Some(8));
        assert_eq!(r.source_listing.unwrap().objects, 2);
        let mut keys = Vec::new();
        let mut l = src.list(None);
        while let Some(pg) = l.next().await {
            keys.extend(pg.unwrap().into_iter().map(|m| m.key));
        }
        assert_eq!(keys, ["index.latest", "tmp/x"]);
    }
}
