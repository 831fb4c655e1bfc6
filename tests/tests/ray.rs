//! The Ray launcher (deploy/ray/snapferry_ray.py) on a real Ray cluster — a head and two
//! worker nodes on loopback (fixtures/ray/cluster.py) — against real MinIO: the OpenSearch
//! fixture scaled up by cloning its indices (fixtures/repos/clone.py) goes from one MinIO
//! server to another in a round of 4 units whose one unit loses its Ray worker to SIGKILL
//! while its snapferry copies (the destination behind toxiproxy's latency, so it takes
//! seconds): the snapferry dies with its worker, Ray runs the unit again, and that run takes
//! over the dead one's lease. The result is the repository a whole `sync` makes, byte for
//! byte, passes `repo verify --deep`, and a real OpenSearch restores it with the fixture's
//! document counts. A round into the OSS gateway passes `repo verify --deep` too. A unit that
//! fails for good leaves the round uncommitted, and named.
//!
//! Needs the Ray venv: `SNAPFERRY_RAY_PYTHON`, else the cached one that
//! `bash fixtures/ray/install.sh` makes (fixtures/test.sh runs it).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

const UNITS: usize = 4;
/// Copies of the fixture's indices in the scaled-up source (copy 0 is the original).
const COPIES: u32 = 3;

fn fixture() -> PathBuf {
    fixture_dir("opensearch").join("repo")
}

fn ray_python() -> PathBuf {
    venv_python(
        "SNAPFERRY_RAY_PYTHON",
        "ray-venv",
        "fixtures/ray/install.sh",
    )
}

