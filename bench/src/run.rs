//! `snapferry-bench run`: the whole comparison, end to end.
//!
//! One source server holds every workload, written once. W4 runs first against one
//! destination server made identical beforehand (each tool gets one untimed run to bring
//! the destination in sync by its own rules, then timed no-op runs). Every copy run
//! (W1–W3, and each pipe-limit run) gets a fresh destination server on a fresh data
//! directory, so nothing a previous run left (objects, trash, background deletes) can
//! slow the next one. Repetitions alternate the tool order (forward, then reversed).
//! Request counts are the servers' own (MinIO's Prometheus counters, read before and
//! after each run), so every tool is counted the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::s3util::{self, PipeRun, Pool};
use crate::servers::{delta_by_kind, machine_busy_seconds, Minio};
use crate::tools::{self, Invocation, Knobs, Measured, Side, Tool, ToolId};
use crate::workloads::{self, Workload};

/// Everything `run` needs, from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// The MinIO server binary.
    pub minio: PathBuf,
    /// The tools (binaries or reasons).
    pub tools: Vec<Tool>,
    /// Repetitions per tool and workload.
    pub reps: usize,
    /// Repetitions of W2 (each of its runs is 20,000 synchronous PUTs).
    pub reps_w2: usize,
    /// Workload scale (1.0 = the sizes).
    pub scale: f64,
    /// Parent of the temporary data directory.
    pub work_dir: PathBuf,
    /// The fixture repository W3 is derived from.
    pub fixture_repo: PathBuf,
    /// The knobs every tool gets.
    pub knobs: Knobs,
    /// Time limit of one run.
    pub run_limit: Duration,
    /// Which workloads (W1..W5).
    pub workloads: Vec<String>,
    /// Profile snapferry with perf on W1 and W2.
    pub profile: bool,
    /// Keys of the W5 diff.
    pub diff_keys: u64,
    /// Requests in flight while writing the workloads.
    pub gen_concurrency: usize,
    /// Index directories of W4 (5 shard directories each); default one per 1,000 blobs.
    pub w4_indices: Option<u64>,
}

/// One measured run of one tool on one workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Repetition (0-based).
    pub rep: usize,
    /// Position in that repetition's order.
    pub position: usize,
    /// The OS's figures.
    pub measured: Measured,
    /// Requests by kind, both servers together.
    pub requests: BTreeMap<String, u64>,
    /// Requests by MinIO API name.
    pub apis: BTreeMap<String, u64>,
    /// CPU seconds both servers used during the run.
    pub server_cpu_seconds: f64,
    /// CPU seconds the rest of the machine used during the run (other processes:
    /// the machine is shared), from /proc/stat less the copier and the servers.
    pub other_cpu_seconds: f64,
    /// Why the run does not count (failed, timed out, incomplete copy).
    pub problem: Option<String>,
    /// Something to know about a run that counts (a tool's warnings).
    #[serde(default)]
    pub note: Option<String>,
    /// snapferry's JSON report.
    pub report: Option<serde_json::Value>,
}

/// All samples of one tool on one workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Series {
    /// Tool.
    pub tool: ToolId,
    /// The exact command line (endpoints as $SRC/$DST, no secrets).
    pub command: String,
    /// W4: the untimed run that brought the destination in sync for this tool.
    pub warmup: Option<Sample>,
    /// Timed runs.
    pub samples: Vec<Sample>,
    /// Why this tool did not run here.
    pub skipped: Option<String>,
}

/// Results of one workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkloadResult {
    /// `W1`..`W5`.
    pub id: String,
    /// Its one-line description.
    pub title: String,
    /// Objects.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
    /// How it was built.
    pub note: String,
    /// Size summary.
    pub sizes: String,
    /// Per tool.
    pub series: Vec<Series>,
    /// W1: the pipe limit runs.
    pub pipe: Vec<PipeRun>,
    /// Seconds to write it to the source (and destination, W4).
    pub generate_seconds: f64,
    /// The largest object at or below the multipart threshold (one PUT, one buffer).
    pub largest_single: u64,
    /// Whether any object goes multipart.
    pub has_multipart: bool,
    /// A no-op re-sync (W4) rather than a copy.
    pub noop: bool,
}

