//! The copiers and how each is run: command lines with each tool's fair best (the same
//! concurrency, part size, multipart threshold and checksum work as snapferry where the
//! tool has the knob), and the measurement of one run as a child process: wall time,
//! CPU (user + system) and peak RSS from `wait4`'s rusage, as the OS reports them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::{ACCESS_KEY, SECRET_KEY};

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

impl ToolId {
    pub const ALL: [ToolId; 4] = [
        ToolId::Snapferry,
        ToolId::Rclone,
        ToolId::Mc,
        ToolId::S3sync,
    ];

    pub fn name(self) -> &'static str {
        ["snapferry", "rclone", "mc mirror", "s3sync"][self as usize]
    }

    /// Its key in `--unavailable TOOL=REASON`.
    pub fn key(self) -> &'static str {
        ["snapferry", "rclone", "mc", "s3sync"][self as usize]
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
        let missing = |why: String| Tool {
            id,
            bin: None,
            version: String::new(),
            unavailable: Some(why),
        };
        let Some(bin) = bin else {
            return missing(reason.unwrap_or_else(|| "no binary given".into()));
        };
        // s3sync built without its default features has no --version: probe --help and
        // take the version from its install directory (s3sync-<version>).
        let arg = ["--version", "version", "--version", "--help"][id as usize];
        let o = match Command::new(&bin).arg(arg).stdin(Stdio::null()).output() {
            Err(e) => return missing(format!("cannot run {}: {e}", bin.display())),
            Ok(o) if !o.status.success() => {
                let err = String::from_utf8_lossy(&o.stderr);
                return missing(format!("{} {arg} failed: {}", bin.display(), err.trim()));
            }
            Ok(o) => o,
        };
        let version = if id == ToolId::S3sync {
            let v = bin
                .ancestors()
                .find_map(|p| p.file_name()?.to_str()?.strip_prefix("s3sync-"));
            v.map(|v| format!("s3sync {v} (crates.io, --no-default-features)"))
                .unwrap_or_else(|| "s3sync (version unknown)".into())
        } else {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        Tool {
            id,
            bin: Some(bin),
            version,
            unavailable: None,
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

fn words(s: String) -> Vec<String> {
    s.split(' ').map(String::from).collect()
}

/// The command that copies (or re-syncs) `src` into `dst` with `tool`. `home` is a
/// scratch directory for the tool's config.
pub fn invocation(
    tool: &Tool,
    src: Side,
    dst: Side,
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
    let (c, part, thr) = (k.concurrency, k.part_size >> 20, k.threshold >> 20);
    let (Side(se, sb), Side(de, db)) = (src, dst);
    let args = match tool.id {
        ToolId::Snapferry => {
            for side in ["SRC", "DST"] {
                cmd.env(format!("SNAPFERRY_{side}_ACCESS_KEY_ID"), ACCESS_KEY);
                cmd.env(format!("SNAPFERRY_{side}_SECRET_ACCESS_KEY"), SECRET_KEY);
            }
            let mut a = words(format!("sync s3://{sb} s3://{db} --src-endpoint {se} --dst-endpoint {de} --concurrency {c} --part-size {part}MiB --multipart-threshold {thr}MiB --snapshot-aware off --progress never --report"));
            a.push(report.display().to_string());
            a
        }
        ToolId::Rclone => {
            // Remotes from the environment; an empty config file keeps rclone from
            // looking for one.
            let conf = home.join("rclone.conf");
            std::fs::write(&conf, "")?;
            cmd.env("RCLONE_CONFIG", &conf);
            for (side, e) in [("SRC", se), ("DST", de)] {
                let var = |v: &str| format!("RCLONE_CONFIG_{side}_{v}");
                cmd.env(var("TYPE"), "s3")
                    .env(var("PROVIDER"), "Minio")
                    .env(var("ENDPOINT"), e);
                cmd.env(var("REGION"), "us-east-1")
                    .env(var("ACCESS_KEY_ID"), ACCESS_KEY);
                cmd.env(var("SECRET_ACCESS_KEY"), SECRET_KEY);
            }
            words(format!("sync src:{sb} dst:{db} --transfers {c} --checkers {c} --s3-upload-concurrency 4 --s3-chunk-size {part}Mi --s3-upload-cutoff {thr}Mi --fast-list --checksum --s3-no-check-bucket -q"))
        }
        ToolId::Mc => {
            for (side, e) in [("src", se), ("dst", de)] {
                let hostport = e.trim_start_matches("http://");
                cmd.env(
                    format!("MC_HOST_{side}"),
                    format!("http://{ACCESS_KEY}:{SECRET_KEY}@{hostport}"),
                );
            }
            cmd.env("MC_UPLOAD_MULTIPART_SIZE", format!("{part}MiB"))
                .env("MC_UPLOAD_MULTIPART_THREADS", "4");
            let mut a = vec![
                "--config-dir".to_string(),
                home.join("mc").display().to_string(),
            ];
            a.extend(words(format!(
                "--quiet --no-color mirror --overwrite --checksum CRC32 src/{sb} dst/{db}"
            )));
            a
        }
        ToolId::S3sync => {
            cmd.env("SOURCE_ACCESS_KEY", ACCESS_KEY)
                .env("SOURCE_SECRET_ACCESS_KEY", SECRET_KEY);
            cmd.env("TARGET_ACCESS_KEY", ACCESS_KEY)
                .env("TARGET_SECRET_ACCESS_KEY", SECRET_KEY);
            words(format!("--source-endpoint-url {se} --source-force-path-style --source-region us-east-1 --target-endpoint-url {de} --target-force-path-style --target-region us-east-1 --worker-size {c} --multipart-threshold {thr}MiB --multipart-chunksize {part}MiB --show-no-progress s3://{sb} s3://{db}"))
        }
    };
    cmd.args(&args);
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let show = |a: &String| {
        a.replace(se, "$SRC")
            .replace(de, "$DST")
            .replace(&report.display().to_string(), "report.json")
            .replace(&home.display().to_string(), "$HOME")
    };
    let shown = std::iter::once(name)
        .chain(args.iter().map(show))
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
}

/// Makes a child die when the harness dies (SIGKILL on parent exit).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and the only call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Runs `cmd` to completion (or `limit`), stdout/stderr to files beside `log_base`, and
/// measures it with `wait4`, with exactly the environment `cmd` sets (callers clear it).
///
/// It runs under a small intermediary, this binary's `measure-child`. Linux starts a
/// process's peak RSS (`ru_maxrss`) at the RSS its forker had at exec: a child forked
/// straight from the harness (which holds the 80 MiB data pool) would never report less
/// than the harness. Forked from the intermediary, the floor is a few MiB.
pub fn run_measured(cmd: Command, log_base: &Path, limit: Duration) -> Result<Measured> {
    let file = |ext: &str| log_base.with_extension(ext);
    let mut m = Command::new(harness_exe()?);
    m.arg("measure-child")
        .arg("--limit-ms")
        .arg(limit.as_millis().to_string());
    m.arg("--out")
        .arg(file("rusage.json"))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    m.env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null());
    m.stdout(std::fs::File::create(file("stdout"))?)
        .stderr(std::fs::File::create(file("stderr"))?);
    if let Some(d) = cmd.get_current_dir() {
        m.current_dir(d);
    }
    die_with_parent(&mut m);
    let status = m
        .status()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let read = |ext: &str| std::fs::read_to_string(file(ext)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    let mut got: Measured = serde_json::from_str(&read("rusage.json")).with_context(|| {
        format!(
            "measuring {:?} failed ({status}): {}",
            cmd.get_program(),
            tail(&stderr, 4)
        )
    })?;
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
            if r != -1 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break r;
            }
        };
        let _ = tx.send((r, status, ru, start.elapsed()));
    });
    let (got, timed_out) = match rx.recv_timeout(limit) {
        Ok(v) => (v, false),
        Err(_) => {
            // SAFETY: signalling our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            (rx.recv().context("wait for the killed child")?, true)
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
        ..Measured::default()
    })
}

/// The last `n` non-empty lines, joined with ` | `, the secret redacted.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .join(" | ")
        .replace(SECRET_KEY, "<secret>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_cpu_and_rss_of_a_child() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exit 3",
        ]);
        let m = measure_direct(c, Duration::from_secs(60)).expect("run");
        assert_eq!(m.status, 3);
        assert!(
            m.cpu() > 0.0 && m.max_rss_kib > 100 && m.wall_seconds > 0.0,
            "{m:?}"
        );
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
