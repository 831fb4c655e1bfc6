//! Results as people and scripts read them: a sync's summary on stderr and its JSON
//! report file, the `repo` commands' tables and totals, and `migrate`'s per-phase lines.
//! Each function prints one result the engine returned; none decides an exit code.

use std::io::Write;

use snapferry_engine::migrate::{PhaseRecord, State};
use snapferry_engine::pipeline::Report;
use snapferry_engine::repo::verify::{DiffReport, VerifyReport};

use super::{human, out_line};

/// A sync's outcome on stderr: the fatal error, refused deletes, the first 20 failures,
/// and one line of totals.
pub fn sync_summary(r: &Report) {
    let mut err = std::io::stderr().lock();
    if let Some(f) = &r.fatal_error {
        let _ = writeln!(err, "snapferry: error: the run stopped: {f}");
    }
    if let Some(d) = &r.deletes_refused {
        let _ = writeln!(err, "snapferry: error: {d}");
    }
    for f in r.failures.iter().take(20) {
        let _ = writeln!(err, "snapferry: failed: {}: {}", f.key, f.reason);
    }
    if r.failures.len() > 20 {
        let _ = writeln!(
            err,
            "snapferry: … and {} more failures (see --report)",
            r.failed_objects - 20
        );
    }
    let _ =
        writeln!(
        err,
        "snapferry: {}copied {} objects ({}), skipped {}, deleted {}, failed {} in {:.1}s ({}/s){}",
        if r.dry_run { "dry run: would have " } else { "" },
        if r.dry_run { r.planned_copy_objects } else { r.copied_objects },
        human(if r.dry_run { r.planned_copy_bytes } else { r.copied_bytes }),
        r.skipped_objects,
        if r.dry_run { r.planned_delete_objects } else { r.deleted_objects },
        r.failed_objects,
        r.duration_seconds,
        human(r.throughput_bytes_per_second as u64),
        if r.interrupted { " — interrupted" } else { "" },
    );
}

/// `--report PATH`: the report as JSON, written atomically (a reader never sees a
/// half-written report).
pub fn write_report(path: &std::path::Path, r: &Report) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// `repo verify` without `--json`: each problem, then the totals.
pub fn verify(r: &VerifyReport, deep: bool) {
    for p in &r.problems {
        out!("problem  {}: {}", p.key, p.problem);
    }
    out!(
        "verified generation {}: {} snapshots, {} blobs present, {} metadata checksums, {} data files checked{}, {} read; {} problems",
        r.generation,
        r.snapshots_checked,
        r.blobs_checked,
        r.metadata_checked,
        r.data_files_checked,
        if deep { "" } else { " (add --deep to check data)" },
        human(r.bytes_read),
        r.problems.len()
    );
}

/// `repo diff` without `--json`: what is on one side only, what differs, the totals.
pub fn diff(r: &DiffReport) {
    for n in &r.only_in_source {
        out!("only in source       {n}");
    }
    for n in &r.only_in_destination {
        out!("only in destination  {n}");
    }
    for p in &r.differing_blobs {
        out!("differs              {}: {}", p.key, p.problem);
    }
    out!(
        "source generation {}, destination generation {}; {} snapshots only in source, {} only in destination, {} blobs differ",
        r.source_generation,
        r.destination_generation.map(|g| g.to_string()).unwrap_or_else(|| "none".into()),
        r.only_in_source.len(),
        r.only_in_destination.len(),
        r.differing_blobs.len()
    );
}