/// W5: the differ probe.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DiffResult {
    /// Keys.
    pub keys: u64,
    /// The command line.
    pub command: String,
    /// Runs.
    pub samples: Vec<Measured>,
}

/// A flat perf profile of snapferry on one workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// Workload.
    pub workload: String,
    /// The command line.
    pub command: String,
    /// `perf report` top lines (percent, binary, symbol).
    pub top: Vec<String>,
    /// Every `perf report` line (for the shares by category).
    #[serde(default)]
    pub all: Vec<String>,
    /// Why there is none.
    pub problem: Option<String>,
}

/// Everything measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Results {
    /// Knobs.
    pub knobs: Knobs,
    /// Repetitions.
    pub reps: usize,
    /// Repetitions of W2.
    pub reps_w2: usize,
    /// Workload scale.
    pub scale: f64,
    /// Tools with versions or reasons.
    pub tools: Vec<(ToolId, String, Option<String>)>,
    /// MinIO's version line.
    pub minio_version: String,
    /// Per workload.
    pub workloads: Vec<WorkloadResult>,
    /// W5.
    pub diff: Option<DiffResult>,
    /// perf profiles.
    pub profiles: Vec<Profile>,
    /// W1 once more with glibc's mmap threshold pinned (where the memory goes).
    #[serde(default)]
    pub malloc_diagnosis: Option<Sample>,
    /// Seconds the whole run took.
    pub total_seconds: f64,
    /// Seconds spent writing workloads.
    pub setup_seconds: f64,
    /// Cores of the machine.
    #[serde(default = "default_cores")]
    pub cores: f64,
    /// The machine, as `(what, value)`.
    #[serde(default)]
    pub machine: Vec<(String, String)>,
}

fn default_cores() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}

/// Bytes needed on the work directory's filesystem.
fn disk_needed(ws: &[Workload]) -> u64 {
    let src: u64 = ws.iter().map(|w| w.bytes()).sum();
    let dst = ws.iter().map(|w| w.bytes()).max().unwrap_or(0);
    // MinIO's metadata per object, W4's destination copy, and headroom.
    src + dst + (src + dst) / 10 + (1 << 30)
}

fn free_bytes(p: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct for a valid C string path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn order(rep: usize, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if rep % 2 == 1 {
        v.reverse();
    }
    v
}

struct Env<'a> {
    cfg: &'a Config,
    rt: tokio::runtime::Runtime,
    pool: Pool,
    work: PathBuf,
    src: Minio,
    dst_seq: usize,
}

