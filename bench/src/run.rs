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

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use indicatif::HumanBytes;
use testkit::load::{self, bucket_totals, fast_client as client, Pool};
use testkit::{usage, Minio, MinioOptions};

use crate::tools::{self, Knobs, Measured, Side, Tool, ToolId};
use crate::workloads::{self, Workload};

/// Where the results go (`run` and `report`).
#[derive(clap::Args)]
pub struct Outputs {
    /// Markdown results (its prose outside the generated blocks is kept).
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
    /// SVG chart.
    #[arg(long, default_value = "bench/throughput.svg")]
    pub chart: PathBuf,
    /// The command line RESULTS.md names as the way to regenerate it.
    #[arg(long, default_value = "bash bench/run.sh")]
    pub regenerate: String,
}

/// `snapferry-bench run`'s command line (`bench/run.sh` passes it through).
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub o: Outputs,
    /// Every sample as JSON (default: beside --out, results.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The snapferry binary.
    #[arg(long, default_value = "target/release/snapferry")]
    pub snapferry: PathBuf,
    /// The MinIO server binary (fixtures/install-minio.sh).
    #[arg(long)]
    pub minio: PathBuf,
    /// rclone (fixtures/install-rclone.sh).
    #[arg(long)]
    pub rclone: Option<PathBuf>,
    /// mc (fixtures/install-mc.sh).
    #[arg(long)]
    pub mc: Option<PathBuf>,
    /// s3sync (fixtures/install-s3sync.sh).
    #[arg(long)]
    pub s3sync: Option<PathBuf>,
    /// Why a tool is missing: TOOL=REASON (rclone, mc, s3sync); repeatable.
    #[arg(long, value_name = "TOOL=REASON")]
    pub unavailable: Vec<String>,
    /// Repetitions per tool and workload.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Repetitions of W2, whose every run is 20,000 synchronous PUTs (default: --reps).
    #[arg(long)]
    pub reps_w2: Option<usize>,
    /// Shrinks every workload (0.01 for a smoke run); 1 is the sizes.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Where the servers' data goes (a temporary directory is made inside).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
    /// The real repository W3's size distribution comes from.
    #[arg(long, default_value = "fixtures/repos/opensearch-2.19.6/repo")]
    pub fixture_repo: PathBuf,
    /// Transfers in flight, every tool.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Part size in MiB, every tool.
    #[arg(long, default_value_t = 16)]
    pub part_mib: u64,
    /// Multipart threshold in MiB, every tool.
    #[arg(long, default_value_t = 64)]
    pub threshold_mib: u64,
    /// Time limit of one run, seconds.
    #[arg(long, default_value_t = 600)]
    pub run_limit: u64,
    /// Workloads to run.
    #[arg(long, value_delimiter = ',', default_value = "W1,W2,W3,W4,W5")]
    pub workloads: Vec<String>,
    /// Profile snapferry on W1 and W2 with perf (when perf works here).
    #[arg(long)]
    pub profile: bool,
    /// Keys of the W5 diff.
    #[arg(long, default_value_t = 1_000_000)]
    pub diff_keys: u64,
    /// Which source snapferry was built from (shown beside its version).
    #[arg(long)]
    pub snapferry_revision: Option<String>,
    /// Requests in flight while writing the workloads.
    #[arg(long, default_value_t = 64)]
    pub gen_concurrency: usize,
    /// Index directories of W4, 5 shard directories each (default one per 1,000 blobs).
    #[arg(long)]
    pub w4_indices: Option<u64>,
}

