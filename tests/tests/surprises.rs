//! What the world does to a copy in progress: the destination disk fills up, the
//! destination bucket is deleted, a source object is rewritten or deleted under a large
//! copy of it. Each run ends with a clear failure (exit code, a line naming what
//! happened, a report) and never with a wrong object under a final name; the next run
//! after the cause is gone completes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::*;

const MIB: usize = 1 << 20;

/// Files that are objects (not snapferry's own `.snapferry-*` names).
fn objects_in(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|k| !k.split('/').any(|c| c.starts_with(".snapferry-")))
        .collect()
}

fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (k, d) in files {
        let p = dir.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, d).unwrap();
    }
}

/// Runs and returns (exit code, stdout, stderr).
fn go(c: Command) -> (Option<i32>, String, String) {
    let out = run(c);
    let (so, se) = texts(&out);
    (out.status.code(), so, se)
}

fn dir_sync(src: &Path, dst: &Path, extra: &[&str]) -> Command {
    let mut c = snapferry();
    c.arg("sync")
        .arg(src)
        .arg(dst)
        .args(["--progress", "never"])
        .args(extra);
    c
}

/// The destination holds nothing but complete, correct objects: every object file there
/// is one of the source's, byte for byte (no partial file under a final name).
fn assert_only_whole_objects(dst: &Path, src: &[(String, Vec<u8>)]) -> Vec<String> {
    let have = objects_in(dst);
    for k in &have {
        let want = src
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("{k}: a file under a name the source does not have"));
        let got = std::fs::read(dst.join(k)).unwrap();
        assert_eq!(
            digest(&got),
            digest(&want.1),
            "{k}: a partial or wrong file under its final name"
        );
    }
    have
}

/// Checks that `fs` has free the `bytes` a scenario is sized for.
fn assert_free(fs: &SmallFs, bytes: std::ops::RangeInclusive<u64>) {
    let free = fs.free_bytes();
    assert!(bytes.contains(&free), "setup: {free} bytes free");
}

