//! Snapshot-aware sync of real repositories (fixtures/repos): the destination is a
//! consistent repository at every instant, even when the copy is killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use testkit::*;

/// The `repo/` of the newest fixture repository whose name starts with `name_prefix`.
fn fixture(name_prefix: &str) -> PathBuf {
    fixture_dir(name_prefix).join("repo")
}

/// `repo verify` of a destination: Some(problems) when a repository is there, None when
/// nothing has been committed yet (no root index-N).
fn verify_s3(s3: &Minio, url: &str, deep: bool) -> Option<serde_json::Value> {
    let mut c = snapferry();
    c.args(["repo", "verify", url, "--endpoint", &s3.endpoint, "--json"]);
    if deep {
        c.arg("--deep");
    }
    let out = run(c);
    let (so, se) = texts(&out);
    match out.status.code() {
        Some(0) | Some(1) => {
            Some(serde_json::from_str(&so).unwrap_or_else(|e| panic!("{e}: {so}")))
        }
        Some(2) if se.contains("holds no snapshot repository") => None,
        other => panic!("repo verify exited {other:?}: {se}"),
    }
}

fn sync_cmd(src: &Path, s3: &Minio, dst: &str) -> std::process::Command {
    let mut c = snapferry();
    c.args([
        "sync",
        src.to_str().unwrap(),
        dst,
        "--dst-endpoint",
        &s3.endpoint,
        "--progress",
        "never",
    ]);
    c
}