/// One measured run of one tool on one workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub rep: usize,
    /// Position in that repetition's order.
    pub position: usize,
    pub measured: Measured,
    /// Requests by kind (`testkit::load::KINDS`) and by MinIO API name, both servers.
    pub requests: BTreeMap<String, u64>,
    pub apis: BTreeMap<String, u64>,
    /// CPU seconds both servers used during the run, and the rest of the machine
    /// (other processes: the machine is shared; /proc/stat less copier and servers).
    pub server_cpu_seconds: f64,
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
    pub tool: ToolId,
    /// The exact command line (endpoints as $SRC/$DST, no secrets).
    pub command: String,
    /// W4: the untimed run that brought the destination in sync for this tool.
    pub warmup: Option<Sample>,
    pub samples: Vec<Sample>,
    /// Why this tool did not run here (or stopped counting).
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkloadResult {
    pub id: String,
    pub title: String,
    pub objects: u64,
    pub bytes: u64,
    /// How it was built (W3), and a size summary.
    pub note: String,
    pub sizes: String,
    pub series: Vec<Series>,
    /// W1: the pipe-limit runs.
    pub pipe: Vec<PipeRun>,
    /// Seconds to write it to the source (and destination, W4).
    pub generate_seconds: f64,
    /// The largest object at or below the multipart threshold (one PUT, one buffer).
    pub largest_single: u64,
    pub has_multipart: bool,
    /// A no-op re-sync (W4) rather than a copy.
    pub noop: bool,
}

/// W5: the differ probe's runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DiffResult {
    pub keys: u64,
    pub command: String,
    pub samples: Vec<Measured>,
}

/// A flat perf profile of snapferry on one workload.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub workload: String,
    pub command: String,
    /// `perf report`'s top lines (percent, binary, symbol), and all of them.
    pub top: Vec<String>,
    #[serde(default)]
    pub all: Vec<String>,
    /// Why there is none.
    pub problem: Option<String>,
}

/// Everything measured: what `run` writes as JSON and `report` renders again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub knobs: Knobs,
    pub reps: usize,
    pub reps_w2: usize,
    pub scale: f64,
    /// Tools with versions, or why they cannot run here.
    pub tools: Vec<(ToolId, String, Option<String>)>,
    pub minio_version: String,
    pub workloads: Vec<WorkloadResult>,
    pub diff: Option<DiffResult>,
    pub profiles: Vec<Profile>,
    /// W1 once more with glibc's mmap threshold pinned (where the memory goes).
    #[serde(default)]
    pub malloc_diagnosis: Option<Sample>,
    pub total_seconds: f64,
    /// Seconds spent writing workloads.
    pub setup_seconds: f64,
    #[serde(default = "cores")]
    pub cores: f64,
    /// The machine, as `(what, value)`.
    #[serde(default)]
    pub machine: Vec<(String, String)>,
}

/// One pipe-limit run: the source drained with ranged GETs and the destination filled
/// with multipart PUTs of generated bytes, both at once, each `concurrency` requests
/// deep, the same bytes each way; no copier in between. Seconds until both sides
/// finished, and until each did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipeRun {
    /// Bytes each way.
    pub bytes: u64,
    pub wall_seconds: f64,
    pub get_seconds: f64,
    pub put_seconds: f64,
}

pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

pub fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

struct Env<'a> {
    a: &'a RunArgs,
    knobs: Knobs,
    rt: tokio::runtime::Runtime,
    pool: Pool,
    work: PathBuf,
    src: Minio,
    servers: usize,
}

/// A MinIO server on a fresh data directory under `work`, its metrics public (the harness
/// reads every tool's requests from them), its log `work/minio-N.log`.
fn minio(bin: &Path, work: &Path, n: usize) -> Minio {
    Minio::start_with(&MinioOptions {
        binary: Some(bin.to_path_buf()),
        data_in: Some(work.to_path_buf()),
        env: vec![("MINIO_PROMETHEUS_AUTH_TYPE".into(), "public".into())],
        log: Some(work.join(format!("minio-{n}.log"))),
    })
}

