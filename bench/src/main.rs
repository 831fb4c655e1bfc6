//! snapferry's benchmark harness (issue 6).
//!
//! ```text
//! snapferry-bench run --out bench/RESULTS.md --chart bench/throughput.svg [options]
//! snapferry-bench diff-memory [KEYS]
//! ```
//! `run` starts its own pair of MinIO servers on loopback, writes each workload to the
//! source once, runs snapferry, rclone, `mc mirror` and s3sync against the same data in
//! alternating order, measures the pipe limit, and writes RESULTS.md, a JSON file of
//! every sample, and an SVG chart. `bash bench/run.sh` builds and installs everything
//! and runs it. `diff-memory` is the differ memory probe (W5) the README quotes.
//!
//! Layout: `run.rs` (the orchestration), `servers.rs` (MinIO and its request counters),
//! `s3util.rs` (the harness's own S3 client: workload writing, checks, pipe limit),
//! `workloads.rs` (W1–W4), `tools.rs` (command lines and the measured child process),
//! `stats.rs`, `report.rs` (RESULTS.md) and `chart.rs` (SVG), `diff_memory.rs` (W5).

mod chart;
mod diff_memory;
mod report;
mod run;
mod s3util;
mod servers;
mod stats;
mod tools;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use tools::{Knobs, Tool, ToolId};

#[derive(Parser)]
#[command(name = "snapferry-bench", about = "snapferry's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The differ memory probe: KEYS source keys against KEYS/2 destination keys.
    DiffMemory {
        /// Source keys.
        #[arg(default_value_t = 1_000_000)]
        keys: u64,
    },
    /// The whole comparison; writes RESULTS.md, a JSON of every sample and the chart.
    Run(Box<RunArgs>),
    /// Rewrites RESULTS.md and the chart from a results JSON written by `run`.
    Report {
        /// The JSON `run` wrote.
        #[arg(long, default_value = "bench/results.json")]
        json: PathBuf,
        /// Markdown results.
        #[arg(long, default_value = "bench/RESULTS.md")]
        out: PathBuf,
        /// SVG chart.
        #[arg(long, default_value = "bench/throughput.svg")]
        chart: PathBuf,
        /// The command line RESULTS.md names as the way to regenerate it.
        #[arg(long, default_value = "bash bench/run.sh")]
        regenerate: String,
    },
    /// (internal) Runs a command and writes its wall time, CPU and peak RSS as JSON.
    #[command(hide = true)]
    MeasureChild {
        /// Kill the command after this many milliseconds.
        #[arg(long)]
        limit_ms: u64,
        /// Where the JSON goes.
        #[arg(long)]
        out: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Markdown results.
    #[arg(long, default_value = "bench/RESULTS.md")]
    out: PathBuf,
    /// SVG chart.
    #[arg(long, default_value = "bench/throughput.svg")]
    chart: PathBuf,
    /// Every sample as JSON (default: beside --out, results.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The snapferry binary.
    #[arg(long, default_value = "target/release/snapferry")]
    snapferry: PathBuf,
    /// The MinIO server binary (fixtures/install-minio.sh).
    #[arg(long)]
    minio: PathBuf,
    /// rclone (fixtures/install-rclone.sh).
    #[arg(long)]
    rclone: Option<PathBuf>,
    /// mc (fixtures/install-mc.sh).
    #[arg(long)]
    mc: Option<PathBuf>,
    /// s3sync (fixtures/install-s3sync.sh).
    #[arg(long)]
    s3sync: Option<PathBuf>,
    /// Why a tool is missing: TOOL=REASON (rclone, mc, s3sync); repeatable.
    #[arg(long, value_name = "TOOL=REASON")]
    unavailable: Vec<String>,
    /// Repetitions per tool and workload.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Repetitions of W2 (default: --reps).
    #[arg(long)]
    reps_w2: Option<usize>,
    /// Shrinks every workload (0.01 for a smoke run); 1 is the issue's sizes.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Where the servers' data goes (a temporary directory is made inside).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// The real repository W3's size distribution comes from.
    #[arg(long, default_value = "fixtures/repos/opensearch-2.19.6/repo")]
    fixture_repo: PathBuf,
    /// Transfers in flight, every tool.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Part size in MiB, every tool.
    #[arg(long, default_value_t = 16)]
    part_mib: u64,
    /// Multipart threshold in MiB, every tool.
    #[arg(long, default_value_t = 64)]
    threshold_mib: u64,
    /// Time limit of one run, seconds.
    #[arg(long, default_value_t = 600)]
    run_limit: u64,
    /// Workloads to run.
    #[arg(long, value_delimiter = ',', default_value = "W1,W2,W3,W4,W5")]
    workloads: Vec<String>,
    /// Profile snapferry on W1 and W2 with perf (when perf works here).
    #[arg(long)]
    profile: bool,
    /// Keys of the W5 diff.
    #[arg(long, default_value_t = 1_000_000)]
    diff_keys: u64,
    /// Which source snapferry was built from (shown beside its version).
    #[arg(long)]
    snapferry_revision: Option<String>,
    /// Requests in flight while writing the workloads.
    #[arg(long, default_value_t = 64)]
    gen_concurrency: usize,
    /// Index directories of W4, 5 shard directories each (default: one per 1,000 blobs,
    /// 100 at full scale).
    #[arg(long)]
    w4_indices: Option<u64>,
    /// The command line RESULTS.md names as the way to regenerate it.
    #[arg(long, default_value = "bash bench/run.sh")]
    regenerate: String,
}

