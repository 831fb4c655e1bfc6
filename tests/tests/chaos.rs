//! The chaos suite: the real `snapferry` binary with toxiproxy between it and every real
//! server (a source MinIO, a destination MinIO, the OSS gateway as a destination), and
//! with the byte-flipping proxy in front of a source (MinIO over S3, the gateway over
//! OSS). Every scenario is scripted and bounded in time, and checked the same way: the
//! destination is read with its own client (MinIO straight, not through a proxy; the
//! gateway's store through its control API) and compared with the source by key, size
//! and SHA-256; no multipart upload is left; the report counts the retries (bounded) and
//! names the fault kinds; a fault that persists ends the run with exit 1 and the failures
//! listed within [`persistent_bound`], never a hang; a stalled connection fails at
//! `--io-timeout`.
//!
//! A toxiproxy test runs the S3 → S3 and the S3 → OSS copy of one source side by side:
//! the source proxy's faults reach both runs, each destination proxy's its own run.
//! Faults that must hit transfers in flight start once both runs have observably landed
//! objects (the destinations are polled), with the source paced so that parts are still
//! moving then.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::*;

const MIB: usize = 1 << 20;
/// `--io-timeout` of every run: a request with no byte moving for this long fails.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// `--retry-budget` where a fault is transient (a 10 s outage is ridden out).
const TRANSIENT_BUDGET: &str = "60s";
/// `--retry-budget` where a fault persists (the run must give up).
const PERSISTENT_BUDGET: Duration = Duration::from_secs(6);
/// Process start, aborting uploads and releasing the lease, on a loaded 2-core CI.
const SLACK: Duration = Duration::from_secs(12);
/// No run of a transient scenario may take longer: past it, the run hangs.
const HANG: Duration = Duration::from_secs(150);
/// `--concurrency` of the persistent-fault runs: every request of the source set (30
/// small objects and 9 parts) in flight at once, so their retries run side by side and
/// the run ends within one retry budget.
const PERSISTENT_CONCURRENCY: &str = "64";
/// MinIO's smallest part, so the big objects go multipart with three parts each.
const PARTS: [&str; 4] = ["--part-size", "5MiB", "--multipart-threshold", "5MiB"];
/// The flip proxy flips bodies of at least this size: object data, never a listing.
const FLIP_MIN_BODY: u64 = 64 * 1024;
/// Attempts snapferry gives a request whose bytes arrive corrupted ("a few tries").
const CORRUPTION_ATTEMPTS: u64 = 4;

/// The documented bound on a run whose fault persists, from the moment the fault starts:
/// every request is retried for at most `--retry-budget`, and its last attempt fails after
/// at most `--io-timeout` without a byte moving (a refused connection fails at once); with
/// every request in flight at once ([`PERSISTENT_CONCURRENCY`]) they give up together.
/// `slack` covers what follows (aborting uploads, the report, releasing the lease).
fn persistent_bound(budget: Duration, slack: Duration) -> Duration {
    budget + IO_TIMEOUT + slack
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The source set: 30 small objects from 3 kB to 1 MB, and 3 big ones copied in parts.
fn source_objects() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = (0..30u64)
        .map(|i| {
            let len = (3000.0 * 1.22f64.powi(i as i32)) as usize;
            (format!("small/{i:02}.bin"), data(len, 1000 + i))
        })
        .collect();
    for (i, len) in [10 * MIB + 1, 11 * MIB, 12 * MIB + 777]
        .into_iter()
        .enumerate()
    {
        v.push((format!("big/{i}.dat"), data(len, 2000 + i as u64)));
    }
    v
}

fn is_big(key: &str) -> bool {
    key.starts_with("big/")
}

/// What is compared: relative key → (size, SHA-256).
type Contents = BTreeMap<String, (usize, String)>;

fn contents<'a>(objects: impl IntoIterator<Item = &'a (String, Vec<u8>)>) -> Contents {
    objects
        .into_iter()
        .map(|(k, d)| (k.clone(), (d.len(), sha256_hex(d))))
        .collect()
}

/// A store as snapferry sees it: URL, endpoint, and whether it takes the OSS keys.
struct Side {
    url: String,
    endpoint: String,
    oss: bool,
}

/// `snapferry sync SRC DST` with the suite's timeouts and part sizes.
fn sync_cmd(src: &Side, dst: &Side, report: &Path, extra: &[&str]) -> Command {
    let mut c = snapferry();
    c.args(["sync", &src.url, &dst.url])
        .args(["--src-endpoint", &src.endpoint])
        .args(["--dst-endpoint", &dst.endpoint])
        .args(["--progress", "never", "--io-timeout", &secs(IO_TIMEOUT)])
        .args(PARTS)
        .arg("--report")
        .arg(report)
        .args(extra);
    if src.oss {
        c.env("SNAPFERRY_SRC_ACCESS_KEY_ID", OSS_AK)
            .env("SNAPFERRY_SRC_SECRET_ACCESS_KEY", OSS_SK);
    }
    if dst.oss {
        c.env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
            .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK);
    }
    c
}

/// A destination of the rig.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dst {
    /// MinIO, `s3://dst/copy`.
    S3,
    /// The OSS gateway, `oss://dst/copy`.
    Oss,
}

const BOTH: [Dst; 2] = [Dst::S3, Dst::Oss];

