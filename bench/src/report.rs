//! RESULTS.md: blocks of tables between `<!-- generated: NAME -->` and `<!-- /generated -->`
//! markers, rendered from the results on every run (or from a saved results JSON by
//! `report`), and prose around them that a person writes — the method, what a miss
//! means and what the run shows about it — kept verbatim on regeneration. A block the
//! file lacks is appended at its end; a new file gets a skeleton of headings.
//!
//! The MET / MISSED verdicts come from one table, [`TARGETS`]: workload, metric,
//! comparison, threshold.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};
use indicatif::HumanBytes;

use crate::run::{mib, DiffResult, PipeRun, Results, Sample, Series, WorkloadResult};
use crate::stats::{figures, Figures, Spread};
use crate::tools::{Measured, ToolId};
use testkit::load::KINDS;

#[derive(Clone, Copy, Debug)]
pub enum Metric {
    ThroughputVsRclone,
    PipeShare,
    ObjectsVsRclone,
    SpeedupVsRclone,
    Heads,
    CpuPerGib,
    RssAboveBuffers,
    DiffRss,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cmp {
    AtLeast,
    AtMost,
}

use Cmp::*;
use Metric::*;

/// The issue's targets: workload, metric, comparison, threshold.
pub const TARGETS: &[(&str, Metric, Cmp, f64)] = &[
    ("W1", ThroughputVsRclone, AtLeast, 1.5),
    ("W1", PipeShare, AtLeast, 85.0),
    ("W2", ObjectsVsRclone, AtLeast, 3.0),
    ("W4", SpeedupVsRclone, AtLeast, 10.0),
    ("W4", Heads, AtMost, 0.0),
    ("W1", CpuPerGib, AtMost, 0.5),
    ("W3", CpuPerGib, AtMost, 0.5),
    ("W2", CpuPerGib, AtMost, 0.5),
    ("W1", RssAboveBuffers, AtMost, 64.0),
    ("W2", RssAboveBuffers, AtMost, 64.0),
    ("W3", RssAboveBuffers, AtMost, 64.0),
    ("W4", RssAboveBuffers, AtMost, 64.0),
    ("W5", DiffRss, AtMost, 100.0),
];

/// One target judged: its words, what was measured, and the verdict (None: not measured).
pub type Judged = (String, String, Option<bool>);

pub fn verdict(met: Option<bool>) -> &'static str {
    ["not measured", "MISSED", "MET"][met.map_or(0, |m| 1 + m as usize)]
}

fn wl<'a>(r: &'a Results, id: &str) -> Option<&'a WorkloadResult> {
    r.workloads.iter().find(|w| w.id == id)
}

fn series<'a>(r: &'a Results, id: &str, tool: ToolId) -> Option<(&'a WorkloadResult, &'a Series)> {
    let w = wl(r, id)?;
    Some((w, w.series.iter().find(|s| s.tool == tool)?))
}

fn fig(r: &Results, id: &str, tool: ToolId) -> Option<Figures> {
    series(r, id, tool).and_then(|(w, s)| figures(w, s, r.cores))
}

pub fn pipe_mibps(w: &WorkloadResult) -> Option<Spread> {
    Spread::of(w.pipe.iter().map(|p| mib(p.bytes) / p.wall_seconds))
}

