//! No mistake, fault or second run may destroy, corrupt or leak: each test is one
//! operator mistake (a typo, the wrong endpoint, a second run) or fault, run through the
//! real binary, and the destination is checked afterwards, not only the exit code.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::*;

/// Writes `n` files of a few KiB under `dir`; returns their relative names.
fn fill(dir: &Path, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .map(|i| {
            let rel = format!("d{}/f{i:03}.bin", i % 3);
            let p = dir.join(&rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data(1000 + i, i as u64)).unwrap();
            rel
        })
        .collect();
    v.sort();
    v
}

fn sync(args: &[&str]) -> Command {
    let mut c = snapferry();
    c.arg("sync").args(args).args(["--progress", "never"]);
    c
}

/// Runs and returns (exit code, stdout, stderr).
fn go(c: Command) -> (Option<i32>, String, String) {
    let out = run(c);
    let (so, se) = texts(&out);
    (out.status.code(), so, se)
}

fn one_error_line(se: &str, want: &str) {
    let lines: Vec<&str> = se.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {se}");
    assert!(lines[0].starts_with("snapferry: error: "), "{se}");
    assert!(lines[0].contains(want), "want {want:?} in {se}");
}

#[test]
fn a_missing_or_mistyped_source_with_delete_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    let files = fill(&victim, 30);
    let v = victim.to_str().unwrap();

    // A source directory that does not exist is not an empty source.
    let missing = tmp.path().join("nosuchdir");
    let (code, _, se) = go(sync(&[missing.to_str().unwrap(), v, "--delete"]));
    assert_eq!(code, Some(3), "{se}");
    one_error_line(&se, "does not exist");
    assert!(se.contains("--allow-empty-source"), "{se}");
    assert_eq!(tree(&victim), files);

    // One slash: a typo, not a local directory called "s3:".
    let (code, _, se) = go(sync(&["s3:/bucket", v, "--delete"]));
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "write s3://bucket");
    assert_eq!(tree(&victim), files);

    // An empty source is refused too; allowed explicitly, it still never deletes.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, se) = go(sync(&[empty.to_str().unwrap(), v, "--delete"]));
    assert_eq!(code, Some(3), "{se}");
    one_error_line(&se, "holds no object");
    let report = tmp.path().join("r.json");
    let report_arg = format!("--report={}", report.display());
    let (code, _, se) = go(sync(&[
        empty.to_str().unwrap(),
        v,
        "--delete",
        "--allow-empty-source",
        "--max-delete",
        "100%",
        &report_arg,
    ]));
    assert_eq!(code, Some(1), "{se}");
    assert!(se.contains("the source listed no object"), "{se}");
    let r = read_report(&report);
    assert_eq!(r["deleted_objects"], 0);
    assert!(r["deletes_refused"].as_str().unwrap().contains("no object"));
    assert_eq!(tree(&victim), files);

    // A mistyped S3 prefix lists nothing: refused, the destination keeps everything.
    let s3 = Minio::start();
    let c = s3.client();
    let rt = rt();
    rt.block_on(async {
        create_bucket(&c, "snaps").await;
        create_bucket(&c, "dst").await;
        for i in 0..5 {
            put(&c, "snaps", &format!("prod/o{i}"), data(100, i)).await;
            put(&c, "dst", &format!("prod/o{i}"), data(100, i)).await;
        }
    });
    let (code, _, se) = go(sync(&[
        "s3://snaps/prdo",
        "s3://dst/prod",
        "--delete",
        "--src-endpoint",
        &s3.endpoint,
        "--dst-endpoint",
        &s3.endpoint,
    ]));
    assert_eq!(code, Some(3), "{se}");
    one_error_line(&se, "holds no object");
    assert_eq!(rt.block_on(keys(&c, "dst", "prod/")).len(), 5);
}

