//! The copiers and how each is run: command lines with each tool's fair best (the same
//! concurrency, part size, multipart threshold and checksum work as snapferry where the
//! tool has the knob), and the measurement of one run as a child process: wall time,
//! CPU (user + system) and peak RSS from `wait4`'s rusage, as the OS reports them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::servers::{die_with_parent, ACCESS_KEY, SECRET_KEY};

static HARNESS_EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Runs `measure-child` and `diff-memory` from this copy of the harness binary (a
/// rebuild of the workspace during a run must not change the binary mid-run).
pub fn set_harness_exe(p: PathBuf) {
    let _ = HARNESS_EXE.set(p);
}

/// The harness binary children are started from.
pub fn harness_exe() -> Result<PathBuf> {
    match HARNESS_EXE.get() {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()?),
    }
}

/// The tools compared.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ToolId {
    /// This project.
    Snapferry,
    /// rclone (`sync`).
    Rclone,
    /// MinIO's client (`mc mirror`).
    Mc,
    /// s3sync (crates.io).
    S3sync,
}

impl ToolId {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            ToolId::Snapferry => "snapferry",
            ToolId::Rclone => "rclone",
            ToolId::Mc => "mc mirror",
            ToolId::S3sync => "s3sync",
        }
    }
}

/// A tool found (or not) on this machine.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Which.
    pub id: ToolId,
    /// Its binary, when it can run here.
    pub bin: Option<PathBuf>,
    /// Its version line.
    pub version: String,
    /// Why it cannot run here.
    pub unavailable: Option<String>,
}

impl Tool {
    /// Probes a binary for its version; a missing or broken one is listed with the reason.
    pub fn probe(id: ToolId, bin: Option<PathBuf>, reason_if_missing: Option<String>) -> Tool {
        let Some(bin) = bin else {
            return Tool {
                id,
                bin: None,
                version: String::new(),
                unavailable: Some(
                    reason_if_missing.unwrap_or_else(|| "no binary given".to_string()),
                ),
            };
        };
        // s3sync built without its default features has no --version: probe --help and
        // take the version from its install directory (s3sync-<version>).
        let arg = match id {
            ToolId::Rclone => "version",
            ToolId::S3sync => "--help",
            _ => "--version",
        };
        match Command::new(&bin).arg(arg).stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => Tool {
                id,
                version: if id == ToolId::S3sync {
                    bin.ancestors()
                        .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("s3sync-"))
                        .next()
                        .map(|v| format!("s3sync {v} (crates.io, --no-default-features)"))
                        .unwrap_or_else(|| "s3sync (version unknown)".into())
                } else {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                },
                bin: Some(bin),
                unavailable: None,
            },
            Ok(o) => Tool {
                id,
                bin: None,
                version: String::new(),
                unavailable: Some(format!(
                    "{} {arg} failed: {}",
                    bin.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
            },
            Err(e) => Tool {
                id,
                bin: None,
                version: String::new(),
                unavailable: Some(format!("cannot run {}: {e}", bin.display())),
            },
        }
    }
}

/// The knobs every tool gets, snapferry's defaults.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Knobs {
    /// Transfers (parts for snapferry; objects for the peers) in flight.
    pub concurrency: usize,
    /// Multipart part size.
    pub part_size: u64,
    /// Objects above this go multipart.
    pub threshold: u64,
}

/// One side of a copy.
#[derive(Debug, Clone)]
pub struct Side {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
}

/// A ready-to-run command, and how it reads in RESULTS.md.
pub struct Invocation {
    /// The command (environment cleared, credentials set).
    pub cmd: Command,
    /// The command line with endpoints as `$SRC`/`$DST` and no secret.
    pub shown: String,
    /// Where snapferry writes its JSON report.
    pub report: Option<PathBuf>,
}

fn mib(b: u64) -> u64 {
    b >> 20
}

