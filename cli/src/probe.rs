//! `snapferry bench probe SRC DST`: arguments, progress lines, the human and JSON
//! outputs, and exit codes. The measuring is the engine's ([`snapferry_engine::probe`]).

use std::time::Duration;

use snapferry_engine::probe::{Probe, ProbeEvent, ProbeOptions, ProbeReport, SizeSpec};
use snapferry_engine::size::parse_size;
use tokio_util::sync::CancellationToken;

use crate::args::{Endpoints, Side};
use crate::progress::human;
use crate::{exit_code_for, fail, open_store, EXIT_FAILED, EXIT_OK, EXIT_USAGE};

const PROBE_AFTER_HELP: &str = "\
The probe writes scratch objects under a temporary prefix on each side (at most about
--max-scratch bytes at once), measures listing, GETs and PUTs alone, and a real copy through
sync's pipeline at concurrency 1, 2, 4, ... until the gain drops below 10%, then removes
every scratch object and aborts every scratch upload (also on errors and Ctrl-C).
It refuses a location that already holds objects unless --scratch-prefix names an empty
prefix (relative to each location) for its scratch objects.

Credentials and endpoints as for sync (SNAPFERRY_SRC_* / SNAPFERRY_DST_*, then the chains).

Exit codes: 0 measured (and predicted); 1 the probe failed or was interrupted (scratch
objects removed), or its scratch objects could not all be removed (the message names the
prefix); 2 bad usage, or a location that holds data without --scratch-prefix; 3 cannot
reach or authenticate to a store.";

/// `snapferry bench probe SRC DST [options]`.
#[derive(Debug, clap::Args)]
#[command(after_help = PROBE_AFTER_HELP)]
pub struct ProbeArgs {
    /// Source: s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a plain path.
    pub src: String,
    /// Destination: s3://BUCKET[/PREFIX], oss://BUCKET[/PREFIX], file:///DIR or a plain path.
    pub dst: String,
    #[command(flatten)]
    pub ends: Endpoints,
    /// Predict the time to move this much data (e.g. 12TiB), in objects of --object-size.
    #[arg(long, value_name = "SIZE", conflicts_with = "from_source")]
    pub size: Option<String>,
    /// Predict the time to move what SRC holds (its listing is summed; SRC then holds
    /// data, so give --scratch-prefix).
    #[arg(long)]
    pub from_source: bool,
    /// JSON output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Put the scratch objects under this prefix of each location (must be empty there);
    /// needed when a location already holds objects.
    #[arg(long, value_name = "P")]
    pub scratch_prefix: Option<String>,
    /// Time budget of one level (a quarter each for GETs and PUTs, half for the copy;
    /// the chosen setting is copied once more for the whole budget).
    #[arg(long, value_name = "DURATION", default_value = "4s")]
    pub duration: String,
    /// Highest --concurrency tried.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_concurrency: usize,
    /// Most scratch bytes on either side at once (also bounds a level's copy).
    #[arg(long, value_name = "SIZE", default_value = "1GiB")]
    pub max_scratch: String,
    /// Size of the scratch objects: what the data blobs to move look like.
    #[arg(long, value_name = "SIZE", default_value = "128MiB")]
    pub object_size: String,
    /// Probe only this part size (default: 16MiB for the sweep, then 8, 32, 64MiB).
    #[arg(long, value_name = "SIZE")]
    pub part_size: Option<String>,
    /// Small objects written to measure listing and per-object costs (0: skip).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub list_objects: usize,
}

/// `2s`, `500ms`, `1m`, `1.5s`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!(
            "--duration: cannot read {s:?}; write e.g. 4s, 500ms or 1m"
        )),
    }
}

impl ProbeArgs {
    /// Checks every argument; the error is one line naming the problem and the fix.
    fn validate(&self) -> Result<(ProbeOptions, SizeSpec, Side, Side), String> {
        let (src, dst) = self.ends.resolve(&self.src, &self.dst)?;
        if src.0 == dst.0 && self.ends.src_endpoint == self.ends.dst_endpoint {
            return Err(
                "source and destination are the same location; give two different ones".into(),
            );
        }
        let size = match (&self.size, self.from_source) {
            (Some(s), _) => SizeSpec::Bytes(parse_size(s).map_err(|e| format!("--size: {e}"))?),
            (None, true) => SizeSpec::FromSource,
            (None, false) => SizeSpec::None,
        };
        let part_size = match &self.part_size {
            Some(p) => Some(parse_size(p).map_err(|e| format!("--part-size: {e}"))?),
            None => None,
        };
        let opts = ProbeOptions {
            part_size,
            object_size: parse_size(&self.object_size)
                .map_err(|e| format!("--object-size: {e}"))?,
            max_concurrency: self.max_concurrency,
            duration: parse_duration(&self.duration)?,
            max_scratch: parse_size(&self.max_scratch)
                .map_err(|e| format!("--max-scratch: {e}"))?,
            list_objects: self.list_objects,
            ..ProbeOptions::default()
        };
        opts.validate().map_err(|e| e.to_string())?;
        Ok((opts, size, src, dst))
    }
}

/// Ctrl-C / SIGTERM: stop measuring; the probe still removes its scratch objects.
async fn on_signal(cancel: CancellationToken) {
    crate::progress::interrupted().await;
    err!("snapferry: interrupted: removing the probe's scratch objects");
    cancel.cancel();
}

fn rate(bps: f64) -> String {
    format!("{}/s", human(bps.max(0.0) as u64))
}

