//! `snapferry sync` between two real MinIO servers.

use testkit::*;

const MIB: usize = 1 << 20;

/// Sync options used by these tests: small parts so the multipart edges are cheap.
const SMALL_PARTS: [&str; 4] = ["--multipart-threshold", "8MiB", "--part-size", "5MiB"];

fn sync_cmd(src: &Minio, dst: &Minio, s: &str, d: &str) -> std::process::Command {
    let mut c = snapferry();
    c.args([
        "sync",
        s,
        d,
        "--src-endpoint",
        &src.endpoint,
        "--dst-endpoint",
        &dst.endpoint,
        "--progress",
        "never",
    ]);
    c
}

#[test]
fn sync_mixed_set_is_byte_identical_idempotent_and_catches_same_size_rewrites() {
    let (a, b) = (Minio::start(), Minio::start());
    let (ca, cb) = (a.client(), b.client());
    let rt = rt();
    let objects: Vec<(&str, usize)> = vec![
        ("repo/empty", 0),
        ("repo/one-byte", 1),
        ("repo/under-threshold", 8 * MIB - 1),
        ("repo/at-threshold", 8 * MIB),
        ("repo/over-threshold", 8 * MIB + 1),
        ("repo/big-200MiB", 200 * MIB),
        ("repo/dir with spaces/file name.dat", 1000),
        ("repo/unicode/ünïcødé-文件-😀.bin", 4096),
        ("repo/plus+sign/a+b=c&d.dat", 77),
        ("repo/index.latest", 8),
    ];
    rt.block_on(async {
        create_bucket(&ca, "src").await;
        create_bucket(&cb, "dst").await;
        for (i, (k, n)) in objects.iter().enumerate() {
            put(&ca, "src", k, data(*n, i as u64)).await;
        }
        // Something outside the prefix must not be copied.
        put(&ca, "src", "other/file", vec![1, 2, 3]).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r1.json");
    let out = run({
        let mut c = sync_cmd(&a, &b, "s3://src/repo", "s3://dst/copy");
        c.args(SMALL_PARTS).arg("--report").arg(&report);
        c
    });
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "stdout: {so}\nstderr: {se}");
    let r = read_report(&report);
    assert_eq!(r["copied_objects"], objects.len());
    assert_eq!(r["failed_objects"], 0);
    assert_eq!(r["skipped_objects"], 0);
    let total: usize = objects.iter().map(|o| o.1).sum();
    assert_eq!(r["copied_bytes"], total);
    for f in ["duration_seconds", "throughput_bytes_per_second"] {
        assert!(r[f].as_f64().unwrap() > 0.0, "{f}");
    }
    assert!(r["failures"].as_array().unwrap().is_empty());
    assert!(r["latency_ms"]["upload_part"]["count"].as_u64().unwrap() > 0);
    let n = rt.block_on(assert_identical(&ca, "src", "repo/", &cb, "dst", "copy/"));
    assert_eq!(n, objects.len());
    assert!(rt.block_on(pending_uploads(&cb, "dst")).is_empty());

    // Second run: nothing to copy, and the decision needs no per-object HEAD for
    // single-part objects (their ETags match).
    let (out, r) =
        run_reported(sync_cmd(&a, &b, "s3://src/repo", "s3://dst/copy").args(SMALL_PARTS));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(r["copied_objects"], 0);
    assert_eq!(r["skipped_objects"], objects.len());
    let heads = r["requests"]["head"].as_u64().unwrap();
    // One HEAD of index.latest (is the source a snapshot repository?) and one of the root
    // it names, at most one per multipart object (their ETags differ by design); none
    // for single-part objects.
    assert!(
        heads <= 4 + LEASE_HEADS,
        "only repository detection, the two multipart objects and the lease may need a HEAD, saw {heads}"
    );

    // A same-size rewrite right after the run (same second, same size) is copied.
    let new_latest = vec![0, 0, 0, 0, 0, 0, 0, 9];
    rt.block_on(put(&ca, "src", "repo/index.latest", new_latest.clone()));
    let (out, r) =
        run_reported(sync_cmd(&a, &b, "s3://src/repo", "s3://dst/copy").args(SMALL_PARTS));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(r["copied_objects"], 1);
    assert_eq!(r["copied_bytes"], 8);
    assert_eq!(
        rt.block_on(get(&cb, "dst", "copy/index.latest")),
        new_latest
    );
    rt.block_on(assert_identical(&ca, "src", "repo/", &cb, "dst", "copy/"));
}

#[test]
fn sync_delete_removes_exactly_the_extras_and_dry_run_writes_nothing() {
    let Pair { a, b, ca, cb, rt } = Pair::start();
    rt.block_on(async {
        for k in ["keep/a", "keep/b", "c"] {
            put(&ca, "src", k, data(100, 1)).await;
        }
        put(&cb, "dst", "keep/a", data(100, 1)).await; // already in sync
        put(&cb, "dst", "extra/x", vec![1]).await;
        put(&cb, "dst", "keep/zz-extra", vec![2]).await;
    });
    let before = rt.block_on(keys(&cb, "dst", ""));

    // Dry run, with --delete: prints every action with a reason, writes nothing.
    let out = run({
        let mut c = sync_cmd(&a, &b, "s3://src", "s3://dst");
        // 2 of the destination's 3 objects go: past the default bound of half.
        c.args(["--dry-run", "--delete", "--max-delete", "100%"]);
        c
    });
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{se}");
    assert!(
        so.contains("copy   keep/b") && so.contains("missing at destination"),
        "{so}"
    );
    assert!(so.contains("copy   c "), "{so}");
    assert!(so.contains("delete extra/x: not in source"), "{so}");
    assert!(so.contains("delete keep/zz-extra"), "{so}");
    assert!(
        !so.contains("keep/a"),
        "in-sync objects are not actions: {so}"
    );
    assert_eq!(
        rt.block_on(keys(&cb, "dst", "")),
        before,
        "dry run changed the destination"
    );

    // Without --delete the extras stay.
    let out = run(sync_cmd(&a, &b, "s3://src", "s3://dst"));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(
        rt.block_on(keys(&cb, "dst", "")),
        ["c", "extra/x", "keep/a", "keep/b", "keep/zz-extra"]
    );

    // With --delete exactly the extras go.
    let (out, r) = run_reported(sync_cmd(&a, &b, "s3://src", "s3://dst").args([
        "--delete",
        "--max-delete",
        "100%",
    ]));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(r["deleted_objects"], 2);
    assert_eq!(rt.block_on(keys(&cb, "dst", "")), ["c", "keep/a", "keep/b"]);
}

#[test]
fn sync_killed_mid_multipart_then_rerun_is_identical_with_no_uploads_left() {
    let Pair { a, b, ca, cb, rt } = Pair::start();
    rt.block_on(async {
        put(&ca, "src", "indices/x/0/__big", data(60 * MIB, 7)).await;
        put(&ca, "src", "index-3", data(1000, 8)).await;
    });
    // Slow the copy down so that the kill lands mid-upload.
    let mut child = {
        let mut c = sync_cmd(&a, &b, "s3://src", "s3://dst/backup");
        c.args(SMALL_PARTS)
            .args(["--bwlimit", "10MiB/s", "--concurrency", "2"]);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.spawn().unwrap()
    };
    kill_at_first_upload(&mut child, || {
        !rt.block_on(pending_uploads(&cb, "dst")).is_empty()
    });
    assert_eq!(
        rt.block_on(pending_uploads(&cb, "dst")),
        ["backup/indices/x/0/__big"]
    );
    assert!(
        !rt.block_on(keys(&cb, "dst", ""))
            .contains(&"backup/indices/x/0/__big".to_string()),
        "a partial object must never appear under its key"
    );

    let (out, r) = run_reported(sync_cmd(&a, &b, "s3://src", "s3://dst/backup").args(SMALL_PARTS));
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    // The killed run's upload is either continued (its resume record was written) or,
    // killed before that record landed, aborted as stale: one or the other, once.
    assert_eq!(
        r["aborted_stale_uploads"].as_u64().unwrap() + r["resumed_uploads"].as_u64().unwrap(),
        1,
        "{r}"
    );
    rt.block_on(assert_identical(&ca, "src", "", &cb, "dst", "backup/"));
    assert!(
        rt.block_on(pending_uploads(&cb, "dst")).is_empty(),
        "an upload was left behind"
    );
}

#[test]
fn sync_s3_to_fs_and_back_round_trips_with_records() {
    let Pair { a, b, ca, cb, rt } = Pair::start();
    rt.block_on(async {
        put(&ca, "src", "r/a-c", data(10, 1)).await;
        put(&ca, "src", "r/a/b", data(9 * MIB, 2)).await;
        put(&ca, "src", "r/index.latest", vec![0; 8]).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let stage_s = stage.to_str().unwrap().to_string();
    // `s3://src/r` from the first server into the stage.
    let to_stage = || {
        let mut c = snapferry();
        c.args([
            "sync",
            "s3://src/r",
            &stage_s,
            "--src-endpoint",
            &a.endpoint,
        ]);
        c
    };
    let mut c = to_stage();
    c.args(SMALL_PARTS);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(std::fs::read(stage.join("a/b")).unwrap(), data(9 * MIB, 2));
    assert_eq!(std::fs::read(stage.join("a-c")).unwrap(), data(10, 1));

    // Same-size rewrite at the source is caught through the fs record (xattrs).
    rt.block_on(put(
        &ca,
        "src",
        "r/index.latest",
        vec![0, 0, 0, 0, 0, 0, 0, 1],
    ));
    let report = dir.path().join("r.json");
    let mut c = to_stage();
    c.arg("--report").arg(&report);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(read_report(&report)["copied_objects"], 1);
    assert_eq!(
        std::fs::read(stage.join("index.latest")).unwrap(),
        [0, 0, 0, 0, 0, 0, 0, 1]
    );

    // Staged directory -> second server.
    let mut c = snapferry();
    c.args([
        "sync",
        &format!("file://{stage_s}"),
        "s3://dst/r",
        "--dst-endpoint",
        &b.endpoint,
    ])
    .args(SMALL_PARTS);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    rt.block_on(assert_identical(&ca, "src", "r/", &cb, "dst", "r/"));
}

#[test]
fn sync_interrupted_by_sigint_aborts_its_uploads_and_reports_it() {
    let Pair { a, b, ca, cb, rt } = Pair::start();
    rt.block_on(async {
        put(&ca, "src", "big", data(40 * MIB, 3)).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let mut child = {
        let mut c = sync_cmd(&a, &b, "s3://src", "s3://dst");
        c.args(SMALL_PARTS)
            .args(["--bwlimit", "8MiB/s", "--concurrency", "2", "--report"])
            .arg(&report);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    wait_for_upload(&mut child, || {
        !rt.block_on(pending_uploads(&cb, "dst")).is_empty()
    });
    let st = std::process::Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("interrupted"), "{se}");
    let r = read_report(&report);
    assert_eq!(r["interrupted"], true);
    assert_eq!(r["copied_objects"], 0);
    assert!(
        rt.block_on(pending_uploads(&cb, "dst")).is_empty(),
        "Ctrl-C must abort in-flight uploads"
    );
    assert!(rt.block_on(keys(&cb, "dst", "")).is_empty());
}

/// `--list-fan-out`: both sides listed one level per request, several at once, with keys
/// whose order a naive directory walk gets wrong (`a-b` < `a.b` < `a/...` < `a0`); the
/// copy is identical, a re-run copies nothing and lists more than flat would (one LIST
/// per directory and side), and `--delete` removes exactly the extras.
#[test]
fn sync_with_list_fan_out_is_identical_and_idempotent() {
    let (a, b) = (Minio::start(), Minio::start());
    let (ca, cb) = (a.client(), b.client());
    let rt = rt();
    let mut keys: Vec<String> = ["a-b", "a.b", "a/b", "a/b0", "a/c/d/e", "a0", "z/ü", "top"]
        .iter()
        .map(|k| format!("repo/{k}"))
        .collect();
    for d in 0..30 {
        for f in 0..3 {
            keys.push(format!("repo/indices/{d:02}/{f}/__x"));
        }
    }
    rt.block_on(async {
        create_bucket(&ca, "src").await;
        create_bucket(&cb, "dst").await;
        for (i, k) in keys.iter().enumerate() {
            put(&ca, "src", k, data(100 + i, i as u64)).await;
        }
        put(&cb, "dst", "copy/a/extra", vec![1]).await;
        put(&cb, "dst", "copy/indices/05/9/extra", vec![2]).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let go = |name: &str, extra: &[&str]| {
        let report = dir.path().join(name);
        let out = run({
            let mut c = sync_cmd(&a, &b, "s3://src/repo", "s3://dst/copy");
            c.args(["--list-fan-out", "--concurrency", "4", "--report"])
                .arg(&report)
                .args(extra);
            c
        });
        let (so, se) = texts(&out);
        assert_eq!(out.status.code(), Some(0), "stdout: {so}\nstderr: {se}");
        read_report(&report)
    };
    let r = go("r1.json", &["--delete", "--max-delete", "100%"]);
    assert_eq!(r["copied_objects"], keys.len());
    assert_eq!(r["deleted_objects"], 2);
    let n = rt.block_on(assert_identical(&ca, "src", "repo/", &cb, "dst", "copy/"));
    assert_eq!(n, keys.len());
    let r = go("r2.json", &[]);
    assert_eq!(r["copied_objects"], 0);
    assert_eq!(r["skipped_objects"], keys.len());
    // Directories per side: the root, a/, a/c/, a/c/d/, z/, indices/, 30 indices, 90
    // shards = 126 levels, each one LIST here (a flat listing: 1 page per side).
    let lists = r["requests"]["list"].as_u64().unwrap();
    assert!(lists >= 2 * 126, "{lists} LIST requests");
}