/// The command that copies (or re-syncs) `src` into `dst` with `tool`. `home` is a
/// scratch directory for the tool's config.
pub fn invocation(
    tool: &Tool,
    src: &Side,
    dst: &Side,
    k: Knobs,
    home: &Path,
    report: &Path,
) -> Result<Invocation> {
    let Some(bin) = &tool.bin else {
        bail!("{} is not available", tool.id.name());
    };
    std::fs::create_dir_all(home)?;
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null());
    let c = k.concurrency.to_string();
    let (args, report_path): (Vec<String>, Option<PathBuf>) = match tool.id {
        ToolId::Snapferry => {
            cmd.env("SNAPFERRY_SRC_ACCESS_KEY_ID", ACCESS_KEY)
                .env("SNAPFERRY_SRC_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("SNAPFERRY_DST_ACCESS_KEY_ID", ACCESS_KEY)
                .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", SECRET_KEY);
            (
                vec![
                    "sync".into(),
                    format!("s3://{}", src.bucket),
                    format!("s3://{}", dst.bucket),
                    "--src-endpoint".into(),
                    src.endpoint.clone(),
                    "--dst-endpoint".into(),
                    dst.endpoint.clone(),
                    "--concurrency".into(),
                    c.clone(),
                    "--part-size".into(),
                    format!("{}MiB", mib(k.part_size)),
                    "--multipart-threshold".into(),
                    format!("{}MiB", mib(k.threshold)),
                    "--snapshot-aware".into(),
                    "off".into(),
                    "--progress".into(),
                    "never".into(),
                    "--report".into(),
                    report.display().to_string(),
                ],
                Some(report.to_path_buf()),
            )
        }
        ToolId::Rclone => {
            // Remotes from the environment; an empty config file keeps rclone from
            // looking for one.
            let conf = home.join("rclone.conf");
            std::fs::write(&conf, "")?;
            cmd.env("RCLONE_CONFIG", &conf);
            for (side, s) in [("SRC", src), ("DST", dst)] {
                cmd.env(format!("RCLONE_CONFIG_{side}_TYPE"), "s3")
                    .env(format!("RCLONE_CONFIG_{side}_PROVIDER"), "Minio")
                    .env(format!("RCLONE_CONFIG_{side}_ENDPOINT"), &s.endpoint)
                    .env(format!("RCLONE_CONFIG_{side}_REGION"), "us-east-1")
                    .env(format!("RCLONE_CONFIG_{side}_ACCESS_KEY_ID"), ACCESS_KEY)
                    .env(
                        format!("RCLONE_CONFIG_{side}_SECRET_ACCESS_KEY"),
                        SECRET_KEY,
                    );
            }
            (
                vec![
                    "sync".into(),
                    format!("src:{}", src.bucket),
                    format!("dst:{}", dst.bucket),
                    "--transfers".into(),
                    c.clone(),
                    "--checkers".into(),
                    c.clone(),
                    "--s3-upload-concurrency".into(),
                    "4".into(),
                    "--s3-chunk-size".into(),
                    format!("{}Mi", mib(k.part_size)),
                    "--s3-upload-cutoff".into(),
                    format!("{}Mi", mib(k.threshold)),
                    "--fast-list".into(),
                    "--checksum".into(),
                    "--s3-no-check-bucket".into(),
                    "-q".into(),
                ],
                None,
            )
        }
        ToolId::Mc => {
            for (side, s) in [("src", src), ("dst", dst)] {
                let hostport = s.endpoint.trim_start_matches("http://");
                cmd.env(
                    format!("MC_HOST_{side}"),
                    format!("http://{ACCESS_KEY}:{SECRET_KEY}@{hostport}"),
                );
            }
            cmd.env(
                "MC_UPLOAD_MULTIPART_SIZE",
                format!("{}MiB", mib(k.part_size)),
            )
            .env("MC_UPLOAD_MULTIPART_THREADS", "4");
            (
                vec![
                    "--config-dir".into(),
                    home.join("mc").display().to_string(),
                    "--quiet".into(),
                    "--no-color".into(),
                    "mirror".into(),
                    "--overwrite".into(),
                    "--checksum".into(),
                    "CRC32".into(),
                    format!("src/{}", src.bucket),
                    format!("dst/{}", dst.bucket),
                ],
                None,
            )
        }
        ToolId::S3sync => {
            cmd.env("SOURCE_ACCESS_KEY", ACCESS_KEY)
                .env("SOURCE_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("TARGET_ACCESS_KEY", ACCESS_KEY)
                .env("TARGET_SECRET_ACCESS_KEY", SECRET_KEY);
            (
                vec![
                    "--source-endpoint-url".into(),
                    src.endpoint.clone(),
                    "--source-force-path-style".into(),
                    "--source-region".into(),
                    "us-east-1".into(),
                    "--target-endpoint-url".into(),
                    dst.endpoint.clone(),
                    "--target-force-path-style".into(),
                    "--target-region".into(),
                    "us-east-1".into(),
                    "--worker-size".into(),
                    c.clone(),
                    "--multipart-threshold".into(),
                    format!("{}MiB", mib(k.threshold)),
                    "--multipart-chunksize".into(),
                    format!("{}MiB", mib(k.part_size)),
                    "--show-no-progress".into(),
                    format!("s3://{}", src.bucket),
                    format!("s3://{}", dst.bucket),
                ],
                None,
            )
        }
    };
    cmd.args(&args);
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let shown = std::iter::once(name)
        .chain(args.iter().map(|a| {
            a.replace(&src.endpoint, "$SRC")
                .replace(&dst.endpoint, "$DST")
                .replace(&report.display().to_string(), "report.json")
                .replace(&home.display().to_string(), "$HOME")
        }))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Invocation {
        cmd,
        shown,
        report: report_path,
    })
}

