//! The copiers and how each is run: command lines with each tool's fair best (the same
//! concurrency, part size, multipart threshold and checksum work as snapferry where the
//! tool has the knob), and the measurement of one run as a child process: wall time,
//! CPU (user + system) and peak RSS from `wait4`'s rusage, as the OS reports them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testkit::usage::Usage;
use testkit::{ACCESS_KEY as AK, SECRET_KEY as SK};

static HARNESS_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Children (`measure-child`, `diff-memory`) run from this copy of the harness binary: a
/// rebuild of the workspace during a run must not swap the binary mid-run.
pub fn set_harness_exe(p: PathBuf) {
    let _ = HARNESS_EXE.set(p);
}

pub fn harness_exe() -> Result<PathBuf> {
    let exe = HARNESS_EXE.get().cloned();
    Ok(exe.map_or_else(std::env::current_exe, Ok)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ToolId {
    Snapferry,
    Rclone,
    Mc,
    S3sync,
}

/// How each tool is run, a line each: its name in the tables, its key in `--unavailable
/// TOOL=REASON`, the argument that prints its version, its environment and its command
/// line. In the last two, `{c}` is the concurrency, `{part}`/`{thr}` the part size and
/// multipart threshold in MiB, `{se}`/`{sb}` the source's endpoint and bucket,
/// `{de}`/`{db}` the destination's, `{sh}`/`{dh}` their host:port, `{ak}`/`{sk}` the
/// credentials, `{home}` the tool's scratch directory and `{report}` snapferry's JSON
/// report. rclone's remotes come from the environment (an empty config file keeps it
/// from looking for one). s3sync built without its default features has no --version:
/// --help probes it and the version comes from its install directory (s3sync-<version>).
const TOOLS: &str = "\
snapferry|snapferry|--version|SNAPFERRY_SRC_ACCESS_KEY_ID={ak} SNAPFERRY_SRC_SECRET_ACCESS_KEY={sk} SNAPFERRY_DST_ACCESS_KEY_ID={ak} SNAPFERRY_DST_SECRET_ACCESS_KEY={sk}|sync s3://{sb} s3://{db} --src-endpoint {se} --dst-endpoint {de} --concurrency {c} --part-size {part}MiB --multipart-threshold {thr}MiB --snapshot-aware off --progress never --report {report}
rclone|rclone|version|RCLONE_CONFIG={home}/rclone.conf RCLONE_CONFIG_SRC_TYPE=s3 RCLONE_CONFIG_SRC_PROVIDER=Minio RCLONE_CONFIG_SRC_ENDPOINT={se} RCLONE_CONFIG_SRC_REGION=us-east-1 RCLONE_CONFIG_SRC_ACCESS_KEY_ID={ak} RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY={sk} RCLONE_CONFIG_DST_TYPE=s3 RCLONE_CONFIG_DST_PROVIDER=Minio RCLONE_CONFIG_DST_ENDPOINT={de} RCLONE_CONFIG_DST_REGION=us-east-1 RCLONE_CONFIG_DST_ACCESS_KEY_ID={ak} RCLONE_CONFIG_DST_SECRET_ACCESS_KEY={sk}|sync src:{sb} dst:{db} --transfers {c} --checkers {c} --s3-upload-concurrency 4 --s3-chunk-size {part}Mi --s3-upload-cutoff {thr}Mi --fast-list --checksum --s3-no-check-bucket -q
mc mirror|mc|--version|MC_HOST_src=http://{ak}:{sk}@{sh} MC_HOST_dst=http://{ak}:{sk}@{dh} MC_UPLOAD_MULTIPART_SIZE={part}MiB MC_UPLOAD_MULTIPART_THREADS=4|--config-dir {home}/mc --quiet --no-color mirror --overwrite --checksum CRC32 src/{sb} dst/{db}
s3sync|s3sync|--help|SOURCE_ACCESS_KEY={ak} SOURCE_SECRET_ACCESS_KEY={sk} TARGET_ACCESS_KEY={ak} TARGET_SECRET_ACCESS_KEY={sk}|--source-endpoint-url {se} --source-force-path-style --source-region us-east-1 --target-endpoint-url {de} --target-force-path-style --target-region us-east-1 --worker-size {c} --multipart-threshold {thr}MiB --multipart-chunksize {part}MiB --show-no-progress s3://{sb} s3://{db}";

/// Field `i` of `id`'s line of [`TOOLS`]: 0 name, 1 key, 2 version argument, 3
/// environment, 4 arguments.
fn spec(id: ToolId, i: usize) -> &'static str {
    let line = TOOLS.lines().nth(id as usize).unwrap_or_default();
    line.split('|').nth(i).expect("every tool has five fields")
}

impl ToolId {
    pub const ALL: [ToolId; 4] = [Self::Snapferry, Self::Rclone, Self::Mc, Self::S3sync];

    pub fn name(self) -> &'static str {
        spec(self, 0)
    }

    /// Its key in `--unavailable TOOL=REASON`.
    pub fn key(self) -> &'static str {
        spec(self, 1)
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
            let arg = spec(id, 2);
            let o = Command::new(bin).arg(arg).stdin(Stdio::null()).output();
            let o = o.map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
            let (out, err) = (&o.stdout, &o.stderr);
            let (out, err) = (String::from_utf8_lossy(out), String::from_utf8_lossy(err));
            if !o.status.success() {
                return Err(format!("{} {arg} failed: {}", bin.display(), err.trim()));
            }
            if id != ToolId::S3sync {
                return Ok(out.lines().next().unwrap_or_default().trim().to_string());
            }
            let v = |p: &Path| {
                Some(
                    p.file_name()?
                        .to_str()?
                        .strip_prefix("s3sync-")?
                        .to_string(),
                )
            };
            Ok(match bin.ancestors().find_map(v) {
                Some(v) => format!("s3sync {v} (crates.io, --no-default-features)"),
                None => "s3sync (version unknown)".into(),
            })
        };
        let got = bin.ok_or_else(|| reason.unwrap_or_else(|| "no binary given".into()));
        let (bin, version, unavailable) = match got.and_then(|b| Ok((probed(&b)?, b))) {
            Ok((version, b)) => (Some(b), version, None),
            Err(why) => (None, String::new(), Some(why)),
        };
        Tool {
            id,
            bin,
            version,
            unavailable,
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
    cmd.env_clear().env("PATH", path).env("HOME", home);
    cmd.stdin(Stdio::null());
    if tool.id == ToolId::Rclone {
        std::fs::write(home.join("rclone.conf"), "")?;
    }
    let (c, part) = (k.concurrency.to_string(), (k.part_size >> 20).to_string());
    let thr = (k.threshold >> 20).to_string();
    let fill = |w: &str, [se, de, home, report]: [&str; 4]| {
        let (sh, dh) = (
            se.trim_start_matches("http://"),
            de.trim_start_matches("http://"),
        );
        let knobs: [&str; 7] = [&c, &part, &thr, AK, SK, se, de];
        let values = knobs.into_iter().chain([sb, db, sh, dh, home, report]);
        let names = "c part thr ak sk se de sb db sh dh home report".split(' ');
        let vars = names.zip(values);
        vars.fold(w.to_string(), |w, (k, v)| w.replace(&format!("{{{k}}}"), v))
    };
    let (home, rep) = (home.display().to_string(), report.display().to_string());
    let real = [se, de, home.as_str(), rep.as_str()];
    for var in spec(tool.id, 3).split(' ') {
        let (k, v) = var.split_once('=').expect("NAME=value");
        cmd.env(k, fill(v, real));
    }
    let words: Vec<&str> = spec(tool.id, 4).split(' ').collect();
    cmd.args(words.iter().map(|w| fill(w, real)));
    let name = bin.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let shown_vars = ["$SRC", "$DST", "$HOME", "report.json"];
    let shown = words.iter().map(|w| fill(w, shown_vars));
    let shown: Vec<String> = std::iter::once(name).chain(shown).collect();
    let report = (tool.id == ToolId::Snapferry).then(|| report.to_path_buf());
    Ok(Invocation {
        cmd,
        shown: shown.join(" "),
        report,
    })
}