impl Env<'_> {
    fn fresh_dst(&mut self, bucket: &str) -> Result<Minio> {
        self.dst_seq += 1;
        let dst = Minio::start(
            &self.cfg.minio,
            &self.work.join(format!("dst-{}", self.dst_seq)),
        )?;
        let c = s3util::client(&dst.endpoint());
        self.rt.block_on(s3util::create_bucket(&c, bucket))?;
        Ok(dst)
    }

    /// One measured run of `tool` from the source's `w` bucket into `dst`.
    fn measure(
        &self,
        tool: &Tool,
        w: &Workload,
        dst: &Minio,
        tag: &str,
    ) -> Result<(Sample, String)> {
        self.measure_with(tool, w, dst, tag, &[])
    }

    /// As [`Env::measure`], with extra environment variables for the tool.
    fn measure_with(
        &self,
        tool: &Tool,
        w: &Workload,
        dst: &Minio,
        tag: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<(Sample, String)> {
        let run_dir = self.work.join("runs").join(tag);
        std::fs::create_dir_all(&run_dir)?;
        let inv = tools::invocation(
            tool,
            &Side {
                endpoint: self.src.endpoint(),
                bucket: w.bucket.clone(),
            },
            &Side {
                endpoint: dst.endpoint(),
                bucket: w.bucket.clone(),
            },
            self.cfg.knobs,
            &run_dir.join("home"),
            &run_dir.join("report.json"),
        )?;
        let Invocation {
            mut cmd,
            shown,
            report,
        } = inv;
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let (s0, d0) = (self.src.api_counts()?, dst.api_counts()?);
        let cpu0 = self.src.cpu_seconds() + dst.cpu_seconds();
        let busy0 = machine_busy_seconds();
        let m = tools::run_measured(cmd, &run_dir.join("out"), self.cfg.run_limit)?;
        let busy1 = machine_busy_seconds();
        let cpu1 = self.src.cpu_seconds() + dst.cpu_seconds();
        let own_cpu = m.user_seconds + m.sys_seconds;
        let (s1, d1) = (self.src.api_counts()?, dst.api_counts()?);
        let (mut requests, mut apis) = delta_by_kind(&s0, &s1);
        let (rd, ad) = delta_by_kind(&d0, &d1);
        for (k, v) in rd {
            *requests.entry(k).or_insert(0) += v;
        }
        for (k, v) in ad {
            *apis.entry(k).or_insert(0) += v;
        }
        let report = report
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str(&s).ok());
        // s3sync's exit 3 means "finished with warnings"; the copy still counts if the
        // destination checks out below (the warning is kept as a note).
        let s3sync_warned = tool.id == ToolId::S3sync && m.status == 3 && !m.timed_out;
        let note = s3sync_warned.then(|| format!("exit 3 (warnings): {}", m.stderr_tail));
        let mut problem = if m.timed_out {
            Some(format!(
                "killed at the {} s limit",
                self.cfg.run_limit.as_secs()
            ))
        } else if m.status != 0 && !s3sync_warned {
            Some(format!("exit {}: {}", m.status, m.stderr_tail))
        } else {
            None
        };
        if problem.is_none() {
            let c = s3util::client(&dst.endpoint());
            let (n, bytes) = self.rt.block_on(s3util::bucket_totals(&c, &w.bucket))?;
            let (want_n, want_b) = (w.objects.len() as u64, w.bytes());
            if (n, bytes) != (want_n, want_b) {
                problem = Some(format!(
                    "destination holds {n} objects / {bytes} bytes, expected {want_n} / {want_b}"
                ));
            }
        }
        Ok((
            Sample {
                rep: 0,
                position: 0,
                measured: m,
                requests,
                apis,
                note,
                server_cpu_seconds: cpu1 - cpu0,
                other_cpu_seconds: (busy1 - busy0 - (cpu1 - cpu0) - own_cpu).max(0.0),
                problem,
                report,
            },
            shown,
        ))
    }
}

