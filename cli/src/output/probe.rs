//! `bench probe`'s output: each measuring step on stderr as it happens, and the result
//! (recommended flags, rates and the prediction) on stdout.

use snapferry_engine::probe::{ProbeEvent, ProbeReport};

use super::human;

/// A rate in bytes per second, `123.4 MiB/s`.
fn rate(bps: f64) -> String {
    format!("{}/s", human(bps.max(0.0) as u64))
}

/// A part size as `--part-size` takes it where it is whole MiB.
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

/// A probe step on stderr, as it happens.
pub fn show(e: ProbeEvent<'_>) {
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

/// The probe's result without `--json`: the recommended flags, rates, the knee, the
/// prediction.
pub fn human_report(r: &ProbeReport) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_print_as_operators_read_them() {
        assert_eq!(span(3.94), "3.9 s");
        assert_eq!(span(252.0), "4m 12s");
        assert_eq!(span(7500.0), "2h 05m");
        assert_eq!(span(93_780.0), "1d 02h 03m");
    }
}