#[test]
fn deletes_are_bounded_by_max_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let all = fill(&dst, 10);
    std::fs::create_dir_all(&src).unwrap();
    for rel in &all[..2] {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(dst.join(rel), p).unwrap();
    }
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    // 8 of 10 is more than the default 50%: nothing is deleted, exit 1, one reason.
    let (code, _, se) = go(sync(&[s, d, "--delete"]));
    assert_eq!(code, Some(1), "{se}");
    assert!(se.contains("--max-delete"), "{se}");
    assert_eq!(tree(&dst), all);
    // A count bound below the need refuses too; a dry run shows what would go.
    let (code, _, se) = go(sync(&[s, d, "--delete", "--max-delete", "7"]));
    assert_eq!(code, Some(1), "{se}");
    assert_eq!(tree(&dst), all);
    let (code, so, se) = go(sync(&[s, d, "--delete", "--max-delete", "8", "--dry-run"]));
    assert_eq!(code, Some(0), "{se}");
    assert_eq!(
        so.lines().filter(|l| l.starts_with("delete ")).count(),
        8,
        "{so}"
    );
    assert_eq!(tree(&dst), all);
    // Given explicitly, the deletes run.
    let (code, _, se) = go(sync(&[s, d, "--delete", "--max-delete", "100%"]));
    assert_eq!(code, Some(0), "{se}");
    assert_eq!(tree(&dst), all[..2].to_vec());
    // A bad bound is a usage error.
    let (code, _, se) = go(sync(&[s, d, "--delete", "--max-delete", "lots"]));
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "--max-delete");
}

fn oss_sync(gw: &OssGateway, src: &str, dst: &str, extra: &[&str]) -> Command {
    let mut c = sync(&[src, dst]);
    c.args(extra)
        .env("SNAPFERRY_SRC_ACCESS_KEY_ID", OSS_AK)
        .env("SNAPFERRY_SRC_SECRET_ACCESS_KEY", OSS_SK)
        .env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
        .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK);
    if src.starts_with("oss://") {
        c.args(["--src-endpoint", &gw.endpoint]);
    }
    if dst.starts_with("oss://") {
        c.args(["--dst-endpoint", &gw.endpoint]);
    }
    c
}

#[test]
fn answers_that_are_not_the_protocols_are_errors_never_empty_listings() {
    let gw = OssGateway::start(&["src"]);
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed");
    let files = fill(&seed, 12);
    let (code, _, se) = go(oss_sync(&gw, seed.to_str().unwrap(), "oss://src/p", &[]));
    assert_eq!(code, Some(0), "{se}");
    let victim = tmp.path().join("victim");
    let (code, _, se) = go(oss_sync(&gw, "oss://src/p", victim.to_str().unwrap(), &[]));
    assert_eq!(code, Some(0), "{se}");
    // An extra destination file that --delete would remove if the source listed empty.
    std::fs::write(victim.join("extra"), b"x").unwrap();
    let mut want = files.clone();
    want.push("extra".into());
    want.sort();
    let v = victim.to_str().unwrap();
    let all = ["--delete", "--max-delete", "100%"];

    // The endpoint answers 200 with an HTML page: not OSS, exit 3, nothing deleted.
    gw.faults(json!([{"op": "*", "kind": "html", "count": 1000}]));
    let (code, _, se) = go(oss_sync(&gw, "oss://src/p", v, &all));
    assert_eq!(code, Some(3), "{se}");
    one_error_line(&se, "does not speak OSS");
    assert_eq!(tree(&victim), want);
    http(&gw.endpoint, "DELETE", "/__gateway/faults", b"");

    // A wrong endpoint's HTML 404.
    gw.faults(json!([{"op": "*", "kind": "html-404", "count": 1000}]));
    let (code, _, se) = go(oss_sync(&gw, "oss://src/p", v, &all));
    assert_eq!(code, Some(3), "{se}");
    one_error_line(&se, "does not speak OSS");
    http(&gw.endpoint, "DELETE", "/__gateway/faults", b"");

    // Mid-run (the preflight's listing passes): a truncated listing without a token,
    // and a document of another API. The run stops with exit 3; deletes never run.
    for kind in ["truncated-no-token", "wrong-root"] {
        gw.faults(json!([{"op": "ListObjectsV2", "kind": kind, "count": 1000, "skip": 1}]));
        let (code, _, se) = go(oss_sync(&gw, "oss://src/p", v, &all));
        assert_eq!(code, Some(3), "{kind}: {se}");
        assert!(
            se.contains("truncated but gives no continuation token")
                || se.contains("not OSS's <ListBucketResult>"),
            "{kind}: {se}"
        );
        assert_eq!(tree(&victim), want, "{kind}");
        http(&gw.endpoint, "DELETE", "/__gateway/faults", b"");
    }

    // S3 at an endpoint that is a web server: 404 and 200 HTML pages, exit 3.
    for status in [404, 200] {
        let web = HtmlServer::start(status);
        let (code, _, se) = go(sync(&["s3://bkt/p", v, "--src-endpoint", &web.endpoint]));
        assert_eq!(code, Some(3), "HTML {status}: {se}");
        one_error_line(&se, "source: not a valid answer");
        assert_eq!(tree(&victim), want);
    }
}