fn part(b: u64) -> String {
    if b % (1 << 20) == 0 {
        format!("{}MiB", b >> 20)
    } else {
        human(b)
    }
}

/// `3.9 s`, `4m 12s`, `2h 05m`, `1d 02h 03m`.
fn span(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else {
        format!("{m}m {s:02}s")
    }
}

fn show(e: ProbeEvent<'_>) {
    match e {
        ProbeEvent::Writing { bytes } => err!(
            "snapferry: writing {} of scratch objects on the source",
            human(bytes)
        ),
        ProbeEvent::Listed { keys, keys_per_sec } => {
            err!("snapferry: listing: {keys_per_sec:.0} keys/s ({keys} keys)")
        }
        ProbeEvent::Level(l) => {
            let c = &l.copy;
            match (&l.get, &l.put) {
                (Some(g), Some(p)) => err!(
                    "snapferry: concurrency {:>3}, part {}: GET {} (p50 {:.0} ms, p99 {:.0} ms), PUT {} (p50 {:.0} ms, p99 {:.0} ms), copy {}",
                    l.concurrency,
                    part(l.part_size_bytes),
                    rate(g.bytes_per_sec),
                    g.p50_ms,
                    g.p99_ms,
                    rate(p.bytes_per_sec),
                    p.p50_ms,
                    p.p99_ms,
                    rate(c.bytes_per_sec)
                ),
                _ => err!(
                    "snapferry: {} concurrency {:>3}, part {}: copy {}",
                    if l.sweep == "confirm" {
                        "sustained rate at"
                    } else {
                        "part size trial at"
                    },
                    l.concurrency,
                    part(l.part_size_bytes),
                    rate(c.bytes_per_sec)
                ),
            }
        }
        ProbeEvent::SmallObjects { objects_per_sec } => {
            err!("snapferry: small objects: {objects_per_sec:.0} copied/s")
        }
        ProbeEvent::CleaningUp => err!("snapferry: removing the scratch objects"),
    }
}

fn print_human(r: &ProbeReport) {
    out!("recommended:  {}", r.recommended_sync_args.join(" "));
    let alone = match (r.get_rate_bytes_per_sec, r.put_rate_bytes_per_sec) {
        (Some(g), Some(p)) => format!(
            "; alone at concurrency {}: GET {}, PUT {}",
            r.recommended_concurrency,
            rate(g),
            rate(p)
        ),
        _ => String::new(),
    };
    out!(
        "copy rate:    {} (plus {:.1} s per run){alone}",
        rate(r.copy_rate_bytes_per_sec),
        r.copy_overhead_seconds
    );
    if let Some(l) = r.list_rate_keys_per_sec {
        let small = r
            .small_object_rate_objects_per_sec
            .map(|s| format!("; small objects {s:.0}/s"))
            .unwrap_or_default();
        out!("listing:      {l:.0} keys/s{small}");
    }
    out!("knee:         {}", r.knee);
    match (r.size_bytes, r.predicted_seconds, &r.source_listing) {
        (Some(b), Some(t), Some(l)) => out!(
            "prediction:   the source's {} objects, {}: {}",
            l.objects,
            human(b),
            span(t)
        ),
        (Some(b), Some(t), None) => out!("prediction:   {}: {}", human(b), span(t)),
        _ => {}
    }
}

/// Runs `bench probe`; returns the exit code.
pub async fn run(a: ProbeArgs) -> u8 {
    let (opts, size, (sl, ss), (dl, ds)) = match a.validate() {
        Ok(v) => v,
        Err(m) => return fail(EXIT_USAGE, m),
    };
    let src = match open_store(snapferry_engine::error::Side::Source, &sl, &ss).await {
        Ok(s) => s,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    let dst = match open_store(snapferry_engine::error::Side::Destination, &dl, &ds).await {
        Ok(s) => s,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    let (sd, dd) = (src.describe(), dst.describe());
    let probe = match Probe::prepare(src, dst, a.scratch_prefix.as_deref(), opts, size).await {
        Ok(p) => p,
        Err(e) => return fail(exit_code_for(&e), e),
    };
    err!(
        "snapferry: probe {} -> {}: scratch objects under {} on both sides, removed afterwards",
        sd,
        dd,
        probe.scratch_prefix()
    );
    let signals = tokio::spawn(on_signal(probe.cancel_token()));
    let result = probe.run(&show).await;
    signals.abort();
    let r = match result {
        Ok(r) => r,
        Err(e) if e.kind() == snapferry_engine::error::ErrorKind::Cancelled => {
            return fail(
                EXIT_FAILED,
                "interrupted; the probe's scratch objects were removed",
            )
        }
        Err(e) => return fail(exit_code_for(&e), e),
    };
    if a.json {
        match serde_json::to_string_pretty(&r) {
            Ok(j) => out!("{j}"),
            Err(e) => return fail(EXIT_FAILED, format!("cannot write the JSON output: {e}")),
        }
    } else {
        print_human(&r);
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_spans_read_and_print_as_operators_write_them() {
        let cases: &[(&str, Option<f64>)] = &[
            ("4s", Some(4.0)),
            ("500ms", Some(0.5)),
            ("1m", Some(60.0)),
            ("2.5", Some(2.5)),
            ("soon", None),
            ("-1s", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_duration(s).ok().map(|d| d.as_secs_f64()),
                *want,
                "{s:?}"
            );
        }
        assert_eq!(span(3.94), "3.9 s");
        assert_eq!(span(252.0), "4m 12s");
        assert_eq!(span(7500.0), "2h 05m");
        assert_eq!(span(93_780.0), "1d 02h 03m");
    }
}
