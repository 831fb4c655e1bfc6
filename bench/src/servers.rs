//! The benchmark's S3 servers: the pinned MinIO build the end-to-end tests use, started
//! the same way (`server --quiet --address 127.0.0.1:PORT`, a cleared environment, root
//! credentials, browser and update checks off, readiness polled on
//! `/minio/health/ready`), plus `MINIO_PROMETHEUS_AUTH_TYPE=public` so the harness can read
//! every tool's requests server-side from `/minio/metrics/v3/api/requests`
//! (`minio_api_requests_total{name=...}`, computed on each scrape, not cached).
//!
//! Servers are killed and reaped on drop, and die with the harness
//! (`PR_SET_PDEATHSIG`) if it is killed itself.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Root credentials of the benchmark servers.
pub const ACCESS_KEY: &str = "snapferry-bench";
/// Their secret; redacted from every command line the results show.
pub const SECRET_KEY: &str = "snapferry-bench-secret-0123456789";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Makes a child die when the harness dies (SIGKILL on parent exit).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it is the
    // only call made between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A running MinIO server with its own data directory.
pub struct Minio {
    child: Child,
    /// Loopback port of the S3 API.
    pub port: u16,
    /// Its data directory (removed by [`Minio::stop_and_remove`]).
    pub dir: PathBuf,
}

impl Minio {
    /// Starts a server on `dir` (created if missing) and waits until it is ready.
    pub fn start(bin: &Path, dir: &Path) -> Result<Minio> {
        std::fs::create_dir_all(dir)?;
        let log = dir.with_extension("log");
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let console = free_port()?;
            let mut cmd = Command::new(bin);
            cmd.args(["server", "--quiet", "--address"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--console-address")
                .arg(format!("127.0.0.1:{console}"))
                .arg(dir)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir)
                .env("MINIO_ROOT_USER", ACCESS_KEY)
                .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
                .env("MINIO_BROWSER", "off")
                .env("MINIO_UPDATE", "off")
                .env("MINIO_PROMETHEUS_AUTH_TYPE", "public")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?);
            die_with_parent(&mut cmd);
            let mut child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            match wait_ready(port, &mut child) {
                Ok(()) => {
                    return Ok(Minio {
                        child,
                        port,
                        dir: dir.to_path_buf(),
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err = std::fs::read_to_string(&log).unwrap_or_default();
                    last_err = format!("{e}; log: {}", err.trim());
                }
            }
        }
        bail!("MinIO did not start: {last_err}")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Total S3 requests served so far, by API name (`PutObject`, `ListObjectsV2`, ...).
    pub fn api_counts(&self) -> Result<BTreeMap<String, u64>> {
        let body = http_get(self.port, "/minio/metrics/v3/api/requests")?;
        Ok(parse_api_totals(&body))
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.pid()).unwrap_or(0.0)
    }

    /// Stops the server and deletes its data directory.
    pub fn stop_and_remove(mut self) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.clone();
        drop(self);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls MinIO's readiness endpoint: ready by asking, never by sleeping blindly.
fn wait_ready(port: u16, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("MinIO exited with {status}");
        }
        if let Ok(head) = http_get_head(port, "/minio/health/ready") {
            if head.starts_with("HTTP/1.") && head.contains(" 200 ") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("MinIO not ready after 60 s")
}

fn http_get_head(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A whole HTTP/1.0 GET response body (small: metrics text).
fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no HTTP header"))?;
    if !head.contains(" 200 ") {
        bail!(
            "GET {path}: {}",
            head.lines().next().unwrap_or_default().trim()
        );
    }
    Ok(body.to_string())
}

/// `minio_api_requests_total{name="PutObject",...} 12` lines, summed by name.
pub fn parse_api_totals(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("minio_api_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let name = labels.split(',').find_map(|l| {
            l.trim()
                .strip_prefix("name=\"")
                .and_then(|v| v.strip_suffix('"'))
        });
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        if let Some(n) = name {
            *out.entry(n.to_string()).or_insert(0) += value as u64;
        }
    }
    out
}

/// CPU seconds of a live process from /proc/PID/stat (utime + stime).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / tick.max(1.0))
}

/// CPU seconds the whole machine has spent busy (every core: user, nice, system, irq,
/// softirq, steal), from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy / tick.max(1.0)
}

/// Requests by kind, as the results tables show them.
pub const KINDS: [&str; 7] = ["LIST", "HEAD", "GET", "PUT", "PART", "MPU", "OTHER"];

/// The table column of a MinIO API name: LIST, HEAD (objects), GET, PUT (single),
/// PART (UploadPart), MPU (create/complete/abort/list uploads and parts), OTHER (bucket
/// calls and the rest).
pub fn kind_of(api: &str) -> &'static str {
    match api {
        "ListObjectsV2" | "ListObjectsV1" | "ListObjectVersions" | "ListObjectVersionsM" => "LIST",
        "HeadObject" => "HEAD",
        "GetObject" => "GET",
        "PutObject" => "PUT",
        "PutObjectPart" => "PART",
        "NewMultipartUpload"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListMultipartUploads"
        | "ListObjectParts" => "MPU",
        _ => "OTHER",
    }
}

/// `after - before`, grouped by [`kind_of`]; also returns the per-API deltas.
pub fn delta_by_kind(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut kinds: BTreeMap<String, u64> = KINDS.iter().map(|k| (k.to_string(), 0)).collect();
    let mut apis = BTreeMap::new();
    for (api, &a) in after {
        let d = a.saturating_sub(before.get(api).copied().unwrap_or(0));
        if d > 0 {
            *kinds.entry(kind_of(api).to_string()).or_insert(0) += d;
            apis.insert(api.clone(), d);
        }
    }
    (kinds, apis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v3_request_totals_by_name() {
        let text = "# HELP minio_api_requests_total Total number of requests\n\
            # TYPE minio_api_requests_total counter\n\
            minio_api_requests_total{name=\"PutObject\",server=\"127.0.0.1:9000\",type=\"s3\"} 12\n\
            minio_api_requests_total{name=\"ListObjectsV2\",server=\"127.0.0.1:9000\",type=\"s3\"} 3\n\
            minio_api_requests_errors_total{name=\"PutObject\",type=\"s3\"} 1\n";
        let m = parse_api_totals(text);
        assert_eq!(m["PutObject"], 12);
        assert_eq!(m["ListObjectsV2"], 3);
        assert_eq!(m.len(), 2);
        let before = BTreeMap::from([("PutObject".to_string(), 2u64)]);
        let (kinds, apis) = delta_by_kind(&before, &m);
        assert_eq!(kinds["PUT"], 10);
        assert_eq!(kinds["LIST"], 3);
        assert_eq!(apis["PutObject"], 10);
    }
}
