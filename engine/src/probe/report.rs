//! What a probe reports: per-level measurements, the recommendation and the prediction
//! (the JSON of `bench probe --json`; field names are a contract with scripts), and the
//! progress events a display shows while it runs.

use serde::Serialize;

/// Throughput and latency of one kind of request at one level.
#[derive(Debug, Clone, Serialize)]
pub struct RateSummary {
    /// Bytes moved.
    pub bytes: u64,
    /// Wall time of the phase.
    pub seconds: f64,
    /// bytes / seconds.
    pub bytes_per_sec: f64,
    /// Requests made (attempts).
    pub requests: u64,
    /// Median request latency.
    pub p50_ms: f64,
    /// 99th percentile request latency.
    pub p99_ms: f64,
}

/// The copy through the real sync pipeline at one level.
#[derive(Debug, Clone, Serialize)]
pub struct CopySummary {
    /// Bytes copied and verified.
    pub bytes: u64,
    /// Objects copied.
    pub objects: u64,
    /// Wall time of the whole sync run.
    pub seconds: f64,
    /// Steady copy rate (after the pipeline filled).
    pub bytes_per_sec: f64,
    /// `seconds - bytes / bytes_per_sec`: start-up, listing and tail.
    pub overhead_seconds: f64,
    /// Ranged GET latency inside the copy, median.
    pub get_p50_ms: f64,
    /// Ranged GET latency, 99th percentile.
    pub get_p99_ms: f64,
    /// Upload (part or single PUT) latency inside the copy, median.
    pub put_p50_ms: f64,
    /// Upload latency, 99th percentile.
    pub put_p99_ms: f64,
    /// Retries the copy needed.
    pub retries: u64,
}

/// One measured setting.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// `concurrency` (the sweep), `part_size` (trials at the chosen concurrency) or
    /// `confirm` (the chosen setting measured again, last).
    pub sweep: &'static str,
    /// Parts in flight.
    pub concurrency: usize,
    /// Part size.
    pub part_size_bytes: u64,
    /// Ranged GETs of the source alone (sweep levels only).
    pub get: Option<RateSummary>,
    /// Uploads to the destination alone (sweep levels only).
    pub put: Option<RateSummary>,
    /// The copy.
    pub copy: CopySummary,
}

/// What the source location holds (for `--from-source`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct SourceSize {
    /// Objects listed.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects at or below the multipart threshold.
    pub small_objects: u64,
}

/// The probe's result. Field names are a contract with scripts.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// Source description (no secrets).
    pub source: String,
    /// Destination description (no secrets).
    pub destination: String,
    /// Where the scratch objects were, relative to each location.
    pub scratch_prefix: String,
    /// Size of the scratch source objects (what the prediction assumes for `--size`).
    pub object_size_bytes: u64,
    /// `--concurrency` to give sync.
    pub recommended_concurrency: usize,
    /// `--part-size` to give sync.
    pub recommended_part_size_bytes: u64,
    /// The multipart threshold the probe copied with (sync's default unless the part
    /// size is larger).
    pub multipart_threshold_bytes: u64,
    /// The sync options to use, as arguments.
    pub recommended_sync_args: Vec<String>,
    /// Why the sweep stopped.
    pub knee: String,
    /// Steady copy rate at the recommended settings, from the final `confirm` copy.
    pub copy_rate_bytes_per_sec: f64,
    /// Fixed cost of a run beyond its bytes (start-up, listing, tail).
    pub copy_overhead_seconds: f64,
    /// GET rate alone at the recommended concurrency.
    pub get_rate_bytes_per_sec: Option<f64>,
    /// PUT rate alone at the recommended concurrency.
    pub put_rate_bytes_per_sec: Option<f64>,
    /// Source listing rate (keys per second; one page of `list_objects` keys).
    pub list_rate_keys_per_sec: Option<f64>,
    /// Copy rate of small objects at the recommended settings.
    pub small_object_rate_objects_per_sec: Option<f64>,
    /// Bytes the prediction is for.
    pub size_bytes: Option<u64>,
    /// `argument` (`--size`) or `source` (`--from-source`).
    pub size_from: Option<&'static str>,
    /// The source listing, with `--from-source`.
    pub source_listing: Option<SourceSize>,
    /// Predicted wall time of a sync of `size_bytes` with the recommended settings.
    pub predicted_seconds: Option<f64>,
    /// Every measured setting, in order.
    pub levels: Vec<Level>,
    /// Scratch bytes written over the whole probe (both sides).
    pub scratch_bytes_written: u64,
    /// Retries over the whole probe.
    pub retries: u64,
    /// Wall time of the probe.
    pub duration_seconds: f64,
}

/// Progress of a probe, for display.
#[derive(Debug)]
pub enum ProbeEvent<'a> {
    /// Scratch source objects are being written.
    Writing {
        /// Bytes about to be written.
        bytes: u64,
    },
    /// The listing rate was measured.
    Listed {
        /// Keys per listing.
        keys: usize,
        /// Keys per second.
        keys_per_sec: f64,
    },
    /// One level was measured.
    Level(&'a Level),
    /// Small objects were copied.
    SmallObjects {
        /// Objects per second.
        objects_per_sec: f64,
    },
    /// Scratch objects are being removed.
    CleaningUp,
}