#[test]
fn a_completed_upload_whose_answer_was_lost_is_confirmed_not_failed() {
    let gw = OssGateway::start(&["dst"]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = data(12 << 20, 5);
    std::fs::write(src.join("big"), &big).unwrap();
    // CompleteMultipartUpload runs, then the connection is reset before the answer; the
    // retry finds no such upload.
    gw.faults(json!([{"op": "CompleteMultipartUpload", "kind": "reset-after", "count": 1}]));
    let report = tmp.path().join("r.json");
    let report_arg = format!("--report={}", report.display());
    let c = oss_sync(
        &gw,
        src.to_str().unwrap(),
        "oss://dst/p",
        &[
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
            &report_arg,
        ],
    );
    let (code, _, se) = go(c);
    assert_eq!(code, Some(0), "{se}");
    let r = read_report(&report);
    assert_eq!(r["copied_objects"], 1, "{r}");
    assert_eq!(r["failed_objects"], 0, "{r}");
    assert!(
        r["requests"]["complete_multipart"].as_u64().unwrap() >= 2,
        "{r}"
    );
    assert_eq!(gw.stats()["faults_injected"]["reset-after"], 1);
    let got = gw.object("dst", "p/big").expect("object landed");
    assert_eq!(md5_hex(&got), md5_hex(&big));
    assert!(gw.uploads("dst").is_empty());
}

#[test]
fn overlapping_locations_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ov = tmp.path().join("ov");
    let files = fill(&ov, 9);
    let inner = ov.join("zz");
    let (code, _, se) = go(sync(&[ov.to_str().unwrap(), inner.to_str().unwrap()]));
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "one lies inside the other");
    assert_eq!(tree(&ov), files);
    let data_dir = ov.join("d1");
    let (code, _, se) = go(sync(&[
        data_dir.to_str().unwrap(),
        ov.to_str().unwrap(),
        "--delete",
    ]));
    assert_eq!(code, Some(2), "{se}");
    assert_eq!(tree(&ov), files);
    // The same through a relative path and a symlink.
    std::os::unix::fs::symlink(&ov, tmp.path().join("link")).unwrap();
    let mut c = sync(&["link/d0", "ov"]);
    c.current_dir(tmp.path());
    let (code, _, se) = go(c);
    assert_eq!(code, Some(2), "{se}");
    assert_eq!(tree(&ov), files);
    // Buckets: a prefix inside the other, on one endpoint.
    let (code, _, se) = go(sync(&[
        "s3://bkt/a",
        "s3://bkt/a/b",
        "--src-endpoint",
        "http://127.0.0.1:9",
        "--dst-endpoint",
        "http://127.0.0.1:9",
    ]));
    assert_eq!(code, Some(2), "{se}");
}