/// How a child process ran, as the OS accounts it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    /// Spawn to reap.
    pub wall_seconds: f64,
    /// User CPU seconds.
    pub user_seconds: f64,
    /// System CPU seconds.
    pub sys_seconds: f64,
    /// Peak resident set size (KiB).
    pub max_rss_kib: u64,
    /// Exit code, or -signal.
    pub status: i32,
    /// Killed at the time limit.
    pub timed_out: bool,
    /// The last lines of stderr (failures only).
    pub stderr_tail: String,
    /// stdout (small: snapferry-bench's own probe).
    pub stdout: String,
}

/// Runs `cmd` to completion (or `limit`), stdout/stderr to files beside `log_base`,
/// and measures it with `wait4`.
///
/// The command runs under a small intermediary, this same binary's `measure-child`,
/// which spawns it, waits for it with `wait4` and writes the figures as JSON. Linux
/// starts a process's peak RSS (`ru_maxrss`) at the RSS of the address space it had
/// when it called exec, that is at the RSS of whoever forked it: a child forked
/// straight from the harness (which holds the 80 MiB data pool) would never report
/// less than the harness. Forked from the intermediary, the floor is a few MiB, below
/// any copier's own peak, so the figure is the tool's own.
///
/// The command runs with exactly the environment it sets (callers clear it).
pub fn run_measured(cmd: Command, log_base: &Path, limit: Duration) -> Result<Measured> {
    let out_path = log_base.with_extension("stdout");
    let err_path = log_base.with_extension("stderr");
    let json_path = log_base.with_extension("rusage.json");
    let mut m = Command::new(harness_exe()?);
    m.arg("measure-child")
        .arg("--limit-ms")
        .arg(limit.as_millis().to_string())
        .arg("--out")
        .arg(&json_path)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            m.env(k, v);
        }
    }
    if let Some(d) = cmd.get_current_dir() {
        m.current_dir(d);
    }
    die_with_parent(&mut m);
    let status = m
        .status()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let mut got: Measured = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .with_context(|| {
            format!(
                "measuring {:?} failed ({status}): {}",
                cmd.get_program(),
                tail(&stderr, 4)
            )
        })?;
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if got.status != 0 || got.timed_out {
        // Some tools (s3sync) log to stdout.
        got.stderr_tail = if stderr.trim().is_empty() {
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

/// The intermediary's side: spawns `cmd` (stdio and environment inherited), waits for it
/// with `wait4`, kills it at `limit`.
pub fn measure_direct(mut cmd: Command, limit: Duration) -> Result<Measured> {
    die_with_parent(&mut cmd);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; wait4 fills it for our own child, which
        // nothing else waits for (the std Child is never waited on).
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = loop {
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            break r;
        };
        let _ = tx.send((r, status, ru, start.elapsed()));
    });
    let mut timed_out = false;
    let got = match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => {
            timed_out = true;
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            rx.recv().context("wait for the killed child")?
        }
    };
    drop(child);
    let (r, status, ru, wall) = got;
    if r != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Ok(Measured {
        wall_seconds: wall.as_secs_f64(),
        user_seconds: tv(ru.ru_utime),
        sys_seconds: tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        status: code,
        timed_out,
        stderr_tail: String::new(),
        stdout: String::new(),
    })
}

/// The last `n` non-empty lines, secrets redacted.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .join(" | ")
        .replace(SECRET_KEY, "<secret>")
}

/// An argument list as an `OsString` vector (for perf's command line).
pub fn argv(cmd: &Command) -> Vec<OsString> {
    std::iter::once(cmd.get_program().to_os_string())
        .chain(cmd.get_args().map(|a| a.to_os_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_cpu_and_rss_of_a_child() {
        let mut c = Command::new("sh");
        // Busy for a moment, then exit 3.
        c.args([
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exit 3",
        ]);
        let m = measure_direct(c, Duration::from_secs(60)).expect("run");
        assert_eq!(m.status, 3);
        assert!(m.user_seconds + m.sys_seconds > 0.0, "{m:?}");
        assert!(m.max_rss_kib > 100, "{m:?}");
        assert!(m.wall_seconds > 0.0);
    }

    #[test]
    fn a_child_past_its_limit_is_killed() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let m = measure_direct(c, Duration::from_millis(200)).expect("run");
        assert!(m.timed_out);
        assert_eq!(m.status, -libc::SIGKILL);
    }
}
