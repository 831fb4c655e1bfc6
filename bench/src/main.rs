//! `snapferry-bench`'s command line; the harness is the library (see its docs).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use snapferry_bench::run::{self, log, Outputs, Results};
use snapferry_bench::{chart, diff_memory, report, tools};

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
        #[arg(default_value_t = 1_000_000)]
        keys: u64,
    },
    /// The whole comparison; writes a JSON of every sample, the chart and RESULTS.md.
    Run(Box<run::RunArgs>),
    /// Rewrites RESULTS.md's generated blocks and the chart from a results JSON.
    Report {
        /// The JSON `run` wrote.
        #[arg(long, default_value = "bench/results.json")]
        json: PathBuf,
        #[command(flatten)]
        o: Outputs,
    },
    /// (internal) Runs a command and writes its wall time, CPU and peak RSS as JSON.
    #[command(hide = true)]
    MeasureChild {
        /// Kill the command after this many milliseconds.
        #[arg(long)]
        limit_ms: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(last = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
}

/// RESULTS.md (its generated blocks) and the chart from the results.
fn write_outputs(r: &Results, o: &Outputs) -> Result<()> {
    chart::write(r, &o.chart)?;
    let name = o.chart.file_name().unwrap_or_default().to_string_lossy();
    let (out, chart) = (o.out.display(), o.chart.display());
    let old = match std::fs::read_to_string(&o.out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        old => Some(old.with_context(|| format!("read {out}"))?),
    };
    let md = report::merge(old.as_deref(), &report::blocks(r, &o.regenerate, &name));
    let md = md.with_context(|| format!("merge into {out}"))?;
    std::fs::write(&o.out, md).with_context(|| format!("write {out}"))?;
    let min = r.total_seconds / 60.0;
    log(format!(
        "wrote {out} and {chart} (the run took {min:.1} min)"
    ));
    for (target, measured, met) in report::targets(r) {
        log(format!("{}: {target} — {measured}", report::verdict(met)));
    }
    Ok(())
}

fn read_json(json: &Path) -> Result<Results> {
    let s = std::fs::read_to_string(json).with_context(|| format!("read {}", json.display()))?;
    let mut r: Results = serde_json::from_str(&s)?;
    if r.machine.is_empty() {
        r.machine = machine(&std::env::temp_dir());
    }
    Ok(r)
}

fn main() -> ExitCode {
    let res = match Cli::parse().cmd {
        Cmd::DiffMemory { keys } => diff_memory::main(keys),
        Cmd::Report { json, o } => read_json(&json).and_then(|r| write_outputs(&r, &o)),
        Cmd::MeasureChild {
            limit_ms,
            out,
            argv,
        } => {
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..]).stdin(std::process::Stdio::null());
            let m = tools::Measured::direct(c, Duration::from_millis(limit_ms));
            m.and_then(|m| Ok(std::fs::write(&out, serde_json::to_string(&m)?)?))
        }
        Cmd::Run(a) => run::run(&a).and_then(|mut r| {
            r.machine = machine(&a.work_dir);
            let json = a.json.clone();
            let json = json.unwrap_or_else(|| a.o.out.with_file_name("results.json"));
            let text = serde_json::to_string_pretty(&r)?;
            std::fs::write(&json, text).with_context(|| format!("write {}", json.display()))?;
            log(format!("wrote {}", json.display()));
            write_outputs(&r, &a.o)
        }),
    };
    if let Err(e) = res {
        eprintln!("snapferry-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A few facts about the machine, as `(what, value)`; `work_dir` holds the servers' data.
fn machine(work_dir: &Path) -> Vec<(String, String)> {
    let sh = |cmd: &str, args: &[&str]| {
        let o = std::process::Command::new(cmd).args(args).output().ok();
        let o = o.filter(|o| o.status.success()).map(|o| o.stdout);
        let o = o.map(|o| String::from_utf8_lossy(&o).trim().to_string());
        o.unwrap_or_else(|| "unknown".into())
    };
    // The value after `key` and `sep` on the first line of `text` that starts with `key`.
    let field = |text: &str, key: &str, sep: char| {
        let line = text.lines().find(|l| l.starts_with(key))?;
        Some(line.split_once(sep)?.1.trim().trim_matches('"').to_string())
    };
    let file = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let unknown = || "unknown".to_string();
    let model = field(&file("/proc/cpuinfo"), "model name", ':').unwrap_or_else(unknown);
    let hyper = field(&sh("lscpu", &[]), "Hypervisor vendor", ':');
    let hyper = hyper.map_or(String::new(), |v| format!(", virtualised ({v})"));
    let kib = field(&file("/proc/meminfo"), "MemTotal", ':');
    let kib = kib.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    let mem = kib.map_or_else(unknown, |k| format!("{:.1} GiB", k / (1 << 20) as f64));
    let os = field(&file("/etc/os-release"), "PRETTY_NAME", '=').unwrap_or_else(unknown);
    let dir = work_dir.display().to_string();
    let df = sh("df", &["-h", "--output=source,fstype,size,avail", &dir]);
    let line = df.lines().nth(1).unwrap_or("unknown");
    let d: Vec<&str> = line.split_whitespace().collect();
    let cell = |i: usize| d.get(i).copied().unwrap_or("?");
    let (dev, fs, size, free) = (cell(0), cell(1), cell(2), cell(3));
    let name = dev.rsplit('/').next().unwrap_or_default();
    let rota = match file(&format!("/sys/block/{name}/queue/rotational")).trim() {
        "0" => ", non-rotational",
        "1" => ", rotational",
        _ => "",
    };
    let disk = format!(
        "{dev} ({fs}{rota}), {size} with {free} free, holding the servers' data under {dir}"
    );
    let cores = std::thread::available_parallelism().map(|n| n.get().to_string());
    let rows = [
        ("CPU", format!("{model}{hyper}")),
        ("cores", cores.unwrap_or_else(|_| unknown())),
        ("memory", mem),
        ("OS", os),
        ("kernel", sh("uname", &["-srm"])),
        ("disk", disk),
        ("network", "loopback only (127.0.0.1)".into()),
        ("Rust", sh("rustc", &["--version"])),
        ("Go", sh("go", &["version"])),
    ];
    rows.map(|(k, v)| (k.to_string(), v)).into()
}