/// How a child process ran, as the OS accounts it (wall time, CPU, peak RSS, exit), and
/// what it printed.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    #[serde(flatten)]
    pub usage: Usage,
    /// The last lines of stderr (failures only).
    pub stderr_tail: String,
    /// stdout (when small: snapferry-bench's own probe).
    pub stdout: String,
}

impl std::ops::Deref for Measured {
    type Target = Usage;

    fn deref(&self) -> &Usage {
        &self.usage
    }
}

impl Measured {
    /// The intermediary's side (`measure-child`): runs `cmd` with stdio and environment
    /// inherited, kills it at `limit`.
    pub fn direct(cmd: Command, limit: Duration) -> Result<Measured> {
        let usage = testkit::usage::run_with_usage(cmd, limit).context("run the measured child")?;
        Ok(Measured {
            usage,
            ..Measured::default()
        })
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
    let ms = limit.as_millis().to_string();
    m.args(["measure-child", "--limit-ms", &ms, "--out"])
        .arg(file("rusage.json"));
    m.arg("--").arg(cmd.get_program()).args(cmd.get_args());
    m.env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    m.stdin(Stdio::null())
        .stdout(std::fs::File::create(file("stdout"))?);
    m.stderr(std::fs::File::create(file("stderr"))?);
    if let Some(d) = cmd.get_current_dir() {
        m.current_dir(d);
    }
    testkit::usage::die_with_parent(&mut m);
    let status = m.status();
    let status = status.with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let read = |ext: &str| std::fs::read_to_string(file(ext)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    let got = serde_json::from_str::<Measured>(&read("rusage.json"));
    let mut got = got.with_context(|| {
        let (what, err) = (cmd.get_program(), tail(&stderr, 4));
        format!("measuring {what:?} failed ({status}): {err}")
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
    let tail = lines[lines.len().saturating_sub(n)..].join(" | ");
    tail.replace(SK, "<secret>")
}