fn tool(id: ToolId, bin: Option<PathBuf>, reasons: &[String]) -> Tool {
    let key = match id {
        ToolId::Snapferry => "snapferry",
        ToolId::Rclone => "rclone",
        ToolId::Mc => "mc",
        ToolId::S3sync => "s3sync",
    };
    let reason = reasons
        .iter()
        .find_map(|r| r.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(str::to_string);
    if reason.is_some() && bin.is_none() {
        return Tool::probe(id, None, reason);
    }
    Tool::probe(id, bin, reason)
}

fn run(a: RunArgs) -> Result<()> {
    let mut sf = tool(ToolId::Snapferry, Some(a.snapferry.clone()), &a.unavailable);
    if let Some(r) = &a.snapferry_revision {
        sf.version = format!("{} ({r})", sf.version);
    }
    let tools = vec![
        sf,
        tool(ToolId::Rclone, a.rclone.clone(), &a.unavailable),
        tool(ToolId::Mc, a.mc.clone(), &a.unavailable),
        tool(ToolId::S3sync, a.s3sync.clone(), &a.unavailable),
    ];
    for t in &tools {
        match &t.unavailable {
            None => eprintln!("[bench] {}: {}", t.id.name(), t.version),
            Some(w) => eprintln!("[bench] {}: cannot run here: {w}", t.id.name()),
        }
    }
    let cfg = run::Config {
        minio: a.minio.clone(),
        tools,
        reps: a.reps.max(1),
        reps_w2: a.reps_w2.unwrap_or(a.reps).max(1),
        scale: a.scale,
        work_dir: a.work_dir.clone(),
        fixture_repo: a.fixture_repo.clone(),
        knobs: Knobs {
            concurrency: a.concurrency,
            part_size: a.part_mib << 20,
            threshold: a.threshold_mib << 20,
        },
        run_limit: Duration::from_secs(a.run_limit),
        workloads: a.workloads.clone(),
        profile: a.profile,
        diff_keys: a.diff_keys,
        gen_concurrency: a.gen_concurrency,
        w4_indices: a.w4_indices,
    };
    let mut results = run::run(&cfg)?;
    results.machine = report::machine(&a.work_dir);
    let json = a
        .json
        .clone()
        .unwrap_or_else(|| a.out.with_file_name("results.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("write {}", json.display()))?;
    eprintln!("[bench] wrote {}", json.display());
    write_outputs(&results, &a.out, &a.chart, &a.regenerate)
}

/// RESULTS.md and the chart from the results.
fn write_outputs(
    results: &run::Results,
    out: &std::path::Path,
    chart_path: &std::path::Path,
    regenerate: &str,
) -> Result<()> {
    let cores = results.cores;
    chart::write(results, chart_path, cores)?;
    let chart_rel = chart_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let md = report::markdown(results, &results.machine, cores, regenerate, &chart_rel);
    std::fs::write(out, md).with_context(|| format!("write {}", out.display()))?;
    eprintln!(
        "[bench] wrote {} and {} (the run took {:.1} min)",
        out.display(),
        chart_path.display(),
        results.total_seconds / 60.0
    );
    for t in report::targets(results, cores) {
        eprintln!("[bench] {:?}: {} — {}", t.verdict, t.target, t.measured);
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::DiffMemory { keys } => diff_memory::main(keys),
        Cmd::Report {
            json,
            out,
            chart,
            regenerate,
        } => {
            let res = std::fs::read_to_string(&json)
                .with_context(|| format!("read {}", json.display()))
                .and_then(|s| Ok(serde_json::from_str::<run::Results>(&s)?))
                .and_then(|mut r| {
                    if r.machine.is_empty() {
                        r.machine = report::machine(&std::env::temp_dir());
                    }
                    write_outputs(&r, &out, &chart, &regenerate)
                });
            if let Err(e) = res {
                eprintln!("snapferry-bench: {e:#}");
                std::process::exit(1);
            }
        }
        Cmd::MeasureChild {
            limit_ms,
            out,
            argv,
        } => {
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..]).stdin(std::process::Stdio::null());
            let res = tools::measure_direct(c, Duration::from_millis(limit_ms))
                .and_then(|m| Ok(std::fs::write(&out, serde_json::to_string(&m)?)?));
            if let Err(e) = res {
                eprintln!("snapferry-bench measure-child: {e:#}");
                std::process::exit(1);
            }
        }
        Cmd::Run(a) => {
            if let Err(e) = run(*a) {
                eprintln!("snapferry-bench: {e:#}");
                std::process::exit(1);
            }
        }
    }
}
