//! The copiers and how each is run: command lines with each tool's fair best (the same
//! concurrency, part size, multipart threshold and checksum work as snapferry where the
//! tool has the knob), and the measurement of one run as a child process: wall time,
//! CPU (user + system) and peak RSS from `wait4`'s rusage, as the OS reports them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::{ACCESS_KEY as AK, SECRET_KEY as SK};

static HARNESS_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Children (`measure-child`, `diff-memory`) run from this copy of the harness binary: a
/// rebuild of the workspace during a run must not swap the binary mid-run.
pub fn set_harness_exe(p: PathBuf) {
    let _ = HARNESS_EXE.set(p);
}

pub fn harness_exe() -> Result<PathBuf> {
    Ok(HARNESS_EXE
        .get()
        .cloned()
        .map_or_else(std::env::current_exe, Ok)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ToolId {
    Snapferry,
    Rclone,
    Mc,
    S3sync,
}

/// Per tool: its name in the tables, its key in `--unavailable TOOL=REASON`, the argument
/// that prints its version, and its command line (`{c}` concurrency, `{part}`/`{thr}`
/// part size and multipart threshold in MiB, `{se}`/`{sb}` source endpoint and bucket,
/// `{de}`/`{db}` destination's, `{home}` its scratch directory, `{report}` snapferry's
/// JSON report). s3sync built without its default features has no --version: --help
/// probes it and the version comes from its install directory (s3sync-<version>).
const TOOLS: [(&str, &str, &str, &str); 4] = [
    ("snapferry", "snapferry", "--version", "sync s3://{sb} s3://{db} --src-endpoint {se} --dst-endpoint {de} --concurrency {c} --part-size {part}MiB --multipart-threshold {thr}MiB --snapshot-aware off --progress never --report {report}"),
    ("rclone", "rclone", "version", "sync src:{sb} dst:{db} --transfers {c} --checkers {c} --s3-upload-concurrency 4 --s3-chunk-size {part}Mi --s3-upload-cutoff {thr}Mi --fast-list --checksum --s3-no-check-bucket -q"),
    ("mc mirror", "mc", "--version", "--config-dir {home}/mc --quiet --no-color mirror --overwrite --checksum CRC32 src/{sb} dst/{db}"),
    ("s3sync", "s3sync", "--help", "--source-endpoint-url {se} --source-force-path-style --source-region us-east-1 --target-endpoint-url {de} --target-force-path-style --target-region us-east-1 --worker-size {c} --multipart-threshold {thr}MiB --multipart-chunksize {part}MiB --show-no-progress s3://{sb} s3://{db}"),
];

impl ToolId {
    pub const ALL: [ToolId; 4] = [
        ToolId::Snapferry,
        ToolId::Rclone,
        ToolId::Mc,
        ToolId::S3sync,
    ];

    pub fn name(self) -> &'static str {
        TOOLS[self as usize].0
    }

    /// Its key in `--unavailable TOOL=REASON`.
    pub fn key(self) -> &'static str {
        TOOLS[self as usize].1
    }
}

/// A tool found (or not) on this machine.
#[derive(Debug, Clone)]
pub struct Tool {
    pub id: ToolId,
    /// Its binary, when it can run here.
    pub bin: Option<PathBuf>,
    pub version: String,
    /// Why it cannot run here.
    pub unavailable: Option<String>,
}

impl Tool {
    /// Probes a binary for its version; a missing or broken one is listed with the reason.
    pub fn probe(id: ToolId, bin: Option<PathBuf>, reason: Option<String>) -> Tool {
        let probed = |bin: &Path| -> std::result::Result<String, String> {
            let arg = TOOLS[id as usize].2;
            let o = Command::new(bin).arg(arg).stdin(Stdio::null()).output();
            let o = o.map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr);
                return Err(format!("{} {arg} failed: {}", bin.display(), err.trim()));
            }
            if id != ToolId::S3sync {
                let out = String::from_utf8_lossy(&o.stdout);
                return Ok(out.lines().next().unwrap_or_default().trim().to_string());
            }
            let v = bin
                .ancestors()
                .find_map(|p| p.file_name()?.to_str()?.strip_prefix("s3sync-"));
            Ok(v.map_or("s3sync (version unknown)".into(), |v| {
                format!("s3sync {v} (crates.io, --no-default-features)")
            }))
        };
        let got = bin.ok_or_else(|| reason.unwrap_or_else(|| "no binary given".into()));
        match got.and_then(|b| Ok((probed(&b)?, b))) {
            Ok((version, b)) => Tool {
                id,
                bin: Some(b),
                version,
                unavailable: None,
            },
            Err(why) => Tool {
                id,
                bin: None,
                version: String::new(),
                unavailable: Some(why),
            },
        }
    }
}