/// The target's words ("W1: at least 1.5× rclone's throughput"), and the metric's value
/// on workload `id` with how the table shows it (None: not measured).
fn measure(
    r: &Results,
    id: &str,
    m: Metric,
    cmp: Cmp,
    thr: f64,
) -> (String, Option<(f64, String)>) {
    let b = match (cmp, thr == 0.0) {
        (AtMost, true) => "zero".to_string(),
        (AtMost, false) => format!("at most {thr}"),
        (AtLeast, _) => format!("at least {thr}"),
    };
    let sf = || fig(r, id, ToolId::Snapferry);
    let rc = || fig(r, id, ToolId::Rclone);
    let ratio = |s: f64, c: f64, unit| (s / c, format!("{:.2}× ({s:.0} vs {c:.0} {unit})", s / c));
    let keys = r.diff.as_ref().map(|d| format!(" of {} keys", d.keys));
    let words = match m {
        ThroughputVsRclone => format!("{id}: {b}× rclone's throughput"),
        PipeShare => format!("{id}: {b}% of the pipe limit"),
        ObjectsVsRclone => format!("{id}: {b}× rclone's objects per second"),
        SpeedupVsRclone => format!("{id}: {b}× faster than rclone"),
        Heads => format!("{id}: {b} per-object HEAD requests for unchanged objects"),
        CpuPerGib => format!("CPU: {b} CPU-s per GiB moved, integrity on ({id})"),
        RssAboveBuffers => format!("Memory ({id}): peak RSS {b} MiB + in-flight part buffers"),
        DiffRss => format!("Memory ({id}): diff{} {b} MiB", keys.unwrap_or_default()),
    };
    let got = || -> Option<(f64, String)> {
        Some(match m {
            ThroughputVsRclone => ratio(sf()?.mibps.med, rc()?.mibps.med, "MiB/s"),
            ObjectsVsRclone => ratio(sf()?.objps.med, rc()?.objps.med, "objects/s"),
            PipeShare => {
                let (s, p) = (sf()?.mibps.med, pipe_mibps(wl(r, id)?)?.med);
                let v = 100.0 * s / p;
                (v, format!("{v:.0}% ({s:.0} of {p:.0} MiB/s)"))
            }
            SpeedupVsRclone => {
                let (s, c) = (sf()?.wall.med, rc()?.wall.med);
                (c / s, format!("{:.1}× ({s:.2} s vs {c:.2} s)", c / s))
            }
            Heads => {
                let (_, s) = series(r, id, ToolId::Snapferry)?;
                let heads = s.samples.iter().map(|x| x.requests.get("HEAD").copied());
                let max = heads.map(Option::unwrap_or_default).max()?;
                let list = sf()?.requests_max.get("LIST").copied().unwrap_or(0);
                let n = s.samples.len();
                let shown = format!("at most {max} HeadObject requests in each of {n} timed runs (server-side count); {list} LIST");
                (max as f64, shown)
            }
            CpuPerGib => {
                let (f, bytes) = (sf()?, HumanBytes(wl(r, id)?.bytes));
                let (v, cpu) = (f.cpu_per_gib.med, f.cpu.med);
                (v, format!("{v:.2} CPU-s/GiB ({cpu:.1} CPU-s for {bytes})"))
            }
            RssAboveBuffers => {
                let (f, w, k) = (sf()?, wl(r, id)?, r.knobs);
                let per_job = match (w.noop, w.has_multipart) {
                    (true, _) => 0,
                    (false, true) => k.part_size.max(w.largest_single),
                    (false, false) => w.largest_single,
                };
                let buffers = mib(k.concurrency as u64 * per_job);
                let (c, per, max) = (k.concurrency, HumanBytes(per_job), f.rss.max);
                let limit = thr + buffers;
                let shown =
                    format!("{max:.0} MiB peak (limit {limit:.0} MiB = {thr} MiB + {c} × {per})");
                (max - buffers, shown)
            }
            DiffRss => {
                let d = r.diff.as_ref()?;
                let max = Spread::of(d.samples.iter().map(|m| m.max_rss_kib as f64 / 1024.0))?.max;
                let n = d.samples.len();
                (max, format!("{max:.1} MiB peak RSS (largest of {n} runs)"))
            }
        })
    };
    (words, got())
}

/// Every target of [`TARGETS`], judged on `r`.
pub fn targets(r: &Results) -> Vec<Judged> {
    let judge = |&(id, m, cmp, thr): &(&str, Metric, Cmp, f64)| {
        let (target, got) = measure(r, id, m, cmp, thr);
        let ok = |&(v, _): &(f64, String)| if cmp == AtLeast { v >= thr } else { v <= thr };
        let met = got.as_ref().map(ok);
        (target, got.map_or("—".into(), |(_, s)| s), met)
    };
    TARGETS.iter().map(judge).collect()
}