#[test]
fn snapshot_aware_sync_killed_at_random_points_always_leaves_a_valid_repository() {
    let src = fixture("opensearch");
    let s3 = Minio::start();
    rt().block_on(create_bucket(&s3.client(), "dst"));
    let seed: u64 = std::env::var("SNAPFERRY_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let mut committed_seen = 0;
    let mut uncommitted_seen = 0;
    // How long a whole throttled copy takes here, so that the kills spread over all of it
    // (before, around and after the commit point).
    let t = std::time::Instant::now();
    let mut timing = sync_cmd(&src, &s3, "s3://dst/timing");
    timing.args(["--tpslimit", "60", "--concurrency", "2"]);
    let out = run(timing);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    let full_ms = t.elapsed().as_millis() as u64;
    for i in 0..20 {
        let url = format!("s3://dst/round-{i}");
        // Slowed down so that a kill lands inside the copy; killed at a random instant.
        let mut child = sync_cmd(&src, &s3, &url)
            .args(["--tpslimit", "60", "--concurrency", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(
            r.random_range(0..full_ms + full_ms / 5),
        ));
        let _ = child.kill();
        child.wait().unwrap();
        match verify_s3(&s3, &url, false) {
            None => uncommitted_seen += 1,
            Some(v) => {
                committed_seen += 1;
                assert!(
                    v["problems"].as_array().unwrap().is_empty(),
                    "round {i} (seed {seed}): inconsistent destination after SIGKILL: {v}"
                );
            }
        }
        // A final run completes it.
        let out = run(sync_cmd(&src, &s3, &url));
        assert_eq!(out.status.code(), Some(0), "round {i}: {:?}", texts(&out));
        let v = verify_s3(&s3, &url, i % 5 == 0).expect("a completed sync leaves a repository");
        assert!(
            v["problems"].as_array().unwrap().is_empty(),
            "round {i}: {v}"
        );
    }
    eprintln!("seed {seed}: full copy {full_ms} ms; {uncommitted_seen} kills before the commit point, {committed_seen} after");
}

#[test]
fn snapshot_aware_sync_copies_in_phases_and_only_referenced_blobs() {
    let src_fixture = fixture("elasticsearch");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_tree(&src_fixture, &src);
    // Garbage a copier must not carry: repository verification and temporary blobs.
    std::fs::create_dir_all(src.join("tests-abc")).unwrap();
    std::fs::write(src.join("tests-abc/data-node.dat"), b"x").unwrap();
    std::fs::write(src.join("pending-index-9"), b"x").unwrap();
    let s3 = Minio::start();
    let c = s3.client();
    let rt = rt();
    rt.block_on(create_bucket(&c, "dst"));
    let report = tmp.path().join("r.json");
    let out = run({
        let mut cmd = sync_cmd(&src, &s3, "s3://dst/repo");
        cmd.arg("--report").arg(&report);
        cmd
    });
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    let r = read_report(&report);
    let phases: Vec<&str> = r["snapshot"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    // Every phase, in the engine's order (its unit tests pin the names: `data` ...
    // `index.latest`).
    let want: Vec<&str> = snapferry_engine::pipeline::snapshot::PHASES
        .into_iter()
        .map(<&str>::from)
        .collect();
    assert_eq!(phases, want);
    assert_eq!(r["snapshot"]["completed"], true);
    let copied = rt.block_on(keys(&c, "dst", "repo/"));
    assert!(
        !copied
            .iter()
            .any(|k| k.contains("tests-") || k.contains("pending-")),
        "{copied:?}"
    );
    let v = verify_s3(&s3, "s3://dst/repo", true).unwrap();
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    // A second run moves nothing.
    let out = run({
        let mut cmd = sync_cmd(&src, &s3, "s3://dst/repo");
        cmd.arg("--report").arg(&report);
        cmd
    });
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(
        read_report(&report)["copied_objects"],
        0,
        "nothing moves, not even index.latest"
    );

    // --snapshot: only what one snapshot needs, still restorable (verify --snapshot).
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(src_fixture.parent().unwrap().join("manifest.json")).unwrap(),
    )
    .unwrap();
    let one = manifest["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["indices"].as_object().unwrap().len() == 1)
        .expect("a one-index snapshot")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run({
        let mut cmd = sync_cmd(&src, &s3, "s3://dst/one");
        cmd.args(["--snapshot", &one]);
        cmd
    });
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    let full = rt.block_on(keys(&c, "dst", "repo/")).len();
    let partial = rt.block_on(keys(&c, "dst", "one/")).len();
    assert!(
        partial < full,
        "--snapshot copied {partial} of {full} blobs"
    );
    let mut cmd = snapferry();
    cmd.args([
        "repo",
        "verify",
        "s3://dst/one",
        "--endpoint",
        &s3.endpoint,
        "--snapshot",
        &one,
        "--deep",
    ]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));

    // --delete in snapshot mode: garbage on the destination goes, referenced blobs stay.
    rt.block_on(put(&c, "dst", "repo/indices/zzz/0/__orphan", vec![1, 2, 3]));
    rt.block_on(put(&c, "dst", "repo/snap-orphan.dat", vec![1]));
    let out = run({
        let mut cmd = sync_cmd(&src, &s3, "s3://dst/repo");
        cmd.args(["--delete", "--report"]).arg(&report);
        cmd
    });
    assert_eq!(out.status.code(), Some(0), "{:?}", texts(&out));
    assert_eq!(read_report(&report)["deleted_objects"], 2);
    let v = verify_s3(&s3, "s3://dst/repo", false).unwrap();
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn source_generation_moving_during_the_copy_is_reported_and_the_pinned_one_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_tree(&fixture("opensearch"), &src);
    let s3 = Minio::start();
    rt().block_on(create_bucket(&s3.client(), "dst"));
    let gen: u64 = {
        let b = std::fs::read(src.join("index.latest")).unwrap();
        u64::from_be_bytes(b[..8].try_into().unwrap())
    };
    let report = tmp.path().join("r.json");
    let mut child = sync_cmd(&src, &s3, "s3://dst/repo")
        .args(["--tpslimit", "30", "--concurrency", "1", "--report"])
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once the copy is under way (objects are landing), the source writes generation N+1.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rt().block_on(keys(&s3.client(), "dst", "repo/")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::copy(
        src.join(format!("index-{gen}")),
        src.join(format!("index-{}", gen + 1)),
    )
    .unwrap();
    std::fs::write(src.join("index.latest"), (gen + 1).to_be_bytes()).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let r = read_report(&report);
    assert_eq!(r["snapshot"]["source_generation"], gen);
    assert_eq!(r["snapshot"]["source_generation_moved_to"], gen + 1, "{r}");
    assert_eq!(r["snapshot"]["completed"], true);
    // The destination holds the pinned generation, complete, and never N+1.
    let v = verify_s3(&s3, "s3://dst/repo", true).unwrap();
    assert_eq!(v["generation"], gen);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert!(!rt()
        .block_on(keys(&s3.client(), "dst", "repo/"))
        .contains(&format!("repo/index-{}", gen + 1)));
}