impl Env<'_> {
    /// The workload's objects into its bucket at `endpoint`.
    fn write(&self, endpoint: &str, w: &Workload) -> Result<()> {
        let (c, pool, n) = (client(endpoint), &self.pool, self.a.gen_concurrency);
        let gen = load::generate(&c, &w.bucket, &w.objects, pool, n);
        Ok(self.rt.block_on(gen)?)
    }

    /// Objects and bytes in `bucket` at `endpoint`.
    fn totals(&self, endpoint: &str, bucket: &str) -> Result<(u64, u64)> {
        Ok(self.rt.block_on(bucket_totals(&client(endpoint), bucket))?)
    }

    /// `tool` from the source's `bucket` (or `bucket/prefix`) into `dst`'s, its scratch
    /// directory and report under `dir`.
    fn invocation(&self, t: &Tool, b: &str, dst: &Minio, dir: &Path) -> Result<tools::Invocation> {
        let (s, d) = (Side(&self.src.endpoint, b), Side(&dst.endpoint, b));
        let (home, report) = (dir.join("home"), dir.join("report.json"));
        tools::invocation(t, s, d, self.knobs, &home, &report)
    }

    /// A fresh destination server with `bucket` created.
    fn server(&mut self, bucket: &str) -> Minio {
        self.servers += 1;
        let m = minio(&self.a.minio, &self.work, self.servers);
        let c = client(&m.endpoint);
        self.rt.block_on(testkit::create_bucket(&c, bucket));
        m
    }

    fn limit(&self) -> Duration {
        Duration::from_secs(self.a.run_limit)
    }

    /// One measured run of `tool` from the source's `w` bucket into `dst`, with extra
    /// environment variables for the tool; its command line as RESULTS.md shows it.
    fn measure(
        &self,
        tool: &Tool,
        w: &Workload,
        dst: &Minio,
        tag: &str,
        env: &[(&str, &str)],
    ) -> Result<(Sample, String)> {
        let dir = self.work.join("runs").join(tag);
        let inv = self.invocation(tool, &w.bucket, dst, &dir)?;
        let mut cmd = inv.cmd;
        cmd.envs(env.iter().copied());
        let (src, dpid) = (&self.src.endpoint, dst.pid());
        let counts =
            || -> Result<_> { Ok((load::api_counts(src)?, load::api_counts(&dst.endpoint)?)) };
        let cpu = || usage::cpu_seconds(self.src.pid()) + usage::cpu_seconds(dpid);
        let ((s0, d0), cpu0, busy0) = (counts()?, cpu(), usage::machine_busy_seconds());
        let m = tools::run_measured(cmd, &dir.join("out"), self.limit())?;
        let (busy1, cpu1, (s1, d1)) = (usage::machine_busy_seconds(), cpu(), counts()?);
        let (mut requests, mut apis) = (BTreeMap::new(), BTreeMap::new());
        load::add_delta(&s0, &s1, &mut requests, &mut apis);
        load::add_delta(&d0, &d1, &mut requests, &mut apis);
        let report = inv.report.and_then(|p| std::fs::read_to_string(p).ok());
        let report = report.and_then(|s| serde_json::from_str(&s).ok());
        // s3sync's exit 3 means "finished with warnings"; the copy still counts if the
        // destination checks out below (the warning is kept as a note).
        let warned = tool.id == ToolId::S3sync && m.status == 3 && !m.timed_out;
        let note = warned.then(|| format!("exit 3 (warnings): {}", m.stderr_tail));
        let mut problem = match (m.timed_out, m.status != 0 && !warned) {
            (true, _) => Some(format!("killed at the {} s limit", self.a.run_limit)),
            (false, true) => Some(format!("exit {}: {}", m.status, m.stderr_tail)),
            (false, false) => None,
        };
        let (wn, wb) = (w.objects.len() as u64, w.bytes());
        if problem.is_none() {
            let (n, b) = self.totals(&dst.endpoint, &w.bucket)?;
            let msg = format!("destination holds {n} objects / {b} bytes, expected {wn} / {wb}");
            problem = ((n, b) != (wn, wb)).then_some(msg);
        }
        let server_cpu_seconds = cpu1 - cpu0;
        let other_cpu_seconds = (busy1 - busy0 - server_cpu_seconds - m.cpu()).max(0.0);
        let s = Sample {
            rep: 0,
            position: 0,
            measured: m,
            requests,
            apis,
            server_cpu_seconds,
            other_cpu_seconds,
            problem,
            note,
            report,
        };
        Ok((s, inv.shown))
    }

    /// One timed run of `tool` into `series` (`rep` = usize::MAX: W4's untimed warm-up);
    /// a run with a problem stops the tool on this workload.
    fn sample(
        &self,
        series: &mut Series,
        tool: &Tool,
        w: &Workload,
        dst: &Minio,
        (rep, pos): (usize, usize),
    ) -> Result<()> {
        let tag = match rep {
            usize::MAX => format!("{}-{}-warmup", w.id, tool.id.name()),
            _ => format!("{}-{}-{rep}", w.id, tool.id.name()),
        };
        let (mut s, shown) = self.measure(tool, w, dst, &tag, &[])?;
        (s.rep, s.position, series.command) = (rep, pos, shown);
        let m = &s.measured;
        let bytes = if w.noop { 0 } else { w.bytes() };
        let mibps = mib(bytes) / m.wall_seconds;
        let problem = s.problem.as_ref().map(|p| format!(" — PROBLEM: {p}"));
        let (wall, cpu, rss) = (m.wall_seconds, m.cpu(), m.max_rss_kib / 1024);
        let what = format!("{wall:.2} s, {mibps:.1} MiB/s, CPU {cpu:.2} s, RSS {rss} MiB");
        let (req, problem) = (&s.requests, problem.unwrap_or_default());
        log(format!("{tag}: {what}, requests {req:?}{problem}"));
        if let Some(p) = &s.problem {
            series.skipped = Some(format!("failed on this workload: {p}"));
        }
        match rep {
            usize::MAX => series.warmup = Some(s),
            _ => series.samples.push(s),
        }
        Ok(())
    }

    /// W4's destination, identical to the source: a byte-identical copy of the source
    /// bucket's directory (same ETags and modification times, as a copier that preserves
    /// them would leave it), checked by a listing; PUTs if that does not give it.
    fn identical(&mut self, w: &Workload) -> Result<Minio> {
        let dst = self.server(&w.bucket);
        let from = self.src.data_dir().join(&w.bucket).join(".");
        let mut cp = Command::new("cp");
        let cp = cp.arg("-a").arg(from).arg(dst.data_dir().join(&w.bucket));
        let cp = cp.status();
        let totals = self.totals(&dst.endpoint, &w.bucket).ok();
        if !cp.is_ok_and(|s| s.success()) || totals != Some((w.objects.len() as u64, w.bytes())) {
            let msg = "the directory copy failed; writing the destination with PUTs";
            log(format!("{}: {msg}", w.id));
            self.write(&dst.endpoint, w)?;
        }
        Ok(dst)
    }

    /// Every tool (and for W1 the pipe limit) on `w`, `reps` times in alternating order.
    fn workload(
        &mut self,
        w: &Workload,
        tools: &[Tool],
        reps: usize,
        mut gen: f64,
    ) -> Result<WorkloadResult> {
        let new = |t: &Tool| Series {
            tool: t.id,
            command: String::new(),
            warmup: None,
            samples: Vec::new(),
            skipped: t.unavailable.clone(),
        };
        let mut series: Vec<Series> = tools.iter().map(new).collect();
        let runs = |&i: &usize| tools[i].bin.is_some();
        let run: Vec<usize> = (0..tools.len()).filter(runs).collect();
        let t = Instant::now();
        let shared = w.noop.then(|| self.identical(w)).transpose()?;
        gen += t.elapsed().as_secs_f64();
        for &i in run.iter().filter(|_| shared.is_some()) {
            let dst = shared.as_ref().expect("W4's destination");
            self.sample(&mut series[i], &tools[i], w, dst, (usize::MAX, 0))?;
        }
        // Entries: the tools, and for W1 the pipe limit (index = run.len()).
        let n = run.len() + usize::from(w.id == "W1");
        let mut pipe = Vec::new();
        for rep in 0..reps {
            let mut order: Vec<usize> = (0..n).collect();
            if rep % 2 == 1 {
                order.reverse();
            }
            for (pos, &e) in order.iter().enumerate() {
                if run.get(e).is_some_and(|&i| series[i].skipped.is_some()) {
                    continue;
                }
                let fresh = shared.is_none().then(|| self.server(&w.bucket));
                let dst = shared.as_ref().or(fresh.as_ref()).expect("a destination");
                match run.get(e) {
                    Some(&i) => self.sample(&mut series[i], &tools[i], w, dst, (rep, pos))?,
                    None => pipe.push(self.pipe(w, dst, rep)?),
                }
            }
        }
        let (thr, sizes) = (self.knobs.threshold, w.objects.iter().map(|o| o.size));
        Ok(WorkloadResult {
            id: w.id.to_string(),
            title: w.title.clone(),
            objects: w.objects.len() as u64,
            bytes: w.bytes(),
            note: w.note.clone(),
            sizes: workloads::size_summary(&w.objects, thr),
            series,
            pipe,
            generate_seconds: gen,
            largest_single: sizes.clone().filter(|&s| s <= thr).max().unwrap_or(0),
            has_multipart: sizes.clone().any(|s| s > thr),
            noop: w.noop,
        })
    }

    /// One pipe-limit run of `w` into `dst`.
    fn pipe(&self, w: &Workload, dst: &Minio, rep: usize) -> Result<PipeRun> {
        let (src, dc) = (client(&self.src.endpoint), client(&dst.endpoint));
        let p = pipe_limit([&src, &dc], w, self.knobs, &self.pool);
        let p = self.rt.block_on(p)?;
        let (get, put, mibps) = (p.get_seconds, p.put_seconds, mib(p.bytes) / p.wall_seconds);
        log(format!("{} pipe limit rep {rep}: {mibps:.1} MiB/s (GETs done at {get:.1} s, PUTs at {put:.1} s)", w.id));
        Ok(p)
    }
}