/// Waits until the destination directory holds the lease (a run is writing).
fn wait_for_lease(dst: &Path, deadline: Duration) -> serde_json::Value {
    let t = Instant::now();
    loop {
        if let Ok(b) = std::fs::read(dst.join(".snapferry-lease")) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                return v;
            }
        }
        assert!(t.elapsed() < deadline, "no lease appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_runs_on_one_destination_one_copies_the_other_waits_its_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = fill(&src, 40);
    std::fs::write(src.join("big"), data(12 << 20, 77)).unwrap();
    let dst = tmp.path().join("dst");
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    // Slow enough to overlap: about 3 s.
    let slow = [
        "--bwlimit",
        "4MiB/s",
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
    ];

    // Started at the same instant: exactly one copies, the other exits 4 naming it.
    let spawn = |extra: &[&str]| {
        let mut c = sync(&[s, d]);
        c.args(slow)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(&[]), spawn(&[]));
    let (pa, pb) = (a.id(), b.id());
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [oa.status.code(), ob.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(4)],
        "{:?} {:?}",
        texts(&oa),
        texts(&ob)
    );
    let (loser, winner_pid) = if oa.status.code() == Some(4) {
        (&oa, pb)
    } else {
        (&ob, pa)
    };
    let se = texts(loser).1;
    one_error_line(&se, "another snapferry run is writing to");
    assert!(se.contains(&format!("pid {winner_pid}")), "{se}");
    let mut want = files.clone();
    want.push("big".into());
    want.sort();
    assert_eq!(tree(&dst), want, "identical, and no lease left behind");

    // A holder that stops renewing (SIGSTOP: alive, silent) keeps others out until its
    // lease expires, then is taken over; when it wakes up it finds the lease gone and
    // stops itself.
    std::fs::remove_dir_all(&dst).unwrap();
    let stuck = spawn(&["--lease-ttl", "2s"]);
    let lease = wait_for_lease(&dst, Duration::from_secs(30));
    assert_eq!(lease["pid"], stuck.id());
    let pid = stuck.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let (code, _, se) = go(sync(&[s, d]));
    assert_eq!(code, Some(4), "a live holder keeps the lease: {se}");
    // Wait (by the lease's own expiry, read from it) until it has run out.
    let expires = wait_for_lease(&dst, Duration::from_secs(5))["expires_ms"]
        .as_i64()
        .unwrap();
    let t = Instant::now();
    while snapferry_engine::store::fs::now_ms() <= expires {
        assert!(t.elapsed() < Duration::from_secs(10), "lease never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = tmp.path().join("takeover.json");
    let report_arg = format!("--report={}", report.display());
    let (code, _, se) = go(sync(&[s, d, "-v", &report_arg]));
    assert_eq!(code, Some(0), "an expired lease is taken over: {se}");
    // Every object is there; the stopped run's own upload, its resume record and
    // half-written temp files (its writer is alive, only silent) are left alone, not
    // removed under it.
    let (own, objects): (Vec<String>, Vec<String>) = tree(&dst).into_iter().partition(|k| {
        k.starts_with(".snapferry-uploads/")
            || k.starts_with(".snapferry-resume/")
            || k.contains("/.snapferry-tmp-")
    });
    assert_eq!(objects, want);
    let uploads = own
        .iter()
        .filter(|k| k.starts_with(".snapferry-uploads/") && k.ends_with("/key"))
        .count();
    assert_eq!(
        read_report(&report)["young_uploads_left"].as_u64().unwrap(),
        uploads as u64,
        "{own:?}"
    );
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let out = stuck.wait_with_output().unwrap();
    let (so, se) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "the woken holder stops, it lost its lease: {so}{se}"
    );
    assert_eq!(
        tree(&dst),
        want,
        "the destination is identical; the woken run finished its writes and aborted its own upload"
    );
}