#[test]
fn a_full_destination_disk_fails_with_one_line_and_the_next_run_completes() {
    // 56 MiB, of which 44 MiB are taken by a file of someone else's: 12 MiB free for a
    // copy of 40 MiB: sixteen 1 MiB objects, then (in key order) one multipart object
    // larger than the free space.
    let fs = SmallFs::mount(56 << 20);
    let filler = fs.path().join("someone-elses-file");
    std::fs::write(&filler, vec![0x5a; 44 * MIB]).unwrap();
    assert_free(&fs, 11 << 20..=12 << 20);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut files: Vec<(String, Vec<u8>)> = (0..16)
        .map(|i| (format!("a/f{i:02}"), data(MIB + 1000 * i, i as u64)))
        .collect();
    files.push(("m-big".into(), data(24 * MIB, 99)));
    write_files(&src, &files);
    let dst = fs.path().join("dst");
    let parts = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
    let report = tmp.path().join("r1.json");
    let report_arg = format!("--report={}", report.display());

    let (code, so, se) = go(dir_sync(&src, &dst, &[&parts[..], &[&report_arg]].concat()));
    assert_eq!(code, Some(1), "{so}\n{se}");
    assert!(!se.contains("panicked"), "{se}");
    // One line says the disk is full and names the place.
    let full: Vec<&str> = se
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("no space") || l.contains("disk full") || l.contains("disk is full")
        })
        .collect();
    assert_eq!(full.len(), 1, "one line about the full disk, got:\n{se}");
    assert!(
        full[0].contains(dst.to_str().unwrap()),
        "the line names the destination path {}: {}",
        dst.display(),
        full[0]
    );
    // Nothing reported copied that is not there whole; nothing partial under a final
    // name.
    let r = read_report(&report);
    let have = assert_only_whole_objects(&dst, &files);
    assert_eq!(
        r["copied_objects"].as_u64().unwrap(),
        have.len() as u64,
        "copied objects are exactly the whole files there: {have:?}\n{r}"
    );
    assert!(r["failed_objects"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(
        r["copied_objects"].as_u64().unwrap() + r["failed_objects"].as_u64().unwrap(),
        files.len() as u64,
        "{r}"
    );
    assert!(
        !have.contains(&"m-big".to_string()),
        "the object larger than the free space cannot be there"
    );
    // No temp file is left to hold on to the space.
    let temps: Vec<String> = tree(&dst)
        .into_iter()
        .filter(|k| k.contains(".snapferry-tmp-"))
        .collect();
    assert!(temps.is_empty(), "temp files left behind: {temps:?}");
    assert!(
        tree(&fs.host_mount_point()).is_empty(),
        "every write went to the small filesystem"
    );

    // Space freed: the next run completes.
    std::fs::remove_file(&filler).unwrap();
    let report2 = tmp.path().join("r2.json");
    let report_arg = format!("--report={}", report2.display());
    let (code, so, se) = go(dir_sync(&src, &dst, &[&parts[..], &[&report_arg]].concat()));
    assert_eq!(code, Some(0), "{so}\n{se}");
    let mut want: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    want.sort();
    assert_eq!(assert_only_whole_objects(&dst, &files), want);
    assert_eq!(
        tree(&dst),
        want,
        "no upload, record, temp file or lease left"
    );
}

#[test]
fn a_multipart_object_is_assembled_with_well_under_twice_its_size_free() {
    // 36 MiB free for a 24 MiB object in 5 MiB parts: 1.5x its size, not 2x.
    let fs = SmallFs::mount(36 << 20);
    assert_free(&fs, 35 << 20..=36 << 20);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = vec![("big".to_string(), data(24 * MIB, 7))];
    write_files(&src, &files);
    let dst = fs.path().join("dst");
    let (code, so, se) = go(dir_sync(
        &src,
        &dst,
        &["--multipart-threshold", "5MiB", "--part-size", "5MiB"],
    ));
    assert_eq!(
        code,
        Some(0),
        "a 24 MiB object with 36 MiB free: {so}\n{se}"
    );
    assert_eq!(assert_only_whole_objects(&dst, &files), ["big"]);
    assert_eq!(
        tree(&dst),
        ["big"],
        "no upload, record, temp file or lease left"
    );
}

/// A sync between two MinIO servers, bucket `src` prefix `p` to bucket `dst` prefix `p`.
fn s3_sync(src: &Minio, dst: &Minio, extra: &[&str]) -> Command {
    let mut c = snapferry();
    c.args(["sync", "s3://src/p", "s3://dst/p"])
        .args(["--src-endpoint", &src.endpoint])
        .args(["--dst-endpoint", &dst.endpoint])
        .args(["--progress", "never"])
        .args(extra);
    c
}

/// Spawns [`s3_sync`] paced to 16 MiB/s, in 8 MiB parts above 8 MiB, with `extra`;
/// its report goes to `report`.
fn spawn_paced_sync(src: &Minio, dst: &Minio, extra: &[&str], report: &Path) -> Child {
    let mut c = s3_sync(
        src,
        dst,
        &[
            "--bwlimit",
            "16MiB/s",
            "--multipart-threshold",
            "8MiB",
            "--part-size",
            "8MiB",
        ],
    );
    c.args(extra).arg("--report").arg(report);
    spawn(c)
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().expect("spawn snapferry")
}

/// Polls `cond` every 20 ms until it holds; panics if the run ends first or after
/// `limit` (killing it).
fn wait_for(child: &mut Child, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        if let Ok(Some(st)) = child.try_wait() {
            let mut se = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut se);
            }
            panic!("the run ended ({st}) before {what}: {se}");
        }
        if t.elapsed() > limit {
            kill9(child);
            panic!("not within {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a run to end, at most `limit` (then kills it and fails).
fn finish(child: Child, limit: Duration) -> (Option<i32>, String, String, Duration) {
    let t = Instant::now();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            let (so, se) = texts(&out);
            (out.status.code(), so, se, t.elapsed())
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the run did not end within {limit:?}");
        }
    }
}

