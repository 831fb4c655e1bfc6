//! Counters and latency histograms shared by every stage.
//!
//! Counters are atomics, read by the CLI's progress display while the run goes on.
//! Latencies go into one hdrhistogram per request kind (microseconds, 3 significant
//! digits), summarised in the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use strum::{EnumCount, IntoEnumIterator};

/// The kinds of request (and stages) that are counted and timed.
///
/// The names in reports (`request_counts`, `latency`) are derived: snake_case of the
/// variant, except `ListUploads`, reported as `list_multipart_uploads`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    strum::EnumIter,
    strum::EnumCount,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    /// A listing page (source or destination).
    List,
    /// HEAD of a destination object, made only when a listing cannot decide.
    Head,
    /// Ranged GET of the source.
    Get,
    /// Single PUT.
    Put,
    /// CreateMultipartUpload.
    CreateMultipart,
    /// UploadPart.
    UploadPart,
    /// CompleteMultipartUpload.
    CompleteMultipart,
    /// AbortMultipartUpload.
    AbortMultipart,
    /// ListMultipartUploads.
    #[strum(serialize = "list_multipart_uploads")]
    ListUploads,
    /// DeleteObject.
    Delete,
    /// ListParts (resuming an upload).
    ListParts,
}

impl Kind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        self.into()
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// Live counters of a run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Source objects seen in the listing.
    pub listed_objects: AtomicU64,
    /// Objects planned for copy.
    pub planned_objects: AtomicU64,
    /// Bytes planned for copy.
    pub planned_bytes: AtomicU64,
    /// Objects copied and verified.
    pub copied_objects: AtomicU64,
    /// Bytes of objects copied and verified.
    pub copied_bytes: AtomicU64,
    /// Bytes uploaded so far (parts included, verified or not yet): the progress figure.
    pub transferred_bytes: AtomicU64,
    /// Objects already in sync.
    pub skipped_objects: AtomicU64,
    /// Objects deleted from the destination.
    pub deleted_objects: AtomicU64,
    /// Objects that failed.
    pub failed_objects: AtomicU64,
    /// Uploads a killed run left that were continued rather than started over.
    pub resumed_uploads: AtomicU64,
    /// Parts of uploads a killed run left that were kept rather than sent again.
    pub resumed_parts: AtomicU64,
    /// Their bytes.
    pub resumed_bytes: AtomicU64,
    /// Retries made, all kinds (shared with the request layer that makes them).
    pub retries: std::sync::Arc<AtomicU64>,
}

impl Counters {
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Latency histograms and request counts per [`Kind`].
pub struct Latencies {
    hists: Vec<Mutex<Histogram<u64>>>,
    requests: Vec<AtomicU64>,
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Latencies")
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hists: (0..Kind::COUNT)
                // 1 µs .. 1 hour, 3 significant digits: fixed, small allocation.
                .map(|_| {
                    Mutex::new(
                        Histogram::new_with_bounds(1, 3_600_000_000, 3)
                            .expect("static histogram bounds are valid"),
                    )
                })
                .collect(),
            requests: (0..Kind::COUNT).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// One kind's latency summary, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Requests timed.
    pub count: u64,
    /// Median: the typical request.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest: the one request that stalled a stage longest.
    pub max_ms: f64,
}

impl Latencies {
    /// Records one request's latency (one attempt).
    pub fn record(&self, kind: Kind, d: Duration) {
        self.requests[kind.idx()].fetch_add(1, Ordering::Relaxed);
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.hists[kind.idx()].lock() {
            let _ = h.record(us);
        }
    }

    /// Requests issued per kind.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        Kind::iter()
            .map(|k| {
                (
                    k.name().to_string(),
                    self.requests[k.idx()].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Summaries of every kind that saw at least one request.
    pub fn summaries(&self) -> BTreeMap<String, LatencySummary> {
        let mut out = BTreeMap::new();
        for k in Kind::iter() {
            let Ok(h) = self.hists[k.idx()].lock() else {
                continue;
            };
            if h.is_empty() {
                continue;
            }
            let ms = |v: u64| v as f64 / 1000.0;
            out.insert(
                k.name().to_string(),
                LatencySummary {
                    count: h.len(),
                    p50_ms: ms(h.value_at_quantile(0.5)),
                    p90_ms: ms(h.value_at_quantile(0.9)),
                    p99_ms: ms(h.value_at_quantile(0.99)),
                    max_ms: ms(h.max()),
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_reflect_recorded_latencies() {
        let l = Latencies::default();
        for ms in 1..=100u64 {
            l.record(Kind::Get, Duration::from_millis(ms));
        }
        let s = l.summaries();
        let g = &s["get"];
        assert_eq!(g.count, 100);
        assert!((g.p50_ms - 50.0).abs() < 1.0, "{g:?}");
        assert!((g.p99_ms - 99.0).abs() < 1.0, "{g:?}");
        assert!(!s.contains_key("put"));
        assert_eq!(l.request_counts()["get"], 100);
    }

    /// The report's names are a contract: pinned here as they were written by hand.
    #[test]
    fn kind_names_are_the_report_names() {
        let names: Vec<&str> = Kind::iter().map(Kind::name).collect();
        assert_eq!(
            names,
            [
                "list",
                "head",
                "get",
                "put",
                "create_multipart",
                "upload_part",
                "complete_multipart",
                "abort_multipart",
                "list_multipart_uploads",
                "delete",
                "list_parts",
            ]
        );
        for (i, k) in Kind::iter().enumerate() {
            assert_eq!(k.idx(), i);
        }
    }
}

/// Faults met by requests, by kind: what failed, what a retry recovered, what gave up.
#[derive(Debug, Default)]
pub struct Faults {
    by_kind: Mutex<BTreeMap<String, FaultCount>>,
    /// Bytes sent again because an attempt failed (uploads retried).
    pub resent_bytes: AtomicU64,
}

/// One fault kind's counts in the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FaultCount {
    /// Attempts that failed with this kind and were tried again.
    pub retried_attempts: u64,
    /// Requests that then succeeded (their last failure was of this kind).
    pub recovered: u64,
    /// Requests that failed for good with this kind.
    pub gave_up: u64,
}

impl Faults {
    /// Records one request: the kinds of its retried attempts, and how it ended.
    pub fn record(
        &self,
        retried: &[crate::error::ErrorKind],
        ended: Option<crate::error::ErrorKind>,
    ) {
        if retried.is_empty() && ended.is_none() {
            return;
        }
        let Ok(mut m) = self.by_kind.lock() else {
            return;
        };
        for k in retried {
            m.entry(format!("{k:?}")).or_default().retried_attempts += 1;
        }
        match (ended, retried.last()) {
            (Some(k), _) => m.entry(format!("{k:?}")).or_default().gave_up += 1,
            (None, Some(k)) => m.entry(format!("{k:?}")).or_default().recovered += 1,
            (None, None) => {}
        }
    }

    /// The counts, by kind.
    pub fn summary(&self) -> BTreeMap<String, FaultCount> {
        self.by_kind.lock().map(|m| m.clone()).unwrap_or_default()
    }
}