#[test]
fn two_runs_on_one_bucket_prefix_exactly_one_copies() {
    // On S3 the lease is created with If-None-Match: *: two runs that start together
    // cannot both take it.
    let Pair { a, b, ca, cb, rt } = Pair::start();
    rt.block_on(async {
        for i in 0..30 {
            put(&ca, "src", &format!("p/o{i:02}"), data(30_000, i)).await;
        }
    });
    let spawn = || {
        let mut c = sync(&[
            "s3://src/p",
            "s3://dst/p",
            "--src-endpoint",
            &a.endpoint,
            "--dst-endpoint",
            &b.endpoint,
            "--bwlimit",
            "300KiB/s",
        ]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (x, y) = (spawn(), spawn());
    let (ox, oy) = (x.wait_with_output().unwrap(), y.wait_with_output().unwrap());
    let mut codes = [ox.status.code(), oy.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(4)],
        "{:?} {:?}",
        texts(&ox),
        texts(&oy)
    );
    let n = rt.block_on(assert_identical(&ca, "src", "p/", &cb, "dst", "p/"));
    assert_eq!(n, 30, "identical, and the lease released");
}

fn fixture(prefix: &str) -> std::path::PathBuf {
    fixture_dir(prefix).join("repo")
}

#[test]
fn another_repository_at_the_destination_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    let d = dst.to_str().unwrap();
    let os = fixture("opensearch");
    let (code, _, se) = go(sync(&[os.to_str().unwrap(), d]));
    assert_eq!(code, Some(0), "{se}");
    let before = tree(&dst);
    let latest = std::fs::read(dst.join("index.latest")).unwrap();
    let es = fixture("elasticsearch-7");
    let (code, _, se) = go(sync(&[es.to_str().unwrap(), d]));
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "holds another repository");
    assert!(se.contains("--replace-repository"), "{se}");
    assert_eq!(tree(&dst), before, "nothing written");
    assert_eq!(std::fs::read(dst.join("index.latest")).unwrap(), latest);
    // Asked for, the catalogue is replaced, and the result is a valid repository.
    let (code, _, se) = go(sync(&[es.to_str().unwrap(), d, "--replace-repository"]));
    assert_eq!(code, Some(0), "{se}");
    let mut c = snapferry();
    c.args(["repo", "verify", d, "--deep"]);
    let (code, so, se) = go(c);
    assert_eq!(code, Some(0), "{so}{se}");
}

#[test]
fn snapshot_selection_yields_a_repository_of_exactly_those_snapshots() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    let d = dst.to_str().unwrap();
    let os = fixture("opensearch");
    let (code, _, se) = go(sync(&[os.to_str().unwrap(), d, "--snapshot", "snap-4"]));
    assert_eq!(code, Some(0), "{se}");
    let mut c = snapferry();
    c.args(["repo", "verify", d, "--deep"]);
    let (code, so, se) = go(c);
    assert_eq!(code, Some(0), "verifies clean: {so}{se}");
    let mut c = snapferry();
    c.args(["repo", "ls", d, "--json"]);
    let (code, so, se) = go(c);
    assert_eq!(code, Some(0), "{se}");
    let ls: serde_json::Value = serde_json::from_str(&so).unwrap();
    let names: Vec<&str> = ls["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["snap-4"]);
    // A plain source: --snapshot is refused, nothing written.
    let plain = tmp.path().join("plain");
    fill(&plain, 3);
    let other = tmp.path().join("other");
    let (code, _, se) = go(sync(&[
        plain.to_str().unwrap(),
        other.to_str().unwrap(),
        "--snapshot",
        "snap-1",
    ]));
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "needs a snapshot repository");
    assert!(!other.exists());
}

