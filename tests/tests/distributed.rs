//! A distributed round of the real binary against real MinIO: `plan`, the units by
//! `sync --plan URL --unit I` in any order, twice and at once, and `commit` — the same
//! repository as one whole `sync`; a commit with units missing refuses, naming them, and
//! leaves the destination at its previous generation.

use std::process::Command;

use testkit::*;

fn fixture() -> std::path::PathBuf {
    fixture_dir("opensearch").join("repo")
}

fn with_endpoint(mut c: Command, s3: &Minio) -> Command {
    c.args(["--dst-endpoint", &s3.endpoint, "--progress", "never"]);
    c
}

/// `snapferry plan` into `dst` with `units`; the plan's URL.
fn plan(s3: &Minio, dst: &str, units: usize, extra: &[&str]) -> String {
    plan_json(s3, dst, units, extra)["url"]
        .as_str()
        .expect("the plan's url")
        .to_string()
}

/// `snapferry plan --json`'s plan.
fn plan_json(s3: &Minio, dst: &str, units: usize, extra: &[&str]) -> serde_json::Value {
    let mut c = snapferry();
    c.args([
        "plan",
        fixture().to_str().unwrap(),
        dst,
        "--units",
        &units.to_string(),
        "--json",
    ]);
    c.args(extra);
    let out = run(with_endpoint(c, s3));
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "plan: {se}");
    let v: serde_json::Value = serde_json::from_str(&so).unwrap_or_else(|e| panic!("{e}: {so}"));
    assert_eq!(v["units"].as_array().map(Vec::len), Some(units), "{v}");
    v
}

fn unit_cmd(s3: &Minio, url: &str, i: usize) -> Command {
    let mut c = snapferry();
    c.args(["sync", "--plan", url, "--unit", &i.to_string()]);
    with_endpoint(c, s3)
}

fn unit(s3: &Minio, url: &str, i: usize) {
    let out = run(unit_cmd(s3, url, i));
    assert_eq!(out.status.code(), Some(0), "unit {i}: {}", texts(&out).1);
    assert!(
        texts(&out).1.contains(&format!("unit {i} of plan")),
        "{}",
        texts(&out).1
    );
}

fn commit(s3: &Minio, url: &str) -> std::process::Output {
    let mut c = snapferry();
    c.args(["commit", "--plan", url]);
    run(with_endpoint(c, s3))
}

fn latest(s3: &Minio, bucket: &str) -> Result<Vec<u8>, String> {
    rt().block_on(try_get(&s3.client(), bucket, "repo/index.latest"))
}

fn verify_deep(s3: &Minio, url: &str) -> serde_json::Value {
    let mut c = snapferry();
    c.args([
        "repo",
        "verify",
        url,
        "--endpoint",
        &s3.endpoint,
        "--json",
        "--deep",
    ]);
    let out = run(c);
    let (so, se) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "repo verify: {se}");
    serde_json::from_str(&so).unwrap_or_else(|e| panic!("{e}: {so}"))
}