/// `migrate --phase status`: one line per phase run, or why there is none.
pub fn migrate_status(st: &State, state_file: &std::path::Path) {
    if st.phases.is_empty() {
        out!(
            "no phase has run yet ({} does not exist)",
            state_file.display()
        );
    }
    for p in &st.phases {
        out!(
            "{:?}  snapshot {}  generation {}  moved {}  closed {} ms  counts {}",
            p.phase,
            p.snapshot,
            p.generation
                .map(|g| g.to_string())
                .unwrap_or_else(|| "-".into()),
            human(p.bytes_moved),
            p.closed_ms,
            p.counts
                .iter()
                .map(|(i, (s, d))| format!("{i}={s}/{d}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

/// A phase's document counts and totals; returns whether any index's counts differ.
pub fn migrate_phase(rec: &PhaseRecord) -> bool {
    let mut mismatch = false;
    for (i, (s, d)) in &rec.counts {
        out!(
            "{i}: source {s} documents, destination {d}{}",
            if s == d { "" } else { "  <- differs" }
        );
        mismatch |= s != d;
    }
    out!(
        "{:?} done: snapshot {}, moved {}, destination indices closed for {} ms",
        rec.phase,
        rec.snapshot,
        human(rec.bytes_moved),
        rec.closed_ms
    );
    mismatch
}

/// The cutover's verification of the destination repository.
pub fn cutover_verified(r: &VerifyReport) {
    if r.problems.is_empty() {
        out!(
            "destination repository verified: generation {}, {} blobs",
            r.generation,
            r.blobs_checked
        );
    } else {
        out!(
            "destination repository has {} problems; do not switch over",
            r.problems.len()
        );
    }
}

/// Text as it is (a table the engine laid out, the dry-run plan).
pub fn lines<S: std::fmt::Display>(lines: impl IntoIterator<Item = S>) {
    for l in lines {
        out_line(format_args!("{l}"));
    }
}

/// `snapferry plan`: the plan's URL and units (stderr), or with `--json` the plan as
/// JSON on stdout with its URL.
pub fn plan(doc: &snapferry_engine::distributed::PlanDoc, plan_url: &str, json: bool) {
    if json {
        let mut v = serde_json::to_value(doc).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("url".into(), plan_url.into());
        }
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    err!(
        "snapferry: plan {}: source generation {}, {} in {} blobs to copy over {} shard directories, in {} units",
        doc.id,
        doc.source_generation,
        human(doc.bytes),
        doc.objects,
        doc.units.iter().map(|u| u.shards.len()).sum::<usize>(),
        doc.units.len()
    );
    for u in &doc.units {
        err!(
            "snapferry:   unit {}: {} shard directories, {} in {} blobs",
            u.index,
            u.shards.len(),
            human(u.bytes),
            u.objects
        );
    }
    err!("snapferry: plan written to {plan_url}");
    err!("snapferry: next: snapferry sync --plan {plan_url} --unit I (I from 0 to {}), then snapferry commit --plan {plan_url}", doc.units.len().saturating_sub(1));
}

/// A unit's end: its marker, or why there is none.
pub fn unit_marker(i: usize, m: Option<&snapferry_engine::distributed::Marker>) {
    match m {
        Some(m) => err!(
            "snapferry: unit {i} of plan {} finished: its shard directories hold {} objects ({}); marker {}",
            m.plan,
            m.landed.objects,
            human(m.landed.bytes),
            snapferry_engine::distributed::marker_key(i)
        ),
        None => err!("snapferry: unit {i} did not finish; no marker written (run it again)"),
    }
}

/// `plan status`: one line per unit, then the totals (stderr), or JSON on stdout.
pub fn plan_status(st: &snapferry_engine::distributed::Status, json: bool) {
    if json {
        out!("{}", serde_json::to_string_pretty(st).unwrap_or_default());
        return;
    }
    for d in &st.detail {
        match &d.marker {
            Some(m) => out!(
                "unit {:>4}  done      {:>10} copied in {:>7.1}s on {}",
                d.unit,
                human(m.copied_bytes),
                m.duration_seconds,
                m.host
            ),
            None => out!(
                "unit {:>4}  not done  {:>10} planned, {} shard directories",
                d.unit,
                human(d.planned_bytes),
                d.shards
            ),
        }
    }
    out!(
        "plan {}: {} of {} units finished; {} in {} objects copied, {} in place; longest unit {:.1}s, median {:.1}s{}",
        st.plan,
        st.finished,
        st.units,
        human(st.copied_bytes),
        st.copied_objects,
        st.skipped_objects,
        st.longest_seconds,
        st.median_seconds,
        if st.stragglers.is_empty() {
            String::new()
        } else {
            format!("; stragglers: units {:?}", st.stragglers)
        }
    );
}