/// Measures the pipe limit over `w`'s objects (read from `src`, written as `pipe/<key>`
/// to `dst`, the same bucket name on both) with part-sized ranges and parts, as many in
/// flight as the knobs' concurrency.
async fn pipe_limit(
    [src, dst]: [&Client; 2],
    w: &Workload,
    k: Knobs,
    pool: &Pool,
) -> Result<PipeRun> {
    let (bucket, objects, conc, part) = (&w.bucket, &w.objects, k.concurrency, k.part_size);
    let start = Instant::now();
    // `(object index, part number, start, end)` of every `part`-sized range.
    let each = |(i, size): (usize, u64)| {
        let range = move |p: u64| (i, p as i32 + 1, p * part, ((p + 1) * part).min(size));
        (0..size.div_ceil(part)).map(range)
    };
    let sizes = objects.iter().map(|o| o.size).enumerate();
    let jobs: Vec<(usize, i32, u64, u64)> = sizes.flat_map(each).collect();
    let get_side = async {
        let get = |&(i, _, a, b): &(usize, i32, u64, u64)| async move {
            let key = &objects[i].key;
            let err = load::sdk_err(format!("get {key}"));
            let r = src.get_object().bucket(bucket).key(key);
            // Drain the body chunk by chunk, holding no more than one at a time.
            let r = r.range(format!("bytes={a}-{}", b - 1)).send().await;
            let (mut body, mut got) = (r.map_err(err)?.body, 0u64);
            while let Some(chunk) = body.try_next().await? {
                got += chunk.len() as u64;
            }
            ensure!(got == b - a, "short read of {key}: {got} of {}", b - a);
            Ok(())
        };
        let gets = futures::stream::iter(jobs.iter().map(Ok));
        gets.try_for_each_concurrent(conc, get).await?;
        Ok::<_, anyhow::Error>(start.elapsed().as_secs_f64())
    };
    let put_side = async {
        // Every upload first, then all parts through one bounded pool.
        let keys: Vec<String> = objects.iter().map(|o| format!("pipe/{}", o.key)).collect();
        let mut ids = Vec::new();
        for k in &keys {
            ids.push(load::create_upload(dst, bucket, k).await?);
        }
        let (keys, ids) = (&keys, &ids);
        let put = |(i, n, a, b): (usize, i32, u64, u64)| async move {
            let (key, body) = (&keys[i], pool.chunk(&keys[i], n as u64, b - a));
            let part = load::upload_part(dst, (bucket, key, &ids[i]), n, body).await?;
            Ok::<_, anyhow::Error>((i, part))
        };
        let puts = futures::stream::iter(jobs.iter().copied().map(put));
        let done: Vec<_> = puts.buffer_unordered(conc).try_collect().await?;
        for (i, (k, id)) in keys.iter().zip(ids).enumerate() {
            let parts = done.iter().filter(|(j, _)| *j == i).map(|(_, p)| p.clone());
            load::complete(dst, (bucket, k, id), parts.collect()).await?;
        }
        Ok::<_, anyhow::Error>(start.elapsed().as_secs_f64())
    };
    let (g, p) = tokio::join!(get_side, put_side);
    let (get_seconds, put_seconds, wall_seconds) = (g?, p?, start.elapsed().as_secs_f64());
    let bytes = objects.iter().map(|o| o.size).sum();
    Ok(PipeRun {
        bytes,
        wall_seconds,
        get_seconds,
        put_seconds,
    })
}