/// The knobs every tool gets, snapferry's defaults.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Knobs {
    /// Transfers (parts for snapferry; objects for the peers) in flight.
    pub concurrency: usize,
    pub part_size: u64,
    /// Objects above this go multipart.
    pub threshold: u64,
}

/// One side of a copy: `http://127.0.0.1:PORT` and a bucket (or `bucket/prefix`).
pub struct Side<'a>(pub &'a str, pub &'a str);

/// A ready-to-run command (environment cleared, credentials set), and how it reads in
/// RESULTS.md (endpoints as `$SRC`/`$DST`, no secret).
pub struct Invocation {
    pub cmd: Command,
    pub shown: String,
    /// Where snapferry writes its JSON report.
    pub report: Option<PathBuf>,
}

/// The command that copies (or re-syncs) `src` into `dst` with `tool`. `home` is a
/// scratch directory for the tool's config.
pub fn invocation(
    tool: &Tool,
    Side(se, sb): Side,
    Side(de, db): Side,
    k: Knobs,
    home: &Path,
    report: &Path,
) -> Result<Invocation> {
    let Some(bin) = &tool.bin else {
        bail!("{} is not available", tool.id.name());
    };
    std::fs::create_dir_all(home)?;
    let mut cmd = Command::new(bin);
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .stdin(Stdio::null());
    let mut env = |k: String, v: String| _ = cmd.env(k, v);
    match tool.id {
        ToolId::Snapferry => {
            for side in ["SRC", "DST"] {
                env(format!("SNAPFERRY_{side}_ACCESS_KEY_ID"), AK.into());
                env(format!("SNAPFERRY_{side}_SECRET_ACCESS_KEY"), SK.into());
            }
        }
        ToolId::Rclone => {
            // Remotes from the environment; an empty config file keeps rclone from
            // looking for one.
            let conf = home.join("rclone.conf");
            std::fs::write(&conf, "")?;
            env("RCLONE_CONFIG".into(), conf.display().to_string());
            for (side, e) in [("SRC", se), ("DST", de)] {
                let vars = [("TYPE", "s3"), ("PROVIDER", "Minio"), ("ENDPOINT", e)];
                let creds = [("REGION", "us-east-1"), ("ACCESS_KEY_ID", AK)];
                for (v, val) in vars
                    .into_iter()
                    .chain(creds)
                    .chain([("SECRET_ACCESS_KEY", SK)])
                {
                    env(format!("RCLONE_CONFIG_{side}_{v}"), val.into());
                }
            }
        }
        ToolId::Mc => {
            for (side, e) in [("src", se), ("dst", de)] {
                let hostport = e.trim_start_matches("http://");
                env(
                    format!("MC_HOST_{side}"),
                    format!("http://{AK}:{SK}@{hostport}"),
                );
            }
            env(
                "MC_UPLOAD_MULTIPART_SIZE".into(),
                format!("{}MiB", k.part_size >> 20),
            );
            env("MC_UPLOAD_MULTIPART_THREADS".into(), "4".into());
        }
        ToolId::S3sync => {
            for (v, val) in [("ACCESS_KEY", AK), ("SECRET_ACCESS_KEY", SK)] {
                env(format!("SOURCE_{v}"), val.into());
                env(format!("TARGET_{v}"), val.into());
            }
        }
    }
    let (c, part) = (k.concurrency.to_string(), (k.part_size >> 20).to_string());
    let thr = (k.threshold >> 20).to_string();
    let fill = |w: &str, [se, de, home, report]: [&str; 4]| {
        let (c, part, thr) = (c.as_str(), part.as_str(), thr.as_str());
        let vars = [
            ("c", c),
            ("part", part),
            ("thr", thr),
            ("sb", sb),
            ("db", db),
        ];
        let vars =
            vars.into_iter()
                .chain([("se", se), ("de", de), ("home", home), ("report", report)]);
        vars.fold(w.to_string(), |w, (k, v)| w.replace(&format!("{{{k}}}"), v))
    };
    let words: Vec<&str> = TOOLS[tool.id as usize].3.split(' ').collect();
    let (home, rep) = (home.display().to_string(), report.display().to_string());
    cmd.args(words.iter().map(|w| fill(w, [se, de, &home, &rep])));
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let shown = words
        .iter()
        .map(|w| fill(w, ["$SRC", "$DST", "$HOME", "report.json"]));
    let shown = std::iter::once(name)
        .chain(shown)
        .collect::<Vec<_>>()
        .join(" ");
    let report = (tool.id == ToolId::Snapferry).then(|| report.to_path_buf());
    Ok(Invocation { cmd, shown, report })
}