#[test]
fn units_in_any_order_twice_and_at_once_make_the_repository_a_whole_sync_makes() {
    let s3 = Minio::start();
    let c = s3.client();
    rt().block_on(async {
        create_bucket(&c, "whole").await;
        create_bucket(&c, "dist").await;
    });
    let mut whole = snapferry();
    whole.args(["sync", fixture().to_str().unwrap(), "s3://whole/repo"]);
    let out = run(with_endpoint(whole, &s3));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);

    let url = plan(&s3, "s3://dist/repo", 4, &[]);
    assert!(
        url.starts_with("s3://dist/repo.snapferry/plans/"),
        "beside the repository: {url}"
    );
    assert!(
        rt().block_on(keys(&c, "dist", "repo/")).is_empty(),
        "a plan writes nothing into the repository"
    );
    // Before any unit: refused, every unit named, nothing committed.
    let out = commit(&s3, &url);
    assert_eq!(out.status.code(), Some(1), "{}", texts(&out).1);
    assert!(
        texts(&out).1.contains("units 0, 1, 2, 3 of 4"),
        "{}",
        texts(&out).1
    );
    assert!(latest(&s3, "dist").is_err(), "nothing committed");

    // Out of order; two at once; one twice.
    unit(&s3, &url, 3);
    unit(&s3, &url, 1);
    let (a, b) = (unit_cmd(&s3, &url, 0), unit_cmd(&s3, &url, 2));
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(move || run(a));
        let hb = s.spawn(move || run(b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    for (i, r) in [(0, ra), (2, rb)] {
        assert_eq!(
            r.status.code(),
            Some(0),
            "unit {i} at once: {}",
            texts(&r).1
        );
    }
    assert!(latest(&s3, "dist").is_err(), "units never commit");
    unit(&s3, &url, 1);
    // Another unit of the same plan, from the Indexed Job's variable.
    let mut by_env = snapferry();
    by_env
        .args(["sync", "--plan", &url])
        .env("JOB_COMPLETION_INDEX", "2");
    let out = run(with_endpoint(by_env, &s3));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    assert!(
        texts(&out).1.contains("unit 2 of plan"),
        "{}",
        texts(&out).1
    );

    let out = commit(&s3, &url);
    assert_eq!(out.status.code(), Some(0), "commit: {}", texts(&out).1);
    let out = commit(&s3, &url);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a second commit is harmless: {}",
        texts(&out).1
    );

    // The same repository as one whole sync, byte for byte.
    rt().block_on(assert_same_repository(
        (&c, "whole", "repo/"),
        (&c, "dist", "repo/"),
    ));
    let v = verify_deep(&s3, "s3://dist/repo");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn a_commit_with_units_missing_refuses_and_the_destination_stays_at_its_previous_generation() {
    let s3 = Minio::start();
    let c = s3.client();
    rt().block_on(create_bucket(&c, "dist"));
    // The previous round: a repository of snap-1 only.
    let mut first = snapferry();
    first.args([
        "sync",
        fixture().to_str().unwrap(),
        "s3://dist/repo",
        "--snapshot",
        "snap-1",
    ]);
    let out = run(with_endpoint(first, &s3));
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let before = latest(&s3, "dist").expect("committed");
    let v = verify_deep(&s3, "s3://dist/repo");
    assert_eq!(v["snapshots_checked"].as_u64(), Some(1), "{v}");

    let url = plan(&s3, "s3://dist/repo", 3, &[]);
    unit(&s3, &url, 0);
    let out = commit(&s3, &url);
    let se = texts(&out).1;
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("units 1, 2 of 3 have not finished"), "{se}");
    assert_eq!(
        se.lines().filter(|l| l.contains("error")).count(),
        1,
        "one line: {se}"
    );
    assert_eq!(
        latest(&s3, "dist").unwrap(),
        before,
        "index.latest unchanged"
    );
    let v = verify_deep(&s3, "s3://dist/repo");
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "still restorable: {v}"
    );
    assert_eq!(
        v["snapshots_checked"].as_u64(),
        Some(1),
        "at its previous generation: {v}"
    );

    // The round's progress from the markers.
    let status = |want: i32| -> serde_json::Value {
        let mut c = snapferry();
        c.args([
            "plan",
            "status",
            &url,
            "--dst-endpoint",
            &s3.endpoint,
            "--json",
        ]);
        let out = run(c);
        assert_eq!(out.status.code(), Some(want), "{}", texts(&out).1);
        serde_json::from_str(&texts(&out).0).unwrap()
    };
    let st = status(1);
    assert_eq!(st["finished"], 1, "{st}");
    assert_eq!(st["unfinished"], serde_json::json!([1, 2]), "{st}");

    // A unit the plan does not have is bad input.
    let out = run(unit_cmd(&s3, &url, 9));
    assert_eq!(out.status.code(), Some(2), "{}", texts(&out).1);
    assert!(texts(&out).1.contains("units 0 to 2"), "{}", texts(&out).1);

    // The rest of the units, then the commit: every snapshot.
    unit(&s3, &url, 2);
    unit(&s3, &url, 1);
    let st = status(0);
    assert_eq!(st["finished"], 3, "{st}");
    let copied: u64 = st["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["marker"]["copied_objects"].as_u64().unwrap())
        .sum();
    assert_eq!(
        st["copied_objects"].as_u64(),
        Some(copied),
        "the sum of the markers: {st}"
    );
    assert!(copied > 0, "{st}");
    let out = commit(&s3, &url);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let v = verify_deep(&s3, "s3://dist/repo");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["snapshots_checked"].as_u64(), Some(3), "{v}");
}

#[test]
fn plan_refuses_bad_input_in_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(plain.join("a"), b"not a repository").unwrap();
    let dst = dir.path().join("dst");
    let repo = fixture();
    let inside = dst.join("ctl");
    let in_src = repo.join("plans");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![plain.to_str().unwrap(), "--units", "2"],
            "holds no snapshot repository",
        ),
        (
            vec![repo.to_str().unwrap(), "--units", "0"],
            "--units 0 plans nothing",
        ),
        (
            vec![repo.to_str().unwrap(), "--units", "2", "--id", "../up"],
            "a plan id is",
        ),
        (
            vec![
                repo.to_str().unwrap(),
                "--units",
                "2",
                "--control",
                inside.to_str().unwrap(),
            ],
            "lies inside the repository",
        ),
        (
            vec![
                repo.to_str().unwrap(),
                "--units",
                "2",
                "--control",
                in_src.to_str().unwrap(),
            ],
            "lies inside the source",
        ),
        (
            vec![repo.to_str().unwrap(), "--units", "2", "--workers", "0"],
            "--workers 0 runs no unit",
        ),
    ];
    for (args, says) in cases {
        let mut c = snapferry();
        c.arg("plan").args(&args[..1]).arg(&dst).args(&args[1..]);
        let out = run(c);
        let se = texts(&out).1;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {se}");
        assert!(se.contains(says), "{args:?}: {se}");
        assert_eq!(se.lines().count(), 1, "{args:?}: one line: {se}");
        let written: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            written,
            vec![std::ffi::OsString::from("plain")],
            "{args:?}: nothing written"
        );
    }
}