#[test]
fn bad_input_is_found_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fill(&src, 3);
    let dst = tmp.path().join("dst");
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    // An unwritable report path is found before the copy.
    for bad in ["/proc/nope/r.json", "/nonexistent-dir/r.json"] {
        let (code, _, se) = go(sync(&[s, d, "--report", bad]));
        assert_eq!(code, Some(2), "{bad}: {se}");
        one_error_line(&se, "--report");
        assert!(!dst.exists(), "{bad}");
    }
    // Endpoints carrying credentials or a query string: refused, never echoed, also
    // with -vv.
    for ep in [
        "http://AKID:SENTINEL-1@127.0.0.1:9000",
        "http://127.0.0.1:9000/?X-Amz-Signature=SENTINEL-1",
    ] {
        let (code, so, se) = go(sync(&["s3://bkt/p", d, "--src-endpoint", ep, "-vv"]));
        assert_eq!(code, Some(2), "{se}");
        one_error_line(&se, "credentials or a query string");
        assert!(!se.contains("SENTINEL") && !so.contains("SENTINEL"), "{se}");
    }
    let mut c = sync(&[
        "oss://bkt/p",
        d,
        "--src-endpoint",
        "https://u:SENTINEL-2@oss-cn-hangzhou.aliyuncs.com",
        "-vv",
    ]);
    c.env("SNAPFERRY_SRC_ACCESS_KEY_ID", OSS_AK);
    let (code, so, se) = go(c);
    assert_eq!(code, Some(2), "{se}");
    assert!(!se.contains("SENTINEL") && !so.contains("SENTINEL"), "{se}");
    assert!(!dst.exists());
}

fn job(dir: &Path, src_url: &str, extra_src: &str) -> std::path::PathBuf {
    let store = dir.join("repo");
    std::fs::create_dir_all(&store).unwrap();
    let p = dir.join("job.toml");
    std::fs::write(
        &p,
        format!(
            r#"indices = ["logs-*"]
[source]
url = "{src_url}"
repository = "r"
repository_type = "fs"
store = "{}"
{extra_src}
[destination]
url = "http://127.0.0.1:9"
repository = "r"
repository_type = "fs"
store = "{}"
"#,
            store.display(),
            dir.join("dst").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn job_files_say_what_is_wrong_and_never_echo_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let migrate = |job: &Path, phase: &str| {
        let mut c = snapferry();
        c.arg("migrate").arg(job).args(["--phase", phase]);
        go(c)
    };
    // status of a job file that does not exist: an error, not "no phase has run".
    let (code, so, se) = migrate(&tmp.path().join("nosuch.toml"), "status");
    assert_eq!(code, Some(2), "{so}{se}");
    one_error_line(&se, "cannot read job file");
    // An unknown field and a missing one are named.
    let j = job(tmp.path(), "http://127.0.0.1:9", "repositroy_settings = {}");
    let (code, _, se) = migrate(&j, "status");
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "unknown field `repositroy_settings`");
    assert!(se.contains("line "), "{se}");
    let text = std::fs::read_to_string(&j)
        .unwrap()
        .replace("repositroy_settings = {}\n", "")
        .replacen("repository_type = \"fs\"\n", "", 1);
    std::fs::write(&j, text).unwrap();
    let (code, _, se) = migrate(&j, "status");
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "missing field `repository_type`");
    // A cluster url with user:password@ is refused with the variables to use instead.
    let j = job(tmp.path(), "http://elastic:SENTINEL-PW@127.0.0.1:9", "");
    let (code, so, se) = migrate(&j, "baseline");
    assert_eq!(code, Some(2), "{se}");
    one_error_line(&se, "SNAPFERRY_SRC_CLUSTER_PASSWORD");
    assert!(!se.contains("SENTINEL") && !so.contains("SENTINEL"), "{se}");
    // A cluster that cannot be reached is named as a cluster, not as a store.
    let j = job(tmp.path(), "http://127.0.0.1:9", "");
    let (code, _, se) = migrate(&j, "baseline");
    assert_eq!(code, Some(3), "{se}");
    one_error_line(&se, "source cluster: cannot reach cluster");
    assert!(!se.contains("store"), "{se}");
}