/// A clean environment for Ray's processes: PATH, a home and Ray's temp dir of this test, the
/// loopback settings, and the test credentials (the nodes' tasks and the driver's plan and
/// commit read them); no AWS_* and no proxies.
fn ray_env(c: &mut Command, tmp: &Path) {
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp)
        .env("RAY_TMPDIR", tmp)
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .env("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        .env("SNAPFERRY_SRC_ACCESS_KEY_ID", ACCESS_KEY)
        .env("SNAPFERRY_SRC_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("SNAPFERRY_DST_ACCESS_KEY_ID", ACCESS_KEY)
        .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", SECRET_KEY);
}

/// The Ray cluster fixture in a process group of its own: stopped at EOF on its stdin when
/// dropped (also on a panic), then the group killed — Ray's agents outlive a killed parent.
struct RayCluster {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl RayCluster {
    /// Starts the cluster; `env` overrides `ray_env`'s (the tasks' credentials).
    fn start(env: &[(&str, &str)]) -> RayCluster {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        // Short: Ray's Unix sockets live under it.
        let dir = tempfile::Builder::new()
            .prefix("ray")
            .tempdir_in("/tmp")
            .expect("ray temp dir");
        let mut c = Command::new(ray_python());
        c.arg(repo_root().join("fixtures/ray/cluster.py"));
        ray_env(&mut c, dir.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let t0 = Instant::now();
        let mut child = c
            .spawn()
            .expect("setup failed: cannot start the Ray cluster");
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let mut cluster = RayCluster {
            child,
            address: String::new(),
            dir,
        };
        match line.trim().strip_prefix("READY ") {
            Some(a) => cluster.address = a.to_string(),
            None => panic!("setup failed: the Ray cluster did not start (said {line:?})"),
        }
        eprintln!(
            "ray.rs: cluster at {} in {:.1?}",
            cluster.address,
            t0.elapsed()
        );
        cluster
    }
}

impl Drop for RayCluster {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The driver, running a round of `UNITS` units from `src` into `dst` with the sync flags
/// `flags` (the endpoints); `env` overrides `ray_env`'s (test hooks, credentials).
fn driver(
    cluster: &RayCluster,
    src: &str,
    dst: &str,
    flags: &[&str],
    env: &[(&str, String)],
) -> Child {
    let mut c = Command::new(ray_python());
    c.arg(repo_root().join("deploy/ray/snapferry_ray.py"))
        .args([
            "--address",
            &cluster.address,
            "--node-ip-address",
            "127.0.0.1",
        ])
        .arg("--snapferry")
        .arg(snapferry_binary())
        .args(["--max-retries", "2", "--", src, dst])
        .args(["--units", &UNITS.to_string()])
        .args(flags)
        .args(["--progress", "never"]);
    ray_env(&mut c, cluster.dir.path());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Ray driver")
}

/// Waits for the driver (at most 5 minutes; killed after): its output.
fn finish(mut child: Child) -> Output {
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the driver") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The driver's summary line of unit `i`.
fn unit_line(stdout: &str, i: usize) -> String {
    let prefix = format!("unit {i}: ");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "one line for unit {i}: {stdout}");
    lines[0].to_string()
}

fn latest(s3: &Minio, bucket: &str) -> Result<Vec<u8>, String> {
    rt().block_on(try_get(&s3.client(), bucket, "repo/index.latest"))
}

/// `snapferry repo verify URL --deep --json` with `flags` and `env`: it exits 0 and finds no
/// problem.
fn verify_deep(url: &str, flags: &[&str], env: &[(&str, &str)]) {
    let mut verify = snapferry();
    verify.args(["repo", "verify", url]).args(flags);
    verify.args(["--json", "--deep"]);
    for (k, v) in env {
        verify.env(k, v);
    }
    let out = run(verify);
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "repo verify {url}: {se}");
    let v: serde_json::Value = serde_json::from_str(&so).unwrap_or_else(|e| panic!("{e}: {so}"));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn a_round_on_ray_survives_a_killed_worker_and_makes_the_repository_a_whole_sync_makes() {
    // The source: the fixture with its indices cloned, on MinIO server A (`src/repo`).
    let tmp = tempfile::tempdir().expect("temp dir");
    let made = clone_fixture("opensearch", &tmp.path().join("cloned"), COPIES);
    eprintln!("ray.rs: cloned fixture {made}");
    let Pair {
        a,
        b,
        ca: _ca,
        cb: c,
        rt: _rt,
    } = Pair::start();
    rt().block_on(create_bucket(&c, "whole"));
    let mut up = snapferry();
    up.args([
        "sync",
        tmp.path().join("cloned").to_str().unwrap(),
        "s3://src/repo",
    ]);
    up.args(["--dst-endpoint", &a.endpoint, "--progress", "never"]);
    let out = run(up);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    // One whole sync, A to B's `whole/repo`.
    let mut whole = snapferry();
    whole.args(["sync", "s3://src/repo", "s3://whole/repo"]);
    whole.args(["--src-endpoint", &a.endpoint, "--dst-endpoint", &b.endpoint]);
    whole.args(["--progress", "never"]);
    let t_whole = Instant::now();
    let out = run(whole);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    eprintln!("ray.rs: the whole sync took {:.1?}", t_whole.elapsed());

    // Every request of the round to B waits 150 ms, so a unit's copy takes seconds.
    let tp = Toxiproxy::start();
    let proxy = tp.proxy("minio", &b.endpoint);
    proxy.toxic(
        Stream::Downstream,
        Toxic::Latency {
            latency_ms: 150,
            jitter_ms: 0,
        },
    );
    let cluster = RayCluster::start(&[]);
    let pids = tempfile::tempdir().expect("pids dir");
    let t0 = Instant::now();
    let hook = format!("1:{}", pids.path().display());
    let mut child = driver(
        &cluster,
        "s3://src/repo",
        "s3://dst/repo",
        &[
            "--src-endpoint",
            &a.endpoint,
            "--dst-endpoint",
            &proxy.endpoint,
        ],
        &[("SNAPFERRY_RAY_TEST_PIDS", hook)],
    );
    // Unit 1's first attempt says which Ray worker runs it and its snapferry's PID; once that
    // snapferry holds the unit's lease (it is copying), the worker is killed.
    let pid_file = pids.path().join("unit-1.pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (worker, binary) = loop {
        if let Ok(s) = std::fs::read_to_string(&pid_file) {
            let (w, b) = s.split_once(' ').expect("two PIDs");
            break (w.to_string(), b.to_string());
        }
        if let Ok(Some(st)) = child.try_wait() {
            let out = finish(child);
            panic!("the driver ended ({st}) before unit 1 ran: {out:?}");
        }
        assert!(Instant::now() < deadline, "unit 1 never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let unit_keys = || {
        rt().block_on(keys(&c, "dst", "repo.snapferry/plans/"))
            .into_iter()
            .filter(|k| k.contains("/units/1"))
            .collect::<Vec<_>>()
    };
    loop {
        let ks = unit_keys();
        assert!(
            !ks.iter().any(|k| k.ends_with("/units/1.json")),
            "unit 1 finished before it could be killed: {ks:?}"
        );
        if ks.iter().any(|k| k.contains("/units/1/")) {
            break;
        }
        assert!(Instant::now() < deadline, "unit 1 never took its lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-KILL", &worker])
        .status()
        .expect("kill");
    assert!(killed.success(), "SIGKILL to Ray worker {worker}");
    let gone = || {
        std::fs::read_to_string(format!("/proc/{binary}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    let t_kill = Instant::now();
    while !gone() {
        assert!(
            t_kill.elapsed() < Duration::from_secs(10),
            "snapferry {binary} outlived its Ray worker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !unit_keys().iter().any(|k| k.ends_with("/units/1.json")),
        "killed mid-run: no marker yet"
    );
    let out = finish(child);
    let (so, se) = texts(&out);
    eprintln!("ray.rs: the round took {:.1?}\n{so}", t0.elapsed());
    assert_eq!(out.status.code(), Some(0), "driver: {so}\n{se}");
    for i in 0..UNITS {
        let l = unit_line(&so, i);
        assert!(l.starts_with(&format!("unit {i}: ok exit 0 ")), "{l}");
    }
    let l = unit_line(&so, 1);
    let attempts: usize = l
        .split(" attempts ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("attempts in {l}"));
    assert!(attempts >= 2, "the killed unit ran again: {l}");
    assert!(so.contains("commit: exit 0"), "{so}");
    drop(cluster);
    drop(tp);

    // The same repository as one whole sync, byte for byte (but the state record's time),
    // every blob of the scaled-up source (the clones under their own ids, and the root).
    let n = rt().block_on(assert_same_repository(
        (&c, "whole", "repo/"),
        (&c, "dst", "repo/"),
    ));
    assert!(n > UNITS, "{n}");
    assert_eq!(Some(n as u64), made["blobs"].as_u64(), "{made}");
    verify_deep("s3://dst/repo", &["--endpoint", &b.endpoint], &[]);

    // A real OpenSearch restores the round's repository (synced back to a directory: its `fs`
    // repository; it has no S3 plugin) with the fixture's document counts: the original
    // indices (copy 0) of every snapshot.
    let path_repo = tmp.path().join("path-repo");
    let copied = path_repo.join("copied");
    let mut back = snapferry();
    back.args(["sync", "s3://dst/repo", copied.to_str().unwrap()]);
    back.args(["--src-endpoint", &b.endpoint, "--progress", "never"]);
    let out = run(back);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let manifest = fixture_manifest(&fixture_dir("opensearch"));
    let node = SearchNode::start(&path_repo);
    let (st, body) = node.call(
        "PUT",
        "/_snapshot/copied",
        serde_json::json!({"type": "fs", "settings": {"location": copied.to_str().unwrap(), "readonly": true}}),
    );
    assert_eq!(st, 200, "{body}");
    let snapshots = manifest["snapshots"].as_array().unwrap();
    for snap in snapshots {
        let name = snap["name"].as_str().unwrap();
        restore_and_count(&node, "copied", name, &doc_counts(&snap["indices"]));
    }
    // The clones are not restorable: clone.py rewrites the root, not the snapshots' own
    // `snap-*.dat`, which list the original indices only (OpenSearch: "no such index").
}

#[test]
fn a_unit_that_fails_for_good_is_named_and_the_round_is_not_committed() {
    let s3 = Minio::start();
    rt().block_on(create_bucket(&s3.client(), "dst"));
    let cluster = RayCluster::start(&[]);
    let t0 = Instant::now();
    let child = driver(
        &cluster,
        fixture().to_str().unwrap(),
        "s3://dst/repo",
        &["--dst-endpoint", &s3.endpoint],
        &[("SNAPFERRY_RAY_TEST_FAIL", "2".to_string())],
    );
    let out = finish(child);
    let (so, se) = texts(&out);
    eprintln!("ray.rs: the round took {:.1?}\n{so}", t0.elapsed());
    assert_eq!(out.status.code(), Some(1), "driver: {so}\n{se}");
    let l = unit_line(&so, 2);
    assert!(
        l.starts_with("unit 2: FAILED exit 2 attempts 1 "),
        "bad input is never retried: {l}"
    );
    for i in [0, 1, 3] {
        let l = unit_line(&so, i);
        assert!(l.starts_with(&format!("unit {i}: ok exit 0 ")), "{l}");
    }
    assert!(se.contains("units 2 of 4 failed; not committing"), "{se}");
    assert!(!so.contains("commit:"), "{so}");
    assert!(latest(&s3, "dst").is_err(), "nothing committed");
}

#[test]
fn a_round_on_ray_into_the_oss_gateway_passes_a_deep_verify() {
    let tmp = tempfile::tempdir().expect("temp dir");
    clone_fixture("opensearch", &tmp.path().join("cloned"), COPIES);
    let s3 = Minio::start();
    rt().block_on(create_bucket(&s3.client(), "src"));
    let mut up = snapferry();
    up.args([
        "sync",
        tmp.path().join("cloned").to_str().unwrap(),
        "s3://src/repo",
    ]);
    up.args(["--dst-endpoint", &s3.endpoint, "--progress", "never"]);
    let out = run(up);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let gw = OssGateway::start(&["dst"]);
    // The nodes' tasks and the driver's plan and commit write with the gateway's keys.
    let oss = [
        ("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK),
        ("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK),
    ];
    let cluster = RayCluster::start(&oss);
    let t0 = Instant::now();
    let child = driver(
        &cluster,
        "s3://src/repo",
        "oss://dst/repo",
        &[
            "--src-endpoint",
            &s3.endpoint,
            "--dst-endpoint",
            &gw.endpoint,
        ],
        &oss.map(|(k, v)| (k, v.to_string())),
    );
    let out = finish(child);
    let (so, se) = texts(&out);
    eprintln!("ray.rs: the OSS round took {:.1?}\n{so}", t0.elapsed());
    assert_eq!(out.status.code(), Some(0), "driver: {so}\n{se}");
    for i in 0..UNITS {
        let l = unit_line(&so, i);
        assert!(l.starts_with(&format!("unit {i}: ok exit 0 ")), "{l}");
    }
    assert!(so.contains("commit: exit 0"), "{so}");
    drop(cluster);
    assert!(gw.object("dst", "repo/index.latest").is_some(), "committed");
    verify_deep(
        "oss://dst/repo",
        &["--endpoint", &gw.endpoint],
        &[
            ("SNAPFERRY_SRC_ACCESS_KEY_ID", OSS_AK),
            ("SNAPFERRY_SRC_SECRET_ACCESS_KEY", OSS_SK),
        ],
    );
    // Every key of the source, the same bytes (but the state record).
    let want: Vec<String> = rt()
        .block_on(keys(&s3.client(), "src", "repo/"))
        .into_iter()
        .filter(|k| !k.ends_with(".snapferry-state.json"))
        .collect();
    let got: Vec<String> = gw
        .keys("dst")
        .into_iter()
        .filter(|k| k.starts_with("repo/") && !k.ends_with(".snapferry-state.json"))
        .collect();
    assert_eq!(want, got, "key sets differ");
    rt().block_on(async {
        for k in &want {
            let x = get(&s3.client(), "src", k).await;
            let y = gw.object("dst", k).unwrap_or_else(|| panic!("{k} missing"));
            assert_eq!(md5_hex(&x), md5_hex(&y), "{k}: bytes differ");
        }
    });
    assert_eq!(gw.stats()["signature_failures"], 0);
}