#[test]
fn a_commit_after_another_round_committed_refuses_and_changes_nothing() {
    let s3 = Minio::start();
    let c = s3.client();
    rt().block_on(create_bucket(&c, "dist"));
    let snapshot_round = |name: &str| {
        let mut s = snapferry();
        s.args([
            "sync",
            fixture().to_str().unwrap(),
            "s3://dist/repo",
            "--snapshot",
            name,
        ]);
        let out = run(with_endpoint(s, &s3));
        assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    };
    snapshot_round("snap-1");
    let url = plan(&s3, "s3://dist/repo", 2, &[]);
    unit(&s3, &url, 0);
    unit(&s3, &url, 1);
    // Meanwhile another round commits a root of its own.
    snapshot_round("snap-4");
    let before = latest(&s3, "dist").expect("committed");
    let out = commit(&s3, &url);
    let se = texts(&out).1;
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("changed since the plan was made"), "{se}");
    assert_eq!(latest(&s3, "dist").unwrap(), before, "nothing committed");
    let v = verify_deep(&s3, "s3://dist/repo");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn the_commit_confirms_every_blob_even_over_the_pinned_roots_own_bytes_put_there_by_another_tool() {
    let s3 = Minio::start();
    let c = s3.client();
    rt().block_on(async {
        create_bucket(&c, "dist").await;
        // Another tool copied the root first (index-* sorts before indices/), then stopped.
        for k in ["index-4", "index.latest"] {
            put(
                &c,
                "dist",
                &format!("repo/{k}"),
                std::fs::read(fixture().join(k)).unwrap(),
            )
            .await;
        }
    });
    let url = plan(&s3, "s3://dist/repo", 2, &[]);
    // Dry runs of the units are no completion.
    for i in 0..2 {
        let mut dry = unit_cmd(&s3, &url, i);
        dry.arg("--dry-run");
        let out = run(dry);
        assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
        assert!(
            texts(&out).1.contains("did not finish"),
            "{}",
            texts(&out).1
        );
    }
    let out = commit(&s3, &url);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no marker after dry runs: {}",
        texts(&out).1
    );
    unit(&s3, &url, 0);
    unit(&s3, &url, 1);
    // A data blob lost after its unit finished.
    let lost = rt().block_on(async {
        let ks = keys(&c, "dist", "repo/indices/").await;
        let k = ks
            .iter()
            .find(|k| k.rsplit('/').next().unwrap().starts_with("__"))
            .unwrap()
            .clone();
        c.delete_object()
            .bucket("dist")
            .key(&k)
            .send()
            .await
            .unwrap();
        k
    });
    let out = commit(&s3, &url);
    let se = texts(&out).1;
    assert_eq!(
        out.status.code(),
        Some(1),
        "the confirmation catches it: {se}"
    );
    assert!(se.contains(&lost["repo/".len()..]), "names the blob: {se}");
    assert!(
        rt().block_on(keys(&c, "dist", "repo/.snapferry-state.json"))
            .is_empty(),
        "nothing certified: {se}"
    );
    // The unit run again puts it back; then the commit holds.
    for i in 0..2 {
        unit(&s3, &url, i);
    }
    let out = commit(&s3, &url);
    assert_eq!(out.status.code(), Some(0), "{}", texts(&out).1);
    let v = verify_deep(&s3, "s3://dist/repo");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn a_unit_whose_lease_another_host_holds_waits_for_it_with_lease_wait() {
    let s3 = Minio::start();
    let c = s3.client();
    rt().block_on(create_bucket(&c, "dist"));
    let url = plan(&s3, "s3://dist/repo", 1, &["--id", "held"]);
    // A worker on another host died holding unit 0's lease; it expires in 4 s.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let holder = serde_json::json!({
        "id": "dead0000dead0000", "host": "another-node", "pid": 4242,
        "started_ms": now - 60_000, "renewed_ms": now - 1_000, "expires_ms": now + 4_000,
        "version": "0"
    });
    let lease = "repo.snapferry/plans/held/units/0/.snapferry-lease";
    rt().block_on(put(&c, "dist", lease, holder.to_string().into_bytes()));
    let out = run(unit_cmd(&s3, &url, 0));
    assert_eq!(out.status.code(), Some(4), "held: {}", texts(&out).1);
    let mut waiting = unit_cmd(&s3, &url, 0);
    waiting.args(["--lease-wait", "1m"]);
    let out = run(waiting);
    let se = texts(&out).1;
    assert_eq!(out.status.code(), Some(0), "{se}");
    assert!(se.contains("trying again"), "{se}");
    assert!(se.contains("unit 0 of plan held finished"), "{se}");
}