/// The tools as the command line gives them, each probed for its version.
pub fn tools(a: &RunArgs) -> Vec<Tool> {
    let peers = [&a.rclone, &a.mc, &a.s3sync].map(Option::as_ref);
    let bins = [Some(&a.snapferry)].into_iter().chain(peers);
    let probe = |(id, bin): (ToolId, Option<&PathBuf>)| {
        let key = format!("{}=", id.key());
        let why = a.unavailable.iter().find_map(|r| r.strip_prefix(&key));
        let mut t = Tool::probe(id, bin.cloned(), why.map(str::to_string));
        if let (ToolId::Snapferry, Some(r)) = (id, &a.snapferry_revision) {
            t.version = format!("{} ({r})", t.version);
        }
        let status = match &t.unavailable {
            Some(w) => format!("cannot run here: {w}"),
            None => t.version.clone(),
        };
        log(format!("{}: {status}", id.name()));
        t
    };
    ToolId::ALL.into_iter().zip(bins).map(probe).collect()
}

/// Fails when `dir`'s filesystem has less than `need` bytes free.
fn check_disk(dir: &Path, need: u64) -> Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statvfs fills a plain struct for a valid C string path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let free = HumanBytes(st.f_bavail as u64 * st.f_frsize as u64);
    let (need, dir) = (HumanBytes(need), dir.display());
    let needs = "this run needs about";
    log(format!("disk: {free} free under {dir}, {needs} {need}"));
    ensure!(free.0 >= need.0, "not enough disk under {dir}: {free} free, about {need} needed (source copies of every workload plus the largest destination); free space or pass --work-dir on a larger filesystem, or --scale below 1");
    Ok(())
}

