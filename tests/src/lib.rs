//! The end-to-end test harness: real MinIO servers on free loopback ports, the real
//! `snapferry` binary, and an independent S3 client (aws-sdk-s3 used directly, not
//! snapferry's engine) to set up data and check results.
//!
//! Hermetic: servers and the binary run with a cleared environment plus only what the
//! test sets, so ambient AWS_* variables (AWS_CA_BUNDLE and friends) never leak in.
//! A missing MinIO is a failed setup with a message saying how to install it.

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

/// A running MinIO server; stopped (killed and reaped) on drop.
pub struct Minio {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Minio {
    /// Starts a server with a fresh data directory and waits until it is ready.
    pub fn start() -> Minio {
        let bin = minio_binary();
        assert!(
            bin.exists(),
            "setup failed: MinIO not found at {}; run `bash fixtures/install-minio.sh` (fixtures/test.sh does) or set SNAPFERRY_MINIO",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir for MinIO data");
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let console = free_port();
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
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("setup failed: cannot start {}: {e}", bin.display()));
            match wait_ready(port, &mut child) {
                Ok(()) => {
                    return Minio {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                        _dir: dir,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    }
                    last_err = format!("{e}; stderr: {err}");
                }
            }
        }
        panic!("setup failed: MinIO did not start: {last_err}");
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
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /minio/health/ready HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf) {
                    let head = String::from_utf8_lossy(&buf[..n]);
                    if head.starts_with("HTTP/1.") && head.contains(" 200 ") {
                        return Ok(());
                    }
                }
            }
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
    let o = c
        .get_object()
        .bucket(b)
        .key(k)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {k}: {e:?}"));
    o.body.collect().await.expect("body").into_bytes().to_vec()
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

/// The Python with the official OSS SDK (alibabacloud-oss-v2), installed by
/// `fixtures/oss-gateway/install.sh`: `SNAPFERRY_OSS_PYTHON`, else the cached venv.
pub fn oss_python() -> PathBuf {
    let p = std::env::var("SNAPFERRY_OSS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cache = std::env::var("SNAPFERRY_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default())
                        .join(".cache/snapferry")
                });
            cache.join("oss-venv/bin/python")
        });
    assert!(
        p.exists(),
        "setup failed: {} not found; run `bash fixtures/oss-gateway/install.sh` (fixtures/test.sh does) or set SNAPFERRY_OSS_PYTHON",
        p.display()
    );
    p
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
        use std::io::BufRead;
        let py = oss_python();
        let dir = tempfile::tempdir().expect("gateway data dir");
        let script = repo_root().join("fixtures/oss-gateway/gateway.py");
        let mut cmd = Command::new(&py);
        cmd.arg(&script)
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
            .env("HOME", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for b in buckets {
            cmd.args(["--bucket", b]);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("setup failed: cannot start the OSS gateway: {e}"));
        let stdout = child.stdout.take().expect("gateway stdout");
        let mut line = String::new();
        // The gateway prints READY once it listens; a dead gateway closes stdout.
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let endpoint = match line.trim().strip_prefix("READY ") {
            Some(ep) => ep.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("setup failed: the OSS gateway did not start (said {line:?})");
            }
        };
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
    let hostport = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(hostport).expect("connect to gateway");
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let extra = header
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Length: {}\r\nContent-Type: application/json\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .expect("send request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out[split..].to_vec())
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

impl SearchNode {
    /// Starts an OpenSearch node whose `path.repo` is `repo_path`.
    pub fn start(repo_path: &std::path::Path) -> SearchNode {
        Self::start_home(&opensearch_home(), repo_path)
    }

    /// Starts a node of the engine unpacked at `home`.
    pub fn start_home(home: &std::path::Path, repo_path: &std::path::Path) -> SearchNode {
        Self::start_with(home, repo_path, None)
    }

    /// Starts an Elasticsearch node with security on: `user` is a file-realm superuser
    /// with `password`; [`SearchNode::call`] authenticates as that user.
    pub fn start_secured(
        home: &std::path::Path,
        repo_path: &std::path::Path,
        user: &str,
        password: &str,
    ) -> SearchNode {
        Self::start_with(home, repo_path, Some((user, password)))
    }

    fn start_with(
        home: &std::path::Path,
        repo_path: &std::path::Path,
        basic: Option<(&str, &str)>,
    ) -> SearchNode {
        use base64::Engine as _;
        use std::io::BufRead;
        let home = home.to_path_buf();
        let dir = tempfile::tempdir().expect("node dir");
        let mut child = Command::new("python3")
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
            .envs(std::env::var("JAVA_HOME").ok().map(|j| ("JAVA_HOME", j)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("setup failed: cannot start node.py: {e}"));
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let Some(endpoint) = line.trim().strip_prefix("READY ").map(str::to_string) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("setup failed: the search node did not start (said {line:?})");
        };
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
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let req = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
                    let mut buf = [0u8; 16];
                    if s.write_all(req.as_bytes()).is_ok()
                        && s.read(&mut buf)
                            .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1."))
                    {
                        ready = true;
                        break;
                    }
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
        use std::io::BufRead;
        let py = oss_python();
        let dir = tempfile::tempdir().expect("proxy home dir");
        let mut child = Command::new(&py)
            .arg(repo_root().join("fixtures/aws/sigv4_proxy.py"))
            .args([
                "--upstream",
                upstream,
                "--access-key",
                access_key,
                "--secret-key",
                secret_key,
                "--region",
                region,
                "--service",
                "es",
                "--port",
                "0",
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("setup failed: cannot start the SigV4 proxy: {e}"));
        let mut line = String::new();
        // The proxy prints READY once it listens; a dead proxy closes stdout.
        let _ = std::io::BufReader::new(child.stdout.take().expect("proxy stdout"))
            .read_line(&mut line);
        let Some(endpoint) = line.trim().strip_prefix("READY ").map(str::to_string) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("setup failed: the SigV4 proxy did not start (said {line:?})");
        };
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
        drop(self.child.stdin.take()); // EOF: the proxy stops
        let _ = self.child.kill();
        let _ = self.child.wait();
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