/// A source MinIO, a destination MinIO and an OSS gateway, each behind its own toxiproxy
/// proxy; the source holds [`source_objects`] under `data/`.
struct Rig {
    src: Minio,
    s3: Minio,
    gw: OssGateway,
    _tp: Toxiproxy,
    src_p: Proxy,
    s3_p: Proxy,
    gw_p: Proxy,
    objects: Vec<(String, Vec<u8>)>,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        // The servers start side by side (each takes a second or two).
        let (src, s3, gw, tp) = std::thread::scope(|s| {
            let src = s.spawn(Minio::start);
            let s3 = s.spawn(Minio::start);
            let gw = s.spawn(|| OssGateway::start(&["dst"]));
            let tp = s.spawn(Toxiproxy::start);
            (
                src.join().expect("source MinIO"),
                s3.join().expect("destination MinIO"),
                gw.join().expect("OSS gateway"),
                tp.join().expect("toxiproxy"),
            )
        });
        let objects = source_objects();
        let rt = rt();
        rt.block_on(async {
            let c = src.client();
            create_bucket(&c, "src").await;
            // aws-sdk-s3 sends a CRC32 with every PutObject, which MinIO keeps.
            for (k, d) in &objects {
                put(&c, "src", &format!("data/{k}"), d.clone()).await;
            }
            create_bucket(&s3.client(), "dst").await;
        });
        let src_p = tp.proxy("src", &src.endpoint);
        let s3_p = tp.proxy("s3dst", &s3.endpoint);
        let gw_p = tp.proxy("ossdst", &gw.endpoint);
        Rig {
            src,
            s3,
            gw,
            _tp: tp,
            src_p,
            s3_p,
            gw_p,
            objects,
            rt,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn proxies(&self) -> [&Proxy; 3] {
        [&self.src_p, &self.s3_p, &self.gw_p]
    }

    fn dst_proxies(&self) -> [&Proxy; 2] {
        [&self.s3_p, &self.gw_p]
    }

    /// Adds `toxic` as `name` to every proxy (the source and both destinations).
    fn everywhere(&self, name: &str, stream: Stream, toxicity: f32, toxic: Toxic) {
        for p in self.proxies() {
            p.add_toxic(name, stream, toxicity, toxic.clone());
        }
    }

    /// Slows the source's answers to `kb_per_s` per connection, so that parts are still
    /// in flight (for seconds) when a fault starts mid-run.
    fn pace(&self, kb_per_s: u64) {
        self.src_p.add_toxic(
            "pace",
            Stream::Downstream,
            1.0,
            Toxic::Bandwidth { kb_per_s },
        );
    }

    /// Removes every toxic and enables every proxy.
    fn heal(&self) {
        for p in self.proxies() {
            p.clear_toxics();
            p.enable();
        }
    }

    fn source(&self) -> Side {
        Side {
            url: "s3://src/data".into(),
            endpoint: self.src_p.endpoint.clone(),
            oss: false,
        }
    }

    fn destination(&self, dst: Dst) -> Side {
        match dst {
            Dst::S3 => Side {
                url: "s3://dst/copy".into(),
                endpoint: self.s3_p.endpoint.clone(),
                oss: false,
            },
            Dst::Oss => Side {
                url: "oss://dst/copy".into(),
                endpoint: self.gw_p.endpoint.clone(),
                oss: true,
            },
        }
    }

    /// Starts a sync from the source to each destination in `dsts`, side by side.
    fn spawn(&self, dsts: &[Dst], tag: &str, extra: &[&str]) -> Vec<Run> {
        dsts.iter()
            .map(|&d| {
                let name = format!("{tag}-{d:?}");
                let report = self.dir.path().join(format!("{name}.json"));
                let cmd = sync_cmd(&self.source(), &self.destination(d), &report, extra);
                Run::spawn(cmd, name, d, report, self.dir.path())
            })
            .collect()
    }

    /// Copied objects the destination holds now (not snapferry's own `.snapferry-*`),
    /// listed straight from the server.
    fn landed(&self, dst: Dst) -> usize {
        let listed = match dst {
            Dst::S3 => self.rt.block_on(keys(&self.s3.client(), "dst", "copy/")),
            Dst::Oss => self.gw.keys("dst"),
        };
        listed
            .iter()
            .filter_map(|k| k.strip_prefix("copy/"))
            .filter(|k| !k.starts_with(".snapferry-"))
            .count()
    }

    /// Polls the destinations until each of `runs` has landed at least `min` objects: the
    /// runs are observably mid-way. A run that ends first fails the test (its fault would
    /// not have been mid-run).
    fn wait_in_progress(&self, runs: &mut [Run], min: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut ready = true;
            for r in runs.iter_mut() {
                if let Some(st) = r.child.try_wait().expect("try_wait") {
                    panic!(
                        "{} ended ({st}) before the fault could start mid-run:\n{}",
                        r.name,
                        r.log_text()
                    );
                }
                ready &= self.landed(r.dst) >= min;
            }
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the runs did not land {min} objects within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the destination holds, read with its own client, without snapferry's
    /// `.snapferry-*` objects.
    fn dst_contents(&self, dst: Dst) -> Contents {
        match dst {
            Dst::S3 => s3_contents(&self.rt, &self.s3.client(), "dst", "copy/"),
            Dst::Oss => gateway_contents(&self.gw, "dst", "copy/"),
        }
    }

    /// Incomplete multipart uploads at the destination, asked straight from the server.
    fn uploads(&self, dst: Dst) -> Vec<String> {
        match dst {
            Dst::S3 => self.rt.block_on(pending_uploads(&self.s3.client(), "dst")),
            Dst::Oss => self.gw.uploads("dst"),
        }
    }

    /// The source, read straight from its server: still what the test put there.
    fn assert_source_intact(&self) {
        let got = s3_contents(&self.rt, &self.src.client(), "src", "data/");
        assert_eq!(got, contents(&self.objects), "the source itself changed");
    }

    fn total_bytes(&self) -> u64 {
        self.objects.iter().map(|(_, d)| d.len() as u64).sum()
    }

    fn keys(&self) -> BTreeSet<String> {
        self.objects.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// Every object under `prefix` (relative key → size, SHA-256), read with the
/// independent S3 client, without snapferry's `.snapferry-*` objects.
fn s3_contents(
    rt: &tokio::runtime::Runtime,
    c: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Contents {
    rt.block_on(async {
        let mut out = Contents::new();
        for k in keys(c, bucket, prefix).await {
            let rel = &k[prefix.len()..];
            if !rel.starts_with(".snapferry-") {
                let d = get(c, bucket, &k).await;
                out.insert(rel.to_string(), (d.len(), sha256_hex(&d)));
            }
        }
        out
    })
}

/// As [`s3_contents`], from the gateway's own store.
fn gateway_contents(gw: &OssGateway, bucket: &str, prefix: &str) -> Contents {
    let mut out = Contents::new();
    for k in gw.keys(bucket) {
        let Some(rel) = k.strip_prefix(prefix) else {
            continue;
        };
        if !rel.starts_with(".snapferry-") {
            let d = gw
                .object(bucket, &k)
                .unwrap_or_else(|| panic!("{k} listed but not readable"));
            out.insert(rel.to_string(), (d.len(), sha256_hex(&d)));
        }
    }
    out
}

/// `got` holds exactly `want`, byte for byte.
fn assert_holds(what: &str, got: &Contents, want: &Contents) {
    let (g, w): (BTreeSet<_>, BTreeSet<_>) = (got.keys().collect(), want.keys().collect());
    assert_eq!(
        g,
        w,
        "{what}: key sets differ (extra {:?}, missing {:?})",
        g.difference(&w).collect::<Vec<_>>(),
        w.difference(&g).collect::<Vec<_>>()
    );
    let differ: Vec<&String> = want.keys().filter(|k| got[*k] != want[*k]).collect();
    assert!(
        differ.is_empty(),
        "{what}: size or SHA-256 differs for {differ:?}"
    );
}

/// A running sync; its output goes to a file.
struct Run {
    name: String,
    dst: Dst,
    child: Child,
    started: Instant,
    report: PathBuf,
    log: PathBuf,
}

/// How a run ended.
struct Done {
    name: String,
    dst: Dst,
    code: Option<i32>,
    /// From the start of the process.
    elapsed: Duration,
    ended: Instant,
    report: Value,
    log: String,
}

impl Run {
    fn spawn(mut cmd: Command, name: String, dst: Dst, report: PathBuf, dir: &Path) -> Run {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("log file");
        cmd.stdout(Stdio::from(f.try_clone().expect("log file")))
            .stderr(Stdio::from(f));
        Run {
            name,
            dst,
            child: cmd.spawn().expect("start snapferry"),
            started: Instant::now(),
            report,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the end, at most `limit` after the start: a run still going then hangs
    /// (it is killed and the test fails).
    fn wait(mut self, limit: Duration) -> Done {
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                let ended = Instant::now();
                let log = self.log_text();
                assert!(
                    self.report.exists(),
                    "{}: no report ({st}):\n{log}",
                    self.name
                );
                let report = read_report(&self.report);
                eprintln!(
                    "{}: exit {:?} after {:.1?}, retries {}, faults {}",
                    self.name,
                    st.code(),
                    ended - self.started,
                    report["retries"],
                    report["faults"]
                );
                return Done {
                    report,
                    name: self.name,
                    dst: self.dst,
                    code: st.code(),
                    elapsed: ended - self.started,
                    ended,
                    log,
                };
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} hung: still running after {limit:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits for every run (each bounded by `limit`).
fn wait_all(runs: Vec<Run>, limit: Duration) -> Vec<Done> {
    runs.into_iter().map(|r| r.wait(limit)).collect()
}

/// A fault kind's counts in the report.
#[derive(Debug, Clone, Copy, Default)]
struct Fault {
    retried: u64,
    recovered: u64,
    gave_up: u64,
}

fn faults(r: &Value) -> BTreeMap<String, Fault> {
    r["faults"]
        .as_object()
        .expect("report.faults")
        .iter()
        .map(|(k, v)| {
            let n = |f: &str| {
                v[f].as_u64()
                    .unwrap_or_else(|| panic!("faults.{k}.{f}: {v}"))
            };
            let f = Fault {
                retried: n("retried_attempts"),
                recovered: n("recovered"),
                gave_up: n("gave_up"),
            };
            (k.clone(), f)
        })
        .collect()
}

fn count(r: &Value, field: &str) -> u64 {
    r[field]
        .as_u64()
        .unwrap_or_else(|| panic!("report.{field} is not a count: {}", r[field]))
}

impl Done {
    fn context(&self) -> String {
        format!(
            "{} (exit {:?} after {:?}); faults {}, retries {}, failures {}\nlog:\n{}",
            self.name,
            self.code,
            self.elapsed,
            self.report["faults"],
            self.report["retries"],
            self.report["failures"],
            self.log
        )
    }

    /// The retries the report counts, checked to be the retried attempts its fault
    /// kinds add up to, and at most `max`.
    fn retries(&self, max: u64) -> u64 {
        let retries = count(&self.report, "retries");
        let by_kind: u64 = faults(&self.report).values().map(|f| f.retried).sum();
        assert_eq!(
            retries,
            by_kind,
            "retries vs faults by kind: {}",
            self.context()
        );
        assert!(
            retries <= max,
            "{retries} retries, more than {max}: {}",
            self.context()
        );
        retries
    }

    /// The failed keys, as the report lists them (each once, counted right).
    fn failed_keys(&self) -> BTreeSet<String> {
        let list = self.report["failures"].as_array().expect("report.failures");
        let keys: BTreeSet<String> = list
            .iter()
            .map(|f| f["key"].as_str().expect("failure key").to_string())
            .collect();
        assert_eq!(
            keys.len(),
            list.len(),
            "a key failed twice: {}",
            self.context()
        );
        assert_eq!(
            count(&self.report, "failed_objects"),
            keys.len() as u64,
            "{}",
            self.context()
        );
        keys
    }

    fn failure_kinds(&self) -> BTreeSet<String> {
        self.report["failures"]
            .as_array()
            .expect("report.failures")
            .iter()
            .map(|f| f["kind"].as_str().expect("failure kind").to_string())
            .collect()
    }

    fn latency(&self, kind: &str, stat: &str) -> f64 {
        self.report["latency_ms"][kind][stat]
            .as_f64()
            .unwrap_or_else(|| panic!("latency_ms.{kind}.{stat}: {}", self.context()))
    }
}

/// What a scenario expects of the retries of each run.
enum Retries<'a> {
    /// The fault is none for a correct client (slow, sliced): no retry at all.
    None,
    /// At least one, at most `max`; every fault kind among `kinds`, and each of `must`
    /// recovered at least once.
    Some {
        max: u64,
        kinds: &'a [&'a str],
        must: &'a [&'a str],
    },
}

/// The kinds a network fault may be reported as.
const NETWORK: &[&str] = &["Timeout", "Unreachable"];

/// What a network fault at random mid-run may cost: at most 400 retries, network kinds
/// only, timeouts among them.
const TIMEOUTS_RETRIED: Retries = Retries::Some {
    max: 400,
    kinds: NETWORK,
    must: &["Timeout"],
};

/// Checks how the copies were verified against the source's own checksums. MinIO keeps
/// each object's CRC32 but answers ranged GETs (snapferry's only GETs) without it: the
/// small objects are checked against their single-part ETag as MD5, and the multipart
/// copies against the full-object CRC32 a HEAD returns, their parts' CRC32s combined.
/// Nothing is left unverified.
fn assert_verified_from_s3(rig: &Rig, d: &Done) {
    let r = &d.report;
    let ctx = d.context();
    let small = rig.objects.iter().filter(|(k, _)| !is_big(k)).count() as u64;
    let big = rig.objects.len() as u64 - small;
    let by = &r["verified_by"];
    assert_eq!(
        count(by, "md5"),
        small,
        "small objects by their ETag: {by} {ctx}"
    );
    assert_eq!(
        count(by, "crc32"),
        big,
        "multipart copies by the full-object CRC32: {by} {ctx}"
    );
    assert_eq!(count(by, "none"), 0, "{by} {ctx}");
    assert_eq!(r["unverified_objects"], json!([]), "{ctx}");
}

/// A run that rode the fault out: exit 0, everything copied and checked, each byte sent
/// once (`transferred_bytes`), the destination identical with no upload left, and the
/// retries as `expect` says.
fn assert_rode_out(rig: &Rig, d: &Done, expect: &Retries) {
    let r = &d.report;
    let ctx = d.context();
    assert_eq!(d.code, Some(0), "{ctx}");
    let n = rig.objects.len() as u64;
    assert_eq!(count(r, "copied_objects"), n, "{ctx}");
    assert_eq!(count(r, "failed_objects"), 0, "{ctx}");
    assert_eq!(r["failures"], json!([]), "{ctx}");
    assert_eq!(count(r, "copied_bytes"), rig.total_bytes(), "{ctx}");
    assert_eq!(count(r, "transferred_bytes"), rig.total_bytes(), "{ctx}");
    assert_verified_from_s3(rig, d);
    rig.assert_source_intact();
    assert_holds(
        &format!("{:?} destination", d.dst),
        &rig.dst_contents(d.dst),
        &contents(&rig.objects),
    );
    assert_eq!(
        rig.uploads(d.dst),
        Vec::<String>::new(),
        "uploads left: {ctx}"
    );
    let f = faults(r);
    for (k, c) in &f {
        assert_eq!(c.gave_up, 0, "{k} gave up in a run that succeeded: {ctx}");
    }
    match expect {
        Retries::None => {
            assert_eq!(d.retries(0), 0);
            assert_eq!(count(r, "resent_bytes"), 0, "{ctx}");
        }
        Retries::Some { max, kinds, must } => {
            assert!(
                d.retries(*max) > 0,
                "no retry: the fault was not seen: {ctx}"
            );
            for k in f.keys() {
                assert!(
                    kinds.contains(&k.as_str()),
                    "unexpected fault kind {k}: {ctx}"
                );
            }
            for k in *must {
                let rec = f.get(*k).map_or(0, |c| c.recovered);
                assert!(rec > 0, "no {k} fault recovered: {ctx}");
            }
        }
    }
}

/// A run a persistent fault stopped: exit 1 within `bound` of the fault's start, the
/// failures listed (each of a kind in `kinds`, and `must_fail` among them), what was
/// copied byte-identical and nothing else at the destination (no object of a failed key,
/// no upload), and the retries bounded by `max_retries`. Returns the failed keys.
fn assert_gave_up(
    rig: &Rig,
    d: &Done,
    fault_at: Instant,
    bound: Duration,
    kinds: &[&str],
    must_fail: &BTreeSet<String>,
    max_retries: u64,
) -> BTreeSet<String> {
    let r = &d.report;
    let ctx = d.context();
    assert_eq!(d.code, Some(1), "{ctx}");
    let after = d.ended.saturating_duration_since(fault_at);
    eprintln!("{}: ended {after:.1?} after the fault started", d.name);
    assert!(
        after <= bound,
        "the run ended {after:?} after the fault started, past the bound {bound:?} (--retry-budget + --io-timeout {IO_TIMEOUT:?} + slack): {ctx}"
    );
    let failed = d.failed_keys();
    assert!(!failed.is_empty(), "{ctx}");
    assert!(failed.is_subset(&rig.keys()), "{failed:?}");
    assert!(
        must_fail.is_subset(&failed),
        "{:?} must have failed: {ctx}",
        must_fail.difference(&failed).collect::<Vec<_>>()
    );
    for k in d.failure_kinds() {
        assert!(kinds.contains(&k.as_str()), "failure of kind {k}: {ctx}");
    }
    let n = rig.objects.len() as u64;
    assert_eq!(
        count(r, "copied_objects") + failed.len() as u64,
        n,
        "copied + failed: {ctx}"
    );
    let want = contents(rig.objects.iter().filter(|(k, _)| !failed.contains(k)));
    assert_holds(
        &format!("{:?} destination after giving up", d.dst),
        &rig.dst_contents(d.dst),
        &want,
    );
    assert_eq!(
        rig.uploads(d.dst),
        Vec::<String>::new(),
        "uploads left: {ctx}"
    );
    let f = faults(r);
    let gave_up: u64 = kinds
        .iter()
        .map(|k| f.get(*k).map_or(0, |c| c.gave_up))
        .sum();
    assert!(gave_up > 0, "no request gave up with {kinds:?}: {ctx}");
    d.retries(max_retries);
    failed
}

/// After a run that gave up on `failed`, a run with the fault gone copies exactly those
/// and leaves the destination identical.
fn assert_repaired(rig: &Rig, dsts: &[Dst], failed: &BTreeMap<Dst, BTreeSet<String>>) {
    let runs = rig.spawn(dsts, "repair", &[]);
    for d in wait_all(runs, HANG) {
        let ctx = d.context();
        assert_eq!(d.code, Some(0), "{ctx}");
        assert_eq!(
            count(&d.report, "copied_objects"),
            failed[&d.dst].len() as u64,
            "the repair copies what failed: {ctx}"
        );
        assert_holds(
            &format!("{:?} destination after the repair", d.dst),
            &rig.dst_contents(d.dst),
            &contents(&rig.objects),
        );
        assert_eq!(rig.uploads(d.dst), Vec::<String>::new());
    }
}

// ---------------------------------------------------------------------------------------
// Transient faults: each run ends identical, exit 0, its retries counted and bounded.

#[test]
fn sha256_matches_the_standard_vectors() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
        sha256_hex(&[b'a'; 1_000_000]),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}

#[test]
fn latency_with_jitter_on_every_link_ends_identical_without_retries() {
    let rig = Rig::start();
    rig.everywhere(
        "latency_down",
        Stream::Downstream,
        1.0,
        Toxic::Latency {
            latency_ms: 80,
            jitter_ms: 40,
        },
    );
    rig.everywhere(
        "latency_up",
        Stream::Upstream,
        1.0,
        Toxic::Latency {
            latency_ms: 20,
            jitter_ms: 10,
        },
    );
    let runs = rig.spawn(&BOTH, "latency", &["--retry-budget", TRANSIENT_BUDGET]);
    for d in wait_all(runs, HANG) {
        assert_rode_out(&rig, &d, &Retries::None);
        // The latency acted: a GET waits at least 40 ms down and 10 ms up.
        let p50 = d.latency("get", "p50_ms");
        assert!(p50 >= 50.0, "GET p50 {p50} ms: {}", d.context());
    }
}

#[test]
fn bandwidth_cap_ends_identical_without_retries_though_a_part_outlasts_the_io_timeout() {
    let rig = Rig::start();
    // 2 MB/s per connection from the source: reading one 5 MiB part takes 2.6 s, longer
    // than --io-timeout, which bounds idleness, not the length of a transfer. 8 MB/s up
    // to the destinations: toxiproxy takes a whole part into its buffers at once and
    // trickles it on, so the client waits for the answer, with nothing moving, for as
    // long as the buffer takes to drain (0.7 s here; past --io-timeout that wait is a
    // stall by definition).
    let (down, up) = (2000, 8000);
    rig.src_p
        .toxic(Stream::Downstream, Toxic::Bandwidth { kb_per_s: down });
    for p in rig.dst_proxies() {
        p.toxic(Stream::Upstream, Toxic::Bandwidth { kb_per_s: up });
    }
    let runs = rig.spawn(&BOTH, "bandwidth", &["--retry-budget", TRANSIENT_BUDGET]);
    let part = 5.0 * MIB as f64;
    let least =
        Duration::from_secs_f64(part / (down as f64 * 1000.0) + part / (up as f64 * 1000.0));
    for d in wait_all(runs, HANG) {
        let longest = d.latency("get", "max_ms");
        eprintln!(
            "{}: took {:.2?} (at least {least:.2?}); the slowest GET {longest} ms",
            d.name, d.elapsed
        );
        assert_rode_out(&rig, &d, &Retries::None);
        assert!(d.elapsed >= least, "{}", d.context());
        assert!(
            longest > IO_TIMEOUT.as_millis() as f64,
            "the slowest GET took {longest} ms: the cap did not act: {}",
            d.context()
        );
    }
}

#[test]
fn slicer_on_every_link_ends_identical_without_retries() {
    let rig = Rig::start();
    let slicer = Toxic::Slicer {
        average_size: 1500,
        size_variation: 1000,
        delay_us: 50,
    };
    rig.everywhere("slicer_down", Stream::Downstream, 1.0, slicer.clone());
    rig.everywhere("slicer_up", Stream::Upstream, 1.0, slicer);
    let runs = rig.spawn(&BOTH, "slicer", &["--retry-budget", TRANSIENT_BUDGET]);
    for d in wait_all(runs, HANG) {
        assert_rode_out(&rig, &d, &Retries::None);
    }
}

/// Starts both runs with the source paced to `pace` KB/s, applies `fault` once both have
/// observably landed objects (transfers are in flight then), and checks that each rode
/// it out as `expect` says. Returns the finished runs for checks of the scenario's own.
fn ride_out_mid_run(tag: &str, pace: u64, fault: impl FnOnce(&Rig), expect: &Retries) -> Vec<Done> {
    let rig = Rig::start();
    rig.pace(pace);
    let mut runs = rig.spawn(&BOTH, tag, &["--retry-budget", TRANSIENT_BUDGET]);
    rig.wait_in_progress(&mut runs, 2);
    fault(&rig);
    let done = wait_all(runs, HANG);
    for d in &done {
        assert_rode_out(&rig, d, expect);
    }
    done
}

#[test]
fn reset_peer_at_random_mid_run_is_retried_and_ends_identical() {
    ride_out_mid_run(
        "reset",
        2000,
        |rig| {
            // One reset of every open connection now (parts are in flight: certain to be seen),
            // then resets at random for the rest of the run: a quarter of the connections each
            // reset 300 ms, another quarter 1 s, after they open.
            rig.everywhere(
                "reset_now",
                Stream::Upstream,
                1.0,
                Toxic::ResetPeer { timeout_ms: 0 },
            );
            std::thread::sleep(Duration::from_millis(100)); // the burst's length, not a readiness wait
            for p in rig.proxies() {
                p.remove_toxic("reset_now");
            }
            rig.everywhere(
                "reset_300",
                Stream::Upstream,
                0.25,
                Toxic::ResetPeer { timeout_ms: 300 },
            );
            rig.everywhere(
                "reset_1000",
                Stream::Downstream,
                0.25,
                Toxic::ResetPeer { timeout_ms: 1000 },
            );
        },
        &TIMEOUTS_RETRIED,
    );
}

#[test]
fn stalled_connections_at_random_mid_run_time_out_and_end_identical() {
    ride_out_mid_run(
        "stall",
        2000,
        |rig| {
            // Half of the connections, open ones included, stop carrying bytes: the source's
            // forever (only --io-timeout gets a request out of one), the destinations' for 10 s,
            // then closed (a stalled CompleteMultipartUpload may wait 15 minutes for its answer).
            for s in [Stream::Downstream, Stream::Upstream] {
                rig.src_p.add_toxic(
                    &format!("stall_{s:?}"),
                    s,
                    0.5,
                    Toxic::Timeout { timeout_ms: 0 },
                );
                for p in rig.dst_proxies() {
                    p.add_toxic(
                        &format!("stall_{s:?}"),
                        s,
                        0.5,
                        Toxic::Timeout { timeout_ms: 10_000 },
                    );
                }
            }
        },
        &TIMEOUTS_RETRIED,
    );
}

#[test]
fn limit_data_cuts_mid_run_are_retried_and_end_identical() {
    ride_out_mid_run(
        "limit",
        2000,
        |rig| {
            // Half of the connections are cut after 1 MiB more: parts (5 MiB) on them break.
            let cut = Toxic::LimitData { bytes: MIB as u64 };
            rig.src_p
                .add_toxic("limit", Stream::Downstream, 0.5, cut.clone());
            for p in rig.dst_proxies() {
                p.add_toxic("limit", Stream::Upstream, 0.5, cut.clone());
            }
        },
        &TIMEOUTS_RETRIED,
    );
}

#[test]
fn both_servers_unreachable_for_10s_mid_run_ends_identical_exit_0() {
    let outage = Duration::from_secs(10);
    let expect = Retries::Some {
        // Each request in flight (16 per run) retries with a backoff doubling from
        // 200 ms to 10 s: about 7 attempts in 10 s, 15 with unlucky jitter.
        max: 16 * 15,
        kinds: NETWORK,
        must: &["Unreachable"],
    };
    let mut t = None;
    let done = ride_out_mid_run(
        "outage",
        2000,
        |rig| {
            t = Some(Instant::now());
            let over: Vec<_> = rig.proxies().iter().map(|p| p.outage(outage)).collect();
            for h in over {
                h.join().expect("outage thread");
            }
        },
        &expect,
    );
    let t = t.expect("the outage started");
    for d in done {
        assert!(d.ended - t >= outage, "{}", d.context());
    }
}

#[test]
fn every_fault_at_once_at_low_toxicity_with_a_10s_outage_ends_identical() {
    let expect = Retries::Some {
        max: 600,
        kinds: NETWORK,
        must: &["Unreachable"],
    };
    ride_out_mid_run(
        "all",
        3000,
        |rig| {
            let low = 0.15;
            for s in [Stream::Downstream, Stream::Upstream] {
                let n = |t: &str| format!("{t}_{s:?}");
                rig.everywhere(
                    &n("latency"),
                    s,
                    low,
                    Toxic::Latency {
                        latency_ms: 50,
                        jitter_ms: 30,
                    },
                );
                rig.everywhere(&n("bandwidth"), s, low, Toxic::Bandwidth { kb_per_s: 2000 });
                rig.everywhere(&n("reset"), s, low, Toxic::ResetPeer { timeout_ms: 700 });
                rig.everywhere(
                    &n("slicer"),
                    s,
                    low,
                    Toxic::Slicer {
                        average_size: 2000,
                        size_variation: 1500,
                        delay_us: 50,
                    },
                );
                rig.everywhere(&n("limit"), s, low, Toxic::LimitData { bytes: MIB as u64 });
                rig.src_p
                    .add_toxic(&n("stall"), s, low, Toxic::Timeout { timeout_ms: 0 });
                for p in rig.dst_proxies() {
                    p.add_toxic(&n("stall"), s, low, Toxic::Timeout { timeout_ms: 10_000 });
                }
            }
            let over: Vec<_> = rig
                .proxies()
                .iter()
                .map(|p| p.outage(Duration::from_secs(10)))
                .collect();
            for h in over {
                h.join().expect("outage thread");
            }
        },
        &expect,
    );
}

// ---------------------------------------------------------------------------------------
// Persistent faults: exit 1 within the bound, the failures listed, nothing partial left,
// and a run after the fault repairs the destination.

/// Starts both runs with `--retry-budget budget`, waits until they are mid-way, starts
/// the persistent `fault`, checks that they give up within [`persistent_bound`] (failures
/// of `kinds`) and that a run after the fault repairs the destinations. Returns how long
/// after the fault's start each run ended.
fn persistent_source_fault(
    tag: &str,
    budget: Duration,
    kinds: &[&str],
    fault: impl FnOnce(&Rig),
) -> Vec<Duration> {
    let rig = Rig::start();
    // 1 MB/s per connection: a 5 MiB part takes 5 s, still in flight when the fault starts.
    rig.pace(1000);
    let b = secs(budget);
    let extra = [
        "--retry-budget",
        &b,
        "--concurrency",
        PERSISTENT_CONCURRENCY,
    ];
    let mut runs = rig.spawn(&BOTH, tag, &extra);
    rig.wait_in_progress(&mut runs, 2);
    let fault_at = Instant::now();
    fault(&rig);
    let big: BTreeSet<String> = rig.keys().into_iter().filter(|k| is_big(k)).collect();
    let mut failed = BTreeMap::new();
    let mut after = Vec::new();
    let bound = persistent_bound(budget, SLACK);
    for d in wait_all(runs, HANG) {
        // Every request in flight retries about once a second in the budget's 6 s.
        let f = assert_gave_up(&rig, &d, fault_at, bound, kinds, &big, 64 * 12);
        failed.insert(d.dst, f);
        after.push(d.ended - fault_at);
    }
    rig.heal();
    assert_repaired(&rig, &BOTH, &failed);
    after
}

fn stall_source(rig: &Rig) {
    rig.src_p.add_toxic(
        "stall",
        Stream::Downstream,
        1.0,
        Toxic::Timeout { timeout_ms: 0 },
    );
}

#[test]
fn source_stalled_for_good_mid_run_fails_within_retry_budget_plus_io_timeout() {
    persistent_source_fault("stuck", PERSISTENT_BUDGET, &["Timeout"], stall_source);
}

#[test]
fn a_stalled_connection_fails_at_the_io_timeout() {
    // With a budget shorter than --io-timeout, a request on a stalled connection is not
    // tried again: it fails when the idle timer fires, and the run ends right after.
    let budget = Duration::from_secs(1);
    let after = persistent_source_fault("idle", budget, &["Timeout"], stall_source);
    // What follows the failures (aborting uploads, the report, the lease) takes well under
    // a second here; 4 s on a loaded CI.
    let bound = persistent_bound(budget, Duration::from_secs(4));
    // The idle timer counts from the last byte, and bytes flow (paced, a chunk every few
    // tens of milliseconds) until the toxic lands just after `fault_at`: the stall can
    // begin a moment before `fault_at`, so the run may end that much short of
    // --io-timeout after it (2.0 s measured here, right at the bound). A run
    // that did not wait for the idle timer would end at once, far below this.
    let least = IO_TIMEOUT - Duration::from_millis(250);
    for a in after {
        assert!(
            a >= least && a <= bound,
            "the run ended {a:?} after the stall began: not within --io-timeout {IO_TIMEOUT:?} (less one paced chunk: {least:?}) .. {bound:?}"
        );
    }
}

#[test]
fn source_resetting_every_connection_for_good_fails_within_the_bound() {
    persistent_source_fault("resets", PERSISTENT_BUDGET, NETWORK, |rig| {
        // Both ways: a toxic on the requests alone waits for the next request to reset.
        for s in [Stream::Upstream, Stream::Downstream] {
            rig.src_p.add_toxic(
                &format!("reset_{s:?}"),
                s,
                1.0,
                Toxic::ResetPeer { timeout_ms: 0 },
            );
        }
    });
}

#[test]
fn source_unreachable_for_good_mid_run_fails_within_the_bound() {
    persistent_source_fault("down", PERSISTENT_BUDGET, NETWORK, |rig| {
        rig.src_p.disable()
    });
}

#[test]
fn destinations_cutting_every_connection_after_2mib_fail_the_multipart_objects_only() {
    let rig = Rig::start();
    // Every connection to a destination is closed once 2 MiB have gone up it: a 5 MiB
    // part never lands; small objects do (on fresh connections when a kept-alive one
    // reaches its limit), and so do the small requests that abort uploads.
    for p in rig.dst_proxies() {
        p.toxic(
            Stream::Upstream,
            Toxic::LimitData {
                bytes: 2 * MIB as u64,
            },
        );
    }
    let budget = secs(PERSISTENT_BUDGET);
    let extra = [
        "--retry-budget",
        &budget,
        "--concurrency",
        PERSISTENT_CONCURRENCY,
    ];
    let fault_at = Instant::now();
    let runs = rig.spawn(&BOTH, "cut", &extra);
    let big: BTreeSet<String> = rig.keys().into_iter().filter(|k| is_big(k)).collect();
    let mut failed = BTreeMap::new();
    for d in wait_all(runs, HANG) {
        let bound = persistent_bound(PERSISTENT_BUDGET, SLACK);
        let f = assert_gave_up(&rig, &d, fault_at, bound, NETWORK, &big, 64 * 12);
        assert_eq!(
            f,
            big,
            "exactly the multipart objects fail: {}",
            d.context()
        );
        failed.insert(d.dst, f);
    }
    rig.heal();
    assert_repaired(&rig, &BOTH, &failed);
}

// ---------------------------------------------------------------------------------------
// Bytes flipped in the source's responses: never copied.

/// The source the flip proxy sits in front of.
#[derive(Clone, Copy, Debug)]
enum FlipSource {
    /// MinIO over S3; the copies land on the OSS gateway.
    S3,
    /// The OSS gateway over OSS; the copies land on MinIO.
    Oss,
}

/// A source (MinIO or the gateway) behind a [`FlipProxy`], holding [`source_objects`]
/// under `data/`, and a destination of the other kind, reached directly.
struct FlipRig {
    kind: FlipSource,
    objects: Vec<(String, Vec<u8>)>,
    minio: Minio,
    gw: OssGateway,
    fp: FlipProxy,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl FlipRig {
    fn start(kind: FlipSource) -> FlipRig {
        let (minio, gw) = std::thread::scope(|s| {
            let m = s.spawn(Minio::start);
            let g = s.spawn(|| OssGateway::start(&["src", "dst"]));
            (m.join().expect("MinIO"), g.join().expect("gateway"))
        });
        let objects = source_objects();
        let rt = rt();
        let dir = tempfile::tempdir().expect("temp dir");
        let c = minio.client();
        rt.block_on(async {
            create_bucket(&c, "src").await;
            create_bucket(&c, "dst").await;
        });
        match kind {
            FlipSource::S3 => rt.block_on(async {
                for (k, d) in &objects {
                    put(&c, "src", &format!("data/{k}"), d.clone()).await;
                }
            }),
            FlipSource::Oss => {
                // Seeded from a directory by snapferry, then checked in the gateway's store.
                let seed = dir.path().join("seed");
                for (k, d) in &objects {
                    let p = seed.join("data").join(k);
                    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&p, d).expect("write seed");
                }
                let mut cmd = snapferry();
                cmd.arg("sync")
                    .arg(&seed)
                    .args(["oss://src", "--dst-endpoint", &gw.endpoint])
                    .args(["--progress", "never"])
                    .args(PARTS)
                    .env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
                    .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK);
                let out = run(cmd);
                assert_eq!(out.status.code(), Some(0), "seeding: {:?}", texts(&out));
                assert_holds(
                    "the seeded gateway",
                    &gateway_contents(&gw, "src", "data/"),
                    &contents(&objects),
                );
            }
        }
        let fp = FlipProxy::start(match kind {
            FlipSource::S3 => &minio.endpoint,
            FlipSource::Oss => &gw.endpoint,
        });
        FlipRig {
            kind,
            objects,
            minio,
            gw,
            fp,
            rt,
            dir,
        }
    }

    /// A sync of `data/<sub>` to `copy/<dst>/`, the source through the flip proxy (or
    /// straight, `direct`).
    fn sync(&self, sub: &str, dst: &str, direct: bool, tag: &str) -> Done {
        let src_ep = if direct {
            match self.kind {
                FlipSource::S3 => self.minio.endpoint.clone(),
                FlipSource::Oss => self.gw.endpoint.clone(),
            }
        } else {
            self.fp.endpoint.clone()
        };
        let (src, dst) = match self.kind {
            FlipSource::S3 => (
                Side {
                    url: format!("s3://src/data/{sub}"),
                    endpoint: src_ep,
                    oss: false,
                },
                Side {
                    url: format!("oss://dst/copy/{dst}"),
                    endpoint: self.gw.endpoint.clone(),
                    oss: true,
                },
            ),
            FlipSource::Oss => (
                Side {
                    url: format!("oss://src/data/{sub}"),
                    endpoint: src_ep,
                    oss: true,
                },
                Side {
                    url: format!("s3://dst/copy/{dst}"),
                    endpoint: self.minio.endpoint.clone(),
                    oss: false,
                },
            ),
        };
        let report = self.dir.path().join(format!("{tag}.json"));
        let cmd = sync_cmd(&src, &dst, &report, &["--retry-budget", "30s"]);
        let d = match self.kind {
            FlipSource::S3 => Dst::Oss,
            FlipSource::Oss => Dst::S3,
        };
        Run::spawn(cmd, tag.to_string(), d, report, self.dir.path()).wait(HANG)
    }

    /// What `copy/<dst>/` holds, keyed as under `data/`.
    fn dst_contents(&self, sub: &str, dst: &str) -> Contents {
        let prefix = format!("copy/{dst}/");
        let got = match self.kind {
            FlipSource::S3 => gateway_contents(&self.gw, "dst", &prefix),
            FlipSource::Oss => s3_contents(&self.rt, &self.minio.client(), "dst", &prefix),
        };
        got.into_iter()
            .map(|(k, v)| (format!("{sub}/{k}"), v))
            .collect()
    }

    fn uploads(&self) -> Vec<String> {
        match self.kind {
            FlipSource::S3 => self.gw.uploads("dst"),
            FlipSource::Oss => self
                .rt
                .block_on(pending_uploads(&self.minio.client(), "dst")),
        }
    }

    fn objects_under(&self, sub: &str) -> Vec<(String, Vec<u8>)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{sub}/")))
            .cloned()
            .collect()
    }
}

/// Responses of at least [`FLIP_MIN_BODY`] one pass over `objects` reads: one GET per
/// object, one per part of a multipart copy.
fn flippable_bodies(objects: &[(String, Vec<u8>)]) -> (u64, u64) {
    let (part, threshold) = (5 * MIB, 5 * MIB);
    let (mut gets, mut flippable) = (0, 0);
    for (_, d) in objects {
        let sizes: Vec<usize> = if d.len() > threshold {
            d.chunks(part).map(<[u8]>::len).collect()
        } else {
            vec![d.len()]
        };
        gets += sizes.len() as u64;
        flippable += sizes.iter().filter(|&&n| n as u64 >= FLIP_MIN_BODY).count() as u64;
    }
    (gets, flippable)
}

/// Flips in what the source sends for `data/<sub>`: a few, then clean (retried, copied,
/// identical); in every response (the objects fail loudly, none of them is at the
/// destination); then a run without the proxy repairs the destination.
fn flips_are_never_copied(kind: FlipSource, sub: &str) {
    let rig = FlipRig::start(kind);
    let objects = rig.objects_under(sub);
    let want = contents(&objects);
    let n = objects.len() as u64;
    let flippable: BTreeSet<String> = objects
        .iter()
        .filter(|(_, d)| d.len() as u64 >= FLIP_MIN_BODY)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(flippable.len() >= 3, "{flippable:?}");
    let multipart = objects.iter().any(|(_, d)| d.len() > 5 * MIB);
    let (pass_gets, pass_flippable) = flippable_bodies(&objects);
    // Every copy is checked against the source's own checksum: OSS sends the object's
    // CRC-64 with every GET, ranged ones too; MinIO sends no checksum with a ranged GET,
    // so a small object is checked against its ETag (MD5).
    let check_verified = |d: &Done| {
        let ctx = d.context();
        let by = &d.report["verified_by"];
        assert_eq!(
            count(by, "none"),
            0,
            "copies checked against nothing: {ctx}"
        );
        assert_eq!(d.report["unverified_objects"], json!([]), "{ctx}");
        match kind {
            FlipSource::Oss => assert_eq!(count(by, "crc64"), n, "{ctx}"),
            FlipSource::S3 if !multipart => assert_eq!(count(by, "md5"), n, "{ctx}"),
            FlipSource::S3 => {}
        }
    };
    // No object landed with other contents than the source's.
    let assert_none_corrupt = |got: &Contents, ctx: &str| {
        let corrupt: Vec<&String> = got
            .keys()
            .filter(|k| want.get(*k) != Some(&got[*k]))
            .collect();
        assert!(
            corrupt.is_empty(),
            "flipped bytes copied to {corrupt:?}: {ctx}"
        );
    };
    let relative = |d: &Done| -> BTreeSet<String> {
        d.failed_keys()
            .iter()
            .map(|k| format!("{sub}/{k}"))
            .collect()
    };

    // A few flips, then clean: each flipped object read again, and copied intact.
    rig.fp.arm_min(3, FLIP_MIN_BODY);
    let d = rig.sync(sub, "t", false, "transient");
    let ctx = d.context();
    assert_eq!(rig.fp.flips(), 3, "{ctx}");
    let got = rig.dst_contents(sub, "t");
    assert_none_corrupt(&got, &ctx);
    assert_eq!(d.code, Some(0), "{ctx}");
    assert_holds(&format!("after 3 flips: {ctx}"), &got, &want);
    assert_eq!(count(&d.report, "copied_objects"), n, "{ctx}");
    check_verified(&d);
    let cm = faults(&d.report)
        .get("ChecksumMismatch")
        .copied()
        .unwrap_or_default();
    assert!(
        cm.retried >= 1 && cm.recovered >= 1 && cm.gave_up == 0,
        "ChecksumMismatch retried and recovered: {ctx}"
    );
    if !multipart {
        // Each flip failed one GET, which was sent again.
        assert_eq!(cm.retried, 3, "{ctx}");
    }
    // At most one object per flip is read again (3 parts for a multipart copy).
    d.retries(3 * 3);
    assert_eq!(rig.uploads(), Vec::<String>::new(), "{ctx}");

    // Every response of an object flipped, for good.
    rig.fp.arm_min(1_000_000, FLIP_MIN_BODY);
    let before = rig.fp.flips();
    let d = rig.sync(sub, "p", false, "persistent");
    let ctx = d.context();
    let flips = (rig.fp.flips() - before) as u64;
    let got = rig.dst_contents(sub, "p");
    assert_none_corrupt(&got, &ctx);
    assert_eq!(d.code, Some(1), "{ctx}");
    assert_eq!(relative(&d), flippable, "{ctx}");
    assert_eq!(
        d.failure_kinds(),
        BTreeSet::from(["ChecksumMismatch".to_string()]),
        "{ctx}"
    );
    let expect: Contents = want
        .iter()
        .filter(|(k, _)| !flippable.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_holds(&format!("after persistent flips: {ctx}"), &got, &expect);
    assert_eq!(rig.uploads(), Vec::<String>::new(), "{ctx}");
    // Each failed object was read again before it was given up on, a few times only.
    let gets = count(&d.report["requests"], "get");
    assert!(
        gets >= pass_gets + pass_flippable,
        "{gets} GETs: not every flipped object was read again: {ctx}"
    );
    assert!(
        flips <= CORRUPTION_ATTEMPTS * pass_flippable,
        "{flips} flipped responses: more than {CORRUPTION_ATTEMPTS} tries: {ctx}"
    );
    let cm = faults(&d.report)
        .get("ChecksumMismatch")
        .copied()
        .unwrap_or_default();
    assert!(cm.retried >= 1 && cm.gave_up >= 1, "{ctx}");
    if !multipart {
        // Each flipped response failed one attempt: retried, or the last one.
        assert_eq!(cm.retried + cm.gave_up, flips, "{ctx}");
        assert_eq!(cm.gave_up, flippable.len() as u64, "{ctx}");
    }
    d.retries((CORRUPTION_ATTEMPTS - 1) * pass_flippable);
    rig.fp.arm(0);

    // Without the proxy: exactly the failed objects are copied.
    let d = rig.sync(sub, "p", true, "repair");
    let ctx = d.context();
    assert_eq!(d.code, Some(0), "{ctx}");
    assert_eq!(
        count(&d.report, "copied_objects"),
        flippable.len() as u64,
        "{ctx}"
    );
    assert_holds(
        &format!("after the repair: {ctx}"),
        &rig.dst_contents(sub, "p"),
        &want,
    );
    assert_eq!(rig.uploads(), Vec::<String>::new(), "{ctx}");
}

#[test]
fn s3_source_flipped_bytes_of_whole_objects_are_never_copied() {
    flips_are_never_copied(FlipSource::S3, "small");
}

#[test]
fn s3_source_flipped_bytes_of_multipart_copies_are_never_copied() {
    flips_are_never_copied(FlipSource::S3, "big");
}

#[test]
fn oss_source_flipped_bytes_of_whole_objects_are_never_copied() {
    flips_are_never_copied(FlipSource::Oss, "small");
}

#[test]
fn oss_source_flipped_bytes_of_multipart_copies_are_never_copied() {
    flips_are_never_copied(FlipSource::Oss, "big");
}
