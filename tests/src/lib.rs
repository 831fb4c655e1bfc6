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