#[test]
fn a_closed_stdout_or_stderr_ends_the_program_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = fixture("opensearch");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (
            vec![
                "repo",
                "diff",
                repo.to_str().unwrap(),
                empty.to_str().unwrap(),
            ],
            1,
        ),
        (vec!["repo", "ls", repo.to_str().unwrap(), "--json"], 0),
        (vec!["repo", "ls", repo.to_str().unwrap()], 0),
    ];
    for (args, code) in cases {
        // The reader goes away before the first byte: what `| (exec true)` does.
        let mut c = snapferry();
        c.args(&args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let se = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {se}");
        assert!(!se.contains("panicked"), "{args:?}: {se}");
    }
    // A closed stderr with an error to report: the documented code, no panic.
    let mut c = snapferry();
    c.args(["sync", "s3:/x", "dst"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
}

#[test]
fn secrets_never_appear_in_output_reports_or_logs() {
    let gw = OssGateway::start(&["dst"]);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fill(&src, 6);
    // Every secret variable holds a sentinel; the run uses the SNAPFERRY_DST_ pair and
    // fails objects on purpose (persistent server errors), with -vv and a report.
    let secrets = [
        "SNAPFERRY_SRC_SECRET_ACCESS_KEY",
        "SNAPFERRY_SRC_SESSION_TOKEN",
        "SNAPFERRY_SRC_CLUSTER_PASSWORD",
        "SNAPFERRY_DST_CLUSTER_PASSWORD",
        "SNAPFERRY_SRC_CLUSTER_API_KEY",
        "SNAPFERRY_DST_CLUSTER_API_KEY",
        "SNAPFERRY_SRC_CLUSTER_SECRET_ACCESS_KEY",
        "SNAPFERRY_DST_CLUSTER_SECRET_ACCESS_KEY",
        "SNAPFERRY_SRC_CLUSTER_SESSION_TOKEN",
        "SNAPFERRY_DST_CLUSTER_SESSION_TOKEN",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "OSS_ACCESS_KEY_SECRET",
        "OSS_SESSION_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ];
    gw.faults(json!([{"op": "PutObject", "kind": "server-error", "count": 100000, "key_contains": "/f0"}]));
    let report = tmp.path().join("r.json");
    let mut c = snapferry();
    c.args([
        "sync",
        src.to_str().unwrap(),
        "oss://dst/p",
        "-vv",
        "--progress",
        "always",
    ])
    .args(["--dst-endpoint", &gw.endpoint, "--report"])
    .arg(&report)
    .env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
    .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", OSS_SK);
    for (i, k) in secrets.iter().enumerate() {
        c.env(k, format!("SENTINEL-{i}"));
    }
    let (code, so, se) = go(c);
    assert_eq!(code, Some(1), "{se}");
    let rep = std::fs::read_to_string(&report).unwrap();
    assert!(rep.contains("failures"), "{rep}");
    for text in [&so, &se, &rep] {
        assert!(!text.contains("SENTINEL"), "a secret leaked: {text}");
        assert!(!text.contains(OSS_SK), "the OSS secret leaked: {text}");
    }
    // The wrong secret on the destination: refused, still not printed.
    let mut c = snapferry();
    c.args(["sync", src.to_str().unwrap(), "oss://dst/p", "-vv"])
        .args(["--dst-endpoint", &gw.endpoint])
        .env("SNAPFERRY_DST_ACCESS_KEY_ID", OSS_AK)
        .env("SNAPFERRY_DST_SECRET_ACCESS_KEY", "SENTINEL-WRONG")
        .env("SNAPFERRY_DST_SESSION_TOKEN", "SENTINEL-TOKEN");
    let (code, so, se) = go(c);
    assert_eq!(code, Some(3), "{se}");
    assert!(!se.contains("SENTINEL") && !so.contains("SENTINEL"), "{se}");
}