/// Runs everything and returns the results.
pub fn run(cfg: &Config) -> Result<Results> {
    let t0 = Instant::now();
    let minio_version = Command::new(&cfg.minio)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .with_context(|| format!("run {} --version", cfg.minio.display()))?;
    let want = |id: &str| cfg.workloads.iter().any(|w| w.eq_ignore_ascii_case(id));
    let mut ws = Vec::new();
    if want("W4") {
        ws.push(workloads::w4(cfg.scale, cfg.w4_indices));
    }
    if want("W1") {
        ws.push(workloads::w1(cfg.scale));
    }
    if want("W2") {
        ws.push(workloads::w2(cfg.scale));
    }
    if want("W3") {
        let target = ((2u64 << 30) as f64 * cfg.scale) as u64;
        ws.push(workloads::w3(&cfg.fixture_repo, target)?);
    }

    std::fs::create_dir_all(&cfg.work_dir)?;
    let need = disk_needed(&ws);
    if let Some(free) = free_bytes(&cfg.work_dir) {
        log(format!(
            "disk: {} free under {}, this run needs about {}",
            workloads::human(free),
            cfg.work_dir.display(),
            workloads::human(need)
        ));
        if free < need {
            bail!(
                "not enough disk under {}: {} free, about {} needed (source copies of every workload plus the largest destination); free space or pass --work-dir on a larger filesystem, or --scale below 1",
                cfg.work_dir.display(),
                workloads::human(free),
                workloads::human(need)
            );
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("snapferry-bench.")
        .tempdir_in(&cfg.work_dir)?;
    let work = tmp.path().to_path_buf();
    log(format!("work directory {}", work.display()));
    // Private copies of snapferry and of this harness: a rebuild of the workspace
    // while the run goes on (the machine is shared) cannot swap binaries mid-run.
    let bin_dir = work.join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let own = bin_dir.join("snapferry-bench");
    std::fs::copy(std::env::current_exe()?, &own).context("copy the harness binary")?;
    tools::set_harness_exe(own);
    let mut all_tools = cfg.tools.clone();
    for t in all_tools.iter_mut().filter(|t| t.id == ToolId::Snapferry) {
        if let Some(b) = &t.bin {
            let copy = bin_dir.join("snapferry");
            std::fs::copy(b, &copy).with_context(|| format!("copy {}", b.display()))?;
            t.bin = Some(copy);
        }
    }
    let all_tools = all_tools;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let src = Minio::start(&cfg.minio, &work.join("src"))?;
    log(format!("source server {}", src.endpoint()));
    let mut env = Env {
        cfg,
        rt,
        pool: Pool::new(),
        work: work.clone(),
        src,
        dst_seq: 0,
    };

    // Write every workload to the source once.
    let src_client = s3util::client(&env.src.endpoint());
    let mut gen_secs = BTreeMap::new();
    for w in &ws {
        let t = Instant::now();
        env.rt.block_on(async {
            s3util::create_bucket(&src_client, &w.bucket).await?;
            s3util::generate(
                &src_client,
                &w.bucket,
                &w.objects,
                &env.pool,
                cfg.gen_concurrency,
            )
            .await
        })?;
        let secs = t.elapsed().as_secs_f64();
        log(format!(
            "{}: wrote {} objects, {} to the source in {secs:.1} s",
            w.id,
            w.objects.len(),
            workloads::human(w.bytes())
        ));
        gen_secs.insert(w.id, secs);
    }
    let mut setup_seconds: f64 = gen_secs.values().sum();

    let available: Vec<&Tool> = all_tools.iter().filter(|t| t.bin.is_some()).collect();
    let mut results = Vec::new();
    for w in &ws {
        let mut series: Vec<Series> = all_tools
            .iter()
            .map(|t| Series {
                tool: t.id,
                command: String::new(),
                warmup: None,
                samples: Vec::new(),
                skipped: t.unavailable.clone(),
            })
            .collect();
        let mut pipe = Vec::new();
        let mut generate_seconds = gen_secs.get(w.id).copied().unwrap_or(0.0);
        if w.noop {
            // One destination, identical to the source, for every tool.
            let t = Instant::now();
            let dst = env.fresh_dst(&w.bucket)?;
            let c = s3util::client(&dst.endpoint());
            let copied = copy_bucket_dir(&env.src.dir, &dst.dir, &w.bucket)
                .and_then(|()| env.rt.block_on(s3util::bucket_totals(&c, &w.bucket)));
            match copied {
                Ok(t) if t == (w.objects.len() as u64, w.bytes()) => {
                    log(format!("{}: destination made as a byte-identical copy of the source bucket's directory", w.id));
                }
                other => {
                    log(format!(
                        "{}: directory copy gave {other:?}; writing the destination with PUTs",
                        w.id
                    ));
                    env.rt.block_on(s3util::generate(
                        &c,
                        &w.bucket,
                        &w.objects,
                        &env.pool,
                        cfg.gen_concurrency,
                    ))?;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            setup_seconds += secs;
            generate_seconds += secs;
            log(format!(
                "{}: wrote the same objects to the destination in {secs:.1} s",
                w.id
            ));
            for tool in &available {
                let s = series_of(&mut series, tool.id);
                let (mut sample, shown) = env.measure(
                    tool,
                    w,
                    &dst,
                    &format!("{}-{}-warmup", w.id, tool.id.name()),
                )?;
                sample.rep = usize::MAX;
                log(format!(
                    "{} {} warm-up: {:.2} s{}",
                    w.id,
                    tool.id.name(),
                    sample.measured.wall_seconds,
                    problem_suffix(&sample)
                ));
                let s_mut = &mut series[s];
                s_mut.command = shown;
                if let Some(p) = &sample.problem {
                    s_mut.skipped = Some(format!("failed on this workload: {p}"));
                }
                s_mut.warmup = Some(sample);
            }
            for rep in 0..cfg.reps {
                for (pos, &i) in order(rep, available.len()).iter().enumerate() {
                    let tool = available[i];
                    let s = series_of(&mut series, tool.id);
                    if series[s].skipped.is_some() {
                        continue;
                    }
                    let (mut sample, _) =
                        env.measure(tool, w, &dst, &format!("{}-{}-{rep}", w.id, tool.id.name()))?;
                    sample.rep = rep;
                    sample.position = pos;
                    log_sample(w, tool.id, &sample);
                    if let Some(p) = &sample.problem {
                        series[s].skipped = Some(format!("failed on this workload: {p}"));
                    }
                    series[s].samples.push(sample);
                }
            }
            dst.stop_and_remove()?;
        } else {
            // Entries: the tools, and for W1 the pipe limit (index = available.len()).
            let with_pipe = w.id == "W1";
            let n = available.len() + usize::from(with_pipe);
            let reps = if w.id == "W2" { cfg.reps_w2 } else { cfg.reps };
            for rep in 0..reps {
                for (pos, &i) in order(rep, n).iter().enumerate() {
                    if i == available.len() {
                        let dst = env.fresh_dst(&w.bucket)?;
                        let dc = s3util::client(&dst.endpoint());
                        let p = env.rt.block_on(s3util::pipe_limit(
                            (&src_client, &w.bucket),
                            (&dc, &w.bucket),
                            &w.objects,
                            cfg.knobs.concurrency,
                            cfg.knobs.part_size,
                            &env.pool,
                        ))?;
                        log(format!(
                            "{} pipe limit rep {rep}: {:.1} MiB/s (GETs done at {:.1} s, PUTs at {:.1} s)",
                            w.id,
                            p.bytes as f64 / p.wall_seconds / (1 << 20) as f64,
                            p.get_seconds,
                            p.put_seconds
                        ));
                        pipe.push(p);
                        dst.stop_and_remove()?;
                        continue;
                    }
                    let tool = available[i];
                    let s = series_of(&mut series, tool.id);
                    if series[s].skipped.is_some() {
                        continue;
                    }
                    let dst = env.fresh_dst(&w.bucket)?;
                    let (mut sample, shown) =
                        env.measure(tool, w, &dst, &format!("{}-{}-{rep}", w.id, tool.id.name()))?;
                    dst.stop_and_remove()?;
                    sample.rep = rep;
                    sample.position = pos;
                    log_sample(w, tool.id, &sample);
                    series[s].command = shown;
                    if let Some(p) = &sample.problem {
                        series[s].skipped = Some(format!("failed on this workload: {p}"));
                    }
                    series[s].samples.push(sample);
                }
            }
        }
        results.push(WorkloadResult {
            id: w.id.to_string(),
            title: w.title.clone(),
            objects: w.objects.len() as u64,
            bytes: w.bytes(),
            note: w.note.clone(),
            sizes: workloads::size_summary(&w.objects, cfg.knobs.threshold),
            series,
            pipe,
            generate_seconds,
            largest_single: w
                .objects
                .iter()
                .map(|o| o.size)
                .filter(|&s| s <= cfg.knobs.threshold)
                .max()
                .unwrap_or(0),
            has_multipart: w.objects.iter().any(|o| o.size > cfg.knobs.threshold),
            noop: w.noop,
        });
    }

    let mut profiles = Vec::new();
    let mut malloc_diagnosis = None;
    if cfg.profile {
        for w in ws.iter().filter(|w| w.id == "W1" || w.id == "W2") {
            profiles.push(profile(&mut env, &all_tools, w)?);
        }
        // Where does W1's memory above the part buffers go? The same copy once more with
        // glibc's mmap threshold pinned at 1 MiB: every part buffer is then mapped and
        // unmapped, so freed buffers cannot linger in malloc's heaps.
        if let (Some(w), Some(tool)) = (
            ws.iter().find(|w| w.id == "W1"),
            all_tools
                .iter()
                .find(|t| t.id == ToolId::Snapferry && t.bin.is_some()),
        ) {
            let dst = env.fresh_dst(&w.bucket)?;
            let (mut s, _) = env.measure_with(
                tool,
                w,
                &dst,
                "W1-snapferry-mmap-threshold",
                &[("MALLOC_MMAP_THRESHOLD_", "1048576")],
            )?;
            dst.stop_and_remove()?;
            s.note = Some("MALLOC_MMAP_THRESHOLD_=1048576".into());
            log(format!(
                "W1 snapferry with MALLOC_MMAP_THRESHOLD_=1048576: {:.2} s, CPU {:.2} s, RSS {:.0} MiB",
                s.measured.wall_seconds,
                s.measured.user_seconds + s.measured.sys_seconds,
                s.measured.max_rss_kib as f64 / 1024.0
            ));
            malloc_diagnosis = Some(s);
        }
    }

    let diff = if want("W5") {
        Some(diff_memory(cfg, &work)?)
    } else {
        None
    };

    // Stop the source before the temp dir goes.
    let Env { src, .. } = env;
    src.stop_and_remove()?;
    drop(tmp);
    // Results sorted the way: W1, W2, W3, W4.
    results.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Results {
        knobs: cfg.knobs,
        reps: cfg.reps,
        reps_w2: cfg.reps_w2,
        scale: cfg.scale,
        tools: cfg
            .tools
            .iter()
            .map(|t| (t.id, t.version.clone(), t.unavailable.clone()))
            .collect(),
        minio_version,
        workloads: results,
        diff,
        profiles,
        malloc_diagnosis,
        total_seconds: t0.elapsed().as_secs_f64(),
        setup_seconds,
        cores: default_cores(),
        machine: Vec::new(),
    })
}

/// Copies a quiescent bucket's objects from one MinIO data directory into another
/// server's (already created, empty) bucket: the objects arrive byte-identical, with the
/// same ETags and modification times, as a copier that preserves them would leave them,
/// in seconds instead of 100,000 synchronous PUTs. Checked by a listing afterwards.
fn copy_bucket_dir(src_dir: &Path, dst_dir: &Path, bucket: &str) -> Result<()> {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/{bucket}/.", src_dir.display()))
        .arg(format!("{}/{bucket}/", dst_dir.display()))
        .status()
        .context("cp -a")?;
    if !st.success() {
        bail!("cp -a failed: {st}");
    }
    Ok(())
}

fn series_of(series: &mut [Series], id: ToolId) -> usize {
    series
        .iter()
        .position(|s| s.tool == id)
        .expect("every tool has a series")
}

fn problem_suffix(s: &Sample) -> String {
    s.problem
        .as_ref()
        .map(|p| format!(" — PROBLEM: {p}"))
        .unwrap_or_default()
}

fn log_sample(w: &Workload, id: ToolId, s: &Sample) {
    let m = &s.measured;
    log(format!(
        "{} {} rep {}: {:.2} s, {:.1} MiB/s, CPU {:.2} s, RSS {:.0} MiB, requests {:?}{}",
        w.id,
        id.name(),
        s.rep,
        m.wall_seconds,
        if w.noop {
            0.0
        } else {
            w.bytes() as f64 / m.wall_seconds / (1 << 20) as f64
        },
        m.user_seconds + m.sys_seconds,
        m.max_rss_kib as f64 / 1024.0,
        s.requests,
        problem_suffix(s)
    ));
}

/// One extra, untimed snapferry run under `perf record`, summarised by `perf report`.
fn profile(env: &mut Env, all_tools: &[Tool], w: &Workload) -> Result<Profile> {
    let Some(tool) = all_tools
        .iter()
        .find(|t| t.id == ToolId::Snapferry && t.bin.is_some())
    else {
        return Ok(Profile {
            workload: w.id.into(),
            command: String::new(),
            top: Vec::new(),
            all: Vec::new(),
            problem: Some("snapferry is not available".into()),
        });
    };
    let dst = env.fresh_dst(&w.bucket)?;
    let run_dir = env.work.join("runs").join(format!("{}-perf", w.id));
    std::fs::create_dir_all(&run_dir)?;
    // A slice of the workload is enough for a profile and keeps the run short: the
    // objects under the first key's index and shard (W1: 4 blobs; W2: ~200 blobs).
    let prefix = w
        .objects
        .first()
        .map(|o| {
            o.key
                .rsplit_once('/')
                .map(|(p, _)| format!("{p}/"))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let (n, bytes) = w
        .objects
        .iter()
        .filter(|o| o.key.starts_with(&prefix))
        .fold((0u64, 0u64), |(n, b), o| (n + 1, b + o.size));
    let inv = tools::invocation(
        tool,
        &Side {
            endpoint: env.src.endpoint(),
            bucket: format!("{}/{prefix}", w.bucket),
        },
        &Side {
            endpoint: dst.endpoint(),
            bucket: format!("{}/{prefix}", w.bucket),
        },
        env.cfg.knobs,
        &run_dir.join("home"),
        &run_dir.join("report.json"),
    )?;
    let data = run_dir.join("perf.data");
    let mut perf = Command::new("perf");
    perf.args(["record", "-F", "999", "-o"])
        .arg(&data)
        .arg("--")
        .args(tools::argv(&inv.cmd))
        .env_clear();
    for (k, v) in inv.cmd.get_envs() {
        if let Some(v) = v {
            perf.env(k, v);
        }
    }
    let command = format!(
        "perf record -F 999 -- {} ({n} objects, {})",
        inv.shown,
        workloads::human(bytes)
    );
    let m = tools::run_measured(perf, &run_dir.join("perf"), env.cfg.run_limit);
    dst.stop_and_remove()?;
    let problem = match &m {
        Err(e) => Some(format!("perf record: {e}")),
        Ok(m) if m.status != 0 => Some(format!("perf record exit {}: {}", m.status, m.stderr_tail)),
        Ok(_) => None,
    };
    if problem.is_some() {
        return Ok(Profile {
            workload: w.id.into(),
            command,
            top: Vec::new(),
            all: Vec::new(),
            problem,
        });
    }
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "-q",
            "--no-children",
            "--sort",
            "dso,symbol",
            "-i",
        ])
        .arg(&data)
        .output()
        .context("perf report")?;
    let all: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(['-', ' ']).trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let top: Vec<String> = all.iter().take(25).cloned().collect();
    log(format!("{} profile: {} lines", w.id, top.len()));
    Ok(Profile {
        workload: w.id.into(),
        command,
        problem: if top.is_empty() {
            Some(format!(
                "perf report printed nothing: {}",
                tools::tail(&String::from_utf8_lossy(&out.stderr), 3)
            ))
        } else {
            None
        },
        top,
        all,
    })
}

/// W5: the differ probe in a child process (this same binary), `reps` times.
fn diff_memory(cfg: &Config, work: &Path) -> Result<DiffResult> {
    let exe = tools::harness_exe()?;
    let mut samples = Vec::new();
    for rep in 0..cfg.reps {
        let mut c = Command::new(&exe);
        c.args(["diff-memory", &cfg.diff_keys.to_string()])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        let m = tools::run_measured(c, &work.join(format!("w5-{rep}")), cfg.run_limit)?;
        log(format!(
            "W5 rep {rep}: {:.2} s, peak RSS {:.1} MiB: {}",
            m.wall_seconds,
            m.max_rss_kib as f64 / 1024.0,
            m.stdout.trim()
        ));
        if m.status != 0 {
            bail!("diff-memory failed: {}", m.stderr_tail);
        }
        samples.push(m);
    }
    Ok(DiffResult {
        keys: cfg.diff_keys,
        command: format!("snapferry-bench diff-memory {}", cfg.diff_keys),
        samples,
    })
}