/// Runs everything and returns the results.
pub fn run(a: &RunArgs) -> Result<Results> {
    let t0 = Instant::now();
    let knobs = Knobs {
        concurrency: a.concurrency,
        part_size: a.part_mib << 20,
        threshold: a.threshold_mib << 20,
    };
    let (reps, reps_w2) = (a.reps.max(1), a.reps_w2.unwrap_or(a.reps).max(1));
    let version = Command::new(&a.minio).arg("--version").output();
    let version = version.with_context(|| format!("run {} --version", a.minio.display()))?;
    let minio_version = String::from_utf8_lossy(&version.stdout);
    let minio_version = minio_version.lines().next().unwrap_or("").to_string();
    let want = |id: &str| a.workloads.iter().any(|w| w.eq_ignore_ascii_case(id));
    let built = [
        ("W4", workloads::w4(a.scale, a.w4_indices)),
        ("W1", workloads::w1(a.scale)),
        ("W2", workloads::w2(a.scale)),
    ];
    let keep = |(id, w): (&str, Workload)| want(id).then_some(w);
    let mut ws: Vec<Workload> = built.into_iter().filter_map(keep).collect();
    if want("W3") {
        let target = ((2u64 << 30) as f64 * a.scale) as u64;
        ws.push(workloads::w3(&a.fixture_repo, target)?);
    }

    std::fs::create_dir_all(&a.work_dir)?;
    // Source copies of every workload, the largest destination, MinIO's metadata.
    let sizes: Vec<u64> = ws.iter().map(Workload::bytes).collect();
    let data = sizes.iter().sum::<u64>() + sizes.iter().max().unwrap_or(&0);
    check_disk(&a.work_dir, data + data / 10 + (1 << 30))?;
    let mut tmp = tempfile::Builder::new();
    let tmp = tmp.prefix("snapferry-bench.").tempdir_in(&a.work_dir)?;
    let work = tmp.path().to_path_buf();
    log(format!("work directory {}", work.display()));
    // Private copies of snapferry and of this harness: a rebuild of the workspace while
    // the run goes on (the machine is shared) cannot swap binaries mid-run.
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin)?;
    let harness = bin.join("snapferry-bench");
    std::fs::copy(std::env::current_exe()?, &harness).context("copy the harness")?;
    tools::set_harness_exe(harness);
    let all_tools = tools(a);
    let mut run_tools = all_tools.clone();
    if let Some(b) = &mut run_tools[0].bin {
        let to = bin.join("snapferry");
        std::fs::copy(&*b, &to).with_context(|| format!("copy {}", b.display()))?;
        *b = to;
    }

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    let rt = rt.worker_threads(2).enable_all().build()?;
    let src = minio(&a.minio, &work, 0);
    log(format!("source server {}", src.endpoint));
    let (pool, servers, work2) = (Pool::default(), 0, work.clone());
    let mut env = Env {
        a,
        knobs,
        rt,
        pool,
        work: work2,
        src,
        servers,
    };

    // Every workload on the source first, then the runs.
    let mut gen = Vec::new();
    for w in &ws {
        let t = Instant::now();
        let c = client(&env.src.endpoint);
        env.rt.block_on(testkit::create_bucket(&c, &w.bucket));
        env.write(&env.src.endpoint, w)?;
        gen.push(t.elapsed().as_secs_f64());
        let (n, b, s) = (w.objects.len(), HumanBytes(w.bytes()), gen[gen.len() - 1]);
        log(format!("{}: wrote {n} objects, {b} in {s:.1} s", w.id));
    }
    let mut results = Vec::new();
    for (w, secs) in ws.iter().zip(gen) {
        let reps = if w.id == "W2" { reps_w2 } else { reps };
        results.push(env.workload(w, &run_tools, reps, secs)?);
    }

    let (mut profiles, mut malloc_diagnosis) = (Vec::new(), None);
    let sf = run_tools.first().filter(|t| t.bin.is_some()); // ToolId::ALL[0]: snapferry
    if let (true, Some(sf)) = (a.profile, sf) {
        for w in ws.iter().filter(|w| w.id == "W1" || w.id == "W2") {
            profiles.push(profile(&mut env, sf, w)?);
        }
        // Where does W1's memory above the part buffers go? The same copy once more with
        // glibc's mmap threshold pinned at 1 MiB: every part buffer is then mapped and
        // unmapped, so freed buffers cannot linger in malloc's heaps.
        if let Some(w) = ws.iter().find(|w| w.id == "W1") {
            let (dst, pin) = (env.server(&w.bucket), "MALLOC_MMAP_THRESHOLD_=1048576");
            let env_var = [pin.split_once('=').expect("NAME=value")];
            let (mut s, _) = env.measure(sf, w, &dst, "W1-snapferry-mmap-threshold", &env_var)?;
            let (cpu, rss) = (s.measured.cpu(), s.measured.max_rss_kib / 1024);
            log(format!("W1 with {pin}: CPU {cpu:.2} s, RSS {rss} MiB"));
            s.note = Some(pin.into());
            malloc_diagnosis = Some(s);
        }
    }
    let diff = want("W5").then(|| diff_memory(a, &work)).transpose()?;

    drop(env); // the servers stop before their directories go
    drop(tmp);
    results.sort_by(|a, b| a.id.cmp(&b.id));
    let setup_seconds = results.iter().map(|w| w.generate_seconds).sum();
    let tool = |t: Tool| (t.id, t.version, t.unavailable);
    Ok(Results {
        knobs,
        reps,
        reps_w2,
        scale: a.scale,
        tools: all_tools.into_iter().map(tool).collect(),
        minio_version,
        workloads: results,
        diff,
        profiles,
        malloc_diagnosis,
        total_seconds: t0.elapsed().as_secs_f64(),
        setup_seconds,
        cores: cores(),
        machine: Vec::new(),
    })
}