/// What a `perf report` line's code does, one category a line: its name, `k` for kernel
/// lines only (`-` any line), and its words; a line falls into the first category with
/// one of its words (`*`: every line) in it.
const CATEGORIES: &str = "\
SHA-256 (SigV4 payload hashing)|-|sha2 sha256
CRC32 (integrity checksum)|-|crc
MD5|-|md5
kernel: page faults, zeroing and freeing fresh memory|k|fault clear_page mm_ pte page unmap charge lru folio
kernel: copying bytes to and from sockets|k|copy_from_iter copy_to_iter copy_user
kernel: other (TCP, syscalls, scheduling, locks)|k|*
user-space memory copies|-|memcpy memmove
allocator (glibc malloc/free)|-|malloc free realloc _int_ tcache
aws-sdk-s3 (endpoint resolution, signing, request/response building)|-|aws_ smithy
HTTP (hyper)|-|hyper http h2::
async runtime (tokio)|-|tokio futures
XML parsing|-|xml
snapferry's own code|-|snapferry";

/// Shares of a profile's samples by what the code does, largest first.
pub fn profile_categories(lines: &[String]) -> Vec<(&'static str, f64)> {
    let mut m: BTreeMap<&str, f64> = BTreeMap::new();
    let parse = |l: &String| {
        let (pct, rest) = l.trim().split_once('%')?;
        Some((pct.trim().parse::<f64>().ok()?, rest.to_ascii_lowercase()))
    };
    for (pct, rest) in lines.iter().filter_map(parse) {
        let kernel = rest.contains("[k]") || rest.contains("kernel");
        let has = |words: &str| words.split(' ').any(|w| w == "*" || rest.contains(w));
        let mut cats = CATEGORIES.lines().filter_map(|c| c.split_once('|'));
        let cat = cats.find_map(|(name, c)| {
            let (only_kernel, words) = c.split_once('|')?;
            ((kernel || only_kernel == "-") && has(words)).then_some(name)
        });
        *m.entry(cat.unwrap_or("other")).or_insert(0.0) += pct;
    }
    let mut v: Vec<(&str, f64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// A markdown table of `head` and `rows`, `|` in cells replaced (they come from logs).
fn table(head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let cell = |h: &&str| format!(" {h} |").replace("  |", " |");
    let head: String = head.iter().map(cell).collect();
    let mut o = format!("|{head}\n|{}\n", "---|".repeat(head.matches('|').count()));
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| c.replace('|', "/")).collect();
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    o
}

fn spread(v: impl IntoIterator<Item = f64>, decimals: usize) -> String {
    Spread::of(v).map(|s| s.show(decimals)).unwrap_or_default()
}

/// A tool's row of a results table (dashes past `first` cells when it was not measured).
fn tool_row(w: &WorkloadResult, s: &Series, cores: f64, pipe: Option<Spread>) -> Vec<String> {
    let name = s.tool.name().to_string();
    let Some(f) = figures(w, s, cores) else {
        let why = s.skipped.clone().unwrap_or_else(|| "no run counted".into());
        return vec![name, format!("not measured: {why}")];
    };
    let thr = match (w.noop, pipe) {
        (true, _) => format!("{} obj/s", f.objps.show(0)),
        (false, Some(p)) => {
            let share = 100.0 * f.mibps.med / p.med;
            format!("{} MiB/s ({share:.0}% of pipe)", f.mibps.show(1))
        }
        (false, None) => format!("{} MiB/s", f.mibps.show(1)),
    };
    let (m, digits) = (&f.median_sample, if f.objps.med < 10.0 { 2 } else { 0 });
    let copied = |s: String| if w.noop { "—".into() } else { s };
    let objps = copied(f.objps.show(digits));
    let per_gib = copied(format!("{:.2}", f.cpu_per_gib.med));
    let (wall, cpu, servers) = (f.wall.show(2), f.cpu.show(2), m.server_cpu_seconds);
    let srv = format!("{servers:.1}");
    let mut row = vec![name, wall, thr, objps, cpu, srv, per_gib, f.rss.show(0)];
    row.extend(KINDS.map(|k| m.requests.get(k).unwrap_or(&0).to_string()));
    row.push(format!("{:.0}% ({:.0}%)", f.busy.med, f.others.med));
    row
}

fn show_requests(m: &BTreeMap<String, u64>) -> String {
    let shown = |(k, n): (&String, &u64)| (*n > 0).then(|| format!("{k} {n}"));
    let v = m.iter().filter_map(shown).collect::<Vec<_>>().join(", ");
    if v.is_empty() {
        "none".into()
    } else {
        v
    }
}

fn workload_block(r: &Results, w: &WorkloadResult) -> String {
    let pipe = pipe_mibps(w);
    let what = if w.noop { "decided" } else { "throughput" };
    let mut head = vec!["tool", "wall s", what, "objects/s", "CPU s"];
    head.extend(["servers CPU s", "CPU s/GiB", "peak RSS MiB"]);
    head.extend(KINDS);
    head.push("busy (others)");
    let row = |s| tool_row(w, s, r.cores, pipe);
    let mut rows: Vec<Vec<String>> = w.series.iter().map(row).collect();
    if let Some(p) = pipe {
        let of = |f: fn(&PipeRun) -> f64, d| spread(w.pipe.iter().map(f), d);
        let (get, put) = (of(|x| x.get_seconds, 1), of(|x| x.put_seconds, 1));
        let done = format!("GETs done at {get} s, PUTs at {put} s");
        let wall = of(|x| x.wall_seconds, 2);
        let mibps = format!("{} MiB/s", p.show(1));
        rows.push(vec!["**pipe limit**".into(), wall, mibps, done]);
    }
    for row in &mut rows {
        row.resize(head.len(), "—".into());
    }
    let mut o = format!("### {} — {}\n\n{}", w.id, w.title, table(&head, rows));
    for s in &w.series {
        let (tool, id) = (s.tool.name(), &w.id);
        if let Some(n) = s.samples.iter().find_map(|x| x.note.as_ref()) {
            // The first warning is enough: they repeat per object.
            let first = n.split(" / ").next().unwrap_or(n);
            let first: String = first.chars().take(420).collect();
            let first = first.replace('|', "/");
            let first = first.trim_end_matches(['.', ' ']);
            let _ = writeln!(o, "\n{tool} on {id}: {first}.");
        }
        if let Some(p) = s.samples.iter().find_map(|x| x.problem.as_ref()) {
            let p = p.replace('|', "/");
            let _ = writeln!(o, "\n{tool} on {id}: a run did not count: {p}");
        }
    }
    if w.noop {
        o.push_str("\nBefore the timed runs each tool ran once, untimed, to bring the destination in sync by its own rules:\n");
        for s in &w.series {
            let Some(wu) = &s.warmup else { continue };
            let problem = wu.problem.as_deref().map(|p| format!(" — problem: {p}"));
            let (wall, req) = (wu.measured.wall_seconds, show_requests(&wu.requests));
            let (tool, problem) = (s.tool.name(), problem.unwrap_or_default());
            let _ = writeln!(o, "- {tool}: {wall:.2} s, requests {req}{problem}");
        }
    }
    o
}

fn latency_block(r: &Results) -> String {
    let mut rows = Vec::new();
    for w in &r.workloads {
        let Some(f) = fig(r, &w.id, ToolId::Snapferry) else {
            continue;
        };
        let report = f.median_sample.report.as_ref();
        let lat = report.and_then(|r| r.get("latency_ms")?.as_object().cloned());
        for (kind, v) in lat.unwrap_or_default() {
            let g = |n: &str, d: usize| {
                format!("{:.d$}", v.get(n).and_then(|x| x.as_f64()).unwrap_or(0.0))
            };
            let mut row = vec![w.id.clone(), kind, g("count", 0)];
            row.extend(["p50_ms", "p99_ms", "max_ms"].map(|n| g(n, 2)));
            rows.push(row);
        }
    }
    table(
        &["workload", "request", "count", "p50 ms", "p99 ms", "max ms"],
        rows,
    )
}

fn profiles_block(r: &Results) -> String {
    let mut o = String::new();
    for p in &r.profiles {
        let _ = writeln!(o, "### {}\n", p.workload);
        if let Some(why) = &p.problem {
            let _ = writeln!(o, "No profile: {why}\n");
            continue;
        }
        o.push_str("By what the code does:\n\n");
        for (c, v) in profile_categories(if p.all.is_empty() { &p.top } else { &p.all }) {
            let _ = writeln!(o, "- {c}: {v:.1}%");
        }
        o.push_str("\nTop symbols (`perf report --no-children --sort dso,symbol`):\n\n```text\n");
        for l in &p.top {
            let _ = writeln!(o, "{}", l.trim_end_matches(['-', ' ']));
        }
        o.push_str("```\n\n");
    }
    if let Some(Sample { measured: m, .. }) = &r.malloc_diagnosis {
        let (wall, cpu, rss) = (m.wall_seconds, m.cpu(), m.max_rss_kib as f64 / 1024.0);
        let _ = writeln!(o, "W1 once more, snapferry with glibc's mmap threshold pinned at 1 MiB (`MALLOC_MMAP_THRESHOLD_=1048576`): {wall:.2} s, {cpu:.2} CPU-s, peak RSS {rss:.0} MiB.");
    }
    if o.is_empty() {
        o = "No profiles in this run (`--profile` not given, or perf does not work here).".into();
    }
    o
}

fn run_block(r: &Results, command: &str, chart: &str) -> String {
    let (total, setup) = (r.total_seconds / 60.0, r.setup_seconds / 60.0);
    let mut run = format!("Generated by `{command}` (the whole run took {total:.1} min, of which {setup:.1} min writing the workloads). Throughput chart: [`{chart}`]({chart}).");
    if (r.scale - 1.0).abs() > 1e-9 {
        let _ = write!(run, "\n\n> **Scaled run** (`--scale {}`): workloads are smaller than the issue's; the targets are not judged on this run's figures alone.", r.scale);
    }
    run
}

fn settings_block(r: &Results) -> String {
    let reps = match r.reps_w2 == r.reps {
        true => format!("{} repetitions", r.reps),
        false => format!("{} repetitions ({} for W2)", r.reps, r.reps_w2),
    };
    let (k, cores, scale) = (r.knobs, r.cores, r.scale);
    let (part, thr, c) = (
        HumanBytes(k.part_size),
        HumanBytes(k.threshold),
        k.concurrency,
    );
    format!("This run: {reps}; **{c} transfers in flight, {part} parts, multipart above {thr}**; {cores:.0} cores; workloads at scale {scale}.")
}

fn workloads_block(r: &Results) -> String {
    let workload = |x: &WorkloadResult| {
        let (n, bytes) = (x.objects.to_string(), HumanBytes(x.bytes).to_string());
        let (id, title, gen) = (x.id.clone(), x.title.clone(), x.generate_seconds);
        vec![id, title, n, bytes, x.sizes.clone(), format!("{gen:.0} s")]
    };
    let mut rows: Vec<Vec<String>> = r.workloads.iter().map(workload).collect();
    if let Some(d) = &r.diff {
        let what = format!("diff of {} source keys against {} destination keys through the engine's real differ (`{}`, no servers)", d.keys, d.keys.div_ceil(2), d.command);
        let mut row = vec!["W5".into(), what];
        row.resize(6, "—".into());
        rows.push(row);
    }
    let head = ["", "what", "objects", "bytes", "sizes", "written in"];
    let mut w = table(&head, rows);
    for x in r.workloads.iter().filter(|x| !x.note.is_empty()) {
        let _ = writeln!(w, "\n{}: {}.", x.id, x.note);
    }
    w
}

fn w5_block(d: &DiffResult) -> String {
    let of = |f: fn(&Measured) -> f64, n| spread(d.samples.iter().map(f), n);
    let (wall, cpu) = (of(|m| m.wall_seconds, 2), of(|m| m.cpu(), 2));
    let rss = of(|m| m.max_rss_kib as f64 / 1024.0, 1);
    let line = d.samples.last().map_or("", |m| m.stdout.trim()).to_string();
    let head = ["tool", "wall s", "CPU s", "peak RSS MiB (rusage)"];
    let head = [&head[..], &["probe's own line"]].concat();
    let row = |line| vec!["snapferry (engine differ)".into(), wall, cpu, rss, line];
    let t = table(&head, [row(line)]);
    format!("### W5 — diff of {} keys (memory)\n\n{t}", d.keys)
}

/// Every generated block of `r`, by name. `command` is how to regenerate, `chart` the
/// chart's file name.
pub fn blocks(r: &Results, command: &str, chart: &str) -> BTreeMap<String, String> {
    let row = |(a, v): &(String, String)| vec![a.clone(), v.clone()];
    let mut machine: Vec<Vec<String>> = r.machine.iter().map(row).collect();
    let servers = format!("two MinIO servers on loopback, single drive each: {} (built from the Go module proxy by `fixtures/install-minio.sh`, started by the test kit as the end-to-end tests start them)", r.minio_version);
    machine.push(vec!["S3 servers".into(), servers]);
    let tool = |(id, v, why): &(ToolId, String, Option<String>)| {
        let status = why.as_ref().map(|w| format!("cannot run here: {w}"));
        let status = status.unwrap_or("measured".into());
        let v = if v.is_empty() { "—" } else { v }.to_string();
        vec![id.name().to_string(), v, status]
    };
    let bold = |met: Option<bool>| match met {
        Some(_) => format!("**{}**", verdict(met)),
        None => verdict(met).into(),
    };
    let target = |(target, measured, met): Judged| vec![target, measured, bold(met)];
    let targets = targets(r).into_iter().map(target);
    let w1 = wl(r, "W1").or(r.workloads.first());
    let commands = w1
        .iter()
        .flat_map(|w| &w.series)
        .filter(|s| !s.command.is_empty());
    let cmds: String = commands.map(|s| format!("{}\n", s.command)).collect();
    let tools = r.tools.iter().map(tool);
    let mut b = BTreeMap::from([
        ("run".to_string(), run_block(r, command, chart)),
        ("machine".into(), table(&["", ""], machine)),
        ("tools".into(), table(&["tool", "version", "status"], tools)),
        ("settings".into(), settings_block(r)),
        ("workloads".into(), workloads_block(r)),
        ("latency".into(), latency_block(r)),
        (
            "targets".into(),
            table(&["target", "measured", "verdict"], targets),
        ),
        ("profiles".into(), profiles_block(r)),
        ("commands".into(), format!("```sh\n{cmds}```")),
    ]);
    let workload = |x: &WorkloadResult| (x.id.clone(), workload_block(r, x));
    b.extend(r.workloads.iter().map(workload));
    b.extend(r.diff.as_ref().map(|d| ("W5".to_string(), w5_block(d))));
    b
}

/// A new RESULTS.md: headings (none: the block goes under the one before), and each
/// block in its place.
const SKELETON: &str = "\
# snapferry benchmark results|run
## Machine|machine
## Tools|tools
## Method|settings
## Workloads|workloads
## Results|W1
|W2
|W3
|W4
### snapferry's per-request latency (its hdrhistogram, median run)|latency
|W5
## Targets|targets
## Profiles (snapferry under `perf record`, one extra untimed run each)|profiles
## Command lines|commands";

fn marked(name: &str, body: Option<&String>) -> String {
    let body = body.map_or("*Not measured in this run.*", |b| b.trim_end());
    format!("<!-- generated: {name} -->\n\n{body}\n\n<!-- /generated -->\n")
}

/// `existing` (None: a new file) with every generated block replaced by its new content,
/// and everything outside the markers as it was.
pub fn merge(existing: Option<&str>, blocks: &BTreeMap<String, String>) -> Result<String> {
    let place = |(h, n)| format!("{h}\n\n<!-- generated: {n} -->\n<!-- /generated -->\n\n");
    let places = SKELETON.lines().filter_map(|l| l.split_once('|'));
    let skeleton: String = places.map(place).collect();
    let (mut out, mut seen, mut inside) = (String::new(), Vec::new(), None);
    for line in existing.unwrap_or(&skeleton).lines() {
        let t = line.trim();
        let open = t.strip_prefix("<!-- generated: ");
        let open = open.and_then(|r| r.strip_suffix(" -->"));
        if let Some(name) = open {
            if let Some(open) = inside {
                bail!("generated block {open:?} has no end marker before {name:?}");
            }
            out.push_str(&marked(name, blocks.get(name)));
            seen.push(name.to_string());
            inside = Some(name.to_string());
        } else if t == "<!-- /generated -->" {
            inside = None;
        } else if inside.is_none() {
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(open) = inside {
        bail!("generated block {open:?} has no end marker");
    }
    for (name, body) in blocks.iter().filter(|(n, _)| !seen.contains(n)) {
        out.push('\n');
        out.push_str(&marked(name, Some(body)));
    }
    Ok(out)
}
