//! RESULTS.md: the machine, the method, the tables (medians and min–max), the pipe
//! limit, snapferry's per-request latencies, every target with its measured value and
//! MET / MISSED, and the evidence for each miss (figures from the same run and, when
//! perf is available, snapferry's CPU profile).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use crate::run::{Profile, Results, Series, WorkloadResult};
use crate::servers::KINDS;
use crate::stats::{figures, Figures, Spread};
use crate::tools::ToolId;
use crate::workloads::human;

/// A few facts about the machine, as `(what, value)`.
pub fn machine(work_dir: &std::path::Path) -> Vec<(String, String)> {
    let sh = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / (1 << 20) as f64))
        .unwrap_or_else(|| "unknown".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    let hyper = sh("lscpu", &[])
        .lines()
        .find(|l| l.starts_with("Hypervisor vendor"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| format!(", virtualised ({})", v.trim()))
        .unwrap_or_default();
    let df = sh(
        "df",
        &[
            "-h",
            "--output=source,fstype,size,avail",
            &work_dir.display().to_string(),
        ],
    );
    let disk_line = df
        .lines()
        .nth(1)
        .unwrap_or("unknown")
        .split_whitespace()
        .collect::<Vec<_>>();
    let dev = disk_line.first().copied().unwrap_or("unknown");
    let rota = dev
        .rsplit('/')
        .next()
        .and_then(|d| std::fs::read_to_string(format!("/sys/block/{d}/queue/rotational")).ok())
        .map(|r| {
            if r.trim() == "0" {
                ", non-rotational"
            } else {
                ", rotational"
            }
        })
        .unwrap_or("");
    let disk = format!(
        "{dev} ({}{rota}), {} with {} free, holding the servers' data under {}",
        disk_line.get(1).copied().unwrap_or("?"),
        disk_line.get(2).copied().unwrap_or("?"),
        disk_line.get(3).copied().unwrap_or("?"),
        work_dir.display()
    );
    vec![
        ("CPU".into(), format!("{model}{hyper}")),
        (
            "cores".into(),
            std::thread::available_parallelism()
                .map(|n| n.get().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        ),
        ("memory".into(), mem),
        ("OS".into(), os),
        ("kernel".into(), sh("uname", &["-srm"])),
        ("disk".into(), disk),
        ("network".into(), "loopback only (127.0.0.1)".into()),
        ("Rust".into(), sh("rustc", &["--version"])),
        ("Go".into(), sh("go", &["version"])),
    ]
}

/// Verdict of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Met.
    Met,
    /// Missed.
    Missed,
    /// Could not be measured (a tool or workload missing).
    NotMeasured,
}

impl Verdict {
    fn show(self) -> &'static str {
        match self {
            Verdict::Met => "**MET**",
            Verdict::Missed => "**MISSED**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// One target with its measurement.
#[derive(Debug, Clone)]
pub struct Target {
    /// The issue's words.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Verdict.
    pub verdict: Verdict,
    /// Evidence (misses: why).
    pub evidence: String,
}

fn wl<'a>(r: &'a Results, id: &str) -> Option<&'a WorkloadResult> {
    r.workloads.iter().find(|w| w.id == id)
}

fn fig(r: &Results, id: &str, tool: ToolId, cores: f64) -> Option<Figures> {
    let w = wl(r, id)?;
    let s = w.series.iter().find(|s| s.tool == tool)?;
    figures(w, s, cores)
}

fn pipe_mibps(w: &WorkloadResult) -> Option<Spread> {
    Spread::of(
        &w.pipe
            .iter()
            .map(|p| p.bytes as f64 / p.wall_seconds / (1 << 20) as f64)
            .collect::<Vec<_>>(),
    )
}

/// Shares of a profile by what the code does.
pub fn profile_categories(p: &Profile) -> Vec<(String, f64)> {
    let mut m: BTreeMap<&str, f64> = BTreeMap::new();
    let lines = if p.all.is_empty() { &p.top } else { &p.all };
    for l in lines {
        let Some((pct, rest)) = l.trim().split_once('%') else {
            continue;
        };
        let Ok(pct) = pct.trim().parse::<f64>() else {
            continue;
        };
        let r = rest.to_ascii_lowercase();
        let kernel = r.contains("[k]") || r.contains("kernel");
        let cat = if r.contains("sha2") || r.contains("sha256") {
            "SHA-256 (SigV4 payload hashing)"
        } else if r.contains("crc") {
            "CRC32 (integrity checksum)"
        } else if r.contains("md5") {
            "MD5"
        } else if kernel
            && (r.contains("fault")
                || r.contains("clear_page")
                || r.contains("mm_")
                || r.contains("pte")
                || r.contains("page")
                || r.contains("unmap")
                || r.contains("charge")
                || r.contains("lru")
                || r.contains("folio"))
        {
            "kernel: page faults, zeroing and freeing fresh memory"
        } else if kernel
            && (r.contains("copy_from_iter")
                || r.contains("copy_to_iter")
                || r.contains("copy_user"))
        {
            "kernel: copying bytes to and from sockets"
        } else if kernel {
            "kernel: other (TCP, syscalls, scheduling, locks)"
        } else if r.contains("memcpy") || r.contains("memmove") {
            "user-space memory copies"
        } else if r.contains("malloc")
            || r.contains("free")
            || r.contains("realloc")
            || r.contains("_int_")
            || r.contains("tcache")
        {
            "allocator (glibc malloc/free)"
        } else if r.contains("aws_") || r.contains("smithy") {
            "aws-sdk-s3 (endpoint resolution, signing, request/response building)"
        } else if r.contains("hyper") || r.contains("http") || r.contains("h2::") {
            "HTTP (hyper)"
        } else if r.contains("tokio") || r.contains("futures") {
            "async runtime (tokio)"
        } else if r.contains("xml") {
            "XML parsing"
        } else if r.contains("snapferry") {
            "snapferry's own code"
        } else {
            "other"
        };
        *m.entry(cat).or_insert(0.0) += pct;
    }
    let mut v: Vec<(String, f64)> = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

fn profile_of<'a>(r: &'a Results, id: &str) -> Option<&'a Profile> {
    r.profiles
        .iter()
        .find(|p| p.workload == id && p.problem.is_none())
}