/// One extra, untimed snapferry run under `perf record` over a slice of the workload
/// (the objects under the first key's shard: W1 4 blobs, W2 ~200), and `perf report`'s
/// lines (all, and the top 25).
fn profile(env: &mut Env, tool: &Tool, w: &Workload) -> Result<Profile> {
    let dst = env.server(&w.bucket);
    let dir = env.work.join("runs").join(format!("{}-perf", w.id));
    let first = w.objects.first().map_or("", |o| o.key.as_str());
    let dir_of = |(p, _): (&str, &str)| format!("{p}/");
    let prefix = first.rsplit_once('/').map(dir_of).unwrap_or_default();
    let slice = w.objects.iter().filter(|o| o.key.starts_with(&prefix));
    let (n, bytes) = slice.fold((0, 0), |(n, b), o| (n + 1, b + o.size));
    let inv = env.invocation(tool, &format!("{}/{prefix}", w.bucket), &dst, &dir)?;
    let (data, c) = (dir.join("perf.data"), &inv.cmd);
    let mut perf = Command::new("perf");
    perf.args(["record", "-F", "999", "-o"]).arg(&data);
    perf.arg("--").arg(c.get_program()).args(c.get_args());
    perf.env_clear();
    perf.envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let (shown, bytes) = (&inv.shown, HumanBytes(bytes));
    let command = format!("perf record -F 999 -- {shown} ({n} objects, {bytes})");
    let problem = match tools::run_measured(perf, &dir.join("perf"), env.limit()) {
        Err(e) => Some(format!("perf record: {e}")),
        Ok(m) if m.status != 0 => Some(format!("perf record exit {}: {}", m.status, m.stderr_tail)),
        Ok(_) => None,
    };
    let workload = w.id.to_string();
    let mut p = Profile {
        workload,
        command,
        problem,
        ..Profile::default()
    };
    if p.problem.is_some() {
        return Ok(p);
    }
    // `perf report`'s lines: all, and the top 25.
    let mut report = Command::new("perf");
    report.args("report --stdio -q --no-children --sort dso,symbol -i".split(' '));
    let out = report.arg(&data).output().context("perf report")?;
    let lines = String::from_utf8_lossy(&out.stdout);
    let lines = lines.lines().map(|l| l.trim_end_matches(['-', ' ']).trim());
    let keep = |l: &&str| !l.is_empty() && !l.starts_with('#');
    p.all = lines.filter(keep).map(String::from).collect();
    p.top = p.all.iter().take(25).cloned().collect();
    if p.top.is_empty() {
        let err = tools::tail(&String::from_utf8_lossy(&out.stderr), 3);
        p.problem = Some(format!("perf report printed nothing: {err}"));
    }
    Ok(p)
}

/// W5: the differ probe in a child process (this same binary), `reps` times.
fn diff_memory(a: &RunArgs, work: &Path) -> Result<DiffResult> {
    let (mut samples, keys) = (Vec::new(), a.diff_keys);
    for rep in 0..a.reps.max(1) {
        let mut c = Command::new(tools::harness_exe()?);
        c.args(["diff-memory", &keys.to_string()]).env_clear();
        c.env("PATH", std::env::var("PATH").unwrap_or_default());
        let out = work.join(format!("w5-{rep}"));
        let m = tools::run_measured(c, &out, Duration::from_secs(a.run_limit))?;
        let (wall, line) = (m.wall_seconds, m.stdout.trim());
        log(format!("W5 rep {rep}: {wall:.2} s: {line}"));
        if m.status != 0 {
            bail!("diff-memory failed: {}", m.stderr_tail);
        }
        samples.push(m);
    }
    let command = format!("snapferry-bench diff-memory {keys}");
    Ok(DiffResult {
        keys,
        command,
        samples,
    })
}