#[test]
fn the_destination_bucket_deleted_mid_copy_is_a_clear_failure_with_a_report() {
    let Pair { a, b, ca, cb, rt } = Pair::start();
    rt.block_on(async {
        for i in 0..12u64 {
            put(&ca, "src", &format!("p/o{i:02}"), data(4 * MIB, i)).await;
        }
        put(&ca, "src", "p/z-big", data(120 * MIB, 77)).await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r.json");
    // About 10 s of copying: MinIO goes on accepting writes for a few seconds after a
    // force-delete answered (a fresh-clone run copied everything 4.4 s after it, exit 0),
    // so the copy must outlast that.
    let mut child = spawn_paced_sync(&a, &b, &[], &report);
    wait_for(
        &mut child,
        Duration::from_secs(60),
        "two objects landed",
        || {
            rt.block_on(keys(&cb, "dst", "p/o"))
                .iter()
                .filter(|k| !k.contains(".snapferry-"))
                .count()
                >= 2
        },
    );
    // The delete has taken effect once a new object cannot be written. Writes in flight
    // can bring a force-deleted MinIO bucket back (seen: it took writes for 30 s), so it
    // is deleted again until a write fails. The copy must still be running then, or this
    // test shows nothing.
    let gone = Instant::now();
    loop {
        let _ = rt.block_on(try_force_delete_bucket(&cb, "dst"));
        let probe = cb
            .put_object()
            .bucket("dst")
            .key("probe")
            .body(data(1, 1).into());
        if rt.block_on(probe.send()).is_err() {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(30),
            "MinIO still takes writes to the deleted bucket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().expect("the run's status").is_none(),
        "the copy ended before the delete took effect ({:?} after it); give it more to copy",
        gone.elapsed()
    );
    let (code, so, se, took) = finish(child, Duration::from_secs(120));
    eprintln!("bucket deleted mid-copy: exit {code:?} {took:?} after the delete\n{se}");
    assert!(
        matches!(code, Some(1) | Some(3)),
        "exit 1 or 3: {code:?}\n{so}\n{se}"
    );
    assert!(!se.contains("panicked"), "{se}");
    assert!(
        took < Duration::from_secs(60),
        "a missing bucket is not retried for the whole retry budget: {took:?}"
    );
    // The failure is named: the destination bucket no longer exists.
    let names_it = |s: &str| {
        let l = s.to_ascii_lowercase();
        l.contains("nosuchbucket") || l.contains("bucket") && l.contains("not exist")
    };
    assert!(
        se.lines().any(names_it),
        "a line says the bucket does not exist:\n{se}"
    );
    let r = read_report(&report);
    let failures = r["failures"].as_array().unwrap();
    // A PUT whose body was still going up when the bucket went is cut by MinIO with 400
    // IncompleteBody (seen in CI): that object failed because of the delete too, but the
    // server's answer to it cannot say so. Every other failure names the bucket, and at
    // least one does.
    let cut_mid_body = |s: &str| s.contains("IncompleteBody");
    assert!(
        r["fatal_error"].as_str().is_some_and(names_it)
            || (failures
                .iter()
                .any(|f| f["reason"].as_str().is_some_and(names_it))
                && failures.iter().all(|f| {
                    f["reason"]
                        .as_str()
                        .is_some_and(|s| names_it(s) || cut_mid_body(s))
                })),
        "the report names the missing bucket: {r}"
    );
    assert!(
        r["copied_objects"].as_u64().unwrap() >= 2,
        "what landed before the delete is counted: {r}"
    );
}

/// A 64 MiB object copied in 8 MiB parts, slowly (about 4 s), with `change` done to
/// the source once the first part has landed: returns the first run's (code, stderr,
/// report) and the destination client.
fn change_source_mid_copy(
    a: &Minio,
    b: &Minio,
    old: &[u8],
    change: impl FnOnce(&aws_sdk_s3::Client),
) -> (Option<i32>, String, serde_json::Value) {
    let (ca, cb) = (a.client(), b.client());
    let rt = rt();
    rt.block_on(async {
        create_bucket(&ca, "src").await;
        create_bucket(&cb, "dst").await;
        put(&ca, "src", "p/big", old.to_vec()).await;
        put(&ca, "src", "p/other", data(1000, 5)).await;
    });
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("r.json");
    let mut child = spawn_paced_sync(a, b, &["--concurrency", "2"], &report);
    wait_for(
        &mut child,
        Duration::from_secs(60),
        "the first part landed",
        || {
            rt.block_on(s3_uploads(&cb, "dst"))
                .iter()
                .any(|u| u.key == "p/big" && !u.parts.is_empty())
        },
    );
    change(&ca);
    let (code, so, se, _) = finish(child, Duration::from_secs(120));
    assert!(!se.contains("panicked"), "{so}\n{se}");
    (code, se, read_report(&report))
}

/// Runs the sync of [`change_source_mid_copy`] again, which must succeed and leave no
/// upload and no file of snapferry's own behind; returns what `p/big` is there then.
fn rerun_clean(a: &Minio, b: &Minio) -> Option<(u64, String)> {
    let (code, so, se) = go(s3_sync(
        a,
        b,
        &["--multipart-threshold", "8MiB", "--part-size", "8MiB"],
    ));
    assert_eq!(code, Some(0), "{so}\n{se}");
    let (cb, rt) = (b.client(), rt());
    assert!(rt.block_on(s3_uploads(&cb, "dst")).is_empty());
    let own: Vec<String> = rt
        .block_on(keys(&cb, "dst", ""))
        .into_iter()
        .filter(|k| k.contains(".snapferry-"))
        .collect();
    assert!(own.is_empty(), "{own:?}");
    rt.block_on(s3_digest(&cb, "dst", "p/big"))
}

#[test]
fn a_source_object_rewritten_under_a_large_copy_is_never_stitched() {
    let (a, b) = (Minio::start(), Minio::start());
    let cb = b.client();
    let rt = rt();
    let old = data(64 * MIB, 1);
    let new = data(64 * MIB, 2); // the same size: only the version tells them apart
    let (code, se, r) = change_source_mid_copy(&a, &b, &old, |ca| {
        rt.block_on(put(ca, "src", "p/big", new.clone()));
    });
    eprintln!("source rewritten mid-copy: exit {code:?}\n{se}\n{r}");
    // Either the new version whole (retried from it) or nothing; never the old one
    // completed from parts cut before and after the rewrite, nor any mix.
    let got = rt.block_on(s3_digest(&cb, "dst", "p/big"));
    assert!(
        got.is_none() || got == Some(digest(&new)),
        "the destination holds neither nothing nor the new version: {got:?} (old {:?}, new {:?})",
        digest(&old),
        digest(&new)
    );
    match code {
        Some(0) => assert_eq!(got, Some(digest(&new)), "{r}"),
        Some(1) => {
            // Failed loudly: the key, and that its source changed.
            assert_eq!(r["failed_objects"], 1, "{r}");
            assert_eq!(r["failures"][0]["key"], "big", "{r}");
            assert_eq!(r["failures"][0]["kind"], "SourceChanged", "{r}");
            assert!(
                se.lines()
                    .any(|l| l.contains("big") && l.contains("sync again")),
                "{se}"
            );
        }
        other => panic!("exit {other:?}: {se}"),
    }
    assert!(
        rt.block_on(s3_uploads(&cb, "dst")).is_empty(),
        "the upload cut from the old version is aborted"
    );
    // The next run makes it the new version.
    assert_eq!(rerun_clean(&a, &b), Some(digest(&new)));
}

#[test]
fn a_source_object_deleted_under_a_large_copy_is_reported_and_never_half_copied() {
    let (a, b) = (Minio::start(), Minio::start());
    let cb = b.client();
    let rt = rt();
    let old = data(64 * MIB, 3);
    let (code, se, r) = change_source_mid_copy(&a, &b, &old, |ca| {
        rt.block_on(async {
            ca.delete_object()
                .bucket("src")
                .key("p/big")
                .send()
                .await
                .unwrap();
        });
    });
    eprintln!("source deleted mid-copy: exit {code:?}\n{se}\n{r}");
    // Nothing under the key (the source no longer has it), no upload left.
    assert_eq!(rt.block_on(s3_digest(&cb, "dst", "p/big")), None);
    assert!(
        rt.block_on(s3_uploads(&cb, "dst")).is_empty(),
        "the upload of the deleted object is aborted"
    );
    // Failed loudly (the key, and that the source no longer has it), or skipped as
    // deleted; either way said on a line of its own, and the other object copied.
    let gone = |s: &str| {
        let l = s.to_ascii_lowercase();
        l.contains("big")
            && ["deleted", "no longer exists", "not found", "nosuchkey"]
                .iter()
                .any(|w| l.contains(w))
    };
    assert!(
        se.lines().any(gone),
        "a line says big is gone from the source:\n{se}"
    );
    match code {
        Some(1) => {
            assert_eq!(r["failed_objects"], 1, "{r}");
            assert_eq!(r["failures"][0]["key"], "big", "{r}");
            assert_eq!(r["failures"][0]["kind"], "NotFound", "{r}");
        }
        Some(0) => assert_eq!(r["failed_objects"], 0, "{r}"),
        other => panic!("exit {other:?}: {se}"),
    }
    assert_eq!(r["copied_objects"], 1, "{r}");
    // The next run finds nothing to copy and leaves nothing behind.
    assert_eq!(rerun_clean(&a, &b), None);
}