fn profile_evidence(r: &Results, id: &str) -> String {
    let Some(p) = profile_of(r, id) else {
        return String::new();
    };
    let cats = profile_categories(p);
    let top: Vec<String> = cats
        .iter()
        .take(4)
        .map(|(c, v)| format!("{c} {v:.0}%"))
        .collect();
    format!(
        " perf profile of snapferry on {id} (CPU samples by what the code does): {}.",
        top.join(", ")
    )
}

/// Every target of the issue, evaluated.
pub fn targets(r: &Results, cores: f64) -> Vec<Target> {
    let mut out = Vec::new();
    let sf = |id: &str| fig(r, id, ToolId::Snapferry, cores);
    let rc = |id: &str| fig(r, id, ToolId::Rclone, cores);
    let busy_note = |id: &str, f: &Figures| {
        let s = &f.median_sample;
        let c = s.measured.user_seconds + s.measured.sys_seconds;
        format!(
            "In snapferry's median {id} run the copier used {c:.1} CPU-s and the two MinIO servers {:.1} CPU-s in {:.1} s of wall time: {:.0}% of the machine's {cores:.0} cores.",
            s.server_cpu_seconds,
            s.measured.wall_seconds,
            100.0 * (c + s.server_cpu_seconds) / (s.measured.wall_seconds * cores)
        )
    };
    // W1 against rclone.
    let w1 = wl(r, "W1");
    match (sf("W1"), rc("W1")) {
        (Some(s), Some(c)) => {
            let ratio = s.mibps.med / c.mibps.med;
            let met = ratio >= 1.5;
            out.push(Target {
                target: "W1: at least 1.5× rclone's throughput".into(),
                measured: format!(
                    "{ratio:.2}× ({:.0} vs {:.0} MiB/s)",
                    s.mibps.med, c.mibps.med
                ),
                verdict: if met { Verdict::Met } else { Verdict::Missed },
                evidence: if met {
                    String::new()
                } else {
                    let pipe = w1
                        .and_then(pipe_mibps)
                        .map(|p| {
                            let rc_frac = c.mibps.med / p.med;
                            format!(
                                " The pipe limit (no copier) is {:.0} MiB/s; rclone reaches {:.0}% of it, snapferry {:.0}%.{}",
                                p.med,
                                100.0 * rc_frac,
                                100.0 * s.mibps.med / p.med,
                                if rc_frac * 1.5 > 1.0 {
                                    format!(" 1.5× rclone would be {:.0}% of the pipe limit: more than the servers deliver with no copier at all, so this target cannot be met on this machine whatever the copier does.", 150.0 * rc_frac)
                                } else {
                                    String::new()
                                }
                            )
                        })
                        .unwrap_or_default();
                    format!("{}{pipe}{}", busy_note("W1", &s), profile_evidence(r, "W1"))
                },
            });
        }
        _ => out.push(not_measured(
            "W1: at least 1.5× rclone's throughput",
            "needs snapferry and rclone on W1",
        )),
    }
    // W1 against the pipe limit.
    match (sf("W1"), w1.and_then(pipe_mibps)) {
        (Some(s), Some(p)) => {
            let frac = s.mibps.med / p.med;
            let met = frac >= 0.85;
            out.push(Target {
                target: "W1: at least 85% of the pipe limit".into(),
                measured: format!(
                    "{:.0}% ({:.0} of {:.0} MiB/s)",
                    100.0 * frac,
                    s.mibps.med,
                    p.med
                ),
                verdict: if met { Verdict::Met } else { Verdict::Missed },
                evidence: if met {
                    String::new()
                } else {
                    format!("{}{}", busy_note("W1", &s), profile_evidence(r, "W1"))
                },
            });
        }
        _ => out.push(not_measured(
            "W1: at least 85% of the pipe limit",
            "needs snapferry on W1 and the pipe limit",
        )),
    }
    // W2 objects/s.
    match (sf("W2"), rc("W2")) {
        (Some(s), Some(c)) => {
            let ratio = s.objps.med / c.objps.med;
            let met = ratio >= 3.0;
            out.push(Target {
                target: "W2: at least 3× rclone's objects per second".into(),
                measured: format!(
                    "{ratio:.2}× ({:.0} vs {:.0} objects/s)",
                    s.objps.med, c.objps.med
                ),
                verdict: if met { Verdict::Met } else { Verdict::Missed },
                evidence: if met {
                    String::new()
                } else {
                    let m = &s.median_sample;
                    let n = wl(r, "W2").map(|w| w.objects).unwrap_or(1).max(1) as f64;
                    let server_ms = 1000.0 * m.server_cpu_seconds / n;
                    let own_ms =
                        1000.0 * (m.measured.user_seconds + m.measured.sys_seconds) / n;
                    let want = 3.0 * c.objps.med;
                    let cores_needed = want * (server_ms + own_ms) / 1000.0;
                    format!(
                        "{} Per object copied, the two MinIO servers used {server_ms:.2} ms of CPU (a GET, and a PUT whose metadata MinIO writes synchronously) and snapferry {own_ms:.2} ms: 3× rclone, {want:.0} objects/s, would need {cores_needed:.1} cores of CPU at those costs{}.{}",
                        busy_note("W2", &s),
                        if cores_needed > cores {
                            format!(", more than the machine's {cores:.0}: the servers bound this target on this machine")
                        } else {
                            String::new()
                        },
                        profile_evidence(r, "W2")
                    )
                },
            });
        }
        _ => out.push(not_measured(
            "W2: at least 3× rclone's objects per second",
            "needs snapferry and rclone on W2",
        )),
    }
    // W4 speed and HEADs.
    match (sf("W4"), rc("W4")) {
        (Some(s), Some(c)) => {
            let ratio = c.wall.med / s.wall.med;
            let met = ratio >= 10.0;
            out.push(Target {
                target: "W4: at least 10× faster than rclone".into(),
                measured: format!(
                    "{ratio:.1}× ({:.2} s vs {:.2} s)",
                    s.wall.med, c.wall.med
                ),
                verdict: if met { Verdict::Met } else { Verdict::Missed },
                evidence: if met {
                    String::new()
                } else {
                    let g = |f: &Figures, k: &str| f.requests_max.get(k).copied().unwrap_or(0);
                    let (sh, ch) = (g(&s, "HEAD"), g(&c, "HEAD"));
                    format!(
                        "Requests per no-op: snapferry {} LIST, {sh} HEAD; rclone (--fast-list --checksum, its fair best) {} LIST, {ch} HEAD.{} {}",
                        g(&s, "LIST"),
                        g(&c, "LIST"),
                        if sh == 0 && ch == 0 {
                            format!(" Neither tool makes a per-object request: both decide from listings alone, so both are bound by MinIO listing 2 × {} keys; the 10× assumes a peer that HEADs every object (rclone without --checksum reads each object's modification time with a HEAD).", wl(r, "W4").map(|w| w.objects).unwrap_or(0))
                        } else {
                            String::new()
                        },
                        busy_note("W4", &s)
                    )
                },
            });
        }
        _ => out.push(not_measured(
            "W4: at least 10× faster than rclone",
            "needs snapferry and rclone on W4",
        )),
    }
    match (sf("W4"), wl(r, "W4")) {
        (Some(s), Some(w)) => {
            let heads: Vec<u64> = w
                .series
                .iter()
                .find(|x| x.tool == ToolId::Snapferry)
                .map(|x| {
                    x.samples
                        .iter()
                        .map(|y| y.requests.get("HEAD").copied().unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default();
            let max = heads.iter().copied().max().unwrap_or(0);
            out.push(Target {
                target: "W4: zero per-object HEAD requests for unchanged objects".into(),
                measured: format!(
                    "{max} HeadObject requests in each of {} timed runs (server-side count); {} LIST",
                    heads.len(),
                    s.requests_max.get("LIST").copied().unwrap_or(0)
                ),
                verdict: if max == 0 { Verdict::Met } else { Verdict::Missed },
                evidence: String::new(),
            });
        }
        _ => out.push(not_measured(
            "W4: zero per-object HEAD requests",
            "needs snapferry on W4",
        )),
    }
    // CPU per GiB.
    for id in ["W1", "W3", "W2"] {
        if let Some(s) = sf(id) {
            let v = s.cpu_per_gib.med;
            let met = v <= 0.5;
            out.push(Target {
                target: format!("CPU: at most 0.5 CPU-s per GiB moved, integrity on ({id})"),
                measured: format!(
                    "{v:.2} CPU-s/GiB ({:.1} CPU-s for {})",
                    s.cpu.med,
                    human(wl(r, id).map(|w| w.bytes).unwrap_or(0))
                ),
                verdict: if met { Verdict::Met } else { Verdict::Missed },
                evidence: if met {
                    String::new()
                } else {
                    let per_obj = wl(r, id)
                        .filter(|w| w.id == "W2")
                        .map(|w| {
                            format!(
                                " With {} objects of 34 KiB on average the cost is per request, not per byte: {:.0} µs of CPU per object.",
                                w.objects,
                                1e6 * s.cpu.med / w.objects as f64
                            )
                        })
                        .unwrap_or_default();
                    let peers: Vec<String> = [ToolId::Rclone, ToolId::Mc, ToolId::S3sync]
                        .iter()
                        .filter_map(|t| {
                            fig(r, id, *t, cores)
                                .map(|f| format!("{} {:.2}", t.name(), f.cpu_per_gib.med))
                        })
                        .collect();
                    let peers = if peers.is_empty() {
                        String::new()
                    } else {
                        format!(" The peers on the same copy, CPU-s/GiB: {}.", peers.join(", "))
                    };
                    format!(
                        "{per_obj}{peers}{}",
                        profile_evidence(r, if id == "W3" { "W1" } else { id })
                    )
                },
            });
        }
    }
    // Memory.
    let k = r.knobs;
    for id in ["W1", "W2", "W3", "W4"] {
        let (Some(s), Some(w)) = (sf(id), wl(r, id)) else {
            continue;
        };
        let largest_single = w.largest_single;
        let per_job = if w.noop {
            0
        } else if w.has_multipart {
            k.part_size.max(largest_single)
        } else {
            largest_single
        };
        let buffers = k.concurrency as u64 * per_job;
        let limit = 64.0 + buffers as f64 / (1 << 20) as f64;
        let v = s.rss.max;
        let evidence = if v <= limit {
            String::new()
        } else {
            let faults = profile_of(r, "W1")
                .map(|p| {
                    let f = profile_categories(p)
                        .iter()
                        .filter(|(c, _)| c.contains("page faults"))
                        .map(|(_, v)| *v)
                        .sum::<f64>();
                    format!(" The W1 profile spends {f:.0}% of snapferry's CPU faulting in, zeroing and unmapping fresh memory: buffers are allocated anew for every part rather than reused.")
                })
                .unwrap_or_default();
            let diag = r
                .malloc_diagnosis
                .as_ref()
                .filter(|_| id == "W1")
                .filter(|d| d.problem.is_none())
                .map(|d| {
                    let m = &d.measured;
                    format!(
                        " The same W1 copy run once more with glibc's mmap threshold pinned at 1 MiB (`MALLOC_MMAP_THRESHOLD_=1048576`, so every part buffer is mapped and unmapped and none lingers in malloc's heaps) peaked at {:.0} MiB ({}) and used {:.2} CPU-s instead of {:.2}: the excess is freed part buffers that glibc's heaps keep (its mmap threshold grows to the part size after the first free), and mapping them anew costs CPU in page faults. Reusing part buffers (a pool of `concurrency` buffers) would give both.",
                        m.max_rss_kib as f64 / 1024.0,
                        if m.max_rss_kib as f64 / 1024.0 <= limit { "within the bound" } else { "still above the bound" },
                        m.user_seconds + m.sys_seconds,
                        s.cpu.med
                    )
                })
                .unwrap_or_default();
            format!(
                "{:.0} MiB above the bound in the largest run (median {:.0} MiB).{faults}{diag}",
                v - limit,
                s.rss.med
            )
        };
        out.push(Target {
            target: format!("Memory ({id}): peak RSS at most 64 MiB + in-flight part buffers"),
            measured: format!(
                "{v:.0} MiB peak (limit {limit:.0} MiB = 64 MiB + {} × {})",
                k.concurrency,
                human(per_job)
            ),
            verdict: if v <= limit {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            evidence,
        });
    }
    if let Some(d) = &r.diff {
        let rss: Vec<f64> = d
            .samples
            .iter()
            .map(|m| m.max_rss_kib as f64 / 1024.0)
            .collect();
        if let Some(s) = Spread::of(&rss) {
            out.push(Target {
                target: format!("Memory (W5): diff of {} keys at most 100 MiB", d.keys),
                measured: format!("{:.1} MiB peak RSS (largest of {} runs)", s.max, rss.len()),
                verdict: if s.max <= 100.0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                evidence: String::new(),
            });
        }
    }
    out
}

fn not_measured(t: &str, why: &str) -> Target {
    Target {
        target: t.into(),
        measured: "—".into(),
        verdict: Verdict::NotMeasured,
        evidence: why.into(),
    }
}

fn row(out: &mut String, cells: Vec<String>) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn table_row(
    out: &mut String,
    w: &WorkloadResult,
    s: &Series,
    f: Option<Figures>,
    pipe: Option<Spread>,
) {
    let name = s.tool.name().to_string();
    let Some(f) = f else {
        let why = s
            .skipped
            .clone()
            .unwrap_or_else(|| "no run counted".into())
            .replace('|', "/");
        let mut cells = vec![name, format!("not measured: {why}")];
        cells.extend(std::iter::repeat_n("—".to_string(), 6 + KINDS.len()));
        row(out, cells);
        return;
    };
    let thr = if w.noop {
        format!("{} obj/s", f.objps.show(0))
    } else {
        let pct = pipe
            .map(|p| format!(" ({:.0}% of pipe)", 100.0 * f.mibps.med / p.med))
            .unwrap_or_default();
        format!("{} MiB/s{pct}", f.mibps.show(1))
    };
    let mut cells = vec![
        name,
        f.wall.show(2),
        thr,
        if w.noop {
            "—".into()
        } else {
            f.objps.show(if f.objps.med < 10.0 { 2 } else { 0 })
        },
        f.cpu.show(2),
        if w.noop {
            "—".into()
        } else {
            format!("{:.2}", f.cpu_per_gib.med)
        },
        f.rss.show(0),
    ];
    cells.extend(KINDS.iter().map(|k| {
        f.median_sample
            .requests
            .get(*k)
            .copied()
            .unwrap_or(0)
            .to_string()
    }));
    cells.push(format!("{:.0}% ({:.0}%)", f.busy.med, f.others.med));
    row(out, cells);
}

/// The whole RESULTS.md.
pub fn markdown(
    r: &Results,
    machine: &[(String, String)],
    cores: f64,
    command: &str,
    chart: &str,
) -> String {
    let mut o = String::new();
    let k = r.knobs;
    let _ = writeln!(o, "# snapferry benchmark results\n");
    let _ = writeln!(
        o,
        "Generated by `{command}` (the whole run took {:.1} min, of which {:.1} min writing the workloads). Every figure below comes from that one run; nothing is edited by hand. Throughput chart: [`{chart}`]({chart}).\n",
        r.total_seconds / 60.0,
        r.setup_seconds / 60.0
    );
    if (r.scale - 1.0).abs() > 1e-9 {
        let _ = writeln!(o, "> **Scaled run** (`--scale {}`): workloads are smaller than the issue's; the targets are not judged on this run's figures alone.\n", r.scale);
    }
    let _ = writeln!(o, "## Machine\n\n| | |\n|---|---|");
    for (a, b) in machine {
        let _ = writeln!(o, "| {a} | {b} |");
    }
    let _ = writeln!(o, "| S3 servers | two MinIO servers on loopback, single drive each: {} (built from the Go module proxy by `fixtures/install-minio.sh`, started as the end-to-end tests start them) |", r.minio_version);
    let _ = writeln!(
        o,
        "\n## Tools\n\n| tool | version | status |\n|---|---|---|"
    );
    for (id, v, why) in &r.tools {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            id.name(),
            if v.is_empty() { "—" } else { v },
            why.as_deref()
                .map(|w| format!("cannot run here: {w}"))
                .unwrap_or_else(|| "measured".into())
        );
    }
    let _ = writeln!(o, "\n## Method\n");
    let _ = writeln!(o, "- One source server holds every workload, written once by the harness (aws-sdk-s3, 64 requests in flight; blobs over 64 MiB written multipart in 64 MiB parts, as Elasticsearch's S3 repository writes large blobs). Each copy run (W1–W3, and each pipe-limit run) gets a **fresh destination server** on an empty data directory; W4 has one destination made identical to its source beforehand (a byte-identical copy of the source bucket's directory, same ETags and modification times, checked by a listing), and each tool first runs once untimed to bring it in sync by its own rules.");
    let reps = if r.reps_w2 == r.reps {
        format!("{} repetitions", r.reps)
    } else {
        format!("{} repetitions ({} for W2, whose every run is 20,000 synchronous PUTs per tool: two keep the whole run within 30 minutes on this shared 2-core machine even when other work loads it; one such loaded run took 28 minutes)", r.reps, r.reps_w2)
    };
    let _ = writeln!(o, "- {reps}; the order of the tools alternates (forward, then reversed, ...), and in W1 the pipe-limit run takes its turn among them. Tables show the **median** and, in brackets, **min–max** of the runs.");
    let _ = writeln!(o, "- Every tool gets the same knobs: **{} transfers in flight, {} parts, multipart above {}**, integrity checks on. snapferry's concurrency counts parts (one permit per part or small object); the peers count objects (`--transfers`, `--worker-size`) and upload several parts of one object at once at their own defaults (rclone 4, mc 4, s3sync 16), so in W1 they may have more parts in flight than snapferry, never fewer.", k.concurrency, human(k.part_size), human(k.threshold));
    let _ = writeln!(o, "- Integrity: snapferry CRC32s every byte and checks the server's echo of `x-amz-checksum-crc32` per PUT and part, and the composite on completion. rclone checks each part's `Content-MD5` and the whole object's MD5 against the source's (`--checksum` also makes the no-op compare size + MD5 from listings instead of HEADing every object for its modification time, and `--fast-list` lists recursively, as snapferry does). mc sends `--checksum CRC32` (trailing checksums). s3sync sends `Content-MD5` and verifies ETags (its default).");
    let _ = writeln!(o, "- Each copier runs as a child process: wall time from spawn to exit; **CPU** (user + system) and **peak RSS** from `wait4`'s rusage. **Requests** are counted server-side by both MinIO servers (Prometheus `minio_api_requests_total` by API, read before and after each run) and shown for the median run: LIST = ListObjects, HEAD = HeadObject, GET, PUT = single PutObject, PART = UploadPart, MPU = create/complete/abort/list uploads, OTHER = bucket-level calls. **Busy** = CPU of copier and both servers ÷ (wall × {cores:.0} cores): near 100% means the machine, not the tool, was the limit. In brackets, the share other processes took meanwhile (from /proc/stat: the machine is shared, and this is how much of it was not ours).");
    let _ = writeln!(o, "- Every copy is checked after the run: the destination must list the workload's exact object count and bytes, or the run does not count (a run with a problem is shown with it).");
    let _ = writeln!(o, "- **Pipe limit**: the harness itself drains the W1 source with ranged GETs of {} and at the same time fills a fresh destination with {}-part multipart PUTs of generated bytes, {} requests deep each way, the same bytes each way, with no copier in between (no checksums, no payload hashing). Copy throughput is reported as a fraction of it.", human(k.part_size), human(k.part_size), k.concurrency);
    let _ = writeln!(o, "- snapferry runs with `--snapshot-aware off` (a plain object copy like the peers'; the workloads are not complete repositories).\n");

    let _ = writeln!(o, "## Workloads\n\n| | what | objects | bytes | sizes | written in |\n|---|---|---|---|---|---|");
    for w in &r.workloads {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {:.0} s |",
            w.id,
            w.title,
            w.objects,
            human(w.bytes),
            w.sizes,
            w.generate_seconds
        );
    }
    if let Some(d) = &r.diff {
        let _ = writeln!(o, "| W5 | diff of {} source keys against {} destination keys through the engine's real differ (`{}`, no servers) | — | — | — | — |", d.keys, d.keys.div_ceil(2), d.command);
    }
    for w in r.workloads.iter().filter(|w| !w.note.is_empty()) {
        let _ = writeln!(o, "\n{}: {}.", w.id, w.note);
    }

    let _ = writeln!(o, "\n## Results\n");
    for w in &r.workloads {
        let pipe = pipe_mibps(w);
        let _ = writeln!(o, "### {} — {}\n", w.id, w.title);
        let _ = writeln!(
            o,
            "| tool | wall s | {} | objects/s | CPU s | CPU s/GiB | peak RSS MiB | {} | busy (others) |",
            if w.noop { "decided" } else { "throughput" },
            KINDS.join(" | ")
        );
        let _ = writeln!(
            o,
            "|---|---|---|---|---|---|---|{}---|",
            "---|".repeat(KINDS.len())
        );
        for s in &w.series {
            table_row(&mut o, w, s, figures(w, s, cores), pipe);
        }
        if let Some(p) = pipe {
            let gets = Spread::of(&w.pipe.iter().map(|x| x.get_seconds).collect::<Vec<_>>());
            let puts = Spread::of(&w.pipe.iter().map(|x| x.put_seconds).collect::<Vec<_>>());
            let wall = Spread::of(&w.pipe.iter().map(|x| x.wall_seconds).collect::<Vec<_>>());
            let mut cells = vec![
                "**pipe limit**".to_string(),
                wall.map(|s| s.show(2)).unwrap_or_default(),
                format!("{} MiB/s", p.show(1)),
                format!(
                    "GETs done at {} s, PUTs at {} s",
                    gets.map(|s| s.show(1)).unwrap_or_default(),
                    puts.map(|s| s.show(1)).unwrap_or_default()
                ),
            ];
            cells.extend(std::iter::repeat_n("—".to_string(), 3 + KINDS.len() + 1));
            row(&mut o, cells);
        }
        for s in &w.series {
            if let Some(n) = s.samples.iter().find_map(|x| x.note.as_ref()) {
                // The first warning is enough: they repeat per object.
                let first = n.split(" / ").next().unwrap_or(n);
                let first: String = first.chars().take(420).collect();
                let why = if s.tool == ToolId::S3sync {
                    " — s3sync's exit 3 means \"finished with warnings\": it compares the source's multipart ETag (64 MiB parts) with its own copy's (16 MiB parts), cannot match them, and warns for every multipart object; the copy itself was checked by the harness (object count and bytes) and counts"
                } else {
                    ""
                };
                let _ = writeln!(
                    o,
                    "\n{} on {}: {}{why}.",
                    s.tool.name(),
                    w.id,
                    first.replace('|', "/").trim_end_matches('.')
                );
            }
            if let Some(p) = s.samples.iter().find_map(|x| x.problem.as_ref()) {
                let hint = if s.tool == ToolId::S3sync && p.starts_with("exit 3") {
                    " (s3sync's exit 3 is \"finished with warnings\": its log shows an ETag mismatch warning for every object, because it compares the source's multipart ETag (64 MiB parts) with its own copy's (16 MiB parts); this run of the harness counted exit 3 as a failure and so ran s3sync once here; later versions verify the destination and count such a run)"
                } else {
                    ""
                };
                let _ = writeln!(
                    o,
                    "\n{} on {}: a run did not count: {}{hint}",
                    s.tool.name(),
                    w.id,
                    p.replace('|', "/")
                );
            }
        }
        if w.noop {
            let _ = writeln!(o, "\nBefore the timed runs each tool ran once, untimed, to bring the destination in sync by its own rules:");
            for s in &w.series {
                if let Some(wu) = &s.warmup {
                    let _ = writeln!(
                        o,
                        "- {}: {:.2} s, requests {}{}",
                        s.tool.name(),
                        wu.measured.wall_seconds,
                        show_requests(&wu.requests),
                        wu.problem
                            .as_deref()
                            .map(|p| format!(" — problem: {p}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        let _ = writeln!(o);
    }

    // Latencies.
    let _ = writeln!(
        o,
        "### snapferry's per-request latency (its hdrhistogram, median run)\n"
    );
    let _ = writeln!(
        o,
        "| workload | request | count | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|"
    );
    for w in &r.workloads {
        let Some(s) = w.series.iter().find(|s| s.tool == ToolId::Snapferry) else {
            continue;
        };
        let Some(f) = figures(w, s, cores) else {
            continue;
        };
        let Some(lat) = f
            .median_sample
            .report
            .as_ref()
            .and_then(|r| r.get("latency_ms"))
            .and_then(|l| l.as_object())
        else {
            continue;
        };
        for (kind, v) in lat {
            let g = |n: &str| v.get(n).and_then(|x| x.as_f64()).unwrap_or(0.0);
            let _ = writeln!(
                o,
                "| {} | {kind} | {:.0} | {:.2} | {:.2} | {:.2} |",
                w.id,
                g("count"),
                g("p50_ms"),
                g("p99_ms"),
                g("max_ms")
            );
        }
    }

    if let Some(d) = &r.diff {
        let _ = writeln!(o, "\n### W5 — diff of {} keys (memory)\n", d.keys);
        let rss = Spread::of(
            &d.samples
                .iter()
                .map(|m| m.max_rss_kib as f64 / 1024.0)
                .collect::<Vec<_>>(),
        );
        let wall = Spread::of(&d.samples.iter().map(|m| m.wall_seconds).collect::<Vec<_>>());
        let cpu = Spread::of(
            &d.samples
                .iter()
                .map(|m| m.user_seconds + m.sys_seconds)
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(o, "| tool | wall s | CPU s | peak RSS MiB (rusage) | probe's own line |\n|---|---|---|---|---|");
        let _ = writeln!(
            o,
            "| snapferry (engine differ) | {} | {} | {} | {} |",
            wall.map(|s| s.show(2)).unwrap_or_default(),
            cpu.map(|s| s.show(2)).unwrap_or_default(),
            rss.map(|s| s.show(1)).unwrap_or_default(),
            d.samples
                .last()
                .map(|m| m.stdout.trim().to_string())
                .unwrap_or_default()
        );
        let _ = writeln!(o, "\nThe peers have no separable differ: comparing 1,000,000 keys with them needs 1,000,000 objects on each server, which does not fit this run's 30 minutes; W4 compares their whole no-op (listing + diff) on 100,000 keys instead, and their peak RSS there is in the W4 table.");
    }

    let _ = writeln!(
        o,
        "\n## Targets\n\n| target | measured | verdict |\n|---|---|---|"
    );
    let ts = targets(r, cores);
    for t in &ts {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            t.verdict.show()
        );
    }
    let misses: Vec<&Target> = ts.iter().filter(|t| t.verdict != Verdict::Met).collect();
    if !misses.is_empty() {
        let _ = writeln!(o, "\n### Misses and what the run shows about them\n");
        for t in misses {
            let _ = writeln!(o, "- **{}** — {}. {}", t.target, t.measured, t.evidence);
        }
    }

    if !r.profiles.is_empty() {
        let _ = writeln!(
            o,
            "\n## Profiles (snapferry under `perf record`, one extra untimed run each)\n"
        );
        for p in &r.profiles {
            let _ = writeln!(o, "### {}\n", p.workload);
            if let Some(why) = &p.problem {
                let _ = writeln!(o, "No profile: {why}\n");
                continue;
            }
            let _ = writeln!(o, "By what the code does:\n");
            for (c, v) in profile_categories(p) {
                let _ = writeln!(o, "- {c}: {v:.1}%");
            }
            let _ = writeln!(
                o,
                "\nTop symbols (`perf report --no-children --sort dso,symbol`):\n\n```text"
            );
            for l in &p.top {
                let _ = writeln!(o, "{}", l.trim_end_matches(['-', ' ']));
            }
            let _ = writeln!(o, "```\n");
        }
    }

    let _ = writeln!(o, "\n## Command lines\n\nExactly as run (endpoints shown as `$SRC`/`$DST`; credentials come from the environment and are not shown), here for W1; the other workloads differ only in the bucket.\n\n```sh");
    if let Some(w) = r
        .workloads
        .iter()
        .find(|w| w.id == "W1")
        .or(r.workloads.first())
    {
        for s in &w.series {
            if !s.command.is_empty() {
                let _ = writeln!(o, "{}", s.command);
            }
        }
    }
    let _ = writeln!(o, "```");
    let _ = writeln!(o, "\nEnvironment besides credentials: rclone's two remotes come from `RCLONE_CONFIG_SRC_*`/`RCLONE_CONFIG_DST_*` (type s3, provider Minio, endpoint, region us-east-1); mc's from `MC_HOST_src`/`MC_HOST_dst`, with `MC_UPLOAD_MULTIPART_SIZE={}MiB` and `MC_UPLOAD_MULTIPART_THREADS=4` (mc has no multipart threshold of its own: objects above the part size go multipart; and no concurrency flag: its worker pool starts at GOMAXPROCS and grows while throughput grows).", k.part_size >> 20);
    o
}

fn show_requests(m: &BTreeMap<String, u64>) -> String {
    let v: Vec<String> = m
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