/// How a child process ran, as the OS accounts it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    /// Spawn to reap.
    pub wall_seconds: f64,
    pub user_seconds: f64,
    pub sys_seconds: f64,
    /// Peak resident set size (KiB).
    pub max_rss_kib: u64,
    /// Exit code, or -signal.
    pub status: i32,
    /// Killed at the time limit.
    pub timed_out: bool,
    /// The last lines of stderr (failures only).
    pub stderr_tail: String,
    /// stdout (when small: snapferry-bench's own probe).
    pub stdout: String,
}

impl Measured {
    pub fn cpu(&self) -> f64 {
        self.user_seconds + self.sys_seconds
    }

    /// The intermediary's side (`measure-child`): runs `cmd` with stdio and environment
    /// inherited, kills it at `limit`.
    pub fn direct(cmd: Command, limit: Duration) -> Result<Measured> {
        let u = testkit::usage::run_with_usage(cmd, limit).context("run the measured child")?;
        let (wall_seconds, user_seconds, sys_seconds) =
            (u.wall_seconds, u.user_seconds, u.sys_seconds);
        let (max_rss_kib, status, timed_out) = (u.max_rss_kib, u.status, u.timed_out);
        let m = Measured {
            wall_seconds,
            user_seconds,
            sys_seconds,
            max_rss_kib,
            status,
            timed_out,
            ..Measured::default()
        };
        Ok(m)
    }
}

/// Runs `cmd` to completion (or `limit`), stdout/stderr to files beside `log_base`, and
/// measures it, with exactly the environment `cmd` sets (callers clear it).
///
/// It runs under a small intermediary, this binary's `measure-child`. Linux starts a
/// process's peak RSS (`ru_maxrss`) at the RSS its forker had at exec: a child forked
/// straight from the harness (which holds the 80 MiB data pool) would never report less
/// than the harness. Forked from the intermediary, the floor is a few MiB.
pub fn run_measured(cmd: Command, log_base: &Path, limit: Duration) -> Result<Measured> {
    let file = |ext: &str| log_base.with_extension(ext);
    let mut m = Command::new(harness_exe()?);
    m.args([
        "measure-child",
        "--limit-ms",
        &limit.as_millis().to_string(),
        "--out",
    ]);
    m.arg(file("rusage.json"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    m.env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    m.stdin(Stdio::null())
        .stdout(std::fs::File::create(file("stdout"))?);
    m.stderr(std::fs::File::create(file("stderr"))?);
    if let Some(d) = cmd.get_current_dir() {
        m.current_dir(d);
    }
    testkit::usage::die_with_parent(&mut m);
    let status = m
        .status()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let read = |ext: &str| std::fs::read_to_string(file(ext)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    let mut got: Measured = serde_json::from_str(&read("rusage.json")).with_context(|| {
        let err = tail(&stderr, 4);
        format!("measuring {:?} failed ({status}): {err}", cmd.get_program())
    })?;
    if got.status != 0 || got.timed_out {
        // Some tools (s3sync) log to stdout.
        let quiet = stderr.trim().is_empty();
        got.stderr_tail = if quiet {
            tail(&stdout, 3)
        } else {
            tail(&stderr, 6)
        };
    }
    if stdout.len() <= 4096 {
        got.stdout = stdout;
    }
    Ok(got)
}

/// The last `n` non-empty lines, joined with ` | `, the secret redacted.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .join(" | ")
        .replace(SK, "<secret>")
}
